/**
 * Upstreams that misbehave: invalid framing or headers, bodies that break after the head, and the rule
 * that a response is never delivered to the wrong client.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer as createNetServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { describe, test } from 'node:test';
import { request } from '../helpers/http.js';
import { exchange, statusOf } from '../helpers/raw.js';
import { startBackend, startProxy, waitFor } from '../helpers/servers.js';

/** An upstream that answers every request with `reply` (raw bytes), counting its connections. */
async function rawUpstream(reply: (n: number) => string, close = false): Promise<{ server: Server; port: number; connections: () => number }> {
  let connections = 0;
  let requests = 0;
  const server = createNetServer((socket: Socket) => {
    connections++;
    socket.on('error', () => {});
    socket.on('data', () => {
      requests++;
      if (close) socket.end(reply(requests));
      else socket.write(reply(requests));
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as AddressInfo).port, connections: () => connections };
}

/** Connection counts are asserted: no health-check connections, and no retry (its own connection). */
const NO_CHECKS_NO_RETRIES = { load_balancing: { health_check: { active: { enabled: false } }, retries: { max_retries: 0 } } };

describe('upstream misbehaviour', () => {
  const bad: [string, string][] = [
    ['duplicate Content-Length', 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok'],
    ['CR inside a header value', 'HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 2\r\n\r\nok'],
    ['LF inside a header value (response splitting)', 'HTTP/1.1 200 OK\r\nX-A: a\nSet-Cookie: evil=1\r\nContent-Length: 2\r\n\r\nok'],
    ['Content-Length with Transfer-Encoding', 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n'],
    ['an invalid status line', 'HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok'],
  ];
  for (const [what, reply] of bad) {
    test(`${what}: 502 to the client, and that upstream connection is not reused`, async () => {
      const upstream = await rawUpstream(() => reply);
      const proxy = await startProxy([{ name: 'bad', port: upstream.port }], NO_CHECKS_NO_RETRIES);
      try {
        for (let i = 1; i <= 2; i++) {
          const res = await request(`${proxy.url}/`);
          assert.equal(res.status, 502);
          assert.equal(res.json().error, 'bad_gateway');
          assert.equal(res.headers['set-cookie'], undefined);
          await waitFor(() => upstream.connections() === i, 2000, `connection ${i}`);
        }
        assert.equal(proxy.proxy.balancer.backends[0]!.inflight, 0);
      } finally {
        await proxy.close();
        upstream.server.close();
      }
    });
  }

  test('a chunked body that breaks after the head went out: the client connection is aborted, never ended as complete', async () => {
    const upstream = await rawUpstream(() => 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\nbroken', false);
    const proxy = await startProxy([{ name: 'broken', port: upstream.port }], NO_CHECKS_NO_RETRIES);
    try {
      const reply = await exchange(proxy.port, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n', 5000);
      assert.equal(statusOf(reply.text), 200);
      assert.ok(reply.closedByServer, 'the connection was closed promptly');
      assert.match(reply.text, /hello/);
      assert.doesNotMatch(reply.text, /\r\n0\r\n\r\n$/, 'no terminating chunk: the client can tell the body is incomplete');
      await waitFor(() => proxy.logs.some((l) => l.msg === 'Request Completed' && l.error === 'bad_gateway'), 2000, 'the failure to be logged');
      // The next request opens a new upstream connection: the broken one was discarded.
      await exchange(proxy.port, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n', 2000);
      assert.equal(upstream.connections(), 2);
    } finally {
      await proxy.close();
      upstream.server.close();
    }
  });

  test('hop-by-hop headers and those named in Connection are stripped from responses', async () => {
    const upstream = await rawUpstream(
      () => 'HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: timeout=1\r\nProxy-Connection: x\r\nTE: t\r\nTrailer: X-T\r\nUpgrade: y\r\nX-Public: p\r\nContent-Length: 2\r\n\r\nok',
    );
    const proxy = await startProxy([{ name: 'hop', port: upstream.port }], {});
    try {
      const reply = await exchange(proxy.port, 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      const head = reply.text.slice(0, reply.text.indexOf('\r\n\r\n')).toLowerCase();
      for (const name of ['x-secret', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade']) assert.ok(!head.includes(`\r\n${name}:`), name);
      assert.ok(head.includes('\r\nx-public: p'));
      assert.ok(reply.text.endsWith('ok'));
    } finally {
      await proxy.close();
      upstream.server.close();
    }
  });

  test('responses never go to the wrong client: 30 keep-alive clients, half of them pipelining, each get their own', async () => {
    const backend = await startBackend('echo', (req, res) => {
      // Random small delays so responses finish out of order across connections.
      setTimeout(() => res.end(`marker=${req.headers['x-marker']}`), Math.floor(Math.random() * 15));
    });
    const proxy = await startProxy([backend], {});
    try {
      const clients = Array.from({ length: 30 }, async (_, c) => {
        const markers = Array.from({ length: 6 }, (_, r) => `c${c}-r${r}`);
        const requests = markers.map((m, r) => `GET /${m} HTTP/1.1\r\nHost: x\r\nX-Marker: ${m}\r\n${r === markers.length - 1 ? 'Connection: close\r\n' : ''}\r\n`);
        const pipelined = c % 2 === 0;
        const reply = await exchange(proxy.port, pipelined ? requests.join('') : requests, 10_000, pipelined ? 0 : 30);
        const seen = [...reply.text.matchAll(/marker=(c\d+-r\d+)/g)].map((m) => m[1]);
        assert.deepEqual(seen, markers, `client ${c}${pipelined ? ' (pipelining)' : ''}`);
      });
      await Promise.all(clients);
    } finally {
      await proxy.close();
      await backend.close();
    }
  });
});
