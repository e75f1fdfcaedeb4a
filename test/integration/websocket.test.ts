/**
 * WebSockets through the proxy with real clients and servers (the `ws` package): the handshake runs the
 * route's phases, bytes flow both ways, either side closing closes the other, and nothing is left open.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { WebSocket } from 'ws';
import { request } from '../helpers/http.js';
import { samples, scrape } from '../helpers/metrics.js';
import { startProxy, waitFor, type TestProxy } from '../helpers/servers.js';
import { selfSignedCert } from '../helpers/tls.js';
import { closed, openWebSocket, roundTrip, startWsBackend, type WsBackend } from '../helpers/websocket.js';

const TOKEN = 'ws-test-token';
const AUTH = { authorization: `Bearer ${TOKEN}` };

/** TCP connections open on the proxy's listener now. */
function proxyConnections(p: TestProxy): Promise<number> {
  return p.proxy.server.openConnections();
}

/** Waits until the proxy and the backend hold no connection, no WebSocket and no request in flight. */
async function nothingOpen(p: TestProxy, backend: WsBackend, ms = 1000, pooled = 0): Promise<void> {
  await waitFor(
    async () => (await proxyConnections(p)) === 0 && backend.openSockets === pooled && p.proxy.gateway.webSocketsOpen === 0 && p.proxy.generation.pipeline.active === 0,
    ms,
    'every socket closed on both sides, no WebSocket or request left',
  );
  for (const b of p.proxy.balancer.backends) assert.equal(b.inflight, 0, `${b.name} in flight`);
}

const completions = (p: TestProxy) => p.logs.filter((l) => l.msg === 'Request Completed');

