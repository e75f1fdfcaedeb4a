import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer as createNetServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { describe, test } from 'node:test';
import { REPLAY_MAX_BYTES } from '../../src/proxy/request-body.js';
import { HINT_MSG } from '../../src/proxy/tls-hint.js';
import { FaultUpstream } from '../helpers/fault-upstream.js';
import { request } from '../helpers/http.js';
import { startBackend, startProxy, waitFor, type TestProxy } from '../helpers/servers.js';
import { startTlsUpstream } from '../helpers/tls.js';
import { startUnacceptingListener } from '../helpers/unaccepting.js';

const NO_HEALTH = { active: { enabled: false }, passive: { enabled: false } };

/** A TCP server that writes `reply` on each connection's first data and closes. */
async function rawUpstream(reply: Buffer): Promise<{ server: Server; port: number }> {
  const server = createNetServer((socket: Socket) => {
    socket.on('error', () => {});
    socket.once('data', () => socket.end(reply));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as AddressInfo).port };
}

describe('an upstream that speaks TLS', () => {
  test('a plain upstream that is an https server: 502, and a warning that names it and the request', async () => {
    const tls = await startTlsUpstream();
    const proxy = await startProxy([{ name: 'secure', port: tls.port }], { load_balancing: { health_check: NO_HEALTH } });
    try {
      const res = await request(`${proxy.url}/x`);
      assert.equal(res.status, 502);
      assert.equal(res.json().error, 'bad_gateway');
      await waitFor(() => proxy.logs.some((l) => l.msg === HINT_MSG), 5000, 'the TLS hint');
      const hint = proxy.logs.find((l) => l.msg === HINT_MSG);
      assert.equal(hint?.level, 40);
      assert.equal(hint?.request_id, res.headers['x-request-id']);
      assert.equal(hint?.upstream, 'secure');
      assert.equal(hint?.upstream_addr, `127.0.0.1:${tls.port}`);
      assert.equal(hint?.reason, 'it closed the connection without answering, and it completes a TLS handshake');
    } finally {
      await proxy.close();
      await tls.close();
    }
  });

  test('an upstream whose answer starts with a TLS alert record: 502 and the hint at once, without a handshake', async () => {
    // What OpenSSL's s_server and others send to a plain-HTTP request: alert, TLS 1.2, fatal, protocol_version.
    const upstream = await rawUpstream(Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46]));
    const proxy = await startProxy([{ name: 'alerting', port: upstream.port }], { load_balancing: { health_check: NO_HEALTH } });
    try {
      const res = await request(`${proxy.url}/y`);
      assert.equal(res.status, 502);
      const hint = proxy.logs.find((l) => l.msg === HINT_MSG);
      assert.equal(hint?.request_id, res.headers['x-request-id']);
      assert.equal(hint?.reason, 'the first bytes of its answer were a TLS record');
    } finally {
      await proxy.close();
      upstream.server.close();
    }
  });

  test('a plain-HTTP upstream that closes without answering, or answers garbage, gets no hint', async () => {
    let closed = 0;
    const closing = createNetServer((socket: Socket) => {
      socket.on('error', () => {});
      socket.on('close', () => closed++);
      socket.once('data', () => socket.end());
    });
    closing.listen(0, '127.0.0.1');
    await once(closing, 'listening');
    const garbage = await rawUpstream(Buffer.from('this is not HTTP\r\n\r\n'));
    const proxy = await startProxy(
      [
        { name: 'closing', port: (closing.address() as AddressInfo).port },
        { name: 'garbage', port: garbage.port },
      ],
      { load_balancing: { strategy: 'round_robin', health_check: NO_HEALTH, retries: { max_retries: 0 } } },
    );
    try {
      assert.equal((await request(`${proxy.url}/a`)).status, 502);
      // The request's connection, then the handshake attempt's, which `closing` ends on its first bytes;
      // the attempt has given up by the time its connection is closed on both sides.
      await waitFor(() => closed === 2, 5000, 'the request and the handshake attempt to be over');
      await new Promise((resolve) => setImmediate(resolve));
      assert.equal((await request(`${proxy.url}/b`)).status, 502);
      assert.deepEqual(
        proxy.logs.filter((l) => l.msg === HINT_MSG),
        [],
      );
    } finally {
      await proxy.close();
      closing.close();
      garbage.server.close();
    }
  });
});

