#!/usr/bin/env node
// Instructions per request, counted by valgrind's callgrind: deterministic where req/s on a shared machine
// is not (the same config measured twice agreed within 0.1%), so feature costs of a few percent show.
// Variants:
//   tollgate               the standard config: bearer auth, a rate limit that never triggers, info logging
//                          to a file, metrics, tracing and Server-Timing on (the defaults)
//   tollgate-no_monitoring the same with metrics, tracing and Server-Timing off
//   tollgate-minimal       everything optional off: no auth, rate limit, health checks, retries or
//                          monitoring; log level warn
//   bare                   bench/bare-forwarder.mjs (node:http + undici, no features)
//   tollgate-redis         tollgate with the Redis rate-limit store (a redis-server of its own, outside
//                          valgrind; only when named in --variants)
//   tollgate-without-F[+F] tollgate with the named features off (auth, rate_limit, log, health, retries,
//                          metrics, tracing, server_timing): the cost of each feature (only when named)
//   tollgate-plugin-none   tollgate written with one route (`routes:`) and no plugins: the baseline of
//   tollgate-plugin-empty  the same route with one plugin whose phase has a requestFilter that does nothing
//   tollgate-plugin-header the same route with one plugin whose responseFilter sets a response header
//   tollgate-mix           tollgate, sent the 8 requests of the bench's tollgate-routes-1000 row in turn (their
//                          Host headers, paths and query) instead of GET / (only when named)
//   tollgate-routes-1000   tollgate plus the bench's 1,000 routes (bench/routes.mjs), sent the same 8 requests:
//                          against tollgate-mix, what the routes cost; against tollgate, the requests too
//   nginx-proxy            nginx as the bench's nginx-proxy row runs it (keep-alive upstream, no access log),
//                          one process (master_process off): a count that the vCPU's drift cannot move, to set
//                          beside the bench's requests per CPU-second (only when named). callgrind counts
//                          instructions in user space only, for nginx and Node alike: the kernel's work for
//                          their system calls is in neither count
// For each: start the proxy under callgrind with instrumentation off, send WARMUP requests so V8 has
// compiled the hot path, switch instrumentation on, send REQUESTS requests (keep-alive, 8 at a time), dump
// and divide the instructions by REQUESTS, leaving out those of V8's optimizing compiler (see compilerIr).
// The backend and the client share one Node process outside valgrind.
//
//   node bench/instructions.mjs [--requests N] [--warmup N] [--repeats N] [--variants a,b] [--keep DIR] [--dist DIR]
//                               [--body BYTES [--chunked]] [--semi-space MIB] [--functions N]
//   (defaults 6000, 15000, 1, all four); wrap it in `flock /tmp/bench.lock ...` on a shared machine.
//   --body BYTES: the backend answers BYTES bytes instead of the 100-byte body, with a Content-Length, or
//   with --chunked in 32 KiB chunks and no Content-Length (framed by the backend itself, so every Node
//   sends the same chunks): the cost per request of a large body (per MiB: divide by its size in MiB).
//   --semi-space MIB: Tollgate's --max-semi-space-size (default: the value the CLI gives itself, src/runtime.ts).
//   --functions N: also print, per variant, where the instructions go: by origin (Tollgate's files, undici,
//   Node's JS, regular expressions, V8's builtins and runtime, Node's C++, libc, ...) and the N functions
//   with the most (exclusive) instructions per request. The proxy runs with --perf-basic-prof, and the
//   addresses of JIT-compiled code in the dump are named from the map file V8 writes.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { ROOT, freePort, numberOption, textOption } from './common.mjs';
import { nginxProxyConf } from './nginx-conf.mjs';
import { ROUTE_MIX, routes1000Yaml } from './routes.mjs';

