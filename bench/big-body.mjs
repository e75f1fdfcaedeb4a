#!/usr/bin/env node
// CPU per byte on the large-body path: MiB per CPU-second of the proxy process for 1 MiB downloads
// (GET /big, with a Content-Length), 1 MiB chunked downloads (GET /big-chunked: the same file in 32 KiB
// chunks, as an application server that streams sends it) and 1 MiB uploads (POST /sink, read whole before
// the answer), for Tollgate builds side by side and the bare forwarder.
// A CPU-second measure rather than MiB/s: wrk and the nginx backend share CPU 1 and saturate before the
// proxy does, and the machine may be busy; the CPU time the proxy process spends per MiB moves far less.
//
//   node bench/big-body.mjs [--rounds N] [--seconds S] [--connections C] [--node PATH]
//                           [--variants name=DIST_DIR,...] [--bare] [--net] [--idle S] [--directions download,chunked,upload]
//                           [--node-flags "--flag ..."]
// Each variant is a built Tollgate (`dist` by default; copy a build aside as another folder to compare two
// versions of the code: `--variants before=/tmp/dist-before,after=dist`). Every round runs each target
// once per direction in a rotating order, so drift of the machine reaches all alike; the table shows the
// median of the rounds and each target's ratio to the first one. Config: no auth, no rate limit, log
// level warn, metrics on (the default), so the row is the body path and not the features.
// --idle S leaves every process idle for S seconds before each run, as the full bench does between a
// target's runs: long enough (about 10 s) for V8's memory reducer to shrink the heap, which changes how the
// next run collects garbage. --node-flags are given to every target's Node.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ROOT, freePorts, launch, numberOption, textOption } from './common.mjs';

const ROUNDS = numberOption('--rounds', 5);
const SECONDS = numberOption('--seconds', 5);
const CONNECTIONS = numberOption('--connections', 8);
const NODE = textOption('--node') ?? process.execPath;
const WITH_BARE = process.argv.includes('--bare');
/** --net: also the node:net forwarder (bench/net-forwarder.mjs), a ceiling; downloads only (it refuses bodies). */
const WITH_NET = process.argv.includes('--net');
const IDLE = numberOption('--idle', 0);
const DIRECTIONS = (textOption('--directions') ?? 'download,upload').split(',');
for (const d of DIRECTIONS) if (!['download', 'chunked', 'upload'].includes(d)) throw new Error(`--directions: ${d} is not download, chunked or upload`);
/** The path each direction requests. */
const PATHS = { download: '/big', chunked: '/big-chunked', upload: '/sink' };
const NODE_FLAGS = (textOption('--node-flags') ?? '').split(' ').filter(Boolean);
const VARIANTS = (textOption('--variants') ?? 'tollgate=dist').split(',').map((v) => {
  const [name, dir] = v.split('=');
  return { name, dir: path.resolve(ROOT, dir) };
});
const MIB = 1024 * 1024;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-bigbody-'));
fs.chmodSync(tmp, 0o711);
const bigFile = path.join(tmp, 'big.bin');
fs.writeFileSync(bigFile, Buffer.alloc(MIB, 'x'), { mode: 0o644 });
const uploadLua = path.join(tmp, 'upload.lua');
fs.writeFileSync(uploadLua, `wrk.method = "POST"\nwrk.body = string.rep("y", ${MIB})\nwrk.headers["Content-Type"] = "application/octet-stream"\n`);

const [backendPort, sinkPort, ...ports] = await freePorts(2 + VARIANTS.length + 2);

