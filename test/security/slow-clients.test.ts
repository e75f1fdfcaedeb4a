/**
 * Slow and idle clients: the header, body and keep-alive timeouts are enforced (within about a second of
 * their values), and hundreds of slowloris connections do not keep other clients from being served.
 */
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { request } from '../helpers/http.js';
import { exchange, statusOf } from '../helpers/raw.js';
import { startBackend, startProxy, type Backend, type TestProxy } from '../helpers/servers.js';

describe('slow and idle clients', () => {
  let backend: Backend;
  let proxy: TestProxy;
  before(async () => {
    backend = await startBackend('b');
    proxy = await startProxy([backend], { server: { header_timeout_ms: 1000, body_timeout_ms: 600, keepalive_timeout_ms: 700 } });
  });
  after(async () => {
    await proxy.close();
    await backend.close();
  });

  test('a request head still incomplete after header_timeout_ms gets 408 and is closed, within about a second', async () => {
    const reply = await exchange(proxy.port, ['GET / HTTP/1.1\r\n', 'Host: x\r\n', 'X-Slow: 1\r\n'], 6000, 100);
    assert.equal(statusOf(reply.text), 408);
    assert.match(reply.text, /"error":"request_timeout"/);
    assert.ok(reply.closedByServer);
    assert.ok(reply.elapsed >= 900 && reply.elapsed < 2600, `closed after ${reply.elapsed} ms (limit 1000 ms)`);
  });

  test('a body that pauses longer than body_timeout_ms gets 408; the upstream request is abandoned', async () => {
    const hits = backend.hits;
    const reply = await exchange(proxy.port, 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabcde', 6000);
    assert.equal(statusOf(reply.text), 408);
    assert.ok(reply.closedByServer);
    assert.ok(reply.elapsed >= 500 && reply.elapsed < 2600, `closed after ${reply.elapsed} ms (limit 600 ms)`);
    assert.ok(backend.hits <= hits + 1);
    assert.ok(proxy.proxy.balancer.backends.every((b) => b.inflight === 0));
  });

  test('an idle keep-alive connection is closed after keepalive_timeout_ms', async () => {
    const reply = await exchange(proxy.port, 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n', 6000);
    assert.equal(statusOf(reply.text), 200);
    assert.ok(reply.closedByServer);
    assert.ok(reply.elapsed >= 600 && reply.elapsed < 2600, `closed after ${reply.elapsed} ms (limit 700 ms)`);
  });

  test('300 slowloris connections do not stop other clients from being served; each is closed by the header timeout', async () => {
    const sockets: Socket[] = [];
    const closed: Promise<void>[] = [];
    for (let i = 0; i < 300; i++) {
      const s = connect(proxy.port, '127.0.0.1');
      s.on('error', () => {});
      s.write('GET / HTTP/1.1\r\nHost: x\r\n');
      closed.push(new Promise((resolve) => s.once('close', () => resolve())));
      sockets.push(s);
    }
    const drip = setInterval(() => {
      for (const s of sockets) if (!s.destroyed) s.write('X-Drip: 1\r\n');
    }, 200);
    try {
      for (let i = 0; i < 5; i++) {
        const res = await request(`${proxy.url}/served-${i}`);
        assert.equal(res.status, 200);
      }
      await Promise.race([Promise.all(closed), new Promise((_, reject) => setTimeout(() => reject(new Error('slowloris connections still open')), 6000))]);
    } finally {
      clearInterval(drip);
      for (const s of sockets) s.destroy();
    }
  });
});