describe('WebSocket echo through the proxy', () => {
  let backend: WsBackend;
  let proxy: TestProxy;
  before(async () => {
    backend = await startWsBackend('ws1');
    proxy = await startProxy([backend]);
  });
  after(async () => {
    await proxy.close();
    await backend.close();
  });

  test('text and binary messages come back, the 101 carries Tollgate\'s headers, one log line when it closes', async () => {
    const { ws, status, headers } = await openWebSocket(`ws://127.0.0.1:${proxy.port}/chat?room=1`, { 'x-request-id': 'ws-echo-1' });
    assert.equal(status, 101);
    assert.equal(headers['x-request-id'], 'ws-echo-1');
    assert.equal(headers['x-proxy-by'], 'tollgate');
    assert.ok(ws !== undefined);
    const text = await roundTrip(ws, 'hello through tollgate');
    assert.equal(text.isBinary, false);
    assert.equal(text.data.toString(), 'hello through tollgate');
    const bytes = randomBytes(4096);
    const binary = await roundTrip(ws, bytes);
    assert.equal(binary.isBinary, true);
    assert.deepEqual(binary.data, bytes);
    assert.equal(backend.requests.at(-1)?.url, '/chat?room=1');
    assert.equal(backend.requests.at(-1)?.headers['x-request-id'], 'ws-echo-1');
    assert.equal(completions(proxy).filter((l) => l.request_id === 'ws-echo-1').length, 0, 'no line while open');
    ws.close(1000, 'bye');
    assert.equal(await closed(ws), 1000);
    await nothingOpen(proxy, backend);
    const line = completions(proxy).find((l) => l.request_id === 'ws-echo-1');
    assert.ok(line, 'one completion line once closed');
    assert.equal(line.status, 101);
    // The close handshake is in the frames, which are not parsed: closed_by names the side whose TCP
    // connection ended first, after the handshake the server (RFC 6455 §7.1.1).
    assert.match(String(line.closed_by), /^(client|upstream)_closed$/);
    assert.ok((line.bytes as number) > 4096 && (line.bytes_received as number) > 4096, 'bytes each way');
    assert.equal(completions(proxy).filter((l) => l.request_id === 'ws-echo-1').length, 1);
  });

  test('a 10 MiB message each way', { timeout: 60_000 }, async () => {
    const { ws } = await openWebSocket(`ws://127.0.0.1:${proxy.port}/big`);
    assert.ok(ws !== undefined);
    const big = randomBytes(10 * 1024 * 1024);
    const back = await roundTrip(ws, big);
    assert.equal(back.data.length, big.length);
    assert.ok(back.data.equals(big));
    ws.close();
    await closed(ws);
    await nothingOpen(proxy, backend);
  });

  test('200 WebSockets at once, each with its own messages', { timeout: 60_000 }, async () => {
    const opened = await Promise.all(Array.from({ length: 200 }, (_, i) => openWebSocket(`ws://127.0.0.1:${proxy.port}/n/${i}`)));
    assert.equal(proxy.proxy.gateway.webSocketsOpen, 200);
    const sockets = opened.map((h) => h.ws as WebSocket);
    const replies = await Promise.all(sockets.map((ws, i) => roundTrip(ws, `message ${i}`)));
    replies.forEach((r, i) => assert.equal(r.data.toString(), `message ${i}`));
    for (const ws of sockets) ws.close();
    await Promise.all(sockets.map((ws) => closed(ws)));
    await nothingOpen(proxy, backend, 5000);
  });

  test('backpressure: a client that stops reading stops the upstream, nothing piles up in the proxy', { timeout: 60_000 }, async () => {
    const { ws } = await openWebSocket(`ws://127.0.0.1:${proxy.port}/slow-reader`);
    assert.ok(ws !== undefined);
    await roundTrip(ws, 'x');
    const clientSocket = (ws as WebSocket & { _socket: Socket })._socket;
    clientSocket.pause();
    const served = backend.accepted.at(-1) as WebSocket;
    const chunk = randomBytes(1024 * 1024);
    for (let i = 0; i < 64; i++) served.send(chunk);
    // Without backpressure the proxy would read all 64 MiB into its own memory at once; with it, the
    // upstream keeps most of them queued (only socket buffers and a chunk or two are in between).
    await new Promise((r) => setTimeout(r, 500));
    assert.ok(served.bufferedAmount > 32 * 1024 * 1024, `the upstream still holds ${served.bufferedAmount} bytes`);
    let received = 0;
    const all = new Promise<void>((resolve) =>
      ws.on('message', (data: Buffer) => {
        received += data.length;
        if (received === 64 * chunk.length) resolve();
      }),
    );
    clientSocket.resume();
    await all;
    ws.close();
    await closed(ws);
    await nothingOpen(proxy, backend);
  });

  test('the upstream closing closes the client within a second; nothing is left open', async () => {
    const { ws } = await openWebSocket(`ws://127.0.0.1:${proxy.port}/upstream-closes`, { 'x-request-id': 'ws-up-close' });
    assert.ok(ws !== undefined);
    await roundTrip(ws, 'x');
    (backend.accepted.at(-1) as WebSocket).close(1001, 'going away');
    assert.equal(await closed(ws), 1001);
    await nothingOpen(proxy, backend);
    await waitFor(() => completions(proxy).some((l) => l.request_id === 'ws-up-close'), 1000, 'the line');
    assert.match(String(completions(proxy).find((l) => l.request_id === 'ws-up-close')?.closed_by), /^(client|upstream)_closed$/);
  });

  test('an upstream reset closes the client within a second; nothing is left open', async () => {
    const { ws } = await openWebSocket(`ws://127.0.0.1:${proxy.port}/upstream-reset`, { 'x-request-id': 'ws-up-reset' });
    assert.ok(ws !== undefined);
    await roundTrip(ws, 'x');
    const served = backend.accepted.at(-1) as WebSocket & { _socket: Socket };
    served._socket.resetAndDestroy();
    const code = await Promise.race([closed(ws), new Promise<string>((r) => setTimeout(r, 1000, 'still open'))]);
    assert.equal(code, 1006, 'closed without a close frame');
    await nothingOpen(proxy, backend);
    await waitFor(() => completions(proxy).some((l) => l.request_id === 'ws-up-reset'), 1000, 'the line');
    assert.equal(completions(proxy).find((l) => l.request_id === 'ws-up-reset')?.closed_by, 'upstream_reset');
  });

  test('a client reset closes the upstream side within a second; nothing is left open', async () => {
    const { ws } = await openWebSocket(`ws://127.0.0.1:${proxy.port}/client-reset`, { 'x-request-id': 'ws-client-reset' });
    assert.ok(ws !== undefined);
    await roundTrip(ws, 'x');
    const served = backend.accepted.at(-1) as WebSocket;
    (ws as WebSocket & { _socket: Socket })._socket.resetAndDestroy();
    const code = await Promise.race([closed(served), new Promise<string>((r) => setTimeout(r, 1000, 'still open'))]);
    assert.equal(code, 1006);
    await nothingOpen(proxy, backend);
    await waitFor(() => completions(proxy).some((l) => l.request_id === 'ws-client-reset'), 1000, 'the line');
    assert.equal(completions(proxy).find((l) => l.request_id === 'ws-client-reset')?.closed_by, 'client_reset');
  });

  test('a handshake pipelined behind a request: that request is answered first, then the 101', async () => {
    const socket = connect(proxy.port, '127.0.0.1');
    await new Promise((r) => socket.once('connect', r));
    let received = '';
    socket.on('data', (c: Buffer) => (received += c.toString('latin1')));
    const handshake = 'GET /second HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n';
    socket.write(`GET /first HTTP/1.1\r\nHost: x\r\n\r\n${handshake}`);
    await waitFor(() => received.includes('101 Switching Protocols'), 2000, 'the 101');
    assert.match(received, /^HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\nws1HTTP\/1\.1 101 Switching Protocols\r\n/);
    assert.equal(backend.requests.at(-1)?.url, '/second');
    socket.destroy();
    await nothingOpen(proxy, backend, 1000, 1);
  });

  test('bytes the client sends with its handshake are not lost', async () => {
    // A raw client writes the handshake and a masked text frame in one write, before any 101.
    const socket = connect(proxy.port, '127.0.0.1');
    await new Promise((r) => socket.once('connect', r));
    const payload = Buffer.from('early');
    const mask = Buffer.from([1, 2, 3, 4]);
    const masked = Buffer.from(payload.map((b, i) => b ^ (mask[i % 4] as number)));
    const frame = Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, masked]);
    const head = 'GET /early HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n';
    let received = Buffer.alloc(0);
    socket.on('data', (c: Buffer) => (received = Buffer.concat([received, c])));
    socket.write(Buffer.concat([Buffer.from(head, 'latin1'), frame]));
    await waitFor(() => received.includes(Buffer.from('early')), 2000, 'the echoed frame');
    const text = received.toString('latin1');
    assert.match(text, /^HTTP\/1\.1 101 Switching Protocols\r\n/);
    assert.match(text, /\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=\r\n/i);
    socket.destroy();
    await nothingOpen(proxy, backend);
  });
});

