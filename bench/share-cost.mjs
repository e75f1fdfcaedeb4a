#!/usr/bin/env node
// What sharing rate limits costs per request: CPU time of the whole Tollgate process tree (and of
// redis-server) per proxied request, for the ways a limit can be kept:
//   off            - rate limiting off (baseline for the limiter itself)
//   memory         - one process, buckets in its memory (the default)
//   workers2-off   - server.workers: 2, rate limiting off (what two workers on one core cost by themselves)
//   workers2-ipc   - server.workers: 2, buckets in the primary, workers ask over IPC
//   redis          - one process, buckets in Redis (one EVALSHA per request)
//   workers2-redis - server.workers: 2 with the Redis store
// Every Tollgate process (primary and workers) is pinned to CPU 0; one nginx backend, redis-server and wrk
// share CPU 1. This machine has 2 cores, so it cannot show scaling across cores; what it shows is the
// price of exactness (IPC or Redis) per request, which docs/deployment.md turns into a sizing model.
// Configurations are measured in turn, ROUNDS times, and each figure is the median of its rounds.
// CPU time comes from /proc/PID/stat (utime + stime) around one wrk run; requests from wrk.
//
// usage: node bench/share-cost.mjs   (build first: npm run build; wrap in flock /tmp/bench.lock)
// env:   SHARE_ROUNDS (3), SHARE_DURATION (5 s), SHARE_CONFIGS (comma list), BENCH_PROXY_CPU (0), BENCH_LOAD_CPU (1)
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ROUNDS = Number(process.env.SHARE_ROUNDS ?? 3);
const DURATION = Number(process.env.SHARE_DURATION ?? 5);
const PROXY_CPU = Number(process.env.BENCH_PROXY_CPU ?? 0);
const LOAD_CPU = Number(process.env.BENCH_LOAD_CPU ?? 1);
const CONFIGS = ['off', 'memory', 'redis', 'workers2-off', 'workers2-ipc', 'workers2-redis'];
const chosen = (process.env.SHARE_CONFIGS ?? CONFIGS.join(',')).split(',').map((s) => s.trim()).filter(Boolean);
for (const c of chosen) if (!CONFIGS.includes(c)) throw new Error(`unknown config ${c} (known: ${CONFIGS.join(', ')})`);
const TICK_US = 1e6 / 100; // USER_HZ is 100 on Linux
const BODY = 'x'.repeat(100);

const children = new Set();
function launch(cmd, args, log, env = process.env) {
  const fd = fs.openSync(log, 'a');
  const child = spawn(cmd, args, { stdio: ['ignore', fd, fd], detached: true, cwd: ROOT, env });
  fs.closeSync(fd);
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}
function killTree(child, sig = 'SIGTERM') {
  try { process.kill(-child.pid, sig); } catch { /* gone */ }
}
process.on('exit', () => { for (const c of children) killTree(c, 'SIGKILL'); });
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function freePort() {
  const s = net.createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}
function get(port, p = '/') {
  return new Promise((resolve) => {
    http.get({ host: '127.0.0.1', port, path: p, agent: false, timeout: 1000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    }).on('error', () => resolve(0)).on('timeout', function onTimeout() { this.destroy(); });
  });
}
async function waitFor(check, ms, what) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}
function descendants(pid) {
  const out = [];
  const walk = (p) => {
    let kids = [];
    try { kids = fs.readFileSync(`/proc/${p}/task/${p}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number); } catch { /* gone */ }
    for (const k of kids) { out.push(k); walk(k); }
  };
  walk(pid);
  return out;
}
/** utime + stime, in ticks, of pid and (unless `alone`) every descendant. */
function treeTicks(pid, alone = false) {
  let ticks = 0;
  for (const p of alone ? [pid] : [pid, ...descendants(pid)]) {
    try {
      const stat = fs.readFileSync(`/proc/${p}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(f[11]) + Number(f[12]);
    } catch { /* gone */ }
  }
  return ticks;
}
function wrk(port, seconds) {
  return new Promise((resolve, reject) => {
    const child = spawn('taskset', ['-c', String(LOAD_CPU), 'wrk', '-t1', '-c50', `-d${seconds}s`, `http://127.0.0.1:${port}/`]);
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.on('exit', (code) => {
      const requests = Number(/(\d+) requests in/.exec(out)?.[1]);
      const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0);
      if (code !== 0 || !requests) reject(new Error(`wrk failed: ${out}`));
      else resolve({ requests, non2xx, rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]) });
    });
  });
}

function yaml(port, backend, config, redisUrl) {
  const workers = config.startsWith('workers2') ? 2 : 1;
  const store = config.endsWith('redis') ? `\n    store: { type: redis, url: "${redisUrl}", key_prefix: "share-cost:" }` : '';
  return `server:
  listen_port: ${port}
  listen_address: "127.0.0.1"
  max_connections: 10000
  workers: ${workers}
load_balancing:
  health_check: { active: { enabled: false }, passive: { enabled: false } }
  retries: { max_retries: 0 }
  upstreams:
    - { name: b, address: 127.0.0.1, port: ${backend} }
middleware:
  rate_limit:
    enabled: ${!config.endsWith('off')}
    requests_per_minute: 60000000
    burst_size: 10000000${store}
logging:
  level: warn
`;
}

