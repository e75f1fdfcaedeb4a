#!/usr/bin/env node
// WebSocket load for the `websocket` phase of bench/bench.mjs (npm run bench), two modes:
//
//   node bench/ws-load.mjs serve PORT
//       an echo server on 127.0.0.1:PORT (the `ws` package): every message comes back as it was sent;
//       a plain GET is answered 200 with a 100-byte body (what the bench checks a proxy with)
//   node bench/ws-load.mjs relay PORT TARGET_PORT
//       a bare TCP relay on 127.0.0.1:PORT to 127.0.0.1:TARGET_PORT (socket.pipe both ways, no HTTP): the
//       least any proxy in the middle costs, the reference for the Tollgate row
//   node bench/ws-load.mjs load URL [--connections 50] [--seconds 10] [--warmup 1] [--bytes 64] [--header 'Name: value']
//       opens the connections, then each one sends a message and waits for its echo, again and again
//       (ping-pong, one message in flight per connection) for --seconds after --warmup; prints one JSON line:
//       { connections, seconds, messages, perSecond, errors }
//
// Bounded in count and time: the load mode stops after warm-up + seconds (and fails after 30 s more);
// it targets the URL it is given (the bench passes 127.0.0.1 only).
import http from 'node:http';
import net from 'node:net';
import { WebSocket, WebSocketServer } from 'ws';

const BODY = 'tollgate-bench-payload:'.padEnd(100, '0123456789abcdefghijklmnopqrstuvwxyz');
const [mode, target, ...rest] = process.argv.slice(2);

function option(name, dflt) {
  const i = rest.indexOf(name);
  return i === -1 ? dflt : rest[i + 1];
}

function headers() {
  const out = {};
  rest.forEach((a, i) => {
    if (a !== '--header') return;
    const h = rest[i + 1] ?? '';
    const colon = h.indexOf(':');
    out[h.slice(0, colon).trim()] = h.slice(colon + 1).trim();
  });
  return out;
}

if (mode === 'serve') {
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': BODY.length });
    res.end(BODY);
  });
  const wss = new WebSocketServer({ server, perMessageDeflate: false });
  wss.on('connection', (ws) => ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary })));
  server.listen(Number(target), '127.0.0.1', () => console.log(`ws-load: echo server on 127.0.0.1:${target}`));
} else if (mode === 'relay') {
  const to = Number(rest[0]);
  net.createServer((client) => {
    const upstream = net.connect(to, '127.0.0.1');
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    client.pipe(upstream);
    upstream.pipe(client);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  }).listen(Number(target), '127.0.0.1', () => console.log(`ws-load: relay on 127.0.0.1:${target} to ${to}`));
} else if (mode === 'load') {
  const connections = Number(option('--connections', 50));
  const seconds = Number(option('--seconds', 10));
  const warmup = Number(option('--warmup', 1));
  const payload = Buffer.alloc(Number(option('--bytes', 64)), 'x');
  const extra = headers();
  let counting = false;
  let running = true;
  let messages = 0;
  let errors = 0;
  const hardStop = setTimeout(() => {
    console.error('ws-load: did not finish in time');
    process.exit(1);
  }, (warmup + seconds + 30) * 1000);
  const sockets = await Promise.all(Array.from({ length: connections }, () => new Promise((resolve, reject) => {
    const ws = new WebSocket(target, { headers: extra, perMessageDeflate: false });
    ws.once('open', () => resolve(ws));
    ws.once('unexpected-response', (_req, res) => reject(new Error(`handshake answered ${res.statusCode}`)));
    ws.once('error', reject);
  })));
  for (const ws of sockets) {
    ws.on('error', () => errors++);
    ws.on('message', () => {
      if (counting) messages++;
      if (running) ws.send(payload);
    });
    ws.send(payload);
  }
  await new Promise((r) => setTimeout(r, warmup * 1000));
  counting = true;
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  counting = false;
  running = false;
  const elapsed = (performance.now() - t0) / 1000;
  await Promise.all(sockets.map((ws) => new Promise((resolve) => {
    ws.once('close', resolve);
    ws.close();
  })));
  clearTimeout(hardStop);
  console.log(JSON.stringify({ connections, seconds: elapsed, messages, perSecond: messages / elapsed, errors }));
} else {
  console.error('usage: node bench/ws-load.mjs serve PORT | relay PORT TARGET_PORT | load URL [--connections N] [--seconds S] [--warmup S] [--bytes B] [--header "Name: value"]');
  process.exit(2);
}
