#!/usr/bin/env node
// Tollgate throughput benchmark. Normally started by bench/run.sh (npm run bench).
//
// Three nginx backends (one master, one worker, CPU 1) serve a fixed 100-byte
// body. wrk (CPU 1) measures, one after another:
//   direct   - backend 1 itself, no proxy (ratio baseline 1.00)
//   bare     - bench/bare-forwarder.mjs (node:http + undici, no features), CPU 0
//   tollgate - node dist/cli.js --config <generated yaml>, CPU 0
// and prints a Markdown table. The ratio column is the number that matters;
// absolute req/s depend on the machine.
//
// Flags: --quick (1 run of 3 s), --write (update docs/benchmarks.md), --strategies (Tollgate variants), --help
// Env:   BENCH_RUNS (3), BENCH_DURATION (10, seconds), BENCH_WARMUP (2),
//        BENCH_TARGETS (direct,bare,tollgate), BENCH_START_TIMEOUT (20),
//        BENCH_PROXY_CPU (0), BENCH_LOAD_CPU (1), BENCH_DOCS_FILE,
//        BENCH_TMPDIR and BENCH_PIDFILE (set by run.sh), BENCH_KEEP_TMP=1
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(BENCH_DIR, '..');

// ---------------------------------------------------------------- options

const USAGE = `usage: bash bench/run.sh [--quick] [--write] [--strategies]
  --strategies  also Tollgate with each other strategy, and without health checks or retries
  --quick   one 3 s run per target after the warm-up (smoke test)
  --write   also put the result block into docs/benchmarks.md
env: BENCH_RUNS, BENCH_DURATION (s), BENCH_WARMUP (s), BENCH_TARGETS,
     BENCH_START_TIMEOUT (s), BENCH_PROXY_CPU, BENCH_LOAD_CPU, BENCH_KEEP_TMP=1`;

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
const WARMUP = intEnv('BENCH_WARMUP', 2, 0);
const START_TIMEOUT_MS = intEnv('BENCH_START_TIMEOUT', 20) * 1000;
const PROXY_CPU = intEnv('BENCH_PROXY_CPU', 0, 0);
const LOAD_CPU = intEnv('BENCH_LOAD_CPU', 1, 0);
const THREADS = 1;
const CONNECTIONS = 50;
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
const ALL_TARGETS = ['direct', 'bare', 'tollgate', ...Object.keys(VARIANTS)];
const DEFAULT_TARGETS = flags.has('--strategies') ? ALL_TARGETS : ['direct', 'bare', 'tollgate'];
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
      throw new Error(`${what} exited before it was ready (${error ? error.message : signal ? `signal ${signal}` : `exit code ${code}`})`);
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

function wrkArgs(port, seconds, headers) {
  const args = ['-c', String(LOAD_CPU), 'wrk', `-t${THREADS}`, `-c${CONNECTIONS}`, `-d${seconds}s`, '--latency'];
  for (const h of headers) args.push('-H', h);
  args.push(`http://127.0.0.1:${port}/`);
  return args;
}

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
  return {
    rps: num(/Requests\/sec:\s+([\d.]+)/),
    requests: num(/(\d+) requests in /),
    p50: pct(50),
    p99: pct(99),
    non2xx,
    socket: { connect: socket[0], read: socket[1], write: socket[2], timeout: socket[3] },
    errors: non2xx + socket.reduce((a, b) => a + b, 0),
  };
}

async function wrk(port, seconds, headers) {
  const res = await runCapture('taskset', wrkArgs(port, seconds, headers), (seconds + 30) * 1000);
  const parsed = parseWrk(res.out);
  if (res.code !== 0 || parsed.rps === null) {
    const why = res.error ? res.error.message : `exit ${res.code ?? res.signal}`;
    throw new Error(`wrk failed (${why}): ${res.out.trim().split('\n').slice(-5).join(' | ')}`);
  }
  return parsed;
}

// ---------------------------------------------------------------- nginx backends