describe('WebSockets on a listener that also takes h2c', () => {
  test('an HTTP/1.1 connection is sniffed as such and upgraded', async () => {
    const backend = await startWsBackend('h2c-side');
    const proxy = await startProxy([backend], { server: { h2c: true } });
    try {
      const { ws, status } = await openWebSocket(`ws://127.0.0.1:${proxy.port}/`);
      assert.equal(status, 101);
      assert.equal((await roundTrip(ws as WebSocket, 'beside h2c')).data.toString(), 'beside h2c');
      (ws as WebSocket).close();
      await closed(ws as WebSocket);
      await nothingOpen(proxy, backend);
    } finally {
      await proxy.close();
      await backend.close();
    }
  });
});

describe('wss: WebSockets on a TLS listener', () => {
  test('echo over TLS (HTTP/1.1 chosen in ALPN, h2 offered beside it)', async () => {
    const { key, cert } = selfSignedCert();
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-wss-'));
    writeFileSync(join(dir, 'cert.pem'), cert);
    writeFileSync(join(dir, 'key.pem'), key);
    const backend = await startWsBackend('secure');
    const proxy = await startProxy([backend], { server: { tls: { certificates: [{ cert_file: join(dir, 'cert.pem'), key_file: join(dir, 'key.pem') }] } } });
    try {
      const { ws, status } = await openWebSocket(`wss://localhost:${proxy.port}/tls`, {}, { ca: cert });
      assert.equal(status, 101);
      assert.equal((await roundTrip(ws as WebSocket, 'over tls')).data.toString(), 'over tls');
      (ws as WebSocket).close();
      await closed(ws as WebSocket);
      await nothingOpen(proxy, backend);
    } finally {
      await proxy.close();
      await backend.close();
    }
  });
});