const REQUESTS = numberOption('--requests', 6000);
const WARMUP = numberOption('--warmup', 15000);
const REPEATS = numberOption('--repeats', 1);
/** --keep DIR: keep the callgrind dumps there (for callgrind_annotate) instead of deleting them. */
const KEEP = textOption('--keep');
/** --dist DIR: the Tollgate build to count (another build copied aside, to compare two versions of the code). */
const DIST = textOption('--dist') ?? 'dist';
const PLUGIN_VARIANTS = ['tollgate-plugin-none', 'tollgate-plugin-empty', 'tollgate-plugin-header'];
const MIX_VARIANTS = ['tollgate-mix', 'tollgate-routes-1000'];
const ALL = ['tollgate', 'tollgate-no_monitoring', 'tollgate-minimal', 'bare', 'tollgate-redis', 'nginx-proxy', ...PLUGIN_VARIANTS, ...MIX_VARIANTS];
const DEFAULT_VARIANTS = ['tollgate', 'tollgate-no_monitoring', 'tollgate-minimal', 'bare', ...PLUGIN_VARIANTS];
const VARIANTS = textOption('--variants')?.split(',') ?? DEFAULT_VARIANTS;
for (const v of VARIANTS) {
  if (!ALL.includes(v) && !v.startsWith('tollgate-without-')) throw new Error(`unknown variant ${v}; known: ${ALL.join(', ')}, tollgate-without-<feature>[+<feature>...]`);
}
/** --semi-space MIB: the young generation's semi-space size given to Tollgate; by default the CLI's own (main() reads it from the build). */
let SEMI_SPACE = numberOption('--semi-space', 0);
const BODY_BYTES = numberOption('--body', 0);
const CHUNKED = process.argv.includes('--chunked');
const FUNCTIONS = numberOption('--functions', 0);
const TOKEN = 'dev-token-123';
const BODY = 'tollgate-bench-payload:'.padEnd(100, '0123456789abcdefghijklmnopqrstuvwxyz');


const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
const ROOT_REQUEST = { path: '/', headers: { authorization: `Bearer ${TOKEN}` } };
const MIX_REQUESTS = ROUTE_MIX.map((r) => ({ path: r.path, headers: { ...ROOT_REQUEST.headers, host: r.host } }));
function get(port, { path: urlPath, headers } = ROOT_REQUEST) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: urlPath, headers, agent }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', () => resolve(0));
  });
}

/** Send `n` requests, 8 at a time, cycling through `requests`. */
async function send(port, n, requests) {
  let next = 0;
  let failed = 0;
  const worker = async () => {
    while (next < n) {
      const request = requests[next++ % requests.length];
      if ((await get(port, request)) !== 200) failed++;
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  if (failed > 0) throw new Error(`${failed} of ${n} requests failed`);
}

function totalIr(file) {
  // The dump's "totals:" line holds the instructions collected ("summary:" stays 0 when instrumentation was
  // switched on and off by callgrind_control).
  const text = fs.readFileSync(file, 'utf8');
  const m = /^totals:\s+(\d+)/m.exec(text) ?? /^summary:\s+(\d+)/m.exec(text);
  if (!m) throw new Error(`no totals in ${file}`);
  return Number(m[1]);
}

/**
 * Instructions spent in V8's optimizing compiler (v8::internal::compiler::*, on its background thread):
 * a one-off cost that lands in the measured window or not depending on when V8 decides to (re)optimize a
 * function. Two runs of one config differed by 9% (191,081 vs 208,613 per request) and 14,000 of the
 * 17,500 instructions of difference were this; without it they agreed within 2%.
 */
function compilerIr(annotated) {
  let sum = 0;
  for (const { ir, name } of annotated) if (isCompiler(name)) sum += ir;
  return sum;
}

/** Whether a function belongs to V8's optimizing compiler (left out of every count, see compilerIr). */
function isCompiler(name) {
  return name.includes('v8::internal::compiler::');
}

/** callgrind_annotate's exclusive counts per function of a dump: [{ ir, name }]. */
function annotate(file) {
  const out = execFileSync('callgrind_annotate', ['--inclusive=no', '--threshold=100', file], { maxBuffer: 256 * 1024 * 1024 }).toString();
  const rows = [];
  for (const line of out.split('\n')) {
    const m = /^\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)$/.exec(line);
    if (m && !m[2].startsWith('PROGRAM TOTALS')) rows.push({ ir: Number(m[1].replaceAll(',', '')), name: m[2] });
  }
  return rows;
}

/** A name for JIT code at `address` from V8's perf map (`start size name` per line), if it is there. */
function perfMapNamer(file) {
  const entries = fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [start, size, ...name] = line.split(' ');
      const at = parseInt(start, 16);
      return { start: at, end: at + parseInt(size, 16), name: name.join(' ') };
    })
    .sort((a, b) => a.start - b.start);
  return (address) => {
    let lo = 0;
    let hi = entries.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (entries[mid].start <= address) lo = mid + 1;
      else hi = mid - 1;
    }
    const e = entries[hi];
    return e !== undefined && address < e.end ? e.name.replace(/^(JS|LazyCompile|Function):[*~^+]?/, '') : undefined;
  };
}

