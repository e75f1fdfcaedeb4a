#!/usr/bin/env node
// Sends the same hostile bytes to nginx, HAProxy and Tollgate, each in front of the same recording
// backend, and prints what each one answered and whether anything reached the backend. It produces the
// comparison table in docs/security.md:   node bench/edge-compare.mjs   (after npm run build)
// nginx and haproxy are installed with apt-get when missing. Only 127.0.0.1 is used.
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { connect, createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '..');
const has = (cmd) => {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
};
if (!has('nginx') || !has('haproxy')) {
  execFileSync('apt-get', ['update'], { stdio: 'inherit' });
  execFileSync('apt-get', ['install', '-y', 'nginx-light', 'haproxy'], { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
}

async function freePort() {
  const s = createNetServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const { port } = s.address();
  s.close();
  return port;
}

// The backend records what reaches it: method, target, and whether a body ended.
const seen = [];
const backend = createServer((req, res) => {
  const entry = { url: req.url, headers: req.headers, ended: false };
  seen.push(entry);
  req.on('data', () => {});
  req.on('end', () => {
    entry.ended = true;
    res.end('backend-ok');
  });
  req.on('error', () => {});
});
backend.on('clientError', (_e, s) => s.destroy());
backend.listen(0, '127.0.0.1');
await once(backend, 'listening');
const bport = backend.address().port;

const dir = mkdtempSync(join(tmpdir(), 'tollgate-edge-'));
const children = [];
function start(cmd, args) {
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr.on('data', (c) => (err += c));
  child.on('exit', (code) => {
    if (code && code !== 0 && !stopping) process.stderr.write(`${cmd} exited ${code}: ${err}\n`);
  });
  children.push(child);
  return child;
}
let stopping = false;
function stop() {
  stopping = true;
  // SIGTERM, not SIGKILL: an nginx master killed outright leaves its worker behind.
  for (const c of children) c.kill('SIGTERM');
  backend.close();
  rmSync(dir, { recursive: true, force: true });
}
process.on('SIGINT', () => {
  stop();
  process.exit(130);
});

const ports = { nginx: await freePort(), haproxy: await freePort(), tollgate: await freePort() };
writeFileSync(
  join(dir, 'nginx.conf'),
  `worker_processes 1; daemon off; pid ${dir}/nginx.pid; error_log ${dir}/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off; client_body_temp_path ${dir}/b; proxy_temp_path ${dir}/p; fastcgi_temp_path ${dir}/f; uwsgi_temp_path ${dir}/u; scgi_temp_path ${dir}/s;
  client_max_body_size 1k;
  upstream be { server 127.0.0.1:${bport}; keepalive 8; }
  server { listen 127.0.0.1:${ports.nginx};
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $host; proxy_request_buffering off; } }
}`,
);
writeFileSync(
  join(dir, 'haproxy.cfg'),
  `global
  maxconn 1024
defaults
  mode http
  timeout connect 5s
  timeout client 5s
  timeout server 5s
frontend fe
  bind 127.0.0.1:${ports.haproxy}
  http-request deny deny_status 413 if { req.body_size gt 1024 }
  default_backend be
backend be
  server s1 127.0.0.1:${bport}
`,
);
writeFileSync(
  join(dir, 'tollgate.yaml'),
  `server: { listen_port: ${ports.tollgate}, listen_address: "127.0.0.1", max_body_bytes: 1024 }
load_balancing: { upstreams: [{ name: be, address: "127.0.0.1", port: ${bport} }] }
logging: { level: warn }
`,
);
start('nginx', ['-c', join(dir, 'nginx.conf')]);
start('haproxy', ['-f', join(dir, 'haproxy.cfg'), '-db']);
start(process.execPath, [join(ROOT, 'dist/cli.js'), '--config', join(dir, 'tollgate.yaml')]);

function send(port, bytes, ms = 1500) {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    const chunks = [];
    let closed = false;
    const timer = setTimeout(() => s.destroy(), ms);
    s.on('data', (c) => chunks.push(c));
    s.on('error', () => {});
    s.on('end', () => (closed = true));
    s.on('close', () => {
      clearTimeout(timer);
      resolve({ text: Buffer.concat(chunks).toString('latin1'), closed });
    });
    s.write(bytes);
  });
}
for (const port of Object.values(ports)) {
  for (let i = 0; i < 50; i++) {
    const r = await send(port, 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', 300);
    if (/^HTTP\/1\.1 200/.test(r.text)) break;
    await new Promise((r) => setTimeout(r, 100));
  }
}

const H = 'Host: x\r\n';
const C = 'Connection: close\r\n';
const cases = [
  ['duplicate Content-Length', `POST / HTTP/1.1\r\n${H}Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc`],
  ['Content-Length + Transfer-Encoding', `POST / HTTP/1.1\r\n${H}Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`],
  ['TE: chunked, gzip', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n`],
  ['TE: gzip, chunked', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: gzip, chunked\r\n${C}\r\n0\r\n\r\n`],
  ['TE repeated', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n${C}\r\n0\r\n\r\n`],
  ['obs-fold', `GET / HTTP/1.1\r\n${H}X-A: a\r\n b\r\n${C}\r\n`],
  ['bare LF', `GET / HTTP/1.1\n${H.replace('\r', '')}Connection: close\n\n`],
  ['CR in a value', `GET / HTTP/1.1\r\n${H}X-A: a\rb\r\n${C}\r\n`],
  ['NUL in a value', `GET / HTTP/1.1\r\n${H}X-A: a\x00b\r\n${C}\r\n`],
  ['space before colon', `GET / HTTP/1.1\r\n${H}X-A : a\r\n${C}\r\n`],
  ['no Host (HTTP/1.1)', `GET / HTTP/1.1\r\n${C}\r\n`],
  ['two Host headers', `GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n${C}\r\n`],
  ['absolute-form target', `GET http://other.example/x HTTP/1.1\r\nHost: other.example\r\n${C}\r\n`],
  ['101 header lines', `GET / HTTP/1.1\r\n${H}${Array.from({ length: 100 }, (_, i) => `X-H${i}: v\r\n`).join('')}${C}\r\n`],
  ['17 KiB header', `GET / HTTP/1.1\r\n${H}X-Big: ${'a'.repeat(17_000)}\r\n${C}\r\n`],
  ['9 KiB request target', `GET /${'a'.repeat(9_000)} HTTP/1.1\r\n${H}${C}\r\n`],
  ['underscore header', `GET / HTTP/1.1\r\n${H}X_User: admin\r\n${C}\r\n`],
  ['__proto__ header', `GET / HTTP/1.1\r\n${H}__proto__: x\r\n${C}\r\n`],
  ['Upgrade: h2c', `GET / HTTP/1.1\r\n${H}Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n`],
  ['Content-Length over 1 KiB limit', `POST / HTTP/1.1\r\n${H}Content-Length: 5000\r\n${C}\r\n`],
  ['chunked body over 1 KiB limit', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n${C}\r\n${`190\r\n${'z'.repeat(400)}\r\n`.repeat(3)}0\r\n\r\n`],
  ['/a/../b', `GET /a/../b HTTP/1.1\r\n${H}${C}\r\n`],
  ['/%2e%2e/x', `GET /%2e%2e/x HTTP/1.1\r\n${H}${C}\r\n`],
  ['//a///b', `GET //a///b HTTP/1.1\r\n${H}${C}\r\n`],
  ['/a%2Fb', `GET /a%2Fb HTTP/1.1\r\n${H}${C}\r\n`],
  ['/a%00b', `GET /a%00b HTTP/1.1\r\n${H}${C}\r\n`],
  ['/health;/../x', `GET /health;/../x HTTP/1.1\r\n${H}${C}\r\n`],
];

const rows = [];
for (const [name, bytes] of cases) {
  const cells = [];
  for (const which of ['nginx', 'haproxy', 'tollgate']) {
    const before = seen.length;
    const r = await send(ports[which], bytes);
    await new Promise((r) => setTimeout(r, 50));
    const status = /^HTTP\/1\.[01] (\d{3})/.exec(r.text)?.[1] ?? (r.text === '' ? (r.closed ? 'closed' : 'no answer') : '?');
    const reached = seen.slice(before);
    let upstream = 'nothing';
    if (reached.length > 0) {
      const e = reached[0];
      upstream = `${e.url.length > 24 ? e.url.slice(0, 21) + '...' : e.url}${e.ended ? '' : ' (incomplete)'}`;
      for (const name of ['x_user', 'upgrade', 'transfer-encoding']) if (e.headers[name] !== undefined) upstream += `, with ${name}`;
    }
    cells.push(`${status}; upstream: ${upstream}`);
  }
  rows.push(`| ${name} | ${cells.join(' | ')} |`);
}
let ngv = '';
try {
  ngv = execFileSync('sh', ['-c', 'nginx -v 2>&1'], { encoding: 'utf8' }).trim();
} catch {}
const hav = execFileSync('haproxy', ['-v'], { encoding: 'utf8' }).split('\n')[0];
console.log(`| case | nginx | HAProxy | Tollgate |\n| --- | --- | --- | --- |\n${rows.join('\n')}\n`);
console.log(`Measured ${new Date().toISOString().slice(0, 16)} UTC with ${ngv}, ${hav.replace(/ - https.*$/, '')}, Tollgate from this tree (node ${process.version}); each proxy in front of the same recording backend, body limit 1 KiB.`);
stop();
setTimeout(() => process.exit(0), 500);
