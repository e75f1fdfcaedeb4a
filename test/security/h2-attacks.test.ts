/**
 * HTTP/2 attacks, each performed over a raw socket with frames written by the test: too many concurrent
 * streams, rapid reset (CVE-2023-44487), a CONTINUATION flood (CVE-2024-27316), an oversize header list,
 * an HPACK bomb and a table size over the one advertised, SETTINGS and PING floods, and connections that
 * stay idle. Each ends in a stream error or a GOAWAY, and afterwards the process serves a new connection.
 */
import assert from 'node:assert/strict';
import { connect } from 'node:http2';
import { after, before, describe, test } from 'node:test';
import { h2Request } from '../helpers/h2-client.js';
import {
  continuation,
  ERROR,
  errorCode,
  FLAG,
  frame,
  FRAME,
  headerBlock,
  headers,
  indexedLiteral,
  ping,
  PREFACE,
  RawH2,
  request,
  rstStream,
  SETTING,
  settings,
  tableSizeUpdate,
  windowUpdate,
} from '../helpers/h2-frames.js';
import { request as h1Request } from '../helpers/http.js';
import { startBackend, startHoldingBackend, startProxy, waitFor, type Backend, type HoldingBackend, type TestProxy } from '../helpers/servers.js';
import { makeTestPki, type TestPki } from '../helpers/tls.js';

const unhandled: unknown[] = [];
process.on('unhandledRejection', (reason) => unhandled.push(reason));

const LIMITS = { max_concurrent_streams: 5, max_resets_per_second: 50, max_control_frames_per_second: 50, idle_timeout_ms: 300, header_timeout_ms: 1000 };

/** The process is healthy: a new HTTP/2 connection and an HTTP/1.1 one are both served. */
async function assertServes(proxy: TestProxy, url = proxy.url, options: { ca?: Buffer; servername?: string; host?: string } = {}): Promise<void> {
  const session = connect(url, options);
  session.on('error', () => undefined);
  try {
    assert.equal((await h2Request(session, '/ok')).status, 200, 'a new HTTP/2 connection is served');
  } finally {
    session.close();
  }
  if (url.startsWith('http:')) assert.equal((await h1Request(`${url}/ok`)).status, 200, 'HTTP/1.1 is served');
}

function describeFrames(h2: RawH2): string {
  return h2.frames.map((f) => `${f.type}:${f.streamId}${f.type === FRAME.RST_STREAM || f.type === FRAME.GOAWAY ? `:${errorCode(f)}` : ''}`).join(' ');
}