function nginxConf(dir, ports) {
  const p = (name) => path.join(dir, name);
  return `# generated by bench/bench.mjs
worker_processes 1;
daemon off;
master_process on;
pid ${p('nginx.pid')};
error_log ${p('nginx-error.log')} warn;
worker_rlimit_nofile 8192;
events {
  worker_connections 4096;
}
http {
  access_log off;
  server_tokens off;
  default_type text/plain;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  client_body_temp_path ${p('nginx-client-body')};
  proxy_temp_path ${p('nginx-proxy')};
  fastcgi_temp_path ${p('nginx-fastcgi')};
  uwsgi_temp_path ${p('nginx-uwsgi')};
  scgi_temp_path ${p('nginx-scgi')};
  server {
${ports.map((port) => `    listen 127.0.0.1:${port};`).join('\n')}
    location / {
      return 200 "${BODY}";
    }
  }
}
`;
}

async function startNginx(dir, ports) {
  const conf = path.join(dir, 'nginx.conf');
  fs.writeFileSync(conf, nginxConf(dir, ports));
  const logFile = path.join(dir, 'nginx.out');
  const child = launch('taskset', ['-c', String(LOAD_CPU), 'nginx', '-p', dir, '-c', conf, '-e', path.join(dir, 'nginx-error.log')], { log: logFile });
  try {
    for (const port of ports) {
      await waitReady(port, '/any/path', {}, (r) => r.status === 200, child, `nginx (port ${port})`);
      const r = await httpGet(port, '/');
      if (r.status !== 200 || r.body.length !== 100) {
        throw new Error(`nginx on ${port} answered ${r.status} with ${r.body?.length} bytes, expected 200 with 100`);
      }
    }
  } catch (err) {
    const t = [tail(logFile), tail(path.join(dir, 'nginx-error.log'))].filter(Boolean).join('\n');
    await stop(child);
    throw new Error(`${err.message}${t ? `\n${t}` : ''}`);
  }
  return child;
}

// ---------------------------------------------------------------- targets

function tollgateYaml(port, backendPorts, dir, variant = 'strategy: "round_robin"') {
  return `# generated by bench/bench.mjs: the rate limit is set so high it never triggers
server:
  listen_port: ${port}
  listen_address: "127.0.0.1"
  max_connections: 10000
load_balancing:
  ${variant}
  upstreams:
${backendPorts.map((p, i) => `    - { name: "backend${i + 1}", address: "127.0.0.1", port: ${p}, weight: 1 }`).join('\n')}
middleware:
  auth:
    enabled: true
    auth_type: "bearer"
    valid_tokens: ["${TOKEN}", "test-token-456"]
  rate_limit:
    enabled: true
    requests_per_minute: 60000000
    burst_size: 10000000
logging:
  level: info
  file: ${JSON.stringify(path.join(dir, 'tollgate.log'))}
`;
}

const okProxied = (r) => r.status === 200 && r.body.length === 100 && r.body.toString() === BODY;

// Start a node process on the proxy CPU and wait until it proxies.
async function startNodeTarget(name, nodeArgs, port, ready, dir) {
  const logFile = path.join(dir, `${name}.out`);
  const child = launch('taskset', ['-c', String(PROXY_CPU), process.execPath, ...nodeArgs], { log: logFile });
  try {
    await waitReady(port, ready.path, ready.headers, (r) => r.status === 200, child, name);
    const r = await httpGet(port, '/', ready.headers);
    if (r.error) throw new Error(`GET / failed: ${r.error.message}`);
    if (!okProxied(r)) {
      throw new Error(`GET / answered ${r.status} with ${r.body.length} bytes, expected 200 and the 100-byte backend body`);
    }
  } catch (err) {
    await stop(child);
    const t = tail(logFile, 10);
    throw new Error(`${err.message}${t ? `\n    ${name} output:\n${t.replace(/^/gm, '      ')}` : ''}`);
  }
  return child;
}

let buildNote = null;

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

