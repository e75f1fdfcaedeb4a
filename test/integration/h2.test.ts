/**
 * HTTP/2 clients (node:http2, curl --http2 and --http2-prior-knowledge) get what HTTP/1.1 clients get:
 * the same status, headers (minus hop-by-hop ones) and error bodies for a proxied route, a 401, a 429, a
 * redirect, a 404 no_route and a POST body; over TLS (ALPN h2) and over h2c beside HTTP/1.1 on one port.
 * Shutdown sends GOAWAY and lets open streams finish; a client that resets its stream cancels the
 * upstream request.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { connect, type ClientHttp2Session, type IncomingHttpHeaders } from 'node:http2';
import { request as httpsRequest } from 'node:https';
import { after, before, describe, test } from 'node:test';
import { curl, h2Request, type H2Reply } from '../helpers/h2-client.js';
import { request, type Reply } from '../helpers/http.js';
import { samples } from '../helpers/metrics.js';
import { exchange, statusOf } from '../helpers/raw.js';
import { startBackend, startHoldingBackend, startProxy, waitFor, type Backend, type TestProxy } from '../helpers/servers.js';
import { makeTestPki, type TestPki } from '../helpers/tls.js';

const unhandled: unknown[] = [];
process.on('unhandledRejection', (reason) => unhandled.push(reason));

const ROUTES = [
  { name: 'open', match: { path_prefix: '/open' }, service: 'default' },
  { name: 'secured', match: { path_prefix: '/secured' }, service: 'default', middleware: { auth: { enabled: true, auth_type: 'api_key', valid_tokens: ['k1'] } } },
  { name: 'limited-a', match: { path_prefix: '/limited-a' }, service: 'default', middleware: { rate_limit: { enabled: true, requests_per_minute: 1, burst_size: 1 } } },
  { name: 'limited-b', match: { path_prefix: '/limited-b' }, service: 'default', middleware: { rate_limit: { enabled: true, requests_per_minute: 1, burst_size: 1 } } },
  { name: 'login', match: { path: '/login' }, redirect: { to: 'https://auth.example.com/login', status: 302 } },
];

/** Headers that differ per request or per protocol by design (hop-by-hop on HTTP/1.1, the date, timings). */
const VARYING = new Set(['date', 'x-request-id', 'x-response-time', 'server-timing', 'connection', 'keep-alive', 'transfer-encoding', ':status']);

function stable(headers: IncomingHttpHeaders | Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) if (!VARYING.has(name.toLowerCase()) && value !== undefined) out[name.toLowerCase()] = String(value);
  return out;
}

/** A body with its request id (and, for echoes, the per-request forwarding headers) taken out. */
function comparable(body: string): unknown {
  const json = JSON.parse(body) as Record<string, unknown>;
  delete json.request_id;
  if (typeof json.headers === 'object' && json.headers !== null) json.headers = Object.keys(json.headers).filter((h) => !['x-request-id', 'traceparent', 'connection', 'transfer-encoding', 'content-length', 'user-agent', 'accept'].includes(h)).sort();
  return json;
}

function assertSame(h1: Reply | { status: number; headers: Record<string, string>; body: string }, h2: H2Reply | { status: number; headers: Record<string, string>; body: string }, what: string): void {
  assert.equal(h2.status, h1.status, `${what}: status`);
  const [a, b] = [stable(h1.headers as Record<string, string>), stable(h2.headers)];
  // An echo's length depends on the headers each client sent; Tollgate's own bodies must match to the byte.
  if (h1.body.includes('"backend"')) {
    delete a['content-length'];
    delete b['content-length'];
  }
  assert.deepEqual(b, a, `${what}: headers`);
  assert.deepEqual(comparable(h2.body), comparable(h1.body), `${what}: body`);
}

