#!/usr/bin/env node
// The "fastify-proxy" row of the benchmark: fastify 5 with @fastify/http-proxy
// 11 (undici underneath, via @fastify/reply-from). One registration with no
// fixed upstream; replyOptions.getUpstream picks the backends in round robin,
// and reply-from's undici Agent keeps a keep-alive pool (128 connections) per
// backend. Fastify's own logger is off.
//
// Usage: node bench/peers/fastify-proxy.mjs PORT HOST:PORT[,HOST:PORT...]
// (install first: npm ci --prefix bench/peers; bench/run.sh does it)
import Fastify from 'fastify';
import proxy from '@fastify/http-proxy';
import { proxyArgs } from '../proxy-args.mjs';

const { port, backends } = proxyArgs('fastify-proxy.mjs');

const origins = backends.map((b) => `http://${b}`);
let next = 0;

const app = Fastify({ logger: false });
await app.register(proxy, {
  upstream: '',
  undici: { connections: 128, pipelining: 1 },
  replyOptions: {
    getUpstream: () => {
      const origin = origins[next];
      next = (next + 1) % origins.length;
      return origin;
    },
  },
});

await app.listen({ port, host: '127.0.0.1' });
console.log(`fastify-proxy listening on 127.0.0.1:${port} -> ${backends.join(', ')}`);

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    app.close().finally(() => process.exit(0));
    setTimeout(() => process.exit(0), 1000).unref();
  });
}
