/**
 * Request smuggling and header tricks, written byte for byte. For each: the status Tollgate answers, that
 * the connection is closed where the framing cannot be trusted, and that nothing reached the upstream.
 */
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { exchange, statusOf, statusesOf } from '../helpers/raw.js';
import { echo, startBackend, startHoldingBackend, startProxy, waitFor, type Backend, type TestProxy } from '../helpers/servers.js';

const H = 'Host: x\r\n';

describe('framing and header attacks', () => {
  let backend: Backend;
  let proxy: TestProxy;
  before(async () => {
    backend = await startBackend('b');
    proxy = await startProxy([backend], { server: { max_body_bytes: 1024 } });
  });
  after(async () => {
    await proxy.close();
    await backend.close();
  });

  const refused: [string, string, number][] = [
    ['duplicate Content-Length (same value)', `POST / HTTP/1.1\r\n${H}Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc`, 400],
    ['duplicate Content-Length (different values)', `POST / HTTP/1.1\r\n${H}Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd`, 400],
    ['Content-Length with Transfer-Encoding', `POST / HTTP/1.1\r\n${H}Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`, 400],
    ['Transfer-Encoding not ending in chunked', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n`, 400],
    ['Transfer-Encoding: gzip only', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: gzip\r\n\r\nabc`, 501],
    ['Transfer-Encoding other than plain chunked', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n`, 501],
    ['Transfer-Encoding repeated', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`, 400],
    ['space before the colon of Transfer-Encoding', `POST / HTTP/1.1\r\n${H}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n`, 400],
    ['obs-fold', `GET / HTTP/1.1\r\n${H}X-A: a\r\n b\r\n\r\n`, 400],
    ['bare LF line endings', 'GET / HTTP/1.1\nHost: x\n\n', 400],
    ['bare LF inside the head', `GET / HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n`, 400],
    ['CR inside a value', `GET / HTTP/1.1\r\n${H}X-A: a\rb\r\n\r\n`, 400],
    ['NUL inside a value', `GET / HTTP/1.1\r\n${H}X-A: a\x00b\r\n\r\n`, 400],
    ['space before a colon', `GET / HTTP/1.1\r\n${H}X-A : a\r\n\r\n`, 400],
    ['Content-Length with a sign', `POST / HTTP/1.1\r\n${H}Content-Length: +3\r\n\r\nabc`, 400],
    ['invalid chunk size', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n`, 400],
    ['no Host in HTTP/1.1', 'GET / HTTP/1.1\r\n\r\n', 400],
    ['two Host headers', `GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n`, 400],
    ['a request target that is not a path', `GET * HTTP/1.1\r\n${H}\r\n`, 400],
    ['%00 in the path', `GET /a%00b HTTP/1.1\r\n${H}\r\n`, 400],
    ['a request line without a version, ended by a bare LF (HTTP/0.9 to Node; found by fuzzing)', `GET /x\n${H}\r\n`, 400],
    ['an empty Host (an http URI needs a host, RFC 9110 §4.2.1; found by the nginx differential fuzz)', 'GET / HTTP/1.1\r\nHost: \r\n\r\n', 400],
    ['a Host with a space (RFC 9112 §3.2: an invalid Host is a 400)', 'GET / HTTP/1.1\r\nHost: x y\r\n\r\n', 400],
    ['a Host with an unclosed IP literal (undici refused it: was a 502)', 'GET / HTTP/1.1\r\nHost: [::\r\n\r\n', 400],
    ['a Host with a path', 'GET / HTTP/1.1\r\nHost: x/y\r\n\r\n', 400],
    ['a Host with a non-numeric port', 'GET / HTTP/1.1\r\nHost: x:y\r\n\r\n', 400],
    ['HTTP/1.0 with Transfer-Encoding (RFC 9112 §6.1: faulty framing)', `POST / HTTP/1.0\r\n${H}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n`, 400],
    ['CONNECT (Tollgate is not a forward proxy; Node closed the connection without an answer)', `CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n`, 501],
    ['CONNECT with an origin-form target', `CONNECT /a HTTP/1.1\r\n${H}\r\n`, 501],
  ];
  for (const [what, bytes, status] of refused) {
    test(`${what}: ${status}, connection closed, nothing forwarded`, async () => {
      const hits = backend.hits;
      const reply = await exchange(proxy.port, bytes);
      assert.equal(statusOf(reply.text), status, reply.text.slice(0, 200));
      assert.ok(reply.closedByServer, 'the connection was closed');
      assert.equal(backend.hits, hits, 'nothing was forwarded');
    });
  }

  test('valid Host values are accepted: a name, a port, IPv4, IPv6, an empty port', async () => {
    for (const host of ['x', 'a.b-c_d~e:8080', '127.0.0.1', '[::1]', '[::1]:80', 'x:', 'xn--bcher-kva.example']) {
      const reply = await exchange(proxy.port, `GET / HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
      assert.equal(statusOf(reply.text), 200, host);
    }
  });

  test('a pipelined request smuggled after an ambiguous one is never forwarded', async () => {
    const hits = backend.hits;
    const reply = await exchange(proxy.port, `POST / HTTP/1.1\r\n${H}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n${H}\r\n`);
    assert.deepEqual(statusesOf(reply.text), [400]);
    assert.equal(backend.hits, hits);
  });

  test('CONNECT pipelined after a whole request: that request is answered first, then 501 (found by the nginx differential fuzz)', async () => {
    const hits = backend.hits;
    const reply = await exchange(proxy.port, `GET /first HTTP/1.1\r\n${H}\r\nCONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\nGET /after HTTP/1.1\r\n${H}\r\n`);
    const statuses = [...reply.text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
    assert.deepEqual(statuses, [200, 501], 'Node closed the connection at the CONNECT, cutting off the first response');
    assert.match(reply.text, /"error":"not_implemented".*CONNECT/);
    assert.ok(reply.closedByServer);
    assert.equal(backend.hits, hits + 1, 'only the first request was forwarded');
  });

  test('bad bytes pipelined after a whole request: that request is answered first, then 400 (found by fuzzing)', async () => {
    const hits = backend.hits;
    const reply = await exchange(proxy.port, `GET /first HTTP/1.1\r\n${H}\r\nGARBAGE\r\n\r\n`);
    // (statusesOf looks for a status line after CRLF; the echo body before the 400 does not end in one.)
    const statuses = [...reply.text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
    assert.deepEqual(statuses, [200, 400], 'the 400 was once sent in place of the 200');
    assert.match(reply.text, /"url":"\/first"/);
    assert.ok(reply.closedByServer);
    assert.equal(backend.hits, hits + 1);
  });

  test('a refused request whose body then fails to parse gets one response, nothing after its Connection: close (found by fuzzing)', async () => {
    const reply = await exchange(proxy.port, `POST / HTTP/1.1\r\nHost: x\r\nHost: y\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n`);
    assert.deepEqual([...reply.text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1])), [400]);
    assert.match(reply.text, /exactly one Host header/);
    assert.ok(reply.closedByServer);
  });

  test('a request refused with Connection: close, then a request whose body fails to parse: one 400, nothing after it (found by fuzzing)', async () => {
    for (const refusals of [1, 2]) {
      const refused = Array.from({ length: refusals }, (_, i) => `GET /#${i} HTTP/1.1\r\n${H}\r\n`).join('');
      const reply = await exchange(proxy.port, `${refused}POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\nzz\r\n`);
      assert.deepEqual([...reply.text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1])), [400], reply.text);
      assert.match(reply.text, /contains a fragment/);
      assert.ok(reply.closedByServer);
    }
  });

  test('a request answered 200, then a request whose body fails to parse: the 200 first, then the 400 (found by fuzzing)', async () => {
    const hits = backend.hits;
    const reply = await exchange(proxy.port, `GET /first HTTP/1.1\r\n${H}\r\nPOST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\nzz\r\n`);
    // The 400 was once written at once, in place of the 200 still on its way from the upstream.
    assert.deepEqual([...reply.text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1])), [200, 400]);
    assert.match(reply.text, /"url":"\/first"/);
    assert.ok(reply.closedByServer);
    assert.equal(backend.hits, hits + 1);
  });

  test('no Host and a bad pipelined request after it: one 400 from Tollgate, nothing after its Connection: close (found by fuzzing)', async () => {
    const reply = await exchange(proxy.port, `GET / HTTP/1.1\r\n\r\nGARBAGE\r\n\r\n`);
    assert.deepEqual([...reply.text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1])), [400]);
    assert.match(reply.text, /exactly one Host header/);
  });

  test('an Expect other than 100-continue is ignored, not answered 417 outside the pipeline (found by fuzzing)', async () => {
    const reply = await exchange(proxy.port, `GET /e HTTP/1.1\r\n${H}Expect: 100-continuex\r\nConnection: close\r\n\r\n`);
    assert.equal(statusOf(reply.text), 200);
    assert.match(reply.text, /X-Request-ID: /);
    assert.doesNotMatch(reply.text, /"expect"/);
  });

  test('absolute-form targets go to the configured upstream in origin form', async () => {
    const reply = await exchange(proxy.port, `GET http://other.example/x?q=1 HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n`);
    assert.equal(statusOf(reply.text), 200);
    const seen = JSON.parse(reply.text.slice(reply.text.indexOf('\r\n\r\n') + 4)) as { url: string; headers: Record<string, string> };
    assert.equal(seen.url, '/x?q=1');
    assert.equal(seen.headers.host, 'other.example');
  });

  test('more header lines than max_header_count (100): 431', async () => {
    const lines = Array.from({ length: 100 }, (_, i) => `X-H${i}: v\r\n`).join('');
    const reply = await exchange(proxy.port, `GET / HTTP/1.1\r\n${H}${lines}\r\n`);
    assert.equal(statusOf(reply.text), 431);
    const ok = await exchange(proxy.port, `GET / HTTP/1.1\r\n${H}${lines.split('\r\n').slice(0, 98).join('\r\n')}\r\nConnection: close\r\n\r\n`);
    assert.equal(statusOf(ok.text), 200, '100 lines in all is still accepted');
  });

  test('more header lines than Node would keep (1,500): 431, not silently cut', async () => {
    const lines = Array.from({ length: 1500 }, (_, i) => `A${i}: v\r\n`).join('');
    const reply = await exchange(proxy.port, `GET / HTTP/1.1\r\n${H}${lines}\r\n`);
    assert.equal(statusOf(reply.text), 431);
  });

  test('a head over max_header_bytes (16 KiB): 431; a request target over max_uri_bytes (8 KiB): 414', async () => {
    const big = await exchange(proxy.port, `GET / HTTP/1.1\r\n${H}X-Big: ${'a'.repeat(17_000)}\r\n\r\n`);
    assert.equal(statusOf(big.text), 431);
    assert.ok(big.closedByServer);
    const long = await exchange(proxy.port, `GET /${'a'.repeat(8_200)} HTTP/1.1\r\n${H}\r\n`);
    assert.equal(statusOf(long.text), 414);
    assert.match(long.text, /"error":"uri_too_long"/);
  });

  test('header names with underscores are dropped by default; rejected with 400 when configured', async () => {
    const reply = await exchange(proxy.port, `GET / HTTP/1.1\r\n${H}X_User: admin\r\nX-User: alice\r\nConnection: close\r\n\r\n`);
    const seen = JSON.parse(reply.text.slice(reply.text.indexOf('\r\n\r\n') + 4)) as { headers: Record<string, string> };
    assert.equal(seen.headers['x_user'], undefined);
    assert.equal(seen.headers['x-user'], 'alice');
    const strict = await startProxy([backend], { server: { underscores_in_headers: 'reject' } });
    try {
      assert.equal(statusOf((await exchange(strict.port, `GET / HTTP/1.1\r\n${H}X_User: admin\r\n\r\n`)).text), 400);
    } finally {
      await strict.close();
    }
  });

  test('__proto__ and constructor header names: no crash, no prototype pollution', async () => {
    const reply = await exchange(proxy.port, `GET / HTTP/1.1\r\n${H}__proto__: polluted\r\nconstructor: polluted\r\nhasOwnProperty: x\r\nConnection: close\r\n\r\n`);
    assert.equal(statusOf(reply.text), 200);
    assert.equal((Object.prototype as Record<string, unknown>).polluted, undefined);
    assert.equal(({} as Record<string, unknown>).constructor, Object);
    assert.equal(statusOf((await exchange(proxy.port, `GET /health HTTP/1.1\r\n${H}Connection: close\r\n\r\n`)).text), 200);
  });

  test('Upgrade: h2c (and any upgrade) never gets a 101', async () => {
    for (const upgrade of ['h2c', 'websocket', 'foo/1']) {
      const reply = await exchange(proxy.port, `GET / HTTP/1.1\r\n${H}Connection: Upgrade, HTTP2-Settings\r\nUpgrade: ${upgrade}\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n`, 800);
      assert.notEqual(statusOf(reply.text), 101, upgrade);
      assert.doesNotMatch(reply.text, /^HTTP\/1\.1 101/m);
    }
  });

  test('Content-Length over max_body_bytes: 413 at once, without reading the body', async () => {
    const hits = backend.hits;
    const reply = await exchange(proxy.port, `POST / HTTP/1.1\r\n${H}Content-Length: 5000\r\n\r\n`, 3000);
    assert.equal(statusOf(reply.text), 413);
    assert.match(reply.text, /"message":"The request body is larger than the 1024 bytes the proxy accepts\."/);
    assert.ok(reply.closedByServer, 'answered and closed without waiting for the body');
    assert.equal(backend.hits, hits);
  });
});

