#!/usr/bin/env node
// Memory while large uploads stream through Tollgate: UPLOADS concurrent uploads of SIZE MiB each (POST,
// Content-Length, written in 64 KiB chunks as fast as the connection takes them) to a Node sink that
// reads every byte, optionally at a limited rate (then the proxy must hold the client back instead of
// buffering: backpressure). The proxy's RSS (/proc/PID/status) is sampled every 100 ms; the table shows it
// before, at its peak and after, with the bytes the sink counted for each upload.
//
//   node bench/upload-memory.mjs [--node PATH] [--size MiB] [--uploads N] [--sink-rate MiB/s]
//                                (defaults: this node, 50, 4, 0 = unlimited)
// The proxy is pinned to CPU 0, the clients and the sink to CPU 1.
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { ROOT, freePorts, launch, numberOption, textOption } from './common.mjs';

const NODE = textOption('--node') ?? process.execPath;
const SIZE = numberOption('--size', 50);
const UPLOADS = numberOption('--uploads', 4);
const SINK_RATE = numberOption('--sink-rate', 0);
const MIB = 1024 * 1024;
const CHUNK = Buffer.alloc(64 * 1024, 'u');

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-upload-'));
const [sinkPort, port] = await freePorts(2);
// The sink reads the body in the chunks it arrives in; with a rate, it pauses after each chunk for as long
// as that chunk takes at the rate, so the bytes back up towards the client.
const sinkCode = `const rate = ${SINK_RATE} * 1048576;
require('node:http').createServer((q, s) => {
  let n = 0;
  q.on('data', (c) => { n += c.length; if (rate > 0) { q.pause(); setTimeout(() => q.resume(), c.length / rate * 1000); } });
  q.on('end', () => s.end(String(n)));
}).listen(${sinkPort}, '127.0.0.1');`;
const sink = launch('taskset', ['-c', '1', process.execPath, '-e', sinkCode]);
const cfg = path.join(dir, 'tollgate.yaml');
fs.writeFileSync(cfg, `server: { listen_port: ${port}, listen_address: "127.0.0.1", max_body_bytes: ${(SIZE + 1) * MIB} }
load_balancing:
  upstreams:
    - { name: "sink", address: "127.0.0.1", port: ${sinkPort} }
logging: { level: warn }
`);
const proxy = launch('taskset', ['-c', '0', NODE, path.join(ROOT, 'dist/cli.js'), '--config', cfg]);

function rssMiB(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

function upload() {
  return new Promise((resolve, reject) => {
    const total = SIZE * MIB;
    const req = http.request({ host: '127.0.0.1', port, path: '/upload', method: 'POST', headers: { 'content-length': total, 'content-type': 'application/octet-stream' } }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode, received: Number(body) }));
    });
    req.on('error', reject);
    let sent = 0;
    const more = () => {
      while (sent < total) {
        const piece = Math.min(CHUNK.length, total - sent);
        sent += piece;
        if (!req.write(piece === CHUNK.length ? CHUNK : CHUNK.subarray(0, piece))) return req.once('drain', more);
      }
      req.end();
    };
    more();
  });
}

async function until(ok, what) {
  for (let i = 0; i < 100; i++) {
    if (await ok()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

try {
  await until(() => new Promise((resolve) => http.get(`http://127.0.0.1:${port}/health`, (res) => { res.resume(); resolve(res.statusCode === 200); }).on('error', () => resolve(false))), 'the proxy');
  // The pid of the serving process (the command re-executes itself in place, so it is the launched one).
  const pid = proxy.pid;
  await new Promise((r) => setTimeout(r, 500));
  const before = rssMiB(pid);
  let peak = before;
  const samples = [];
  const timer = setInterval(() => {
    const v = rssMiB(pid);
    samples.push(v);
    if (v > peak) peak = v;
  }, 100);
  const t0 = Date.now();
  const results = await Promise.all(Array.from({ length: UPLOADS }, upload));
  const seconds = (Date.now() - t0) / 1000;
  clearInterval(timer);
  await new Promise((r) => setTimeout(r, 1000));
  const after = rssMiB(pid);
  const ok = results.every((r) => r.status === 200 && r.received === SIZE * MIB);
  console.log(`upload-memory: node ${NODE === process.execPath ? process.version : NODE}, ${UPLOADS} x ${SIZE} MiB, sink ${SINK_RATE > 0 ? `${SINK_RATE} MiB/s per upload` : 'unlimited'}`);
  console.log(`| uploads | MiB moved | seconds | RSS before MiB | RSS peak MiB | RSS after MiB | peak - before | every byte arrived |`);
  console.log(`| ${UPLOADS} x ${SIZE} MiB | ${UPLOADS * SIZE} | ${seconds.toFixed(1)} | ${before.toFixed(1)} | ${peak.toFixed(1)} | ${after.toFixed(1)} | ${(peak - before).toFixed(1)} | ${ok ? 'yes' : `no: ${JSON.stringify(results)}`} |`);
  console.log(`RSS every 100 ms: ${samples.map((v) => v.toFixed(0)).join(' ')}`);
  process.exitCode = ok ? 0 : 1;
} finally {
  proxy.kill('SIGTERM');
  sink.kill('SIGTERM');
  fs.rmSync(dir, { recursive: true, force: true });
}