function targetSpecs(ports, dir, nginx) {
  const backends = ports.backends;
  return {
    direct: {
      port: backends[0],
      headers: [],
      start: async () => null,
      rssPid: () => childrenOf(nginx.pid)[0] ?? null, // the single nginx worker
      rss: (pid) => readRssMiB(pid),
    },
    bare: {
      port: ports.bare,
      headers: [],
      start: () => startNodeTarget('bare',
        [path.join(BENCH_DIR, 'bare-forwarder.mjs'), String(ports.bare), backends.map((p) => `127.0.0.1:${p}`).join(',')],
        ports.bare, { path: '/', headers: {} }, dir),
      rssPid: (child) => child.pid,
      rss: (pid) => treeRssMiB(pid),
    },
    tollgate: {
      port: ports.tollgate,
      headers: [`Authorization: Bearer ${TOKEN}`],
      start: async () => {
        if (buildNote) throw new Error(buildNote);
        const cfg = path.join(dir, 'tollgate.yaml');
        fs.writeFileSync(cfg, tollgateYaml(ports.tollgate, backends, dir));
        return startNodeTarget('tollgate', [path.join('dist', 'cli.js'), '--config', cfg],
          ports.tollgate, { path: '/health', headers: { authorization: `Bearer ${TOKEN}` } }, dir);
      },
      rssPid: (child) => child.pid,
      rss: (pid) => treeRssMiB(pid),
    },
    ...Object.fromEntries(Object.entries(VARIANTS).map(([name, variant]) => [name, {
      port: ports.tollgate,
      headers: [`Authorization: Bearer ${TOKEN}`],
      start: async () => {
        if (buildNote) throw new Error(buildNote);
        const cfg = path.join(dir, `${name}.yaml`);
        fs.writeFileSync(cfg, tollgateYaml(ports.tollgate, backends, dir, variant));
        return startNodeTarget(name, [path.join('dist', 'cli.js'), '--config', cfg],
          ports.tollgate, { path: '/health', headers: { authorization: `Bearer ${TOKEN}` } }, dir);
      },
      rssPid: (child) => child.pid,
      rss: (pid) => treeRssMiB(pid),
    }])),
  };
}

async function benchTarget(name, spec) {
  log(`--- ${name}`);
  let child = null;
  try {
    child = await spec.start();
    if (WARMUP > 0) {
      log(`${name}: warm-up ${WARMUP} s`);
      await wrk(spec.port, WARMUP, spec.headers);
    }
    const runs = [];
    for (let i = 1; i <= RUNS; i++) {
      const r = await wrk(spec.port, DURATION, spec.headers);
      log(`${name}: run ${i}/${RUNS}: ${r.rps.toFixed(0)} req/s, p50 ${fmtMs(r.p50)} ms, p99 ${fmtMs(r.p99)} ms, errors ${r.errors}`);
      runs.push(r);
    }
    const pid = spec.rssPid(child);
    const rss = pid ? spec.rss(pid) : null;
    const died = child?.exitInfo ? `process exited during the runs (${child.exitInfo.signal ?? `code ${child.exitInfo.code}`})` : null;
    const sorted = [...runs].sort((a, b) => a.rps - b.rps);
    const median = sorted[Math.floor((sorted.length - 1) / 2)];
    return {
      name,
      ok: true,
      rps: median.rps,
      p50: median.p50,
      p99: median.p99,
      errors: runs.reduce((s, r) => s + r.errors, 0),
      socket: runs.reduce((s, r) => { for (const k of Object.keys(s)) s[k] += r.socket[k]; return s; }, { connect: 0, read: 0, write: 0, timeout: 0 }),
      non2xx: runs.reduce((s, r) => s + r.non2xx, 0),
      rss,
      note: died,
    };
  } catch (err) {
    log(`${name}: FAILED: ${err.message}`);
    return { name, ok: false, reason: err.message.split('\n')[0] };
  } finally {
    await stop(child);
  }
}

// ---------------------------------------------------------------- report

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
  return {
    nginx: /nginx\/(\S+)/.exec(ng.out)?.[1] ?? 'unknown',
    wrk: /wrk\s+(\S+)/.exec(wk.out)?.[1] ?? 'unknown',
  };
}