describe('Upgrade requests and pipelining (found by fuzzing)', () => {
  let backend: Backend;
  let proxy: TestProxy;
  before(async () => {
    backend = await startBackend('b');
    // keep-alive stays at its default (75 s): a close seen within the exchange's 3 s is Tollgate's decision.
    proxy = await startProxy([backend], { server: { body_timeout_ms: 300 } });
  });
  after(async () => {
    await proxy.close();
    await backend.close();
  });

  const UPGRADE = `GET /up HTTP/1.1\r\n${H}Connection: keep-alive, Upgrade\r\nUpgrade: h2c\r\n\r\n`;
  /** Status codes and the echoed paths of every response, in order. */
  const answers = (text: string): { statuses: number[]; urls: string[] } => ({
    statuses: [...text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1])),
    urls: [...text.matchAll(/"url":"([^"]*)"/g)].map((m) => m[1] as string),
  });

  for (const close of ['', 'Connection: close\r\n']) {
    const label = close === '' ? 'keep-alive' : 'the last request with Connection: close';
    test(`a valid request then an Upgrade request on one write (${label}): both answered in order, no 101, then closed`, async () => {
      const last = close === '' ? UPGRADE : UPGRADE.replace('keep-alive, Upgrade', 'close, Upgrade');
      const reply = await exchange(proxy.port, `GET /first HTTP/1.1\r\n${H}\r\n${last}`, 3000);
      assert.deepEqual(answers(reply.text), { statuses: [200, 200], urls: ['/first', '/up'] });
      assert.doesNotMatch(reply.text, / 101 /);
      assert.match(reply.text.slice(reply.text.lastIndexOf('HTTP/1.1 200')), /\r\nConnection: close\r\n/i);
      assert.ok(reply.closedByServer, 'closed after the Upgrade request\'s response, not left open');
    });

    test(`an Upgrade request then a valid one on one write (${label}): the Upgrade request answered with Connection: close, then closed`, async () => {
      // Node's parser reads nothing after a request it takes as an upgrade; the client learns that from the close.
      const reply = await exchange(proxy.port, `${UPGRADE}GET /after HTTP/1.1\r\n${H}${close}\r\n`, 3000);
      assert.deepEqual(answers(reply.text), { statuses: [200], urls: ['/up'] });
      assert.match(reply.text, /\r\nConnection: close\r\n/i);
      assert.ok(reply.closedByServer);
    });
  }

  test('an Upgrade request whose chunked body is malformed, behind a request with a body: 408 after body_timeout_ms, closed', async () => {
    // Node reports no parse error for an upgrade request's body: it just never ends.
    const reply = await exchange(
      proxy.port,
      `POST /one HTTP/1.1\r\n${H}Content-Length: 1\r\n\r\naGET /two HTTP/1.1\r\n${H}\r\nGET /up HTTP/1.1\r\n${H}Connection: Upgrade\r\nUpgrade: h2c\r\nTransfer-Encoding: chunked\r\n\r\n2 \r\nab\r\n0\r\n\r\n`,
      3000,
    );
    assert.deepEqual(answers(reply.text).statuses, [200, 200, 408]);
    assert.ok(reply.closedByServer);
  });

  test('a pipelined request whose body stalls behind one with a body: 408 after body_timeout_ms, not a hung connection', async () => {
    // The earlier request's body ending once cleared the connection's timeout, which the later one had set.
    const reply = await exchange(proxy.port, `POST /one HTTP/1.1\r\n${H}Content-Length: 1\r\n\r\naPOST /two HTTP/1.1\r\n${H}Content-Length: 10\r\n\r\nab`, 3000);
    assert.deepEqual(answers(reply.text), { statuses: [200, 408], urls: ['/one'] });
    assert.ok(reply.closedByServer);
  });
});

