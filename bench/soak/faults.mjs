// The fault soak (`npm run soak -- --faults`): moderate load from several clients for DURATION seconds
// while the things around Tollgate fail on a schedule: a backend is killed (SIGKILL) and started again, Redis
// is killed and started again, the config is reloaded (POST /api/reload and SIGHUP, in turn), clients
// reset their connections in the middle of a request body, and slowloris connections trickle their heads.
//
// Every request a load client sends must end in a response (any status) or in a cut the soak expects
// (the mid-body resets it makes itself; slowloris connections closed by the proxy's header timeout).
// Anything else (a connection error, a request with no answer after 30 s, the proxy exiting, a fatal log
// line) is a loss and fails the run. At the start (after a warm-up) and at the end (after the load stops)
// it records the proxy's heap after a full GC, its RSS and its open file descriptors (/proc/PID/fd).
//
//   npm run soak -- --faults [--duration S] [--seed N]     (defaults 600 s, seed from the clock, printed)
//
// The proxy runs on CPU 0; the backends, Redis and this script on CPU 1 (taskset), as in the benchmarks.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { ROOT, freePorts, launch, numberOption } from '../common.mjs';

const DURATION = numberOption('--duration', 600);
const SEED = numberOption('--seed', Date.now() % 1_000_000);
const WARMUP = Math.min(15, Math.max(3, Math.round(DURATION / 40)));
const TOKEN = 'soak-token';
const CLIENTS = 6; // keep-alive clients, each one request at a time
const FRESH_CLIENTS = 2; // clients that open a new connection for every request
const FAULT_EVERY_MS = 10_000;
const REQUEST_DEADLINE_MS = 30_000;

// A small seeded generator (mulberry32), so a run can be repeated with its printed seed.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const random = rng(SEED);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const MiB = (b) => (b / 1024 / 1024).toFixed(1);

function which(names) {
  for (const name of names) {
    try {
      return execFileSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).trim();
    } catch {
      /* next */
    }
  }
  return undefined;
}

const BACKEND = `
const http = require('node:http');
const body = Buffer.alloc(512, 'x');
http.createServer((req, res) => {
  let n = 0;
  req.on('data', (c) => (n += c.length));
  req.on('end', () => {
    res.setHeader('x-backend', process.env.NAME);
    res.end(req.method === 'GET' ? body : String(n));
  });
}).listen(Number(process.env.PORT), '127.0.0.1');
`;

