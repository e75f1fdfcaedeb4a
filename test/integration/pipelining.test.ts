/**
 * Requests pipelined behind a response that closes the connection: Node 20 gives such a request's response
 * no 'close' event when the connection ends before its turn, so the proxy finishes it on the connection's
 * close. Otherwise it stayed in flight for ever, and a reload's old generation or a shutdown waited on it.
 * Node 24 emits one of its own: the request must still end once, or the in-flight count goes negative.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { exchange, statusesOf } from '../helpers/raw.js';
import { startBackend, startProxy } from '../helpers/servers.js';

const within = <T>(promise: Promise<T>, ms: number): Promise<T | 'timed out'> =>
  Promise.race([promise, new Promise<'timed out'>((resolve) => setTimeout(() => resolve('timed out'), ms))]);

describe('requests pipelined behind a closing response', () => {
  for (const [name, first] of [
    ['a 400 (a fragment in the path)', 'GET /a#b HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['a 400 (no Host)', 'GET /a HTTP/1.1\r\n\r\n'],
  ] as const) {
    test(`after ${name}: the pipelined requests are finished and logged, and the proxy closes`, async () => {
      const backend = await startBackend('b');
      const p = await startProxy([backend], {});
      try {
        const pipelined = 'GET /second HTTP/1.1\r\nHost: x\r\n\r\nGET /third HTTP/1.1\r\nHost: x\r\n\r\n';
        const reply = await exchange(p.port, first + pipelined);
        assert.equal(statusesOf(reply.text).length, 1, 'one response, then the connection closes');
        assert.ok(reply.closedByServer);
        // Every request that began gets its completion line (the ones never answered as 499).
        const completed = (): string[] => p.logs.filter((l) => l.msg === 'Request Completed').map((l) => `${String(l.path)} ${String(l.status)}`);
        for (let i = 0; i < 50 && completed().length < 3; i++) await new Promise((r) => setTimeout(r, 20));
        assert.deepEqual(completed().slice(1).sort(), ['/second 499', '/third 499']);
        // Node 24 also emits 'close' on such a response once destroyed: each request still ends once.
        await new Promise((r) => setTimeout(r, 50));
        assert.equal(completed().length, 3, 'one completion line per request');
        assert.equal(p.proxy.gateway.current.pipeline.active, 0, 'nothing counted in flight');
      } finally {
        assert.equal(await within(p.close(), 5_000), undefined, 'the proxy closed (nothing left in flight)');
        await backend.close();
      }
    });
  }
});