describe('HTTP/2 attacks over h2c', () => {
  let backend: HoldingBackend;
  let proxy: TestProxy;
  before(async () => {
    backend = await startHoldingBackend('hold');
    proxy = await startProxy([backend], { server: { h2c: true, header_timeout_ms: 1000, http2_limits: LIMITS } });
  });
  after(async () => {
    for (const res of backend.held.splice(0)) res.end();
    await proxy.close();
    await backend.close();
    assert.deepEqual(unhandled, []);
  });

  test('the server SETTINGS carry the limits: concurrent streams, header table, header list', async () => {
    const h2 = await RawH2.cleartext(proxy.port);
    try {
      const frame = await h2.waitFor((f) => f.type === FRAME.SETTINGS && (f.flags & FLAG.ACK) === 0);
      assert.ok(frame !== undefined);
      const values = new Map<number, number>();
      for (let i = 0; i + 6 <= frame.payload.length; i += 6) values.set(frame.payload.readUInt16BE(i), frame.payload.readUInt32BE(i + 2));
      assert.equal(values.get(SETTING.MAX_CONCURRENT_STREAMS), 5);
      assert.equal(values.get(SETTING.HEADER_TABLE_SIZE) ?? 4096, 4096);
      assert.equal(values.get(SETTING.MAX_HEADER_LIST_SIZE), 16_384);
    } finally {
      h2.close();
    }
  });

  test('streams past max_concurrent_streams are refused with REFUSED_STREAM; the open ones go on', async () => {
    const h2 = await RawH2.cleartext(proxy.port);
    try {
      const held = backend.held.length;
      // Seven requests that the backend holds, sent before the client has acknowledged the server's SETTINGS.
      h2.write(Array.from({ length: 7 }, (_, i) => headers(1 + 2 * i, request('/hold'))));
      const refused = await h2.waitFor((f) => f.type === FRAME.RST_STREAM && f.streamId === 13);
      assert.ok(refused !== undefined, describeFrames(h2));
      assert.equal(errorCode(refused), ERROR.REFUSED_STREAM);
      assert.equal(errorCode(h2.frames.find((f) => f.type === FRAME.RST_STREAM && f.streamId === 11) as NonNullable<ReturnType<typeof h2.goaway>>), ERROR.REFUSED_STREAM);
      await waitFor(() => backend.held.length === held + 5, 5000, 'five requests upstream');
      for (const res of backend.held.splice(held)) res.end('done');
      const answered = await h2.waitFor((f) => f.type === FRAME.DATA && f.streamId === 9 && (f.flags & FLAG.END_STREAM) !== 0);
      assert.ok(answered !== undefined, 'the streams within the limit are answered');
      assert.equal(h2.goaway(), undefined, 'the connection stays up');
    } finally {
      h2.close();
    }
    await assertServes(proxy);
  });

  test('a client that goes past the limit it acknowledged loses the connection (GOAWAY)', async () => {
    const h2 = await RawH2.cleartext(proxy.port);
    try {
      await h2.waitFor((f) => f.type === FRAME.SETTINGS && (f.flags & FLAG.ACK) === 0);
      h2.write(settings([], true));
      const held = backend.held.length;
      h2.write(Array.from({ length: 7 }, (_, i) => headers(1 + 2 * i, request('/hold'))));
      assert.ok(await h2.waitFor((f) => f.type === FRAME.GOAWAY), describeFrames(h2));
      assert.ok(await h2.waitClosed(), 'closed');
      await waitFor(() => backend.held.length >= held, 1000);
      for (const res of backend.held.splice(held)) res.end();
    } finally {
      h2.close();
    }
    await assertServes(proxy);
  });

  test('rapid reset: HEADERS then RST_STREAM, over and over, ends in GOAWAY ENHANCE_YOUR_CALM', async () => {
    const h2 = await RawH2.cleartext(proxy.port);
    try {
      for (let i = 0; i < 500 && !h2.closed; i++) h2.write([headers(1 + 2 * i, request('/ok')), rstStream(1 + 2 * i, ERROR.CANCEL)]);
      const goaway = await h2.waitFor((f) => f.type === FRAME.GOAWAY);
      assert.ok(goaway !== undefined, describeFrames(h2));
      assert.equal(errorCode(goaway), ERROR.ENHANCE_YOUR_CALM);
      assert.ok(await h2.waitClosed(), 'closed');
    } finally {
      h2.close();
    }
    await waitFor(() => proxy.logs.some((l) => l.limit === 'http2_limits.max_resets_per_second'), 2000, 'the warning');
    await assertServes(proxy);
  });

  test('CONTINUATION flood: a header block that never ends is cut off by the header limits', async () => {
    const h2 = await RawH2.cleartext(proxy.port);
    try {
      h2.write(headers(1, request('/ok'), { endHeaders: false }));
      for (let i = 0; i < 5000 && !h2.closed; i++) h2.write(continuation(1, headerBlock([[`x-flood-${i}`, 'v'.repeat(40)]]), false));
      const ended = await h2.waitFor((f) => f.type === FRAME.GOAWAY || f.type === FRAME.RST_STREAM);
      assert.ok(ended !== undefined, describeFrames(h2));
      assert.ok(await h2.waitClosed(), 'closed');
      assert.equal(h2.frames.find((f) => f.type === FRAME.HEADERS), undefined, 'no response to the flood');
    } finally {
      h2.close();
    }
    // Empty CONTINUATION frames carry nothing for the header limits to count: nghttp2 bounds their number.
    const empty = await RawH2.cleartext(proxy.port);
    try {
      empty.write(headers(1, request('/ok'), { endHeaders: false }));
      for (let i = 0; i < 5000 && !empty.closed; i++) empty.write(continuation(1, Buffer.alloc(0), false));
      assert.ok(await empty.waitFor((f) => f.type === FRAME.GOAWAY), describeFrames(empty));
      assert.ok(await empty.waitClosed(), 'closed');
    } finally {
      empty.close();
    }
    await assertServes(proxy);
  });

  test('a header list over 16 KiB or over the field limit is refused; 101 fields get the HTTP/1.1 431', async () => {
    // A client that acknowledged the server's SETTINGS: nghttp2 enforces MAX_HEADER_LIST_SIZE itself.
    const big = await RawH2.cleartext(proxy.port);
    try {
      await big.waitFor((f) => f.type === FRAME.SETTINGS && (f.flags & FLAG.ACK) === 0);
      big.write(settings([], true));
      await big.waitFor((f) => f.type === FRAME.SETTINGS && (f.flags & FLAG.ACK) !== 0);
      const block = headerBlock([...request('/big-acked'), ['x-big', 'a'.repeat(20_000)]]);
      big.write([headers(1, block.subarray(0, 16_000), { endHeaders: false }), continuation(1, block.subarray(16_000), true)]);
      const refused = await big.waitFor((f) => f.type === FRAME.RST_STREAM || f.type === FRAME.GOAWAY || f.type === FRAME.HEADERS);
      assert.ok(refused !== undefined && refused.type !== FRAME.HEADERS, describeFrames(big));
    } finally {
      big.close();
    }
    // One that never acknowledges them: the pipeline answers 431 (seen in the completion line).
    const unacked = await RawH2.cleartext(proxy.port);
    try {
      const block = headerBlock([...request('/big-unacked'), ['x-big', 'a'.repeat(20_000)]]);
      unacked.write([headers(1, block.subarray(0, 16_000), { endHeaders: false }), continuation(1, block.subarray(16_000), true)]);
      await waitFor(() => proxy.logs.some((l) => l.path === '/big-unacked'), 5000, 'the completion line');
      const line = proxy.logs.find((l) => l.path === '/big-unacked');
      assert.deepEqual([line?.status, line?.error, line?.protocol], [431, 'headers_too_large', 'h2']);
    } finally {
      unacked.close();
    }
    const many = await RawH2.cleartext(proxy.port);
    try {
      many.write(headers(1, request('/ok', Array.from({ length: 300 }, (_, i) => [`x-f${i}`, 'v'] as [string, string]))));
      const refused = await many.waitFor((f) => f.type === FRAME.RST_STREAM || f.type === FRAME.GOAWAY || f.type === FRAME.HEADERS);
      assert.ok(refused !== undefined && refused.type === FRAME.RST_STREAM, describeFrames(many));
      assert.equal(errorCode(refused), ERROR.ENHANCE_YOUR_CALM);
    } finally {
      many.close();
    }
    const session = connect(proxy.url);
    try {
      const fields = Object.fromEntries(Array.from({ length: 101 }, (_, i) => [`x-f${i}`, 'v']));
      const reply = await h2Request(session, '/ok', { headers: fields });
      assert.equal(reply.status, 431);
      assert.equal((JSON.parse(reply.body) as { error: string }).error, 'headers_too_large');
      const hundred = Object.fromEntries(Array.from({ length: 99 }, (_, i) => [`x-f${i}`, 'v']));
      assert.equal((await h2Request(session, '/ok', { headers: hundred })).status, 200, '100 fields with :authority as Host');
    } finally {
      session.close();
    }
    await assertServes(proxy);
  });

  test('HPACK: a table size update over the advertised size is a connection error; a bomb hits the header list limit', async () => {
    const over = await RawH2.cleartext(proxy.port);
    try {
      over.write(headers(1, Buffer.concat([tableSizeUpdate(1 << 20), headerBlock(request('/ok'))])));
      const goaway = await over.waitFor((f) => f.type === FRAME.GOAWAY);
      assert.ok(goaway !== undefined, describeFrames(over));
      assert.equal(errorCode(goaway), ERROR.COMPRESSION_ERROR);
      assert.ok(await over.waitClosed(), 'closed');
    } finally {
      over.close();
    }
    // One 4000-byte field put in the dynamic table (literal with incremental indexing), then referenced by
    // its one-byte index 1000 times: 1 KiB on the wire that would decode to 4 MB.
    const bomb = await RawH2.cleartext(proxy.port);
    try {
      const block = Buffer.concat([headerBlock(request('/ok')), indexedLiteral('x-bomb', 'b'.repeat(4000)), Buffer.alloc(1000, 0x80 | 62)]);
      bomb.write(headers(1, block));
      const refused = await bomb.waitFor((f) => f.type === FRAME.RST_STREAM || f.type === FRAME.GOAWAY || f.type === FRAME.HEADERS);
      assert.ok(refused !== undefined && refused.type !== FRAME.HEADERS, describeFrames(bomb));
    } finally {
      bomb.close();
    }
    await assertServes(proxy);
  });

  test('SETTINGS and PING floods end in GOAWAY ENHANCE_YOUR_CALM', async () => {
    for (const [what, flood] of [
      ['PING', ping()],
      ['SETTINGS', settings([[SETTING.INITIAL_WINDOW_SIZE, 65_535]])],
    ] as const) {
      const h2 = await RawH2.cleartext(proxy.port);
      try {
        for (let i = 0; i < 1000 && !h2.closed; i++) h2.write(flood);
        const goaway = await h2.waitFor((f) => f.type === FRAME.GOAWAY);
        assert.ok(goaway !== undefined, `${what}: ${describeFrames(h2).slice(0, 200)}`);
        assert.equal(errorCode(goaway), ERROR.ENHANCE_YOUR_CALM, what);
        assert.ok(await h2.waitClosed(), `${what}: closed`);
      } finally {
        h2.close();
      }
    }
    // A few of each is ordinary traffic.
    const calm = await RawH2.cleartext(proxy.port);
    try {
      calm.write([ping(), ping(), settings(), windowUpdate(0, 1000), headers(1, request('/ok'))]);
      assert.ok(await calm.waitFor((f) => f.type === FRAME.HEADERS && f.streamId === 1), describeFrames(calm));
      assert.equal(calm.goaway(), undefined);
    } finally {
      calm.close();
    }
    await assertServes(proxy);
  });

  test('random frames (seeded): whatever arrives, the process stays up and serves', async () => {
    let seed = 0x2f6e2b1;
    const next = (n: number): number => {
      seed = (Math.imul(seed, 1_103_515_245) + 12_345) >>> 0;
      return seed % n;
    };
    const bytes = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => next(256)));
    const randomFrame = (): Buffer => {
      const kind = next(6);
      const stream = [0, 1, 3, 2, 0x7fffffff, next(50)][next(6)] as number;
      if (kind === 0) return headers(stream, Buffer.concat([headerBlock(request(`/r${next(9)}`, [['x-a', 'b']])), bytes(next(8))]), { endStream: next(2) === 0, endHeaders: next(4) !== 0 });
      if (kind === 1) return headers(stream, bytes(next(64)), { endStream: next(2) === 0 });
      if (kind === 2) return continuation(stream, bytes(next(32)), next(2) === 0);
      // Any type (known or not), any flags, any payload.
      return frame(next(12), next(256), stream, bytes(next(40)));
    };
    for (let c = 0; c < 40; c++) {
      const h2 = await RawH2.cleartext(proxy.port);
      try {
        h2.write(Array.from({ length: 15 }, randomFrame));
        await h2.waitFor((x) => x.type === FRAME.GOAWAY, 20);
      } finally {
        h2.close();
      }
    }
    for (const res of backend.held.splice(0)) res.end();
    await assertServes(proxy);
    assert.deepEqual(unhandled, []);
  });

  test('idle and header timeouts: GOAWAY NO_ERROR, then the connection closes', async () => {
    const idle = await RawH2.cleartext(proxy.port);
    try {
      idle.write(headers(1, request('/ok')));
      assert.ok(await idle.waitFor((f) => f.type === FRAME.HEADERS && f.streamId === 1));
      const goaway = await idle.waitFor((f) => f.type === FRAME.GOAWAY, 5000);
      assert.ok(goaway !== undefined, describeFrames(idle));
      assert.equal(errorCode(goaway), ERROR.NO_ERROR);
      assert.equal(goaway.payload.readUInt32BE(0) & 0x7fffffff, 1, 'the last stream processed');
      assert.ok(await idle.waitClosed(), 'closed');
    } finally {
      idle.close();
    }
    // A connection that sends the preface and then no request at all.
    const silent = await RawH2.cleartext(proxy.port);
    try {
      const goaway = await silent.waitFor((f) => f.type === FRAME.GOAWAY, 5000);
      assert.ok(goaway !== undefined, describeFrames(silent));
      assert.equal(errorCode(goaway), ERROR.NO_ERROR);
      assert.ok(await silent.waitClosed(), 'closed');
    } finally {
      silent.close();
    }
    // Half a preface is never handed to HTTP/2 nor HTTP/1.1: the header timeout closes it.
    const half = await RawH2.cleartext(proxy.port, PREFACE.subarray(0, 10));
    try {
      assert.ok(await half.waitClosed(5000), 'closed');
    } finally {
      half.close();
    }
    await assertServes(proxy);
  });
});