describe('the handshake goes through the request phases first', () => {
  let backend: WsBackend;
  let proxy: TestProxy;
  before(async () => {
    backend = await startWsBackend('guarded');
    proxy = await startProxy([backend], {
      middleware: { auth: { enabled: true, valid_tokens: [TOKEN] }, rate_limit: { enabled: true, requests_per_minute: 1, burst_size: 3 } },
    });
  });
  after(async () => {
    await proxy.close();
    await backend.close();
  });

  test('401 without credentials, then 429 once the burst is spent: nothing reaches the upstream', async () => {
    const refused = await openWebSocket(`ws://127.0.0.1:${proxy.port}/`);
    assert.equal(refused.status, 401);
    assert.match(refused.body, /"error":"unauthorized"/);
    assert.equal(backend.upgrades + backend.hits, 0);
    // One token per upgrade: a burst of 3 allows three handshakes.
    const allowed = [];
    for (let i = 0; i < 3; i++) {
      const h = await openWebSocket(`ws://127.0.0.1:${proxy.port}/`, AUTH);
      assert.equal(h.status, 101, `handshake ${i}`);
      allowed.push(h.ws as WebSocket);
    }
    const limited = await openWebSocket(`ws://127.0.0.1:${proxy.port}/`, AUTH);
    assert.equal(limited.status, 429);
    assert.match(limited.body, /"error":"rate_limited"/);
    assert.ok(limited.headers['retry-after'] !== undefined);
    assert.equal(backend.upgrades, 3, 'only the allowed handshakes reached the upstream');
    assert.equal(backend.hits, 0);
    for (const ws of allowed) ws.close();
    await Promise.all(allowed.map((ws) => closed(ws)));
    await nothingOpen(proxy, backend);
  });
});