async function main() {
  if (!fs.existsSync(path.join(ROOT, 'dist/cli.js'))) throw new Error('run npm run build first');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-share-'));
  fs.chmodSync(dir, 0o711);
  const backendPort = await freePort();
  const conf = path.join(dir, 'nginx.conf');
  fs.writeFileSync(conf, `worker_processes 1;\ndaemon off;\npid ${dir}/nginx.pid;\nerror_log ${dir}/nginx-error.log warn;\nevents { worker_connections 4096; }\nhttp {\n  access_log off;\n  keepalive_requests 1000000;\n  client_body_temp_path ${dir}/cb; proxy_temp_path ${dir}/pt; fastcgi_temp_path ${dir}/ft; uwsgi_temp_path ${dir}/ut; scgi_temp_path ${dir}/st;\n  server { listen 127.0.0.1:${backendPort}; location / { return 200 "${BODY}"; } }\n}\n`);
  const nginx = launch('taskset', ['-c', String(LOAD_CPU), 'nginx', '-p', dir, '-c', conf, '-e', `${dir}/nginx-error.log`], path.join(dir, 'nginx.out'));
  await waitFor(async () => (await get(backendPort)) === 200, 10_000, 'nginx');
  const redisPort = await freePort();
  const redis = launch('taskset', ['-c', String(LOAD_CPU), 'redis-server', '--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], path.join(dir, 'redis.out'));
  await sleep(300);
  const redisUrl = `redis://127.0.0.1:${redisPort}`;

  const samples = Object.fromEntries(chosen.map((c) => [c, []]));
  for (let round = 1; round <= ROUNDS; round++) {
    for (const config of chosen) {
      const port = await freePort();
      const file = path.join(dir, `${config}.yaml`);
      fs.writeFileSync(file, yaml(port, backendPort, config, redisUrl));
      const env = { ...process.env };
      delete env.LOG_LEVEL;
      const proxy = launch('taskset', ['-c', String(PROXY_CPU), process.execPath, 'dist/cli.js', '--config', file], path.join(dir, `${config}.out`), env);
      try {
        await waitFor(async () => (await get(port, '/health')) === 200, 20_000, `tollgate ${config}`);
        await wrk(port, 2); // warm-up
        const t0 = treeTicks(proxy.pid);
        const p0 = treeTicks(proxy.pid, true);
        const r0 = treeTicks(redis.pid);
        const result = await wrk(port, DURATION);
        const t1 = treeTicks(proxy.pid);
        const p1 = treeTicks(proxy.pid, true);
        const r1 = treeTicks(redis.pid);
        const sample = {
          rps: result.rps,
          cpuUs: ((t1 - t0) * TICK_US) / result.requests,
          redisUs: ((r1 - r0) * TICK_US) / result.requests,
          // With workers, proxy.pid is the primary (taskset execs node): its own share of the CPU time.
          primaryUs: ((p1 - p0) * TICK_US) / result.requests,
          non2xx: result.non2xx,
          processes: 1 + descendants(proxy.pid).length,
        };
        samples[config].push(sample);
        console.error(`round ${round} ${config}: ${sample.rps.toFixed(0)} req/s, ${sample.cpuUs.toFixed(1)} µs CPU/req (tollgate), ${sample.redisUs.toFixed(1)} µs (redis), non-2xx ${sample.non2xx}`);
      } finally {
        killTree(proxy);
        await new Promise((r) => (proxy.exitCode !== null || proxy.signalCode !== null ? r() : proxy.once('exit', r)));
        killTree(proxy, 'SIGKILL');
      }
    }
  }
  killTree(nginx);
  killTree(redis);

  const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor((s.length - 1) / 2)]; };
  const base = samples.memory?.length ? median(samples.memory.map((s) => s.cpuUs)) : null;
  const baseRps = samples.memory?.length ? median(samples.memory.map((s) => s.rps)) : null;
  const rows = chosen.map((c) => {
    const cpu = median(samples[c].map((s) => s.cpuUs));
    const rps = median(samples[c].map((s) => s.rps));
    const redisCpu = median(samples[c].map((s) => s.redisUs));
    const primary = c.startsWith('workers2') ? median(samples[c].map((s) => s.primaryUs)).toFixed(1) : '–';
    const all = samples[c].map((s) => s.cpuUs.toFixed(1)).join(' / ');
    return `| ${c} | ${Math.round(rps).toLocaleString('en-US')} | ${baseRps ? (rps / baseRps).toFixed(2) : '–'} | ${cpu.toFixed(1)} | ${base !== null ? (cpu - base >= 0 ? '+' : '') + (cpu - base).toFixed(1) : '–'} | ${primary} | ${redisCpu.toFixed(1)} | ${all} |`;
  });
  console.log([
    '| config | req/s (median) | req/s ratio to memory | Tollgate CPU µs/request | vs memory | of which the primary | redis-server CPU µs/request | Tollgate µs/request, each round |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
    ...rows,
    '',
    `- ${ROUNDS} rounds, configs in turn; wrk -t1 -c50 -d${DURATION}s after a 2 s warm-up; Tollgate tree (primary and workers) on CPU ${PROXY_CPU}; nginx (1 worker), redis-server and wrk on CPU ${LOAD_CPU}`,
    '- Tollgate: no auth, rate limit that never triggers (one client: one hot key), logging at warn, no health checks or retries',
    `- node ${process.version}, ${os.cpus()[0]?.model} (${os.availableParallelism()} CPUs), ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC`,
  ].join('\n'));
  fs.rmSync(dir, { recursive: true, force: true });
}

main().then(() => process.exit(0), (err) => {
  console.error('share-cost:', err.stack ?? err);
  process.exit(1);
});