describe('HTTP/2 attacks over TLS', () => {
  let pki: TestPki;
  let backend: HoldingBackend;
  let proxy: TestProxy;
  before(async () => {
    pki = makeTestPki();
    backend = await startHoldingBackend('hold');
    proxy = await startProxy([backend], { server: { tls: { certificates: [{ cert_file: pki.exampleCert, key_file: pki.exampleKey }] }, http2_limits: LIMITS } });
  });
  after(async () => {
    await proxy.close();
    await backend.close();
    pki.remove();
    assert.deepEqual(unhandled, []);
  });

  test('rapid reset and a PING flood over a raw TLS socket end in GOAWAY ENHANCE_YOUR_CALM', async () => {
    const reset = await RawH2.tls(proxy.port);
    try {
      for (let i = 0; i < 500 && !reset.closed; i++) reset.write([headers(1 + 2 * i, request('/ok')), rstStream(1 + 2 * i, ERROR.CANCEL)]);
      const goaway = await reset.waitFor((f) => f.type === FRAME.GOAWAY);
      assert.ok(goaway !== undefined, describeFrames(reset));
      assert.equal(errorCode(goaway), ERROR.ENHANCE_YOUR_CALM);
      assert.ok(await reset.waitClosed(), 'closed');
    } finally {
      reset.close();
    }
    const pings = await RawH2.tls(proxy.port);
    try {
      for (let i = 0; i < 1000 && !pings.closed; i++) pings.write(ping());
      const goaway = await pings.waitFor((f) => f.type === FRAME.GOAWAY);
      assert.ok(goaway !== undefined);
      assert.equal(errorCode(goaway), ERROR.ENHANCE_YOUR_CALM);
    } finally {
      pings.close();
    }
    const { readFileSync } = await import('node:fs');
    await assertServes(proxy, `https://example.com:${proxy.port}`, { ca: readFileSync(pki.caCert), servername: 'example.com', host: '127.0.0.1' });
  });
});