describe('upstream answers and limits', () => {
  test('an upstream that refuses the upgrade: its answer is passed back, no 101, nothing left open', async () => {
    const backend = await startWsBackend('refuser', {
      onUpgrade: (_req, socket) => {
        socket.end('HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 7\r\nConnection: close\r\n\r\nno, ws.');
      },
    });
    const proxy = await startProxy([backend]);
    try {
      const h = await openWebSocket(`ws://127.0.0.1:${proxy.port}/`);
      assert.equal(h.status, 403);
      assert.equal(h.body, 'no, ws.');
      assert.equal(h.headers['x-proxy-by'], 'tollgate');
      await nothingOpen(proxy, backend);
    } finally {
      await proxy.close();
      await backend.close();
    }
  });

  test('an upstream that answers 101 with a wrong Sec-WebSocket-Accept: 502, the client never gets a 101', async () => {
    const backend = await startWsBackend('liar', {
      onUpgrade: (_req, socket) => {
        socket.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: bm90IHRoZSByaWdodCBvbmU=\r\n\r\n');
      },
    });
    const proxy = await startProxy([backend], { load_balancing: { retries: { max_retries: 0 } } });
    try {
      const h = await openWebSocket(`ws://127.0.0.1:${proxy.port}/`);
      assert.equal(h.status, 502);
      assert.match(h.body, /Sec-WebSocket-Accept/);
      await nothingOpen(proxy, backend);
    } finally {
      await proxy.close();
      await backend.close();
    }
  });

  test('idle_timeout_ms closes a WebSocket with no bytes either way', async () => {
    const backend = await startWsBackend('idle');
    const proxy = await startProxy([backend], { websocket: { idle_timeout_ms: 1000 } });
    try {
      const { ws } = await openWebSocket(`ws://127.0.0.1:${proxy.port}/`, { 'x-request-id': 'ws-idle' });
      assert.ok(ws !== undefined);
      await roundTrip(ws, 'still here');
      assert.equal(await closed(ws), 1006);
      await nothingOpen(proxy, backend);
      await waitFor(() => completions(proxy).some((l) => l.request_id === 'ws-idle'), 1000, 'the line');
      assert.equal(completions(proxy).find((l) => l.request_id === 'ws-idle')?.closed_by, 'idle_timeout');
    } finally {
      await proxy.close();
      await backend.close();
    }
  });

  test('the instance cap and a route cap: 503 too_many_websockets beyond them, nothing sent upstream', async () => {
    const backend = await startWsBackend('capped');
    const proxy = await startProxy([backend], {
      websocket: { max_connections: 3 },
      routes: [
        { name: 'small', match: { path_prefix: '/small' }, service: 'default', websocket: { max_connections: 1 } },
        { name: 'rest', match: { path_prefix: '/' }, service: 'default' },
      ],
    });
    try {
      const first = await openWebSocket(`ws://127.0.0.1:${proxy.port}/small`);
      assert.equal(first.status, 101);
      const second = await openWebSocket(`ws://127.0.0.1:${proxy.port}/small`);
      assert.equal(second.status, 503);
      assert.match(second.body, /"error":"too_many_websockets"/);
      const others = [await openWebSocket(`ws://127.0.0.1:${proxy.port}/a`), await openWebSocket(`ws://127.0.0.1:${proxy.port}/b`)];
      assert.deepEqual(others.map((h) => h.status), [101, 101]);
      assert.equal((await openWebSocket(`ws://127.0.0.1:${proxy.port}/c`)).status, 503, 'the instance cap');
      assert.equal(backend.upgrades, 3);
      (first.ws as WebSocket).close();
      await closed(first.ws as WebSocket);
      await waitFor(() => proxy.proxy.gateway.webSocketsOpen === 2, 1000, 'the place given back');
      const again = await openWebSocket(`ws://127.0.0.1:${proxy.port}/small`);
      assert.equal(again.status, 101, 'a closed WebSocket gives its place back');
      for (const h of [...others, again]) (h.ws as WebSocket).close();
      await nothingOpen(proxy, backend);
    } finally {
      await proxy.close();
      await backend.close();
    }
  });

  test('a handshake no route matches: 404 no_route, nothing sent upstream', async () => {
    const backend = await startWsBackend('routed');
    const proxy = await startProxy([backend], { routes: [{ name: 'ws', match: { path_prefix: '/ws' }, service: 'default' }] });
    try {
      const h = await openWebSocket(`ws://127.0.0.1:${proxy.port}/elsewhere`);
      assert.equal(h.status, 404);
      assert.match(h.body, /"error":"no_route"/);
      assert.equal(backend.upgrades + backend.hits, 0);
      const routed = await openWebSocket(`ws://127.0.0.1:${proxy.port}/ws/x`);
      assert.equal(routed.status, 101);
      (routed.ws as WebSocket).close();
      await closed(routed.ws as WebSocket);
    } finally {
      await proxy.close();
      await backend.close();
    }
  });

  test('websocket: false on a route: the handshake is an ordinary request, never a 101', async () => {
    const backend = await startWsBackend('plain', { onRequest: (req, res) => res.end(`plain ${req.headers.upgrade ?? 'no upgrade'}`) });
    const proxy = await startProxy([backend], { routes: [{ name: 'no-ws', match: { path_prefix: '/' }, service: 'default', websocket: false }] });
    try {
      const h = await openWebSocket(`ws://127.0.0.1:${proxy.port}/`);
      assert.equal(h.status, 200);
      assert.equal(h.body, 'plain no upgrade');
      assert.equal(backend.upgrades, 0);
      // An ordinary request: its upstream connection stays in the pool.
      await nothingOpen(proxy, backend, 1000, 1);
    } finally {
      await proxy.close();
      await backend.close();
    }
  });

  test('a reload leaves an open WebSocket alone; the old generation retires once it closes', async () => {
    const backend = await startWsBackend('reloaded');
    const proxy = await startProxy([backend]);
    try {
      const { ws } = await openWebSocket(`ws://127.0.0.1:${proxy.port}/`);
      assert.ok(ws !== undefined);
      const old = proxy.proxy.generation;
      assert.equal((await proxy.proxy.reload(proxy.proxy.config)).result, 'ok');
      assert.notEqual(proxy.proxy.generation, old);
      assert.equal((await roundTrip(ws, 'after reload')).data.toString(), 'after reload');
      assert.equal(old.pipeline.active, 1, 'the WebSocket is still in flight on the generation it started on');
      ws.close();
      await closed(ws);
      await nothingOpen(proxy, backend);
      assert.equal(old.pipeline.active, 0);
    } finally {
      await proxy.close();
      await backend.close();
    }
  });

  test('metrics: open WebSockets, and closes by cause', async () => {
    const backend = await startWsBackend('metered');
    const proxy = await startProxy([backend]);
    try {
      const { ws } = await openWebSocket(`ws://127.0.0.1:${proxy.port}/`);
      assert.ok(ws !== undefined);
      const open = await scrape(proxy.adminUrl);
      assert.equal(samples(open, 'tollgate_websocket_connections').get(''), 1, open);
      ws.close();
      await closed(ws);
      await nothingOpen(proxy, backend);
      const text = await scrape(proxy.adminUrl);
      assert.equal(samples(text, 'tollgate_websocket_connections').get(''), 0);
      const closes = samples(text, 'tollgate_websocket_closed_total');
      // A clean close: which side ends its TCP connection first after the close handshake varies.
      assert.equal((closes.get('{cause="client_closed"}') ?? 0) + (closes.get('{cause="upstream_closed"}') ?? 0), 1);
      assert.equal(closes.get('{cause="upstream_reset"}'), 0);
      assert.equal(closes.get('{cause="shutdown"}'), 0);
    } finally {
      await proxy.close();
      await backend.close();
    }
  });
});