/** The origin of a function as callgrind_annotate (and the perf map) names it. */
function originOf(name) {
  if (name.startsWith('RegExp')) return 'regular expressions (compiled by V8)';
  if (name.startsWith('wasm')) return "undici's llhttp (wasm)";
  if (name.includes('/dist/')) return "Tollgate's JS";
  if (name.includes('node_modules/undici/')) return "undici's JS";
  if (name.includes('node_modules/')) return 'other packages (pino, sonic-boom, prom-client)';
  if (/ node:|^'?node:/.test(name)) return "Node's JS";
  if (name.startsWith("'") || name.startsWith(' ')) return 'other JS';
  if (name.includes('Builtins_')) return "V8's builtins";
  if (name.includes('v8::') || name.includes('Runtime_')) return "V8's runtime (C++)";
  if (name.includes('node::') || name.includes('simdutf') || name.includes('llhttp')) return "Node's C++";
  if (name.includes('uv__') || name.includes('/deps/uv/')) return 'libuv';
  if (name.includes('ngx_')) return 'nginx';
  if (name.includes('libc.so') || name.includes('/malloc/') || name.includes('/string/') || name.includes('libstdc++')) return 'libc and libstdc++';
  if (name.startsWith('unresolved JIT')) return 'JIT code not in the perf map';
  return 'other native';
}

/** Where a dump's instructions go, per request: by origin and the `top` largest functions. */
function functionReport(annotated, mapFile, requests, top) {
  const nameOf = fs.existsSync(mapFile) ? perfMapNamer(mapFile) : () => undefined;
  const byName = new Map();
  for (const { ir, name } of annotated) {
    if (isCompiler(name)) continue;
    const jit = /^\?\?\?:0x([0-9a-f]+) \[\?\?\?\]$/.exec(name);
    const label = jit ? (nameOf(parseInt(jit[1], 16)) ?? 'unresolved JIT code') : name.replace(/^\?\?\?:/, '').replace(/ \[[^\]]*\]$/, '');
    byName.set(label, (byName.get(label) ?? 0) + ir);
  }
  const origins = new Map();
  for (const [name, ir] of byName) {
    const origin = originOf(name);
    origins.set(origin, (origins.get(origin) ?? 0) + ir);
  }
  const fmt = (ir) => Math.round(ir / requests).toLocaleString('en-US').padStart(8);
  const lines = ['  by origin:'];
  for (const [origin, ir] of [...origins].sort((a, b) => b[1] - a[1])) lines.push(`  ${fmt(ir)}  ${origin}`);
  lines.push(`  the ${top} largest functions:`);
  for (const [name, ir] of [...byName].sort((a, b) => b[1] - a[1]).slice(0, top)) lines.push(`  ${fmt(ir)}  ${name.slice(0, 140)}`);
  return lines.join('\n');
}

let redisUrl;
/** A redis-server of the run's own on a free port (for tollgate-redis), stopped at exit. */
async function startRedis() {
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  process.on('exit', () => child.kill('SIGKILL'));
  for (let i = 0; i < 100; i++) {
    const up = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
      s.on('error', () => resolve(false));
    });
    if (up) return `redis://127.0.0.1:${port}`;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('redis-server did not start');
}

/** The optional features the variants switch; `tollgate` has all of them, `tollgate-minimal` none. */
const FEATURES = ['auth', 'rate_limit', 'log', 'health', 'retries', 'metrics', 'tracing', 'server_timing'];
const MONITORING = ['metrics', 'tracing', 'server_timing'];

/** The features a variant has on: `tollgate-without-<feature>[+<feature>...]` drops the named ones. */
function featuresOf(variant) {
  if (variant === 'tollgate-minimal') return new Set();
  if (variant === 'tollgate-no_monitoring') return new Set(FEATURES.filter((f) => !MONITORING.includes(f)));
  const without = variant.startsWith('tollgate-without-') ? variant.slice('tollgate-without-'.length).split('+') : [];
  for (const f of without) if (!FEATURES.includes(f)) throw new Error(`unknown feature ${f} in ${variant}; known: ${FEATURES.join(', ')}`);
  return new Set(FEATURES.filter((f) => !without.includes(f)));
}