describe('HTTP/2 frames that carry no request: overhead per second', () => {
  const BIG = 4 * 1024 * 1024;
  let backend: Backend;
  let proxy: TestProxy;
  before(async () => {
    // /hold keeps its stream open (so neither the idle nor the header timeout ends the connection); /down
    // sends 4 MiB; /up counts what it received.
    backend = await startBackend('big', (req, res) => {
      if (req.url === '/down') return res.end(Buffer.alloc(BIG, 120));
      if (req.url === '/hold') return void setTimeout(() => res.end('held'), 10_000).unref();
      let n = 0;
      req.on('data', (c: Buffer) => (n += c.length));
      req.on('end', () => res.end(String(n)));
    });
    proxy = await startProxy([backend], { server: { h2c: true, max_body_bytes: 64 * 1024 * 1024, http2_limits: { max_overhead_bytes_per_second: 65_536 } } });
  });
  after(async () => {
    await proxy.close();
    await backend.close();
    assert.deepEqual(unhandled, []);
  });

  test('WINDOW_UPDATE, PRIORITY and unknown-frame floods end in GOAWAY ENHANCE_YOUR_CALM', async () => {
    const priority = Buffer.from([0, 0, 0, 0, 16]); // depends on stream 0, weight 17
    for (const [what, unit] of [
      ['WINDOW_UPDATE', windowUpdate(0, 1)],
      ['PRIORITY', frame(FRAME.PRIORITY, 0, 3, priority)],
      ['unknown type 0xfa', frame(0xfa, 0, 0, Buffer.alloc(8))],
    ] as const) {
      const h2 = await RawH2.cleartext(proxy.port);
      try {
        h2.write(headers(1, request('/hold')));
        const burst = Buffer.concat(Array.from({ length: 5000 }, () => unit));
        // About 650 KB a second: ten times the limit, for up to 4 s.
        for (let i = 0; i < 40 && !h2.closed && h2.goaway() === undefined; i++) {
          h2.write(burst);
          await new Promise((r) => setTimeout(r, 100));
        }
        const goaway = await h2.waitFor((f) => f.type === FRAME.GOAWAY, 2000);
        assert.ok(goaway !== undefined, `${what}: ${describeFrames(h2).slice(0, 200)}`);
        assert.equal(errorCode(goaway), ERROR.ENHANCE_YOUR_CALM, what);
        assert.ok(await h2.waitClosed(), `${what}: closed`);
      } finally {
        h2.close();
      }
    }
    assert.ok(proxy.logs.some((l) => l.limit === 'http2_limits.max_overhead_bytes_per_second'), 'the limit is named in the log');
    await assertServes(proxy);
  });

  test('large bodies both ways are payload, not overhead: 4 MiB up and down on one connection', async () => {
    const logged = proxy.logs.length;
    const session = connect(proxy.url);
    session.on('error', () => undefined);
    try {
      for (let round = 0; round < 3; round++) {
        const down = await h2Request(session, '/down');
        assert.equal(down.status, 200);
        assert.equal(down.body.length, BIG);
        const up = await h2Request(session, '/up', { method: 'POST', body: 'y'.repeat(BIG) });
        assert.equal(up.status, 200);
        assert.equal(up.body, String(BIG));
      }
      assert.ok(!session.closed && !session.destroyed, 'the connection is still open');
    } finally {
      session.close();
    }
    assert.ok(!proxy.logs.slice(logged).some((l) => l.limit === 'http2_limits.max_overhead_bytes_per_second'), 'no connection went over the limit');
  });
});