describe('a client that leaves with pipelined requests unanswered', () => {
  test('the queued request ends too (logged, its upstream exchange ended), and shutdown completes', { timeout: 15_000 }, async () => {
    const backend = await startHoldingBackend('b');
    const proxy = await startProxy([backend]);
    try {
      // /hold is answered only when the test says; the POST behind it waits its turn, its body unfinished.
      await exchange(proxy.port, `GET /hold HTTP/1.1\r\n${H}\r\nPOST /queued HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5\r\nab`, 300);
      const completed = (path: string) => proxy.logs.find((l) => l.msg === 'Request Completed' && l.path === path);
      // The queued response was destroyed without a socket, and Node gave it no 'close': it stayed in flight.
      await waitFor(() => completed('/hold') !== undefined && completed('/queued') !== undefined, 3000, 'both requests logged');
    } finally {
      await proxy.close();
      await backend.close();
    }
  });
});

describe('a pipelined request reaches the upstream only at its turn (found by the nginx differential fuzz)', () => {
  test('behind a response that closes the connection, it is never forwarded (RFC 9112 §9.6), only logged', async () => {
    const seen: string[] = [];
    const backend = await startBackend('b', (req, res, b) => {
      seen.push(`${req.method ?? ''} ${req.url ?? ''}`);
      echo(req, res, b);
    });
    const proxy = await startProxy([backend]);
    try {
      // An idle upstream connection, on which a request dispatched at once would be written at once.
      assert.equal(statusOf((await exchange(proxy.port, `GET /warm HTTP/1.1\r\n${H}Connection: close\r\n\r\n`, 3000)).text), 200);
      // No Host: answered 400 with Connection: close; the DELETE after it was parsed in the same read.
      const reply = await exchange(proxy.port, `GET /first HTTP/1.1\r\n\r\nDELETE /second HTTP/1.1\r\n${H}\r\n`, 3000);
      assert.deepEqual(statusesOf(reply.text), [400]);
      assert.ok(reply.closedByServer);
      // A request on another connection, answered once the upstream has it: the DELETE, had it been
      // forwarded when it was parsed, would have reached the upstream before it.
      const after = await exchange(proxy.port, `GET /after HTTP/1.1\r\n${H}Connection: close\r\n\r\n`, 3000);
      assert.equal(statusOf(after.text), 200);
      assert.deepEqual(seen, ['GET /warm', 'GET /after']);
      await waitFor(() => proxy.logs.some((l) => l.msg === 'Request Completed' && l.path === '/second'), 3000, 'the DELETE logged');
      assert.equal(proxy.logs.find((l) => l.msg === 'Request Completed' && l.path === '/second')?.status, 499);
    } finally {
      await proxy.close();
      await backend.close();
    }
  });

  test('behind a slower response, it reaches the upstream after that response, not in parallel (RFC 9112 §9.3.2)', async () => {
    const events: string[] = [];
    const held: ServerResponse[] = [];
    const backend = await startBackend('b', (req, res, b) => {
      events.push(`${req.method ?? ''} ${req.url ?? ''}`);
      if (req.url === '/hold') held.push(res);
      else echo(req, res, b);
    });
    const proxy = await startProxy([backend]);
    try {
      const pending = exchange(proxy.port, `GET /hold HTTP/1.1\r\n${H}\r\nPOST /second HTTP/1.1\r\n${H}Content-Length: 3\r\nConnection: close\r\n\r\nabc`, 3000);
      await waitFor(() => held.length === 1, 3000, 'the first request at the upstream');
      // A request on another connection, answered once the upstream has it: the POST, had it been forwarded
      // when it was parsed, would have reached the upstream before it.
      assert.equal(statusOf((await exchange(proxy.port, `GET /probe HTTP/1.1\r\n${H}Connection: close\r\n\r\n`, 3000)).text), 200);
      events.push('first answered');
      held[0]?.end('first');
      const reply = await pending;
      assert.deepEqual([...reply.text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1])), [200, 200]);
      assert.deepEqual(events, ['GET /hold', 'GET /probe', 'first answered', 'POST /second']);
    } finally {
      await proxy.close();
      await backend.close();
    }
  });
});

