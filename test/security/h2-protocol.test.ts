/**
 * RFC 9113's request rules on HTTP/2 streams, with frames written by the test: what nghttp2 refuses itself
 * (a stream error, RST_STREAM PROTOCOL_ERROR) and what Tollgate adds (a Host that disagrees with
 * :authority, CONNECT). After each, the connection or the next one is served.
 */
import assert from 'node:assert/strict';
import { connect } from 'node:http2';
import { after, before, describe, test } from 'node:test';
import { h2Request } from '../helpers/h2-client.js';
import { data, ERROR, errorCode, FRAME, headers, RawH2, request } from '../helpers/h2-frames.js';
import { request as h1Request } from '../helpers/http.js';
import { startBackend, startProxy, type Backend, type TestProxy } from '../helpers/servers.js';

const unhandled: unknown[] = [];
process.on('unhandledRejection', (reason) => unhandled.push(reason));

/** Sends one request's frames on a fresh connection; the first RST_STREAM, response HEADERS or GOAWAY. */
async function answerTo(port: number, frames: Buffer[]): Promise<string> {
  const h2 = await RawH2.cleartext(port);
  try {
    h2.write(frames);
    const f = await h2.waitFor((x) => x.type === FRAME.RST_STREAM || x.type === FRAME.GOAWAY || (x.type === FRAME.HEADERS && x.streamId === 1));
    if (f === undefined) return 'nothing';
    if (f.type === FRAME.HEADERS) return 'response';
    return `${f.type === FRAME.RST_STREAM ? 'RST_STREAM' : 'GOAWAY'} ${errorCode(f)}`;
  } finally {
    h2.close();
  }
}

