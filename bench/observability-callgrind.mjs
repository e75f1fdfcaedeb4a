#!/usr/bin/env node
// Instructions per request of Tollgate with monitoring on (metrics, tracing, Server-Timing: the defaults)
// and off, counted by valgrind's callgrind: deterministic where req/s on a shared machine is not.
// For each side: start `node dist/cli.js` under callgrind (the brief's config: bearer auth, a rate limit
// that never triggers, info logging to a file), send WARMUP requests so V8 has compiled the hot path, zero
// the counters (callgrind_control -z), send REQUESTS requests (keep-alive, 8 at a time), dump
// (callgrind_control -d) and divide the instructions by REQUESTS. The backend and the client share one
// Node process outside valgrind.
//
//   node bench/observability-callgrind.mjs [--requests N] [--warmup N] [--repeats N]   (defaults 3000, 3000, 2)
//   wrap it in `flock /tmp/bench.lock ...` on a shared machine
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i === -1 ? dflt : Number(args[i + 1]);
};
const REQUESTS = opt('--requests', 3000);
const WARMUP = opt('--warmup', 3000);
const REPEATS = opt('--repeats', 2);
const TOKEN = 'dev-token-123';
const BODY = 'tollgate-bench-payload:'.padEnd(100, '0123456789abcdefghijklmnopqrstuvwxyz');

async function freePort() {
  const s = net.createServer().listen(0, '127.0.0.1');
  await new Promise((r) => s.once('listening', r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
function get(port, headers = { authorization: `Bearer ${TOKEN}` }) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', headers, agent }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', () => resolve(0));
  });
}

async function send(port, n) {
  let next = 0;
  let failed = 0;
  const worker = async () => {
    while (next < n) {
      next++;
      if ((await get(port)) !== 200) failed++;
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  if (failed > 0) throw new Error(`${failed} of ${n} requests failed`);
}

function totalIr(file) {
  // The dump's "summary:" (or "totals:") line holds the instruction count for the events collected.
  const text = fs.readFileSync(file, 'utf8');
  const m = /^(?:summary|totals):\s+(\d+)/m.exec(text);
  if (!m) throw new Error(`no totals in ${file}`);
  return Number(m[1]);
}

async function measure(dir, backendPort, monitoring, repeat) {
  const port = await freePort();
  const name = `${monitoring ? 'on' : 'off'}-${repeat}`;
  const cfg = path.join(dir, `${name}.yaml`);
  fs.writeFileSync(cfg, `server: { listen_port: ${port}, listen_address: "127.0.0.1" }
load_balancing:
  upstreams:
    - { name: "backend1", address: "127.0.0.1", port: ${backendPort} }
middleware:
  auth: { enabled: true, valid_tokens: ["${TOKEN}"] }
  rate_limit: { enabled: true, requests_per_minute: 60000000, burst_size: 10000000 }
logging: { level: info, file: ${JSON.stringify(path.join(dir, `${name}.log`))} }
admin: { port: 0 }
metrics: { enabled: ${monitoring} }
tracing: { enabled: ${monitoring}, server_timing: ${monitoring} }
`);
  const out = path.join(dir, `callgrind.${name}`);
  const child = spawn('taskset', ['-c', '0', 'valgrind', '--tool=callgrind', '--smc-check=all-non-file', `--callgrind-out-file=${out}`, process.execPath, 'dist/cli.js', '--config', cfg], {
    cwd: ROOT,
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, LOG_LEVEL: '' },
  });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const deadline = Date.now() + 120_000;
  while ((await get(port)) !== 200) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`proxy under valgrind did not start: ${stderr.slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 500));
  }
  await send(port, WARMUP);
  execFileSync('callgrind_control', ['-z', String(child.pid)], { stdio: 'ignore' });
  await send(port, REQUESTS);
  execFileSync('callgrind_control', ['-d', 'measured', String(child.pid)], { stdio: 'ignore' });
  const dump = fs.readdirSync(dir).filter((f) => f.startsWith(`callgrind.${name}.`)).map((f) => path.join(dir, f)).sort().at(-1);
  const ir = totalIr(dump);
  child.kill('SIGTERM');
  await new Promise((r) => child.once('exit', r));
  return ir / REQUESTS;
}

async function main() {
  if (!fs.existsSync(path.join(ROOT, 'dist/cli.js'))) execFileSync('npm', ['run', 'build'], { cwd: ROOT, stdio: 'inherit' });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-callgrind-'));
  const backend = http.createServer((_req, res) => res.end(BODY)).listen(0, '127.0.0.1');
  await new Promise((r) => backend.once('listening', r));
  const results = { on: [], off: [] };
  console.log(`instructions per request under callgrind: ${WARMUP} warm-up, ${REQUESTS} measured, ${REPEATS} repeats per side; node ${process.version}`);
  for (let i = 0; i < REPEATS; i++) {
    for (const monitoring of i % 2 === 0 ? [true, false] : [false, true]) {
      const perRequest = await measure(dir, backend.address().port, monitoring, i);
      results[monitoring ? 'on' : 'off'].push(perRequest);
      console.log(`${monitoring ? 'on ' : 'off'} run ${i + 1}: ${Math.round(perRequest).toLocaleString('en-US')} instructions per request`);
    }
  }
  const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const on = mean(results.on);
  const off = mean(results.off);
  console.log(`mean: on ${Math.round(on).toLocaleString('en-US')}, off ${Math.round(off).toLocaleString('en-US')} instructions per request; monitoring adds ${((on / off - 1) * 100).toFixed(1)}%`);
  console.log(`${off / on >= 0.95 ? 'PASS' : 'FAIL'} monitoring cost: throughput implied by instructions on/off ${(off / on).toFixed(3)} (>= 0.95)`);
  backend.close();
  agent.destroy();
  fs.rmSync(dir, { recursive: true, force: true });
}

main().catch((err) => {
  console.error(`observability-callgrind: ${err.stack ?? err}`);
  process.exit(1);
});
