#!/usr/bin/env node
// The "node-http-proxy" row of the benchmark: the npm package http-proxy 1.18
// (node-http-proxy) in front of the backends, round robin, one keep-alive
// http.Agent (maxSockets 128 per backend) shared by all of them.
//
// Usage: node bench/peers/node-http-proxy.mjs PORT HOST:PORT[,HOST:PORT...]
// (install first: npm ci --prefix bench/peers; bench/run.sh does it)
import http from 'node:http';
import httpProxy from 'http-proxy';
import { proxyArgs } from '../proxy-args.mjs';

const { port, backends } = proxyArgs('node-http-proxy.mjs');

const agent = new http.Agent({ keepAlive: true, maxSockets: 128 });
const targets = backends.map((b) => `http://${b}`);
const proxy = httpProxy.createProxyServer({ agent, xfwd: false });

proxy.on('error', (err, _req, res) => {
  // `res` is a ServerResponse for HTTP requests (a socket for upgrades).
  if (typeof res?.writeHead === 'function' && !res.headersSent) {
    res.writeHead(502, { 'content-type': 'text/plain' });
    res.end('bad gateway\n');
  } else {
    res?.destroy?.();
  }
});

let next = 0;

const server = http.createServer((req, res) => {
  const target = targets[next];
  next = (next + 1) % targets.length;
  proxy.web(req, res, { target });
});

server.listen(port, '127.0.0.1', () => {
  console.log(`node-http-proxy listening on 127.0.0.1:${port} -> ${backends.join(', ')}`);
});

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    server.close();
    agent.destroy();
    process.exit(0);
  });
}