function configFor(variant, port, backendPort, logFile) {
  const on = featuresOf(variant);
  const store = variant === 'tollgate-redis' ? `, store: { type: redis, url: "${redisUrl}", key_prefix: "instr:" }` : '';
  return `server: { listen_port: ${port}, listen_address: "127.0.0.1" }
load_balancing:
  upstreams:
    - { name: "backend1", address: "127.0.0.1", port: ${backendPort} }
  health_check: { active: { enabled: ${on.has('health')} }, passive: { enabled: ${on.has('health')} } }
${on.has('retries') ? '' : '  retries: { max_retries: 0 }\n'}middleware:
  auth: { enabled: ${on.has('auth')}, valid_tokens: ["${TOKEN}"] }
  rate_limit: { enabled: ${on.has('rate_limit')}, requests_per_minute: 60000000, burst_size: 10000000${store} }
logging: { level: ${on.has('log') ? 'info' : 'warn'}, file: ${JSON.stringify(logFile)} }
admin: { port: 0 }
metrics: { enabled: ${on.has('metrics')} }
tracing: { enabled: ${on.has('tracing')}, server_timing: ${on.has('server_timing')} }
${routesFor(variant)}`;
}

/** The plugin modules of the tollgate-plugin-* variants, written beside their configs. */
const PLUGINS = {
  'tollgate-plugin-empty': 'export default () => ({ name: "empty", requestFilter() {} });\n',
  'tollgate-plugin-header': 'export default () => ({ name: "header", responseFilter(session) { session.responseHeaders.set("X-Plugin", "1"); } });\n',
};

/** One route `all` (with the variant's plugin) for the tollgate-plugin-* variants, the bench's 1,000 routes for
 * tollgate-routes-1000; nothing for the others. */
function routesFor(variant) {
  if (variant === 'tollgate-routes-1000') return routes1000Yaml('/big');
  if (!PLUGIN_VARIANTS.includes(variant)) return '';
  const plugin = PLUGINS[variant];
  return `routes:
  - name: all
    service: default
    plugins: [${plugin === undefined ? '' : `{ module: ./${variant}.mjs }`}]
`;
}

/** The program valgrind runs for a variant, and its arguments. */
function commandFor(dir, name, variant, port, backendPort) {
  if (variant === 'nginx-proxy') {
    // The bench's nginx-proxy with one upstream, in one process (valgrind would not follow a worker).
    const d = path.join(dir, name);
    fs.mkdirSync(d, { recursive: true });
    const conf = path.join(d, 'nginx.conf');
    fs.writeFileSync(conf, nginxProxyConf(d, port, [backendPort], { master: false }));
    return ['nginx', '-p', d, '-c', conf, '-e', path.join(d, 'error.log')];
  }
  const cfg = path.join(dir, `${name}.yaml`);
  fs.writeFileSync(cfg, configFor(variant, port, backendPort, path.join(dir, `${name}.log`)));
  if (PLUGINS[variant] !== undefined) fs.writeFileSync(path.join(dir, `${variant}.mjs`), PLUGINS[variant]);
  // The CLI's memory settings are given here, as the CLI would give them to itself (src/runtime.ts): it
  // would otherwise replace itself with process.execve, and valgrind does not follow an exec.
  const perfMap = FUNCTIONS > 0 ? ['--perf-basic-prof'] : [];
  if (variant === 'bare') return [process.execPath, ...perfMap, 'bench/bare-forwarder.mjs', String(port), `127.0.0.1:${backendPort}`];
  return [process.execPath, ...perfMap, `--max-semi-space-size=${SEMI_SPACE}`, path.join(DIST, 'cli.js'), '--config', cfg];
}