describe('an upstream that never accepts the connection', () => {
  test('504 upstream_timeout once connect_timeout_ms has passed, the cause a connect timeout', async () => {
    const listener = await startUnacceptingListener();
    const proxy = await startProxy([{ name: 'stalled', port: listener.port }], {
      load_balancing: { connect_timeout_ms: 300, response_timeout_ms: 60_000, health_check: NO_HEALTH },
    });
    try {
      const res = await request(`${proxy.url}/slow-connect`);
      assert.equal(res.status, 504);
      assert.equal(res.json().error, 'upstream_timeout');
      const line = proxy.logs.find((l) => l.msg === 'Request Completed' && l.path === '/slow-connect');
      assert.equal(line?.error, 'upstream_timeout');
      assert.match(String(line?.cause), /^UND_ERR_CONNECT_TIMEOUT: /);
      assert.equal(line?.retries, 0);
    } finally {
      await proxy.close();
      await listener.close();
    }
  });

  test('nothing was sent, so the request (a POST with a body) is retried on another upstream', async () => {
    const listener = await startUnacceptingListener();
    const live = await startBackend('live');
    const proxy = await startProxy(
      [
        { name: 'stalled', port: listener.port },
        { name: 'live', port: live.port },
      ],
      { load_balancing: { strategy: 'round_robin', connect_timeout_ms: 300, health_check: NO_HEALTH } },
    );
    try {
      const res = await request(`${proxy.url}/order`, { method: 'POST', body: 'item=1' });
      assert.equal(res.status, 200);
      assert.deepEqual([res.json().backend, res.json().body], ['live', 'item=1']);
      const line = proxy.logs.find((l) => l.msg === 'Request Completed' && l.path === '/order');
      assert.equal(line?.retries, 1);
    } finally {
      await proxy.close();
      await Promise.all([listener.close(), live.close()]);
    }
  });
});

describe('a reset after the request body was sent', () => {
  /** A proxy over `resetting` (reads the whole request, then resets) and an echoing backend, tried in that order. */
  async function setup(): Promise<{ proxy: TestProxy; resetting: FaultUpstream; echoed: () => number; close(): Promise<void> }> {
    const resetting = await new FaultUpstream('resetting').start();
    resetting.mode = 'read-body-then-reset';
    const echo = await startBackend('echo');
    const proxy = await startProxy(
      [
        { name: 'resetting', port: resetting.port },
        { name: 'echo', port: echo.port },
      ],
      { load_balancing: { strategy: 'round_robin', health_check: NO_HEALTH } },
    );
    return {
      proxy,
      resetting,
      echoed: () => echo.hits,
      close: async () => {
        await proxy.close();
        await Promise.all([resetting.kill(), echo.close()]);
      },
    };
  }

  for (const chunked of [false, true]) {
    test(`a PUT with a 10-byte ${chunked ? 'chunked' : 'Content-Length'} body is sent again, whole, to another upstream`, async () => {
      const s = await setup();
      try {
        const res = await request(`${s.proxy.url}/doc/1`, { method: 'PUT', body: '0123456789', headers: chunked ? { 'transfer-encoding': 'chunked' } : {} });
        assert.equal(res.status, 200);
        assert.equal(res.json().backend, 'echo');
        assert.equal(res.json().body, '0123456789');
        assert.equal(s.resetting.hits, 1, 'the first upstream got the PUT and reset');
        const line = s.proxy.logs.find((l) => l.msg === 'Request Completed' && l.path === '/doc/1');
        assert.equal(line?.retries, 1);
      } finally {
        await s.close();
      }
    });
  }

  test('a POST with the same body is not sent again: 502', async () => {
    const s = await setup();
    try {
      const res = await request(`${s.proxy.url}/pay`, { method: 'POST', body: '0123456789' });
      assert.equal(res.status, 502);
      assert.equal(s.resetting.hits, 1);
      assert.equal(s.echoed(), 0, 'the other upstream never saw it');
    } finally {
      await s.close();
    }
  });

  test('a PUT with a body over REPLAY_MAX_BYTES is not kept, so not sent again: 502', async () => {
    const s = await setup();
    try {
      const res = await request(`${s.proxy.url}/big`, { method: 'PUT', body: Buffer.alloc(REPLAY_MAX_BYTES + 1, 'x') });
      assert.equal(res.status, 502);
      assert.equal(s.resetting.hits, 1);
      assert.equal(s.echoed(), 0);
    } finally {
      await s.close();
    }
  });
});