class Backend {
  constructor(name, port) {
    this.name = name;
    this.port = port;
    this.child = undefined;
  }
  start() {
    this.child = launch('taskset', ['-c', '1', process.execPath, '-e', BACKEND], { env: { ...process.env, NAME: this.name, PORT: String(this.port) } });
  }
  kill() {
    try {
      process.kill(-this.child.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

class Redis {
  constructor(bin, port, dir) {
    this.bin = bin;
    this.port = port;
    this.dir = dir;
  }
  start() {
    this.child = launch('taskset', ['-c', '1', this.bin, '--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', this.dir, '--loglevel', 'warning']);
  }
  kill() {
    try {
      process.kill(-this.child.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

function configText({ port, adminPort, backends, redisPort, generation }) {
  return `server:
  listen_port: ${port}
  listen_address: "127.0.0.1"
  header_timeout_ms: 5000
  shutdown_grace_ms: 5000
admin: { port: ${adminPort} }
services:
  app:
    strategy: round_robin
    upstreams:
${backends.map((b) => `      - { name: ${b.name}, address: 127.0.0.1, port: ${b.port} }`).join('\n')}
    health_check:
      active: { enabled: true, type: http, interval_ms: 1000, timeout_ms: 500, unhealthy_threshold: 2 }
middleware:
  auth: { enabled: true, auth_type: bearer, valid_tokens: ["${TOKEN}"] }
  rate_limit:
    enabled: true
    requests_per_minute: 60000000
    burst_size: 10000000
    store: { type: redis, url: "redis://127.0.0.1:${redisPort}", timeout_ms: 100, on_error: allow }
routes:
  - name: api
    match: { path_prefix: /api }
    service: app
    strip_prefix: true
    response_headers: { set: { X-Soak-Generation: "${generation}" } }
  - name: web
    match: { path_prefix: / }
    service: app
logging: { level: info, file: ${JSON.stringify(path.join(os.tmpdir(), 'tollgate-soak-faults', 'proxy.log'))} }
`;
}

/** Outcome counters for the whole run. */
const tally = { sent: 0, byStatus: new Map(), lost: new Map(), hung: 0, midBodyResets: 0, slowloris: { opened: 0, closedWith408: 0, closedOther: 0, open: 0 } };
const count = (map, key) => map.set(key, (map.get(key) ?? 0) + 1);

function oneRequest(port, agent, method, reqPath) {
  return new Promise((resolve) => {
    const body = method === 'GET' ? undefined : Buffer.alloc(Math.floor(random() * 4000), 'b');
    tally.sent++;
    let settled = false;
    const done = (kind, key) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (kind === 'status') count(tally.byStatus, key);
      else count(tally.lost, key);
      resolve();
    };
    const timer = setTimeout(() => {
      tally.hung++;
      req.destroy(new Error('no answer within 30 s'));
    }, REQUEST_DEADLINE_MS);
    const headers = { authorization: `Bearer ${TOKEN}` };
    if (body) headers['content-length'] = body.length;
    const req = http.request({ host: '127.0.0.1', port, method, path: reqPath, agent, headers }, (res) => {
      res.resume();
      res.on('end', () => done('status', res.statusCode));
      res.on('error', (err) => done('lost', `response cut: ${err.code ?? err.message}`));
    });
    req.on('error', (err) => done('lost', `${method}: ${err.code ?? err.message}`));
    req.end(body);
  });
}

async function loadClient(port, fresh, until) {
  const agent = fresh ? false : new http.Agent({ keepAlive: true, maxSockets: 1 });
  while (Date.now() < until) {
    const r = random();
    const method = r < 0.7 ? 'GET' : r < 0.85 ? 'PUT' : 'POST';
    await oneRequest(port, agent, method, random() < 0.5 ? `/api/item/${Math.floor(random() * 1000)}` : '/page');
    await sleep(2);
  }
  if (agent) agent.destroy();
}

/** A POST that announces 8000 bytes, sends part of them and resets the connection. */
function midBodyReset(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => {
      s.write(`POST /api/upload HTTP/1.1\r\nHost: soak\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Length: 8000\r\n\r\n${'z'.repeat(Math.floor(random() * 4000))}`);
      setTimeout(() => {
        s.resetAndDestroy();
        tally.midBodyResets++;
        resolve();
      }, 20 + Math.floor(random() * 200));
    });
    s.on('error', () => resolve());
  });
}

/** A connection that sends its request head one byte every 2 s; the proxy's header timeout must end it. */
function slowloris(port) {
  tally.slowloris.opened++;
  tally.slowloris.open++;
  const s = net.connect(port, '127.0.0.1');
  const head = `GET /api/slow HTTP/1.1\r\nHost: soak\r\nAuthorization: Bearer ${TOKEN}\r\nX-Slow: ${'s'.repeat(200)}\r\n\r\n`;
  let i = 0;
  let got = '';
  const timer = setInterval(() => {
    if (i < head.length && !s.destroyed) s.write(head[i++]);
  }, 2000);
  s.on('data', (d) => (got += d.toString('latin1')));
  s.on('error', () => {});
  s.on('close', () => {
    clearInterval(timer);
    tally.slowloris.open--;
    if (got.startsWith('HTTP/1.1 408')) tally.slowloris.closedWith408++;
    else tally.slowloris.closedOther++;
  });
}

function adminPost(adminPort, p) {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port: adminPort, method: 'POST', path: p, headers: { 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode, text }));
    });
    req.on('error', (err) => resolve({ status: 0, text: err.message }));
    req.end('{}');
  });
}

function fds(pid) {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

async function probe(pid, file) {
  const before = fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).length : 0;
  process.kill(pid, 'SIGUSR2');
  for (let i = 0; i < 100; i++) {
    await sleep(50);
    const lines = fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter(Boolean) : [];
    if (lines.length > before) return { ...JSON.parse(lines.at(-1)), fds: fds(pid) };
  }
  throw new Error('the proxy did not answer the heap probe');
}

async function waitHttp(port, child, what) {
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise((resolve) => {
      const req = http.get({ host: '127.0.0.1', port, path: '/', headers: { authorization: `Bearer ${TOKEN}` } }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode < 500));
      });
      req.on('error', () => resolve(false));
    });
    if (ok) return;
    if (child.exitCode !== null) throw new Error(`${what} exited with ${child.exitCode}`);
    await sleep(100);
  }
  throw new Error(`${what} did not answer on port ${port}`);
}

