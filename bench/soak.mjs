#!/usr/bin/env node
// Memory over a long run: Tollgate with the standard config (bearer auth, a rate limit that never triggers,
// info logging to a file, metrics and tracing on) under `wrk -t1 -c50` for DURATION seconds after a
// warm-up. Every SAMPLE seconds the proxy runs a full GC (bench/soak/heap-probe.cjs, on SIGUSR2) and
// records its heap; the target is the heap after GC at the end within 10% of its value after the warm-up.
// The proxy is pinned to CPU 0; wrk and the backend (a small node:http server, 100-byte body) to CPU 1.
//
//   node bench/soak.mjs [--duration S] [--warmup S] [--sample S]   (defaults 300, 30, 30)
//   wrap it in `flock /tmp/bench.lock ...` on a shared machine
//
// With --faults it runs the fault soak instead (bench/soak/faults.mjs): `npm run soak -- --faults`.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { ARGS, ROOT, freePorts, launch, numberOption } from './common.mjs';

const DURATION = numberOption('--duration', 300);
const WARMUP = numberOption('--warmup', 30);
const SAMPLE = numberOption('--sample', 30);
const TOKEN = 'dev-token-123';

function get(port) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', headers: { authorization: `Bearer ${TOKEN}` } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', () => resolve(0));
  });
}

async function waitFor(port, child) {
  for (let i = 0; i < 200; i++) {
    if ((await get(port)) === 200) return;
    if (child.exitCode !== null) throw new Error(`process exited with ${child.exitCode}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`nothing answered 200 on port ${port}`);
}

function wrk(port, seconds) {
  return new Promise((resolve, reject) => {
    const child = spawn('taskset', ['-c', '1', 'wrk', '-t1', '-c50', `-d${seconds}s`, '-H', `Authorization: Bearer ${TOKEN}`, `http://127.0.0.1:${port}/`], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('exit', (code) => {
      const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
      if (code !== 0 || !rps) reject(new Error(`wrk failed: ${out}`));
      else resolve(Number(rps[1]));
    });
  });
}

const MiB = (b) => (b / 1024 / 1024).toFixed(1);

async function probe(pid, file) {
  const before = fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).length : 0;
  process.kill(pid, 'SIGUSR2');
  for (let i = 0; i < 100; i++) {
    await new Promise((r) => setTimeout(r, 50));
    const lines = fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter(Boolean) : [];
    if (lines.length > before) return JSON.parse(lines.at(-1));
  }
  throw new Error('the proxy did not answer the heap probe');
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-soak-'));
  const [backendPort, port] = await freePorts(2);
  const backend = launch('taskset', ['-c', '1', process.execPath, '-e',
    `const b='x'.repeat(100);require('node:http').createServer((q,s)=>s.end(b)).listen(${backendPort},'127.0.0.1')`]);
  const cfg = path.join(dir, 'tollgate.yaml');
  fs.writeFileSync(cfg, `server: { listen_port: ${port}, listen_address: "127.0.0.1" }
load_balancing:
  upstreams:
    - { name: "backend1", address: "127.0.0.1", port: ${backendPort} }
middleware:
  auth: { enabled: true, valid_tokens: ["${TOKEN}"] }
  rate_limit: { enabled: true, requests_per_minute: 60000000, burst_size: 10000000 }
logging: { level: info, file: ${JSON.stringify(path.join(dir, 'access.log'))} }
admin: { port: 0 }
`);
  const probeFile = path.join(dir, 'heap.jsonl');
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'LOG_LEVEL'));
  const proxy = launch('taskset', ['-c', '0', process.execPath, '--expose-gc', '--require', path.join(ROOT, 'bench/soak/heap-probe.cjs'), 'dist/cli.js', '--config', cfg],
    { env: { ...env, HEAP_PROBE_FILE: probeFile } });
  await waitFor(backendPort, backend);
  await waitFor(port, proxy);
  console.log(`soak: node ${process.version}; warm-up ${WARMUP} s, then ${DURATION} s of wrk -t1 -c50, heap after GC every ${SAMPLE} s`);
  const warm = await wrk(port, WARMUP);
  const base = await probe(proxy.pid, probeFile);
  console.log(`after warm-up (${warm.toFixed(0)} req/s): heap used ${MiB(base.heapUsed)} MiB, rss ${MiB(base.rss)} MiB`);
  const samples = [];
  for (let done = 0; done < DURATION; done += SAMPLE) {
    const seconds = Math.min(SAMPLE, DURATION - done);
    const rps = await wrk(port, seconds);
    const s = await probe(proxy.pid, probeFile);
    samples.push(s);
    console.log(`+${done + seconds} s (${rps.toFixed(0)} req/s): heap used ${MiB(s.heapUsed)} MiB (${((s.heapUsed / base.heapUsed - 1) * 100).toFixed(1)}%), rss ${MiB(s.rss)} MiB`);
  }
  const last = samples.at(-1);
  const ratio = last.heapUsed / base.heapUsed;
  console.log(`${ratio <= 1.1 ? 'PASS' : 'FAIL'} heap after GC at the end within 10% of after warm-up: ${MiB(last.heapUsed)} vs ${MiB(base.heapUsed)} MiB (${ratio.toFixed(3)} x)`);
  fs.rmSync(dir, { recursive: true, force: true });
  return ratio <= 1.1 ? 0 : 1;
}

const run = ARGS.includes('--faults') ? (await import('./soak/faults.mjs')).faultSoak : main;
run().then((code) => process.exit(code), (err) => {
  console.error(`soak: ${err.stack ?? err}`);
  process.exit(1);
});