function report(results, meta) {
  const direct = results.find((r) => r.name === 'direct' && r.ok);
  const bare = results.find((r) => r.name === 'bare' && r.ok);
  const rows = results.map((r) => {
    if (!r.ok) return `| ${r.name} | failed | – | – | – | – | – | – |`;
    const ratio = direct ? (r.rps / direct.rps).toFixed(2) : 'n/a';
    const toBare = bare && r.name !== 'direct' ? (r.rps / bare.rps).toFixed(2) : '–';
    const rss = r.rss === null ? 'n/a' : r.rss.toFixed(1);
    return `| ${r.name} | ${Math.round(r.rps).toLocaleString('en-US')} | ${ratio} | ${toBare} | ${fmtMs(r.p50)} | ${fmtMs(r.p99)} | ${r.errors} | ${rss} |`;
  });
  const notes = [];
  for (const r of results) {
    if (!r.ok) notes.push(`- ${r.name} failed: ${r.reason}`);
    else {
      if (r.errors > 0) {
        const s = r.socket;
        notes.push(`- ${r.name} errors: ${r.non2xx} non-2xx/3xx, socket connect ${s.connect} / read ${s.read} / write ${s.write} / timeout ${s.timeout}`);
      }
      if (r.note) notes.push(`- ${r.name}: ${r.note}`);
    }
  }
  const cmd = ['taskset', ...wrkArgs('<port>', DURATION, [])].map(shellQuote).join(' ')
    .replace(shellQuote('http://127.0.0.1:<port>/'), 'http://127.0.0.1:<port>/');
  const lines = [
    '| target | req/s (median) | ratio to direct | ratio to bare | p50 ms | p99 ms | errors | RSS MiB |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows,
    '',
    ...(notes.length ? [...notes, ''] : []),
    `- wrk: \`${cmd}\` (tollgate adds \`-H ${shellQuote(`Authorization: Bearer ${TOKEN}`)}\`)`,
    `- ${RUNS} run${RUNS > 1 ? 's' : ''} of ${DURATION} s per target after a ${WARMUP} s warm-up; the row is the median run by req/s; errors are summed over all runs${QUICK ? ' (--quick smoke run: numbers are rough)' : ''}`,
    `- proxy on CPU ${PROXY_CPU}; nginx (1 worker, 3 ports, 100-byte body) and wrk on CPU ${LOAD_CPU}; RSS is the proxy process (direct: the nginx worker) after the runs`,
    `- node ${process.version}, nginx ${meta.nginx}, wrk ${meta.wrk}`,
    `- date: ${meta.date}`,
    `- CPU: ${meta.cpu}`,
  ];
  return lines.join('\n');
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
Three nginx backends return a fixed 100-byte body; wrk drives 50 keep-alive
connections from one thread at each target in turn: nginx itself (\`direct\`),
a few-line node:http + undici forwarder with no features (\`bare\`), and
Tollgate with bearer auth and a rate limit that never triggers. The proxy is
pinned to one CPU, nginx and wrk to the other. Absolute req/s depend on the
machine; compare the ratio column, which is each target's req/s divided by
the direct run on the same machine in the same session.

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
  log(`targets ${TARGETS.join(', ')}; ${RUNS} x ${DURATION} s (+${WARMUP} s warm-up) each; tmp ${tmpDir}`);

  if (TARGETS.some((t) => t.startsWith('tollgate'))) await ensureTollgateBuilt(tmpDir);

  const [b1, b2, b3, bare, tollgate] = await freePorts(5);
  const ports = { backends: [b1, b2, b3], bare, tollgate };

  log(`starting nginx on 127.0.0.1:${ports.backends.join(', ')}`);
  const nginx = await startNginx(tmpDir, ports.backends);
  const specs = targetSpecs(ports, tmpDir, nginx);

  const results = [];
  for (const name of TARGETS) {
    if (nginx.exitInfo) throw new Error('nginx exited unexpectedly');
    results.push(await benchTarget(name, specs[name]));
  }
  await stop(nginx);

  meta.date = new Date().toISOString().replace('T', ' ').replace(/:\d\d\.\d+Z$/, ' UTC');
  const block = report(results, meta);
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