export async function faultSoak() {
  const redisBin = which(['redis-server']);
  if (!redisBin) throw new Error('redis-server not found: apt-get install -y redis-server');
  const dir = path.join(os.tmpdir(), 'tollgate-soak-faults');
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const [port, adminPort, redisPort, ...backendPorts] = await freePorts(6);
  const backends = backendPorts.map((p, i) => new Backend(`b${i + 1}`, p));
  for (const b of backends) b.start();
  const redis = new Redis(redisBin, redisPort, dir);
  redis.start();
  const cfg = path.join(dir, 'tollgate.yaml');
  let generation = 0;
  const writeConfig = () => fs.writeFileSync(cfg, configText({ port, adminPort, backends, redisPort, generation }));
  writeConfig();
  const probeFile = path.join(dir, 'heap.jsonl');
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'LOG_LEVEL'));
  const proxy = launch('taskset', ['-c', '0', process.execPath, '--expose-gc', '--require', path.join(ROOT, 'bench/soak/heap-probe.cjs'), 'dist/cli.js', '--config', cfg], {
    env: { ...env, HEAP_PROBE_FILE: probeFile },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let proxyStderr = '';
  proxy.stderr.on('data', (d) => (proxyStderr += d));
  let proxyExit;
  proxy.on('exit', (code, signal) => (proxyExit = { code, signal }));
  await waitHttp(port, proxy, 'the proxy');
  for (const b of backends) await waitHttp(b.port, b.child, b.name);
  // The proxy's pid (taskset execs node, so the child's pid is the proxy's).
  const pid = proxy.pid;
  console.log(`fault soak: node ${process.version}, seed ${SEED}; ${WARMUP} s warm-up, then ${DURATION} s with ${CLIENTS} keep-alive and ${FRESH_CLIENTS} new-connection clients, a fault every ${FAULT_EVERY_MS / 1000} s`);

  const warmEnd = Date.now() + WARMUP * 1000;
  await Promise.all(Array.from({ length: CLIENTS }, () => loadClient(port, false, warmEnd)));
  const start = await probe(pid, probeFile);
  const warmSent = tally.sent;
  tally.sent = 0;
  tally.byStatus.clear();
  const warmLost = [...tally.lost.entries()];
  tally.lost.clear();
  console.log(`after warm-up (${warmSent} requests, lost ${JSON.stringify(warmLost)}): heap ${MiB(start.heapUsed)} MiB, rss ${MiB(start.rss)} MiB, fds ${start.fds}`);

  const t0 = Date.now();
  const until = t0 + DURATION * 1000;
  const faults = [];
  const faultLoop = (async () => {
    const kinds = ['kill a backend', 'reload (POST /api/reload)', 'kill Redis', 'reload (SIGHUP)'];
    for (let i = 0; Date.now() + FAULT_EVERY_MS < until; i++) {
      await sleep(FAULT_EVERY_MS);
      const kind = kinds[i % kinds.length];
      const at = ((Date.now() - t0) / 1000).toFixed(0);
      if (kind === 'kill a backend') {
        const b = backends[Math.floor(random() * backends.length)];
        b.kill();
        faults.push(`${at} s: killed ${b.name}`);
        setTimeout(() => b.start(), 4000);
      } else if (kind === 'kill Redis') {
        redis.kill();
        faults.push(`${at} s: killed Redis`);
        setTimeout(() => redis.start(), 4000);
      } else {
        generation++;
        writeConfig();
        if (kind.includes('SIGHUP')) {
          process.kill(pid, 'SIGHUP');
          faults.push(`${at} s: SIGHUP (generation ${generation})`);
        } else {
          const r = await adminPost(adminPort, '/api/reload');
          faults.push(`${at} s: POST /api/reload (generation ${generation}): ${r.status}`);
          if (r.status !== 200) console.log(`reload answered ${r.status}: ${r.text}`);
        }
      }
    }
  })();
  const resetLoop = (async () => {
    while (Date.now() < until) {
      await midBodyReset(port);
      await sleep(500);
    }
  })();
  const slowLoop = (async () => {
    while (Date.now() + 30_000 < until) {
      for (let i = 0; i < 10; i++) slowloris(port);
      await sleep(30_000);
    }
  })();
  const report = setInterval(() => {
    const statuses = Object.fromEntries([...tally.byStatus.entries()].sort());
    console.log(`+${((Date.now() - t0) / 1000).toFixed(0)} s: sent ${tally.sent}, ${JSON.stringify(statuses)}, lost ${[...tally.lost.values()].reduce((a, b) => a + b, 0)}, resets ${tally.midBodyResets}, slowloris open ${tally.slowloris.open}`);
  }, 60_000);
  await Promise.all([
    ...Array.from({ length: CLIENTS }, () => loadClient(port, false, until)),
    ...Array.from({ length: FRESH_CLIENTS }, () => loadClient(port, true, until)),
    faultLoop,
    resetLoop,
    slowLoop,
  ]);
  clearInterval(report);
  // Let every backend and Redis come back, the slowloris connections end and the pools idle.
  await sleep(12_000);
  const end = proxyExit === undefined ? await probe(pid, probeFile) : undefined;
  const logText = fs.existsSync(path.join(dir, 'proxy.log')) ? fs.readFileSync(path.join(dir, 'proxy.log'), 'utf8') : '';
  const fatal = logText.split('\n').filter((l) => /"level":(50|60)/.test(l) && !/"msg":"(Request Completed|upstream)/.test(l));
  // Why each 5xx happened, from the proxy's own completion lines.
  const why = new Map();
  for (const line of logText.split('\n')) {
    if (!line.includes('"msg":"Request Completed"') || !/"status":5\d\d/.test(line)) continue;
    const l = JSON.parse(line);
    count(why, `${l.status} ${l.method} ${l.error} (${String(l.cause ?? '').split(':')[0]}, retries ${l.retries})`);
  }
  const answered = [...tally.byStatus.values()].reduce((a, b) => a + b, 0);
  const lost = [...tally.lost.values()].reduce((a, b) => a + b, 0);

  console.log('\n## Fault soak result');
  console.log(`- ${DURATION} s, seed ${SEED}, node ${process.version}`);
  console.log(`- requests sent: ${tally.sent}; answered: ${answered}; lost: ${lost}; hung (no answer in 30 s): ${tally.hung}`);
  console.log(`- answered by status: ${[...tally.byStatus.entries()].sort((a, b) => a[0] - b[0]).map(([s, n]) => `${s}: ${n}`).join(', ')}`);
  if (why.size) console.log(`- 5xx by cause (proxy log): ${[...why.entries()].map(([k, n]) => `${k}: ${n}`).join('; ')}`);
  if (lost) console.log(`- lost, by cause: ${[...tally.lost.entries()].map(([k, n]) => `${k}: ${n}`).join(', ')}`);
  console.log(`- connections cut on purpose: ${tally.midBodyResets} client resets mid-body; slowloris: ${tally.slowloris.opened} opened, ${tally.slowloris.closedWith408} closed by the proxy with 408, ${tally.slowloris.closedOther} closed otherwise, ${tally.slowloris.open} still open`);
  console.log(`- faults: ${faults.length} (${faults.filter((f) => f.includes('killed b')).length} backend kills, ${faults.filter((f) => f.includes('Redis')).length} Redis kills, ${faults.filter((f) => f.includes('reload') || f.includes('SIGHUP')).length} reloads)`);
  if (end) {
    console.log(`- heap after GC: ${MiB(start.heapUsed)} -> ${MiB(end.heapUsed)} MiB; RSS: ${MiB(start.rss)} -> ${MiB(end.rss)} MiB; open fds: ${start.fds} -> ${end.fds}`);
  }
  console.log(`- proxy: ${proxyExit === undefined ? 'running' : `EXITED ${JSON.stringify(proxyExit)}`}; error/fatal log lines other than request lines: ${fatal.length}`);
  for (const line of fatal.slice(0, 5)) console.log(`    ${line.slice(0, 300)}`);
  if (proxyStderr.trim()) console.log(`- proxy stderr: ${proxyStderr.slice(0, 500)}`);
  for (const f of faults) console.log(`    ${f}`);
  const ok = proxyExit === undefined && lost === 0 && tally.hung === 0 && tally.slowloris.open === 0 && tally.slowloris.closedOther === 0;
  console.log(ok ? 'PASS: every request answered, every cut expected' : 'FAIL');
  return ok ? 0 : 1;
}