describe('balancing', () => {
  test('least_conn counts open WebSockets as in flight', async () => {
    const a = await startWsBackend('a');
    const b = await startWsBackend('b');
    const proxy = await startProxy([a, b], { load_balancing: { strategy: 'least_conn' } });
    try {
      const held = await openWebSocket(`ws://127.0.0.1:${proxy.port}/`);
      const holder = a.upgrades === 1 ? 'a' : 'b';
      const inflight = Object.fromEntries(proxy.proxy.balancer.backends.map((x) => [x.name, x.inflight]));
      assert.deepEqual(inflight, { a: holder === 'a' ? 1 : 0, b: holder === 'b' ? 1 : 0 });
      // Every request now goes to the other backend: the WebSocket keeps its backend busy.
      for (let i = 0; i < 5; i++) assert.notEqual((await request(`${proxy.url}/`)).body, holder);
      (held.ws as WebSocket).close();
      await closed(held.ws as WebSocket);
      await waitFor(() => proxy.proxy.balancer.backends.every((x) => x.inflight === 0), 1000, 'released');
    } finally {
      await proxy.close();
      await a.close();
      await b.close();
    }
  });

  test('consistent_hash keeps a client on one backend', async () => {
    const backends = await Promise.all(['h1', 'h2', 'h3'].map((n) => startWsBackend(n)));
    const proxy = await startProxy(backends, { load_balancing: { strategy: 'consistent_hash', hash_key: { source: 'header', name: 'x-user' } } });
    try {
      for (const user of ['alice', 'bob', 'carol']) {
        const before = backends.map((x) => x.upgrades);
        const sockets = [];
        for (let i = 0; i < 4; i++) sockets.push((await openWebSocket(`ws://127.0.0.1:${proxy.port}/`, { 'x-user': user })).ws as WebSocket);
        const grew = backends.filter((x, i) => x.upgrades > (before[i] as number));
        assert.equal(grew.length, 1, `${user}'s WebSockets all on one backend`);
        for (const ws of sockets) ws.close();
      }
    } finally {
      await proxy.close();
      for (const x of backends) await x.close();
    }
  });
});

describe('graceful shutdown', () => {
  test('open WebSockets stay until the grace period ends, then close; the shutdown lines count them', async () => {
    const backend = await startWsBackend('draining');
    const proxy = await startProxy([backend], { server: { shutdown_grace_ms: 500 } });
    const { ws } = await openWebSocket(`ws://127.0.0.1:${proxy.port}/`, { 'x-request-id': 'ws-shutdown' });
    assert.ok(ws !== undefined);
    const closing = proxy.close();
    // Still usable during the grace period; a new handshake is refused.
    assert.equal((await roundTrip(ws, 'during grace')).data.toString(), 'during grace');
    assert.equal(await closed(ws), 1006);
    await closing;
    assert.equal(backend.openSockets, 0);
    const start = proxy.logs.find((l) => l.msg === 'shutting down: no longer accepting connections');
    assert.equal(start?.websockets, 1);
    const cut = proxy.logs.find((l) => typeof l.msg === 'string' && l.msg.startsWith('shutdown grace period over'));
    assert.equal(cut?.websockets, 1);
    const line = completions(proxy).find((l) => l.request_id === 'ws-shutdown');
    assert.equal(line?.closed_by, 'shutdown');
    assert.equal(line?.status, 101);
    await backend.close();
  });
});