describe('HTTP/2 request rules (RFC 9113 §8.2-8.3)', () => {
  let backend: Backend;
  let proxy: TestProxy;
  before(async () => {
    backend = await startBackend('b1');
    proxy = await startProxy([backend], { server: { h2c: true } });
  });
  after(async () => {
    await proxy.close();
    await backend.close();
    assert.deepEqual(unhandled, []);
  });

  const PROTOCOL_ERROR = `RST_STREAM ${ERROR.PROTOCOL_ERROR}`;

  test('a well-formed request is answered (the baseline of the cases below)', async () => {
    assert.equal(await answerTo(proxy.port, [headers(1, request('/'))]), 'response');
    assert.equal(await answerTo(proxy.port, [headers(1, request('/', [['te', 'trailers']]))]), 'response', 'te: trailers is allowed');
  });

  test('connection-specific header fields are a stream error', async () => {
    for (const field of [
      ['connection', 'keep-alive'],
      ['keep-alive', 'timeout=5'],
      ['transfer-encoding', 'chunked'],
      ['upgrade', 'websocket'],
      ['proxy-connection', 'keep-alive'],
      ['te', 'gzip'],
    ] as [string, string][]) {
      assert.equal(await answerTo(proxy.port, [headers(1, request('/', [field]))]), PROTOCOL_ERROR, field[0]);
    }
  });

  test('upper-case header names are a stream error', async () => {
    assert.equal(await answerTo(proxy.port, [headers(1, request('/', [['X-Upper', '1']]))]), PROTOCOL_ERROR);
  });

  test('pseudo-headers: missing, unknown, repeated, after a regular field, a response one, or empty are stream errors', async () => {
    const cases: [string, [string, string][]][] = [
      ['no :path', [[':method', 'GET'], [':scheme', 'http'], [':authority', 'x']]],
      ['no :method', [[':scheme', 'http'], [':authority', 'x'], [':path', '/']]],
      ['no :scheme', [[':method', 'GET'], [':authority', 'x'], [':path', '/']]],
      ['unknown :foo', request('/', [[':foo', '1']])],
      ['repeated :path', request('/', [[':path', '/b']])],
      ['after a regular field', [[':method', 'GET'], [':scheme', 'http'], ['x-a', '1'], [':path', '/']]],
      [':status in a request', request('/', [[':status', '200']])],
      ['empty :path', [[':method', 'GET'], [':scheme', 'http'], [':authority', 'x'], [':path', '']]],
    ];
    for (const [what, fields] of cases) assert.equal(await answerTo(proxy.port, [headers(1, fields)]), PROTOCOL_ERROR, what);
  });

  test('a content-length the DATA frames do not match is a stream error', async () => {
    const post = (length: string): Buffer => headers(1, request('/', [['content-length', length]], 'POST'), { endStream: false });
    assert.equal(await answerTo(proxy.port, [post('10'), data(1, 'abc')]), PROTOCOL_ERROR, 'fewer bytes than announced');
    // Node 20 (nghttp2 1.61) resets the stream; Node 24 (nghttp2 1.70) ends the connection (GOAWAY).
    assert.match(await answerTo(proxy.port, [post('2'), data(1, 'abc')]), /^(RST_STREAM 1|GOAWAY \d+)$/, 'more bytes than announced');
  });

  test('a Host that names another host than :authority is refused with 400; one that agrees is not', async () => {
    const session = connect(proxy.url);
    try {
      const refused = await h2Request(session, '/', { headers: { ':authority': 'a.example.com', host: 'b.example.com' } });
      assert.equal(refused.status, 400);
      const body = JSON.parse(refused.body) as { error: string; message: string };
      assert.deepEqual([body.error, body.message], ['bad_request', 'The Host header and :authority name different hosts.']);
      assert.equal((await h2Request(session, '/', { headers: { ':authority': 'a.example.com', host: 'A.EXAMPLE.COM' } })).status, 200);
      assert.equal((await h2Request(session, '/', { headers: { host: 'only-host.example.com' } })).status, 200);
    } finally {
      session.close();
    }
  });

  test('CONNECT is refused with 501 (nothing is tunnelled)', async () => {
    const session = connect(proxy.url);
    try {
      const reply = await new Promise<number>((resolve, reject) => {
        const stream = session.request({ ':method': 'CONNECT', ':authority': 'example.com:443' });
        stream.on('response', (h) => {
          resolve(Number(h[':status']));
          stream.destroy();
        });
        stream.on('error', reject);
      });
      assert.equal(reply, 501);
    } finally {
      session.close();
    }
  });

  test('a refused CONNECT stream is ended by the server (RST_STREAM NO_ERROR after the 501), not left open', async () => {
    const h2 = await RawH2.cleartext(proxy.port);
    try {
      h2.write(headers(1, [[':method', 'CONNECT'], [':authority', 'example.com:443']], { endStream: false }));
      const reset = await h2.waitFor((f) => f.type === FRAME.RST_STREAM && f.streamId === 1);
      assert.ok(reset !== undefined, 'the stream is reset');
      assert.equal(errorCode(reset), ERROR.NO_ERROR);
      assert.ok(h2.frames.some((f) => f.type === FRAME.HEADERS && f.streamId === 1), 'after its response');
    } finally {
      h2.close();
    }
  });

  test('several cookie fields reach an HTTP/1.1 upstream as one Cookie line; :authority as its Host', async () => {
    const rawBackend = await startBackend('raw', (req, res) => res.end(JSON.stringify(req.rawHeaders)));
    const rawProxy = await startProxy([rawBackend], { server: { h2c: true } });
    const h2 = await RawH2.cleartext(rawProxy.port);
    try {
      h2.write(headers(1, request('/cookies', [['cookie', 'a=1'], ['x-other', 'y'], ['cookie', 'b=2']], 'GET', 'site.example')));
      assert.ok(await h2.waitFor((f) => f.type === FRAME.DATA && f.streamId === 1 && (f.flags & 0x1) !== 0));
      const lines = JSON.parse(Buffer.concat(h2.frames.filter((f) => f.type === FRAME.DATA && f.streamId === 1).map((f) => f.payload)).toString()) as string[];
      const values = (name: string): string[] => {
        const found: string[] = [];
        for (let i = 0; i < lines.length; i += 2) if (lines[i]?.toLowerCase() === name) found.push(lines[i + 1] as string);
        return found;
      };
      assert.deepEqual(values('cookie'), ['a=1; b=2'], 'one Cookie line');
      assert.deepEqual(values('x-forwarded-host'), ['site.example']);
    } finally {
      h2.close();
      await rawProxy.close();
      await rawBackend.close();
    }
  });

  test('after all of that, HTTP/2 and HTTP/1.1 clients are served', async () => {
    const session = connect(proxy.url);
    try {
      assert.equal((await h2Request(session, '/')).status, 200);
    } finally {
      session.close();
    }
    assert.equal((await h1Request(`${proxy.url}/`)).status, 200);
  });
});
