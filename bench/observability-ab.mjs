#!/usr/bin/env node
// The cost of monitoring, measured A/B: Tollgate with the standard config (bearer auth, a rate limit that
// never triggers, info logging to a file) and metrics + tracing + Server-Timing on (the defaults), against
// the same config with them off. Both proxies run at once on CPU 0; wrk and three nginx backends on CPU 1.
// Runs alternate (ON OFF, OFF ON, ...), so drift on a shared machine hits both sides alike. For every run
// it reports req/s and the proxy's CPU time per request (utime + stime from /proc/PID/stat around the run),
// which is steadier than req/s.
//
//   node bench/observability-ab.mjs [--rounds N] [--duration S]      (defaults: 6 rounds of 5 s)
//   wrap it in `flock /tmp/bench.lock ...` on a shared machine
//
// Prints one line per run and a summary with the medians and PASS/FAIL for "on >= 95% of off".
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { ROOT, freePorts, launch, numberOption } from './common.mjs';

const ROUNDS = numberOption('--rounds', 6);
const DURATION = numberOption('--duration', 5);
const TOKEN = 'dev-token-123';
const BODY = 'tollgate-bench-payload:'.padEnd(100, '0123456789abcdefghijklmnopqrstuvwxyz');
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;

function launchLogged(cmd, cmdArgs, log) {
  const fd = fs.openSync(log, 'a');
  const child = launch(cmd, cmdArgs, { stdio: ['ignore', fd, fd], env: { ...process.env, LOG_LEVEL: '' } });
  fs.closeSync(fd);
  return child;
}

function get(port, headers = {}) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', headers, agent: false, timeout: 1000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
  });
}

async function waitFor(port, headers) {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if ((await get(port, headers)) === 200) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`nothing answered 200 on port ${port}`);
}

function tollgateYaml(port, backends, dir, name, monitoring) {
  return `server: { listen_port: ${port}, listen_address: "127.0.0.1", max_connections: 10000 }
load_balancing:
  strategy: "round_robin"
  upstreams:
${backends.map((p, i) => `    - { name: "backend${i + 1}", address: "127.0.0.1", port: ${p} }`).join('\n')}
middleware:
  auth: { enabled: true, auth_type: "bearer", valid_tokens: ["${TOKEN}", "test-token-456"] }
  rate_limit: { enabled: true, requests_per_minute: 60000000, burst_size: 10000000 }
logging: { level: info, file: ${JSON.stringify(path.join(dir, `${name}.log`))} }
admin: { enabled: true, port: 0 }
metrics: { enabled: ${monitoring} }
tracing: { enabled: ${monitoring}, server_timing: ${monitoring} }
`;
}

function cpuTicks(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]); // utime + stime (fields 14 and 15 of the line)
}

function wrk(port) {
  return new Promise((resolve, reject) => {
    const child = spawn('taskset', ['-c', '1', 'wrk', '-t1', '-c50', `-d${DURATION}s`, '-H', `Authorization: Bearer ${TOKEN}`, `http://127.0.0.1:${port}/`], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('exit', (code) => {
      const requests = Number(/(\d+) requests in/.exec(out)?.[1]);
      const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]);
      const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0);
      if (code !== 0 || !requests) reject(new Error(`wrk failed: ${out}`));
      else resolve({ requests, rps, non2xx });
    });
  });
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-ab-'));
  if (!fs.existsSync(path.join(ROOT, 'dist/cli.js'))) execFileSync('npm', ['run', 'build'], { cwd: ROOT, stdio: 'inherit' });
  const [b1, b2, b3, onPort, offPort] = await freePorts(5);
  const nginxConf = path.join(dir, 'nginx.conf');
  fs.writeFileSync(nginxConf, `worker_processes 1; daemon off; pid ${dir}/nginx.pid; error_log ${dir}/nginx-error.log warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  client_body_temp_path ${dir}/cb; proxy_temp_path ${dir}/pt; fastcgi_temp_path ${dir}/ft; uwsgi_temp_path ${dir}/ut; scgi_temp_path ${dir}/st;
  server { listen 127.0.0.1:${b1}; listen 127.0.0.1:${b2}; listen 127.0.0.1:${b3}; location / { return 200 "${BODY}"; } } }
`);
  launchLogged('taskset', ['-c', '1', 'nginx', '-p', dir, '-c', nginxConf, '-e', `${dir}/nginx-error.log`], path.join(dir, 'nginx.out'));
  await waitFor(b1, {});
  const proxies = {};
  for (const [name, port, monitoring] of [['on', onPort, true], ['off', offPort, false]]) {
    const cfg = path.join(dir, `${name}.yaml`);
    fs.writeFileSync(cfg, tollgateYaml(port, [b1, b2, b3], dir, name, monitoring));
    const child = launchLogged('taskset', ['-c', '0', process.execPath, 'dist/cli.js', '--config', cfg], path.join(dir, `${name}.out`));
    proxies[name] = { port, child, runs: [] };
  }
  for (const p of Object.values(proxies)) await waitFor(p.port, { authorization: `Bearer ${TOKEN}` });
  // The node process is the taskset child once taskset has exec'd: same pid.
  console.log(`tollgate A/B: ${ROUNDS} rounds x ${DURATION} s per side, wrk -t1 -c50 on CPU 1, proxies on CPU 0; node ${process.version}`);
  for (const p of Object.values(proxies)) await wrk(p.port); // warm-up
  for (let r = 0; r < ROUNDS; r++) {
    const order = r % 2 === 0 ? ['on', 'off'] : ['off', 'on'];
    for (const name of order) {
      const p = proxies[name];
      const before = cpuTicks(p.child.pid);
      const res = await wrk(p.port);
      const ticks = cpuTicks(p.child.pid) - before;
      const usPerRequest = (ticks / CLK_TCK / res.requests) * 1e6;
      p.runs.push({ ...res, usPerRequest });
      console.log(`round ${r + 1} ${name.padEnd(3)}: ${res.rps.toFixed(0)} req/s, ${usPerRequest.toFixed(1)} µs CPU/request${res.non2xx ? `, ${res.non2xx} non-2xx` : ''}`);
    }
  }
  const on = proxies.on.runs;
  const off = proxies.off.runs;
  const rpsOn = median(on.map((x) => x.rps));
  const rpsOff = median(off.map((x) => x.rps));
  const cpuOn = median(on.map((x) => x.usPerRequest));
  const cpuOff = median(off.map((x) => x.usPerRequest));
  const pairs = on.map((x, i) => x.rps / off[i].rps);
  console.log(`median req/s: on ${rpsOn.toFixed(0)}, off ${rpsOff.toFixed(0)}: on/off ${(rpsOn / rpsOff).toFixed(3)} (per-round ratios ${pairs.map((x) => x.toFixed(3)).join(' ')})`);
  console.log(`median CPU per request: on ${cpuOn.toFixed(1)} µs, off ${cpuOff.toFixed(1)} µs: throughput implied by CPU time on/off ${(cpuOff / cpuOn).toFixed(3)}`);
  const pass = rpsOn >= 0.95 * rpsOff;
  console.log(`${pass ? 'PASS' : 'FAIL'} monitoring cost (metrics + tracing on >= 0.95 x off, median req/s)`);
  fs.rmSync(dir, { recursive: true, force: true });
  return 0;
}

main().then((code) => process.exit(code), (err) => {
  console.error(`observability-ab: ${err.stack ?? err}`);
  process.exit(1);
});