async function measure(dir, backendPort, variant, repeat) {
  const port = await freePort();
  const name = `${variant}-${repeat}`;
  const command = commandFor(dir, name, variant, port, backendPort);
  const out = path.join(dir, `callgrind.${name}`);
  const child = spawn('taskset', ['-c', '0', 'valgrind', '--tool=callgrind', '--instr-atstart=no', '--smc-check=all-non-file', `--callgrind-out-file=${out}`, ...command], {
    cwd: ROOT,
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, LOG_LEVEL: '', MALLOC_ARENA_MAX: '2' },
  });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const requests = MIX_VARIANTS.includes(variant) ? MIX_REQUESTS : [ROOT_REQUEST];
  const deadline = Date.now() + 120_000;
  while ((await get(port, requests[0])) !== 200) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`proxy under valgrind did not start (exit ${child.exitCode}): ${stderr.slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 500));
  }
  await send(port, WARMUP, requests);
  execFileSync('callgrind_control', ['-i', 'on', String(child.pid)], { stdio: 'ignore' });
  await send(port, REQUESTS, requests);
  execFileSync('callgrind_control', ['-i', 'off', String(child.pid)], { stdio: 'ignore' });
  execFileSync('callgrind_control', ['-d', 'measured', String(child.pid)], { stdio: 'ignore' });
  const dump = fs.readdirSync(dir).filter((f) => f.startsWith(`callgrind.${name}.`)).map((f) => path.join(dir, f)).sort().at(-1);
  const annotated = annotate(dump);
  const ir = totalIr(dump) - compilerIr(annotated);
  child.kill('SIGTERM');
  await new Promise((r) => child.once('exit', r));
  // valgrind runs node in the process taskset started, so V8's map file has that process id.
  if (FUNCTIONS === 0) return { perRequest: ir / REQUESTS, report: undefined };
  const mapFile = `/tmp/perf-${child.pid}.map`;
  const report = functionReport(annotated, mapFile, REQUESTS, FUNCTIONS);
  fs.rmSync(mapFile, { force: true });
  return { perRequest: ir / REQUESTS, report };
}

/**
 * The backend of --body: one prebuilt response (head and body, chunked or not) written per request head
 * (GET only, one request at a time per connection, as `send` makes them).
 */
function largeBodyBackend() {
  const body = Buffer.alloc(BODY_BYTES, 'x');
  const parts = [Buffer.from(`HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n${CHUNKED ? 'transfer-encoding: chunked' : `content-length: ${BODY_BYTES}`}\r\n\r\n`, 'latin1')];
  if (!CHUNKED) parts.push(body);
  else {
    for (let at = 0; at < BODY_BYTES; at += 32 * 1024) {
      const piece = body.subarray(at, at + 32 * 1024);
      parts.push(Buffer.from(`${piece.length.toString(16)}\r\n`, 'latin1'), piece, Buffer.from('\r\n', 'latin1'));
    }
    parts.push(Buffer.from('0\r\n\r\n', 'latin1'));
  }
  const response = Buffer.concat(parts);
  return net.createServer((socket) => {
    let pending = '';
    socket.on('data', (chunk) => {
      pending += chunk.toString('latin1');
      for (let end = pending.indexOf('\r\n\r\n'); end !== -1; end = pending.indexOf('\r\n\r\n')) {
        pending = pending.slice(end + 4);
        socket.write(response);
      }
    });
    socket.on('error', () => socket.destroy());
  }).listen(0, '127.0.0.1');
}

async function main() {
  if (DIST === 'dist' && !fs.existsSync(path.join(ROOT, 'dist/cli.js'))) execFileSync('npm', ['run', 'build'], { cwd: ROOT, stdio: 'inherit' });
  if (SEMI_SPACE === 0) SEMI_SPACE = (await import(path.resolve(ROOT, DIST, 'runtime.js'))).SEMI_SPACE_MIB;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-callgrind-'));
  const backend = BODY_BYTES > 0 ? largeBodyBackend() : http.createServer((_req, res) => res.end(BODY)).listen(0, '127.0.0.1');
  await new Promise((r) => backend.once('listening', r));
  if (VARIANTS.includes('tollgate-redis')) redisUrl = await startRedis();
  const results = Object.fromEntries(VARIANTS.map((v) => [v, []]));
  const bodyNote = BODY_BYTES > 0 ? `; responses of ${BODY_BYTES} bytes${CHUNKED ? ', chunked (32 KiB chunks)' : ' with a Content-Length'}` : '';
  // nginx -v writes its version to stderr.
  const nginxNote = VARIANTS.includes('nginx-proxy') ? `; ${spawnSync('nginx', ['-v'], { encoding: 'utf8' }).stderr.trim().replace(/^nginx version: /, '')}` : '';
  console.log(`instructions per request under callgrind (V8's optimizing compiler excluded): ${WARMUP} warm-up, ${REQUESTS} measured, ${REPEATS} repeat(s); node ${process.version}; Tollgate with --max-semi-space-size=${SEMI_SPACE}${bodyNote}${nginxNote}`);
  for (let i = 0; i < REPEATS; i++) {
    for (const variant of VARIANTS) {
      const { perRequest, report } = await measure(dir, backend.address().port, variant, i);
      results[variant].push(perRequest);
      console.log(`${variant} run ${i + 1}: ${Math.round(perRequest).toLocaleString('en-US')}`);
      if (report !== undefined) console.log(report);
    }
  }
  const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const m = Object.fromEntries(VARIANTS.map((v) => [v, mean(results[v])]));
  console.log('\n| variant | instructions per request | vs tollgate-minimal | vs bare |\n| --- | ---: | ---: | ---: |');
  for (const v of VARIANTS) {
    const vs = (base) => (m[base] === undefined ? 'n/a' : `${((m[v] / m[base] - 1) * 100).toFixed(1)}%`);
    console.log(`| ${v} | ${Math.round(m[v]).toLocaleString('en-US')} | ${vs('tollgate-minimal')} | ${vs('bare')} |`);
  }
  if (m.tollgate !== undefined && m['tollgate-no_monitoring'] !== undefined) {
    const r = m['tollgate-no_monitoring'] / m.tollgate;
    console.log(`${r >= 0.95 ? 'PASS' : 'FAIL'} monitoring cost: throughput implied by instructions ${r.toFixed(3)} of the config without it (>= 0.95)`);
  }
  if (m.tollgate !== undefined && m['tollgate-redis'] !== undefined) {
    const r = m.tollgate / m['tollgate-redis'];
    console.log(`${r >= 0.75 ? 'PASS' : 'FAIL'} Redis store cost: throughput implied by instructions ${r.toFixed(3)} of the memory store (>= 0.75; redis-server's own work not counted)`);
  }
  for (const v of ['tollgate-plugin-empty', 'tollgate-plugin-header']) {
    const base = m['tollgate-plugin-none'];
    if (m[v] === undefined || base === undefined) continue;
    const plain = m.tollgate === undefined ? '' : `; the plain config (tollgate) to tollgate-plugin-none: ${((base / m.tollgate - 1) * 100).toFixed(1)}%`;
    console.log(`plugin cost: ${v} ${Math.round(m[v] - base).toLocaleString('en-US')} instructions per request over tollgate-plugin-none (${((m[v] / base - 1) * 100).toFixed(1)}%)${plain}`);
  }
  if (m['tollgate-mix'] !== undefined && m['tollgate-routes-1000'] !== undefined) {
    const vsRoot = m.tollgate === undefined ? '' : `; the mix to GET / (tollgate-mix to tollgate): ${((m['tollgate-mix'] / m.tollgate - 1) * 100).toFixed(1)}%`;
    console.log(`routes cost: tollgate-routes-1000 ${((m['tollgate-routes-1000'] / m['tollgate-mix'] - 1) * 100).toFixed(1)}% over tollgate-mix${vsRoot}`);
  }
  if (m['nginx-proxy'] !== undefined) {
    const others = VARIANTS.filter((v) => v !== 'nginx-proxy');
    if (others.length > 0) console.log(`throughput implied by instructions, as a share of nginx-proxy's: ${others.map((v) => `${v} ${(m['nginx-proxy'] / m[v]).toFixed(3)}`).join(', ')}`);
  }
  if (m.tollgate !== undefined && m['tollgate-minimal'] !== undefined) {
    const r = m['tollgate-minimal'] / m.tollgate;
    console.log(`${r >= 0.9 ? 'PASS' : 'FAIL'} features cost: throughput implied by instructions ${r.toFixed(3)} of tollgate-minimal (>= 0.90)`);
  }
  backend.close();
  agent.destroy();
  if (KEEP === undefined) fs.rmSync(dir, { recursive: true, force: true });
  else {
    fs.mkdirSync(KEEP, { recursive: true });
    for (const f of fs.readdirSync(dir)) if (f.startsWith('callgrind.')) fs.renameSync(path.join(dir, f), path.join(KEEP, f));
    fs.rmSync(dir, { recursive: true, force: true });
    console.log(`callgrind dumps kept in ${KEEP}`);
  }
}

main().catch((err) => {
  console.error(`instructions: ${err.stack ?? err}`);
  process.exit(1);
});
