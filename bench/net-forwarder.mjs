#!/usr/bin/env node
// A ceiling, not a proxy: how cheaply can Node forward a small request when node:http is not in front?
// node:net in front with a minimal HTTP/1.1 parser of its own, one undici Pool per backend (its dispatch
// API, raw header buffers), round robin, the response head written as one string and the body chunks
// straight to the socket. It handles what the benchmark sends (requests without a body, keep-alive, one at
// a time per connection) and answers anything else 501; it has none of the checks a real server needs
// (header size limits, timeouts, request smuggling). Its figure bounds what a server path of Tollgate's own
// could reach.
//
// Usage: node bench/net-forwarder.mjs PORT HOST:PORT[,HOST:PORT...]
import { STATUS_CODES } from 'node:http';
import net from 'node:net';
import { Pool } from 'undici';
import { closeOnSignals, proxyArgs } from './proxy-args.mjs';

const { port, backends } = proxyArgs('net-forwarder.mjs');
const pools = backends.map((b) => new Pool(`http://${b}`, { connections: 128 }));
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'host']);
const NOT_IMPLEMENTED = 'HTTP/1.1 501 Not Implemented\r\ncontent-length: 0\r\nconnection: close\r\n\r\n';
let next = 0;

/** The head of one request in `text` (latin1), or null when it is not complete yet. */
function parseHead(text) {
  const end = text.indexOf('\r\n\r\n');
  if (end === -1) return null;
  const lines = text.slice(0, end).split('\r\n');
  const [method, path, version] = lines[0].split(' ');
  const headers = [];
  let close = version !== 'HTTP/1.1';
  let body = false;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i];
    const colon = line.indexOf(':');
    const name = line.slice(0, colon);
    const lower = name.toLowerCase();
    const value = line.slice(colon + 1).trim();
    if (lower === 'content-length' || lower === 'transfer-encoding') body = true;
    if (lower === 'connection') close = value.toLowerCase() === 'close';
    if (!HOP.has(lower)) headers.push(name, value);
  }
  return { method, path, headers, close, body, length: end + 4 };
}

class Connection {
  #socket;
  #pending = '';
  #busy = false;

  constructor(socket) {
    this.#socket = socket;
    socket.setNoDelay(true);
    socket.on('data', (chunk) => {
      this.#pending += chunk.toString('latin1');
      this.#serve();
    });
    socket.on('error', () => socket.destroy());
  }

  #serve() {
    if (this.#busy || this.#socket.destroyed) return;
    const head = parseHead(this.#pending);
    if (head === null) return;
    this.#pending = this.#pending.slice(head.length);
    if (head.body || (head.method !== 'GET' && head.method !== 'HEAD')) {
      this.#socket.end(NOT_IMPLEMENTED);
      return;
    }
    this.#busy = true;
    const pool = pools[next];
    next = (next + 1) % pools.length;
    pool.dispatch({ method: head.method, path: head.path, headers: head.headers }, new Forward(this, head.close));
  }

  respondHead(text) {
    this.#socket.cork();
    this.#socket.write(text, 'latin1');
  }

  body(chunk) {
    const ok = this.#socket.write(chunk);
    if (this.#socket.writableCorked) this.#socket.uncork();
    return ok;
  }

  done(close) {
    if (this.#socket.writableCorked) this.#socket.uncork();
    if (close) {
      this.#socket.end();
      return;
    }
    this.#busy = false;
    this.#serve();
  }

  fail() {
    this.#socket.destroy();
  }

  onDrain(fn) {
    this.#socket.once('drain', fn);
  }
}

class Forward {
  #conn;
  #close;
  #chunked = false;

  constructor(conn, close) {
    this.#conn = conn;
    this.#close = close;
  }

  onConnect() {}

  onHeaders(status, raw, resume) {
    let head = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Unknown'}\r\n`;
    let length = false;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i].toString('latin1');
      const lower = name.toLowerCase();
      if (lower === 'content-length') length = true;
      if (HOP.has(lower)) continue;
      head += `${name}: ${raw[i + 1].toString('latin1')}\r\n`;
    }
    this.#chunked = !length;
    if (this.#chunked) head += 'transfer-encoding: chunked\r\n';
    if (this.#close) head += 'connection: close\r\n';
    this.#conn.respondHead(`${head}\r\n`);
    this.resume = resume;
    return true;
  }

  onData(chunk) {
    const conn = this.#conn;
    if (this.#chunked) conn.body(`${chunk.length.toString(16)}\r\n`);
    const ok = conn.body(chunk);
    if (this.#chunked) conn.body('\r\n');
    if (!ok) conn.onDrain(() => this.resume());
    return ok;
  }

  onComplete() {
    if (this.#chunked) this.#conn.body('0\r\n\r\n');
    this.#conn.done(this.#close);
  }

  onError() {
    this.#conn.fail();
  }
}

const server = net.createServer((socket) => new Connection(socket));
server.listen(port, '127.0.0.1', () => {
  console.log(`net-forwarder listening on 127.0.0.1:${port} -> ${backends.join(', ')}`);
});

closeOnSignals(server, pools);