// nginx on CPU 1 serves /big and reads and drops what is POSTed to /sink.
fs.writeFileSync(path.join(tmp, 'nginx.conf'), `worker_processes 1;
pid ${tmp}/nginx.pid;
error_log ${tmp}/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${tmp};
  client_max_body_size 4m;
  client_body_buffer_size 2m;
  server {
    listen 127.0.0.1:${backendPort};
    location = /big { alias ${bigFile}; }
    # SSI on a file without SSI commands: the same bytes, streamed chunked (32 KiB chunks), no Content-Length.
    location = /big-chunked { alias ${bigFile}; ssi on; ssi_types *; default_type application/octet-stream; }
    location = /sink { proxy_pass http://127.0.0.1:${sinkPort}; proxy_request_buffering on; }
  }
}
`);
// The sink reads every byte of the upload before it answers (nginx's own `return` answers at once and
// drops the rest, which measures closing connections rather than moving bytes); nginx in front of it reads
// the whole body first too (proxy_request_buffering), so each upload costs the sink one small request.
const sinkCode = `require('node:http').createServer((q, s) => { q.resume(); q.on('end', () => s.end('ok\\n')); }).listen(${sinkPort}, '127.0.0.1');`;
launch('taskset', ['-c', '1', process.execPath, '-e', sinkCode]);
const nginx = launch('taskset', ['-c', '1', 'nginx', '-p', `${tmp}/`, '-c', path.join(tmp, 'nginx.conf'), '-g', 'daemon off;']);

function tollgateConfig(port) {
  return `server:
  listen_address: "127.0.0.1"
  listen_port: ${port}
  max_body_bytes: 4194304
load_balancing:
  upstreams:
    - { name: b1, address: 127.0.0.1, port: ${backendPort} }
  health_check: { active: { enabled: false }, passive: { enabled: false } }
  retries: { max_retries: 0 }
middleware:
  auth: { enabled: false }
  rate_limit: { enabled: false }
logging: { level: warn }
admin: { enabled: false }
`;
}

const targets = VARIANTS.map((v, i) => {
  const cfg = path.join(tmp, `${v.name}.yaml`);
  fs.writeFileSync(cfg, tollgateConfig(ports[i]));
  return { name: v.name, port: ports[i], cmd: [NODE, ...NODE_FLAGS, path.join(v.dir, 'cli.js'), '--config', cfg] };
});
if (WITH_BARE) {
  const port = ports[VARIANTS.length];
  targets.push({ name: 'bare', port, cmd: [NODE, ...NODE_FLAGS, path.join(ROOT, 'bench', 'bare-forwarder.mjs'), String(port), `127.0.0.1:${backendPort}`] });
}
if (WITH_NET) {
  const port = ports[VARIANTS.length + 1];
  targets.push({ name: 'net', port, downloadsOnly: true, cmd: [NODE, ...NODE_FLAGS, path.join(ROOT, 'bench', 'net-forwarder.mjs'), String(port), `127.0.0.1:${backendPort}`] });
}