describe('HTTP/2 over h2c beside HTTP/1.1', () => {
  let backend: Backend;
  let proxy: TestProxy;
  let session: ClientHttp2Session;
  before(async () => {
    backend = await startBackend('b1');
    proxy = await startProxy([backend], { server: { h2c: true }, routes: ROUTES });
    session = connect(proxy.url);
  });
  after(async () => {
    session.close();
    await proxy.close();
    await backend.close();
    assert.deepEqual(unhandled, []);
  });

  test('a proxied route, a 401, a redirect, a 404 no_route and a POST body: the same answers on both protocols', async () => {
    const cases: [string, { method?: string; headers?: Record<string, string>; body?: string }][] = [
      ['/open/a?q=1', {}],
      ['/secured/x', {}],
      ['/secured/x', { headers: { 'x-api-key': 'k1' } }],
      ['/login', {}],
      ['/nowhere', {}],
      ['/open/post', { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'a body of some length' }],
    ];
    for (const [path, options] of cases) {
      const h1 = await request(`${proxy.url}${path}`, { method: options.method ?? 'GET', headers: { host: 'localhost', ...options.headers }, ...(options.body === undefined ? {} : { body: options.body }) });
      const h2 = await h2Request(session, path, { method: options.method ?? 'GET', headers: { ':authority': 'localhost', ...options.headers }, ...(options.body === undefined ? {} : { body: options.body }) });
      assertSame(h1, h2, `${options.method ?? 'GET'} ${path}`);
    }
    const posted = JSON.parse((await h2Request(session, '/open/post', { method: 'POST', body: 'streamed without a length' })).body) as { body: string; method: string };
    assert.deepEqual([posted.method, posted.body], ['POST', 'streamed without a length']);
    const login = await h2Request(session, '/login');
    assert.equal(login.headers.location, 'https://auth.example.com/login');
    const denied = JSON.parse((await h2Request(session, '/secured/x')).body) as { error: string; status: number };
    assert.deepEqual([denied.error, denied.status], ['unauthorized', 401]);
  });

  test('a rate-limited request: 429 with the same headers and body', async () => {
    await request(`${proxy.url}/limited-a`);
    const h1 = await request(`${proxy.url}/limited-a`, { headers: { host: 'localhost' } });
    await h2Request(session, '/limited-b');
    const h2 = await h2Request(session, '/limited-b', { headers: { ':authority': 'localhost' } });
    assert.equal(h1.status, 429);
    assert.equal(h2.status, 429);
    assert.equal(h2.headers['retry-after'], h1.headers['retry-after']);
    assert.deepEqual(comparable(h2.body), comparable(h1.body));
  });

  test(':authority is the Host: routes, X-Forwarded-Host and the upstream Host see it', async () => {
    const echoed = JSON.parse((await h2Request(session, '/open/h', { headers: { ':authority': 'api.example.com:8443' } })).body) as { headers: Record<string, string> };
    assert.equal(echoed.headers['x-forwarded-host'], 'api.example.com:8443');
    const agreeing = await h2Request(session, '/open/h', { headers: { ':authority': 'a.example.com', host: 'A.example.com' } });
    assert.equal(agreeing.status, 200);
  });

  test('curl --http2-prior-knowledge and curl over HTTP/1.1 on the same port', async () => {
    for (const path of ['/open/c', '/secured/c', '/login', '/nowhere']) {
      const h1 = await curl(['-H', 'Host: localhost', `${proxy.url}${path}`]);
      const h2 = await curl(['--http2-prior-knowledge', '-H', 'Host: localhost', `${proxy.url}${path}`]);
      assert.equal(h1.version, '1.1');
      assert.equal(h2.version, '2');
      assertSame(h1, h2, `curl ${path}`);
    }
    const posted = await curl(['--http2-prior-knowledge', '--data-binary', 'curl body', `${proxy.url}/open/p`]);
    assert.equal((JSON.parse(posted.body) as { body: string }).body, 'curl body');
  });

  test('the access log and tollgate_requests_total name each request\'s protocol', async () => {
    await h2Request(session, '/open/logged-h2');
    await request(`${proxy.url}/open/logged-h1`);
    await waitFor(() => proxy.logs.some((l) => l.path === '/open/logged-h1'));
    const line = (path: string): Record<string, unknown> | undefined => proxy.logs.find((l) => l.path === path && l.msg === 'Request Completed');
    assert.equal(line('/open/logged-h2')?.protocol, 'h2');
    assert.equal(line('/open/logged-h1')?.protocol, 'http/1.1');
    const counted = samples(await proxy.proxy.metrics.scrape(), 'tollgate_requests_total');
    const of = (protocol: string): number => [...counted].filter(([labels]) => labels.includes(`protocol="${protocol}"`) && labels.includes('route="open"')).reduce((n, [, v]) => n + v, 0);
    assert.ok(of('h2') >= 1 && of('http/1.1') >= 1, JSON.stringify([...counted]));
    assert.ok([...counted].every(([labels]) => /protocol="(http\/1\.1|h2)"/.test(labels)), 'one of two values, always');
  });
});