describe('Expect: 100-continue on a pipelined request', () => {
  test('queued behind a slower response: the 100 never comes after the final response head (found by fuzzing)', async () => {
    const backend = await startHoldingBackend('b');
    const proxy = await startProxy([backend]);
    try {
      const pending = exchange(proxy.port, `GET /hold HTTP/1.1\r\n${H}\r\nPOST /second HTTP/1.1\r\n${H}Expect: 100-continue\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc`, 3000);
      // The second request waits for its turn (it reaches the upstream only once the first is answered).
      await waitFor(() => backend.held.length === 1, 3000, 'the first request at the upstream');
      backend.held[0]?.end('first');
      const reply = await pending;
      const statuses = [...reply.text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
      assert.ok(statuses.join() === '200,200' || statuses.join() === '200,100,200', `statuses ${statuses.join()}`);
      assert.ok(reply.closedByServer);
    } finally {
      await proxy.close();
      await backend.close();
    }
  });
});

describe('request bodies and Expect', () => {
  test('a chunked body that grows over the limit is cut off: 413, and the upstream never gets a complete request', async () => {
    const seen: { ended: boolean; bytes: number }[] = [];
    const backend = await startBackend('b', (req: IncomingMessage, res) => {
      const record = { ended: false, bytes: 0 };
      seen.push(record);
      req.on('data', (c: Buffer) => (record.bytes += c.length));
      req.on('end', () => {
        record.ended = true;
        res.end('got it all');
      });
      req.on('error', () => {});
    });
    const proxy = await startProxy([backend], { server: { max_body_bytes: 1000 } });
    try {
      const chunk = `190\r\n${'z'.repeat(400)}\r\n`;
      const reply = await exchange(proxy.port, [`POST /up HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n`, chunk, chunk, chunk, '0\r\n\r\n'], 3000, 50);
      assert.equal(statusOf(reply.text), 413);
      assert.match(reply.text, /"error":"payload_too_large"/);
      assert.match(reply.text, /larger than the 1000 bytes the proxy accepts/);
      assert.ok(reply.closedByServer);
      await new Promise((r) => setTimeout(r, 200));
      assert.ok(seen.every((s) => !s.ended), 'the upstream request was never completed');
      assert.ok(seen.every((s) => s.bytes <= 1000));
      // Under the limit the same body goes through.
      const small = await exchange(proxy.port, [`POST /up HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n`, chunk, '0\r\n\r\n'], 3000, 20);
      assert.equal(statusOf(small.text), 200);
      assert.match(small.text, /got it all$/);
    } finally {
      await proxy.close();
      await backend.close();
    }
  });

  test('Expect: 100-continue: auth and rate limit decide first; no credentials gets 401 and no 100', async () => {
    const backend = await startBackend('b');
    const proxy = await startProxy([backend], { middleware: { auth: { enabled: true, valid_tokens: ['t'] } } });
    try {
      const denied = await exchange(proxy.port, `POST / HTTP/1.1\r\n${H}Content-Length: 3\r\nExpect: 100-continue\r\n\r\n`, 1500);
      assert.deepEqual(statusesOf(denied.text), [401]);
      assert.ok(denied.closedByServer, 'closed: the body was never sent');
      const allowed = await exchange(proxy.port, [`POST / HTTP/1.1\r\n${H}Authorization: Bearer t\r\nContent-Length: 3\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`, 'abc'], 3000, 200);
      assert.deepEqual(statusesOf(allowed.text), [100, 200]);
      assert.match(allowed.text, /"body":"abc"/);
      assert.doesNotMatch(allowed.text, /"expect"/, 'Expect is hop-by-hop for the proxy');
    } finally {
      await proxy.close();
      await backend.close();
    }
  });
});