function cpuSeconds(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

async function waitReady(port) {
  for (let i = 0; i < 200; i++) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/big`);
      const body = Buffer.from(await r.arrayBuffer());
      if (r.status === 200 && body.length === MIB) return;
    } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`nothing answered GET /big on ${port} whole`);
}

function wrk(port, direction) {
  const upload = direction === 'upload';
  const args = ['-c', '1', 'wrk', '-t1', `-c${CONNECTIONS}`, `-d${SECONDS}s`, ...(upload ? ['-s', uploadLua] : []), `http://127.0.0.1:${port}${PATHS[direction]}`];
  const r = spawnSync('taskset', args, { encoding: 'utf8' });
  const requests = Number(/(\d+) requests in/.exec(r.stdout)?.[1] ?? NaN);
  const errors = /Non-2xx|Socket errors/.test(r.stdout);
  if (r.status !== 0 || Number.isNaN(requests)) throw new Error(`wrk failed: ${r.stdout}${r.stderr}`);
  return { requests, errors };
}

await waitReady(backendPort).catch(() => { throw new Error('nginx did not start (is it installed?)'); });
if (DIRECTIONS.includes('chunked')) {
  const r = await fetch(`http://127.0.0.1:${backendPort}/big-chunked`);
  const length = (await r.arrayBuffer()).byteLength;
  if (r.headers.get('transfer-encoding') !== 'chunked' || length !== MIB) throw new Error(`nginx's /big-chunked: ${r.headers.get('transfer-encoding')}, ${length} bytes`);
}
for (const t of targets) {
  t.child = launch('taskset', ['-c', '0', ...t.cmd]);
  await waitReady(t.port);
  t.runs = Object.fromEntries(DIRECTIONS.map((d) => [d, []]));
}

console.error(`big-body: ${targets.map((t) => t.name).join(', ')} on ${spawnSync(NODE, ['--version'], { encoding: 'utf8' }).stdout.trim()}; ${ROUNDS} rounds of ${SECONDS} s per target and direction, c${CONNECTIONS}`);
for (let round = 0; round < ROUNDS; round++) {
  const order = [...targets.slice(round % targets.length), ...targets.slice(0, round % targets.length)];
  for (const direction of DIRECTIONS) {
    for (const t of order) {
      if (t.downloadsOnly && direction === 'upload') continue;
      if (IDLE > 0) await new Promise((r) => setTimeout(r, IDLE * 1000));
      const pid = t.child.pid;
      const cpu0 = cpuSeconds(pid);
      const t0 = performance.now();
      const { requests, errors } = wrk(t.port, direction);
      const wall = (performance.now() - t0) / 1000;
      const cpu = cpuSeconds(pid) - cpu0;
      const mib = requests; // one MiB per request
      t.runs[direction].push({ perCpu: mib / cpu, mibps: mib / wall, share: cpu / wall, errors });
      console.error(`  round ${round + 1} ${direction} ${t.name}: ${(mib / wall).toFixed(0)} MiB/s at ${((100 * cpu) / wall).toFixed(0)}% CPU = ${(mib / cpu).toFixed(0)} MiB per CPU-s${errors ? ' (errors)' : ''}`);
    }
  }
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
const first = targets[0];
console.log(`\n| target | ${DIRECTIONS.map((d) => `${d} MiB per CPU-s | × ${first.name} | ${d} MiB/s (CPU)`).join(' | ')} | RSS MiB after |`);
console.log(`| --- | ${DIRECTIONS.map(() => '---: | ---: | ---:').join(' | ')} | ---: |`);
for (const t of targets) {
  const cells = [];
  for (const d of DIRECTIONS) {
    if (t.runs[d].length === 0) {
      cells.push('–', '–', '–');
      continue;
    }
    const m = median(t.runs[d].map((r) => r.perCpu));
    const base = median(first.runs[d].map((r) => r.perCpu));
    // Paired per round: the same round's ratio, then the median of those.
    const paired = median(t.runs[d].map((r, i) => r.perCpu / first.runs[d][i].perCpu));
    cells.push(m.toFixed(0), `${paired.toFixed(2)} (medians ${(m / base).toFixed(2)})`, `${median(t.runs[d].map((r) => r.mibps)).toFixed(0)} (${(100 * median(t.runs[d].map((r) => r.share))).toFixed(0)}%)`);
  }
  const rss = /^VmRSS:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${t.child.pid}/status`, 'utf8'))?.[1];
  console.log(`| ${t.name} | ${cells.join(' | ')} | ${rss ? (Number(rss) / 1024).toFixed(0) : 'n/a'} |`);
}
console.log(`\n- ${spawnSync(NODE, ['--version'], { encoding: 'utf8' }).stdout.trim()}; proxy on CPU 0, nginx backend and wrk (c${CONNECTIONS}, ${SECONDS} s per run${IDLE > 0 ? `, ${IDLE} s idle before each` : ''}${NODE_FLAGS.length > 0 ? `, Node flags ${NODE_FLAGS.join(' ')}` : ''}) on CPU 1; ${ROUNDS} rounds, order rotated each round; ${new Date().toISOString()}`);
fs.rmSync(tmp, { recursive: true, force: true });
process.exit(0);