describe('h2c off (the default)', () => {
  test('the HTTP/2 preface on a plain port gets an HTTP/1.1 400', async () => {
    const backend = await startBackend('b1');
    const proxy = await startProxy([backend]);
    try {
      const reply = await exchange(proxy.port, 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
      assert.equal(statusOf(reply.text), 400);
      assert.ok(reply.closedByServer);
      assert.equal((await request(`${proxy.url}/`)).status, 200, 'HTTP/1.1 still served');
    } finally {
      await proxy.close();
      await backend.close();
    }
  });
});

describe('HTTP/2 over TLS (ALPN)', () => {
  let pki: TestPki;
  let backend: Backend;
  let proxy: TestProxy;
  before(async () => {
    pki = makeTestPki();
    backend = await startBackend('b1');
    proxy = await startProxy([backend], { server: { tls: { certificates: [{ cert_file: pki.exampleCert, key_file: pki.exampleKey }] } }, routes: ROUTES });
  });
  after(async () => {
    await proxy.close();
    await backend.close();
    pki.remove();
  });

  test('node:http2 gets h2 and the same answers as https over HTTP/1.1', async () => {
    const ca = readFileSync(pki.caCert);
    const session = connect(`https://example.com:${proxy.port}`, { ca, host: '127.0.0.1', servername: 'example.com' });
    try {
      await once(session, 'connect');
      assert.equal(session.alpnProtocol, 'h2');
      for (const path of ['/open/t', '/secured/t', '/login', '/nowhere']) {
        const h1 = await new Promise<Reply>((resolve, reject) => {
          const req = httpsRequest({ host: '127.0.0.1', port: proxy.port, path, servername: 'example.com', ca, headers: { host: 'example.com' }, agent: false }, (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.on('end', () => {
              const body = Buffer.concat(chunks).toString();
              resolve({ status: res.statusCode ?? 0, headers: res.headers, body, json: () => JSON.parse(body) });
            });
          });
          req.on('error', reject);
          req.end();
        });
        const h2 = await h2Request(session, path, { headers: { ':authority': 'example.com' } });
        assertSame(h1, h2, `https ${path}`);
      }
      const echoed = JSON.parse((await h2Request(session, '/open/proto')).body) as { headers: Record<string, string> };
      assert.equal(echoed.headers['x-forwarded-proto'], 'https');
    } finally {
      session.close();
    }
  });

  test('curl --http2 negotiates h2; with --http1.1 it gets the same answer', async () => {
    const args = ['--cacert', pki.caCert, '--resolve', `example.com:${proxy.port}:127.0.0.1`];
    const h2 = await curl([...args, '--http2', `https://example.com:${proxy.port}/open/curl`]);
    const h1 = await curl([...args, '--http1.1', `https://example.com:${proxy.port}/open/curl`]);
    assert.equal(h2.version, '2');
    assert.equal(h1.version, '1.1');
    assertSame(h1, h2, 'curl https');
  });

  test('with http2: false the listener offers only http/1.1', async () => {
    const plain = await startProxy([backend], { server: { http2: false, tls: { certificates: [{ cert_file: pki.exampleCert, key_file: pki.exampleKey }] } } });
    try {
      const reply = await curl(['--cacert', pki.caCert, '--resolve', `example.com:${plain.port}:127.0.0.1`, '--http2', `https://example.com:${plain.port}/`]);
      assert.equal(reply.version, '1.1');
      assert.equal(reply.status, 200);
    } finally {
      await plain.close();
    }
  });
});

describe('HTTP/2 streams and the connection\'s life', () => {
  test('a client that resets its stream cancels the upstream request; the log says 499', async () => {
    const backend = await startHoldingBackend('hold');
    const proxy = await startProxy([backend], { server: { h2c: true } });
    const session = connect(proxy.url);
    try {
      const stream = session.request({ ':path': '/hold' });
      stream.on('error', () => undefined);
      await waitFor(() => backend.held.length === 1, 5000, 'the upstream request');
      const upstreamClosed = once(backend.held[0] as NonNullable<(typeof backend.held)[0]>, 'close');
      stream.close(8); // RST_STREAM CANCEL
      await upstreamClosed;
      await waitFor(() => proxy.logs.some((l) => l.msg === 'Request Completed' && l.status === 499), 5000, 'the 499 line');
      assert.equal((await h2Request(session, '/after')).status, 200, 'the connection goes on serving');
    } finally {
      session.close();
      await proxy.close();
      await backend.close();
    }
  });

  test('Expect: 100-continue gets its 100 once the filters pass; a refusal before the body ends the stream with NO_ERROR', async () => {
    const backend = await startBackend('b1');
    const proxy = await startProxy([backend], { server: { h2c: true }, routes: ROUTES });
    const session = connect(proxy.url);
    try {
      const stream = session.request({ ':method': 'POST', ':path': '/open/continue', expect: '100-continue', 'content-length': '5' }, { endStream: false });
      await once(stream, 'continue');
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      const ended = once(stream, 'end');
      stream.end('hello');
      await ended;
      assert.equal((JSON.parse(Buffer.concat(chunks).toString()) as { body: string }).body, 'hello');

      // 401 for a request whose body the client has not finished: the stream ends, the connection stays.
      const refused = session.request({ ':method': 'POST', ':path': '/secured/upload', 'content-length': '1000000' }, { endStream: false });
      refused.write(Buffer.alloc(1000));
      const [head] = (await once(refused, 'response')) as [Record<string, string | number>];
      assert.equal(head[':status'], 401);
      refused.resume();
      await once(refused, 'close');
      assert.equal(refused.rstCode, 0, 'RST_STREAM NO_ERROR');
      assert.equal((await h2Request(session, '/open/after')).status, 200, 'the connection goes on');
    } finally {
      session.close();
      await proxy.close();
      await backend.close();
    }
  });

  test('shutdown sends GOAWAY, lets the open stream finish, and closes the connection', async () => {
    const backend = await startHoldingBackend('hold');
    const proxy = await startProxy([backend], { server: { h2c: true } });
    const session = connect(proxy.url);
    session.on('error', () => undefined);
    const stream = session.request({ ':path': '/hold' });
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    const ended = once(stream, 'end');
    await waitFor(() => backend.held.length === 1, 5000, 'the upstream request');
    const goaway = once(session, 'goaway');
    const sessionClosed = once(session, 'close');
    const closed = proxy.close();
    const [code] = (await goaway) as [number];
    assert.equal(code, 0, 'GOAWAY NO_ERROR');
    (backend.held[0] as NonNullable<(typeof backend.held)[0]>).end('finished');
    await ended;
    assert.equal(Buffer.concat(chunks).toString(), 'finished');
    await closed;
    await sessionClosed;
    await backend.close();
  });
});
