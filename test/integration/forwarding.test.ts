import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { connect, createServer as createNetServer, type AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { raw, request } from '../helpers/http.js';
import { closedPort, startBackend, startProxy, waitFor, type Backend, type TestProxy } from '../helpers/servers.js';

const unhandled: unknown[] = [];
process.on('unhandledRejection', (reason) => unhandled.push(reason));

type Echo = { backend: string; method: string; url: string; headers: Record<string, string>; body: string };

describe('forwarding', () => {
  let backend: Backend;
  let proxy: TestProxy;
  before(async () => {
    backend = await startBackend('b');
    proxy = await startProxy([backend], {});
  });
  after(async () => {
    await proxy.close();
    await backend.close();
    assert.deepEqual(unhandled, [], 'no unhandled rejections');
  });

  test('method, path and query pass through unchanged; redirects are not followed', async () => {
    const reply = await raw(proxy.port, 'DELETE /a/b%20c/%2F;x=1/d?x=1&y=%2F&z=/../ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    const seen = JSON.parse(reply.slice(reply.indexOf('\r\n\r\n') + 4)) as Echo;
    assert.equal(seen.method, 'DELETE');
    assert.equal(seen.url, '/a/b%20c/%2F;x=1/d?x=1&y=%2F&z=/../');

    const redirecting = await startBackend('r', (_req, res) => {
      res.writeHead(302, { location: 'http://127.0.0.1:1/elsewhere', 'content-length': '0' });
      res.end();
    });
    const p = await startProxy([redirecting], {});
    try {
      const r = await request(`${p.url}/`);
      assert.equal(r.status, 302);
      assert.equal(r.headers.location, 'http://127.0.0.1:1/elsewhere');
    } finally {
      await p.close();
      await redirecting.close();
    }
  });

  test('HEAD, 204 and 304 responses pass through without a body', async () => {
    const statusBackend = await startBackend('s', (req, res) => {
      if (req.url === '/204') res.writeHead(204).end();
      else if (req.url === '/304') res.writeHead(304, { etag: '"x"' }).end();
      else res.writeHead(200, { 'content-length': '5' }).end(req.method === 'HEAD' ? undefined : 'hello');
    });
    const p = await startProxy([statusBackend], {});
    try {
      const head = await raw(p.port, 'HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      assert.match(head, /^HTTP\/1\.1 200 OK\r\n/);
      assert.match(head, /\r\ncontent-length: 5\r\n/i);
      assert.ok(head.endsWith('\r\n\r\n'), 'no body after the head');
      assert.equal((await request(`${p.url}/204`)).status, 204);
      const notModified = await request(`${p.url}/304`);
      assert.equal(notModified.status, 304);
      assert.equal(notModified.headers.etag, '"x"');
    } finally {
      await p.close();
      await statusBackend.close();
    }
  });

  test('an upstream given by host name (localhost) is reached', async () => {
    const p = await startProxy([{ name: 'named', address: 'localhost', port: backend.port }], {});
    try {
      assert.equal((await request(`${p.url}/`)).json().backend, 'b');
    } finally {
      await p.close();
    }
  });

  test('hop-by-hop request headers, and those named in Connection, are not forwarded; end-to-end ones are', async () => {
    const reply = await raw(
      proxy.port,
      'GET /h HTTP/1.1\r\nHost: example.test\r\nConnection: close, X-Secret-Hop\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n' +
        'TE: trailers\r\nTrailer: X-T\r\nUpgrade: foo/1\r\nX-Secret-Hop: 1\r\nX-Kept: yes\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n',
    );
    const seen = JSON.parse(reply.slice(reply.indexOf('\r\n\r\n') + 4)) as Echo;
    for (const name of ['keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade', 'x-secret-hop']) {
      assert.equal(seen.headers[name], undefined, name);
    }
    assert.notEqual(seen.headers.connection, 'close, X-Secret-Hop');
    assert.equal(seen.headers['x-kept'], 'yes');
    assert.equal(seen.headers.cookie, 'a=1; b=2');
    assert.equal(seen.headers.host, 'example.test', 'Host is preserved by default');
  });

  test('hop-by-hop response headers, and those named in Connection, are not returned', async () => {
    const hoppy = await startBackend('h', (_req, res) => {
      res.setHeader('Connection', 'X-Internal');
      res.setHeader('X-Internal', 'secret');
      res.setHeader('Keep-Alive', 'timeout=1');
      res.setHeader('Upgrade', 'nothing');
      res.setHeader('Trailer', 'X-T');
      res.setHeader('Set-Cookie', ['a=1', 'b=2']);
      res.end('ok');
    });
    const p = await startProxy([hoppy], {});
    try {
      const res = await request(`${p.url}/`);
      assert.equal(res.status, 200);
      assert.equal(res.body, 'ok');
      assert.equal(res.headers['x-internal'], undefined);
      assert.equal(res.headers.upgrade, undefined);
      assert.equal(res.headers.trailer, undefined);
      assert.notEqual(res.headers['keep-alive'], 'timeout=1');
      assert.deepEqual(res.headers['set-cookie'], ['a=1', 'b=2']);
    } finally {
      await p.close();
      await hoppy.close();
    }
  });

  test('X-Forwarded-For from an untrusted peer is replaced; -Proto and -Host are set; X-Request-ID is sent', async () => {
    const res = await request(`${proxy.url}/`, {
      headers: { 'x-forwarded-for': '203.0.113.9', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'evil.test', host: 'site.test:8080', 'x-request-id': 'bad id!' },
    });
    const seen = res.json<Echo>();
    assert.equal(seen.headers['x-forwarded-for'], '127.0.0.1');
    assert.equal(seen.headers['x-forwarded-proto'], 'http');
    assert.equal(seen.headers['x-forwarded-host'], 'site.test:8080');
    assert.match(seen.headers['x-request-id'] ?? '', /^[0-9a-f-]{36}$/, 'an implausible id is replaced');
    assert.equal(seen.headers['x-request-id'], res.headers['x-request-id']);
  });

  test('from a trusted proxy X-Forwarded-For is appended to and -Proto/-Host are kept', async () => {
    const p = await startProxy([backend], { server: { trusted_proxies: ['127.0.0.1'] } });
    try {
      const seen = (await request(`${p.url}/`, {
        headers: { 'x-forwarded-for': '203.0.113.9, 10.0.0.2', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'public.test' },
      })).json<Echo>();
      assert.equal(seen.headers['x-forwarded-for'], '203.0.113.9, 10.0.0.2, 127.0.0.1');
      assert.equal(seen.headers['x-forwarded-proto'], 'https');
      assert.equal(seen.headers['x-forwarded-host'], 'public.test');
    } finally {
      await p.close();
    }
  });

  test('preserve_host: false sends the upstream address as Host', async () => {
    const p = await startProxy([backend], { load_balancing: { preserve_host: false } });
    try {
      const seen = (await request(`${p.url}/`, { headers: { host: 'site.test' } })).json<Echo>();
      assert.equal(seen.headers.host, `127.0.0.1:${backend.port}`);
      assert.equal(seen.headers['x-forwarded-host'], 'site.test');
    } finally {
      await p.close();
    }
  });

  test('absolute-form targets go to the configured upstream, in origin form', async () => {
    const reply = await raw(proxy.port, 'GET http://other.example/x?q=1 HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n');
    assert.match(reply, /^HTTP\/1\.1 200/);
    const seen = JSON.parse(reply.slice(reply.indexOf('\r\n\r\n') + 4)) as Echo;
    assert.equal(seen.url, '/x?q=1');
    assert.equal(seen.backend, 'b');
  });

  test('large bodies stream both ways intact (5 MiB up with Content-Length, chunked up, 5 MiB down)', async () => {
    const sink = await startBackend('sink', (req, res) => {
      const hash = createHash('sha256');
      let size = 0;
      req.on('data', (c: Buffer) => {
        size += c.length;
        hash.update(c);
      });
      req.on('end', () => {
        if (req.url === '/download') {
          const chunk = Buffer.alloc(64 * 1024, 7);
          res.writeHead(200, { 'content-type': 'application/octet-stream' });
          let sent = 0;
          const pump = (): void => {
            while (sent < 80) {
              sent++;
              if (!res.write(chunk)) return void res.once('drain', pump);
            }
            res.end();
          };
          pump();
        } else res.end(JSON.stringify({ size, sha: hash.digest('hex'), te: req.headers['transfer-encoding'] ?? null }));
      });
    });
    const p = await startProxy([sink], {});
    try {
      const body = randomBytes(5 * 1024 * 1024);
      const up = (await request(`${p.url}/upload`, { method: 'POST', body, headers: { 'content-length': String(body.length) } })).json();
      assert.equal(up.size, body.length);
      assert.equal(up.sha, createHash('sha256').update(body).digest('hex'));

      const chunked = await new Promise<Record<string, unknown>>((resolve, reject) => {
        const req = httpRequest(`${p.url}/chunked`, { method: 'PUT', agent: false }, (res) => {
          let text = '';
          res.on('data', (c: Buffer) => (text += c.toString()));
          res.on('end', () => resolve(JSON.parse(text) as Record<string, unknown>));
        });
        req.on('error', reject);
        for (let i = 0; i < 10; i++) req.write(Buffer.alloc(100_000, i));
        req.end();
      });
      assert.equal(chunked.size, 1_000_000);

      const down = await new Promise<{ size: number; sha: string }>((resolve, reject) => {
        httpRequest(`${p.url}/download`, { agent: false }, (res) => {
          const hash = createHash('sha256');
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            hash.update(c);
          });
          res.on('end', () => resolve({ size, sha: hash.digest('hex') }));
        })
          .on('error', reject)
          .end();
      });
      assert.equal(down.size, 80 * 64 * 1024);
      assert.equal(down.sha, createHash('sha256').update(Buffer.alloc(80 * 64 * 1024, 7)).digest('hex'));
      const line = p.logs.find((l) => l.msg === 'Request Completed' && l.path === '/download');
      assert.equal(line?.bytes, 80 * 64 * 1024);
    } finally {
      await p.close();
      await sink.close();
    }
  });
});

describe('upstream failures', () => {
  test('all upstreams down: 502 bad_gateway at once, the request id logged, and the proxy stays up', async () => {
    const p = await startProxy([{ name: 'gone1', port: await closedPort() }, { name: 'gone2', port: await closedPort() }], {});
    try {
      for (let i = 0; i < 3; i++) {
        const res = await request(`${p.url}/`);
        assert.equal(res.status, 502);
        const body = res.json();
        assert.equal(body.error, 'bad_gateway');
        assert.equal(body.request_id, res.headers['x-request-id']);
        const line = p.logs.find((l) => l.request_id === body.request_id && l.msg === 'Request Completed');
        assert.equal(line?.level, 40, 'logged at warn');
        assert.equal(line?.error, 'bad_gateway');
        assert.match(String(line?.cause), /ECONNREFUSED/);
      }
      assert.equal((await request(`${p.url}/health`)).status, 200);
      assert.ok(p.proxy.balancer.backends.every((b) => b.inflight === 0));
    } finally {
      await p.close();
    }
  });

  test('an upstream that does not answer within response_timeout_ms gives 504 upstream_timeout', async () => {
    const silent = await startBackend('silent', () => {
      /* never answers */
    });
    const p = await startProxy([silent], { load_balancing: { response_timeout_ms: 300 } });
    try {
      const res = await request(`${p.url}/`);
      assert.equal(res.status, 504);
      assert.equal(res.json().error, 'upstream_timeout');
      assert.equal(p.proxy.balancer.backends[0]!.inflight, 0);
    } finally {
      await p.close();
      await silent.close();
    }
  });

  test('a client that hangs up mid-request cancels the upstream request; in-flight returns to zero', async () => {
    const upstreamClosed: Promise<unknown>[] = [];
    const slow = await startBackend('slow', (req: IncomingMessage) => {
      req.on('error', () => {}); // the aborted upload ends this request with an error, as expected
      upstreamClosed.push(new Promise((resolve) => req.socket.once('close', resolve)));
    });
    const p = await startProxy([slow], {});
    try {
      // 1: waiting for the response headers.
      const socket = connect(p.port, '127.0.0.1');
      socket.write('GET /wait HTTP/1.1\r\nHost: x\r\n\r\n');
      await waitFor(() => upstreamClosed.length === 1, 5000, 'the request to reach the upstream');
      assert.equal(p.proxy.balancer.backends[0]!.inflight, 1);
      socket.destroy();
      await upstreamClosed[0];
      await waitFor(() => p.proxy.balancer.backends[0]!.inflight === 0, 5000, 'in-flight to return to zero');
      await waitFor(() => p.logs.some((l) => l.msg === 'Request Completed' && l.path === '/wait' && l.status === 499), 2000, 'the 499 log line');

      // 2: in the middle of sending its body.
      const uploader = connect(p.port, '127.0.0.1');
      uploader.write('POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n' + 'x'.repeat(1000));
      await waitFor(() => upstreamClosed.length === 2, 5000, 'the upload to reach the upstream');
      uploader.destroy();
      await upstreamClosed[1];
      await waitFor(() => p.proxy.balancer.backends[0]!.inflight === 0, 5000, 'in-flight to return to zero');
    } finally {
      await p.close();
      await slow.close();
    }
  });

  test('an upstream that dies mid-response aborts the client connection promptly; in-flight returns to zero', async () => {
    const dying = await startBackend('dying', (_req, res) => {
      res.writeHead(200, { 'content-length': '100000' });
      res.write('partial');
      setTimeout(() => res.socket?.destroy(), 50);
    });
    const p = await startProxy([dying], {});
    try {
      const started = Date.now();
      const reply = await raw(p.port, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n', 10_000);
      assert.ok(Date.now() - started < 5000, 'the client connection was closed, not left hanging');
      assert.match(reply, /^HTTP\/1\.1 200/);
      assert.match(reply, /partial$/);
      assert.ok(reply.length < 100000);
      await waitFor(() => p.proxy.balancer.backends[0]!.inflight === 0, 2000, 'in-flight to return to zero');
      await waitFor(() => p.logs.some((l) => l.msg === 'Request Completed' && l.error === 'bad_gateway'), 2000, 'the failure to be logged');
    } finally {
      await p.close();
      await dying.close();
    }
  });

  test('clients that leave mid-body on refused requests do not disturb the proxy', async () => {
    const guarded = await startProxy([{ name: 'gone', port: await closedPort() }], {
      middleware: { auth: { enabled: true, valid_tokens: ['t'] }, rate_limit: { enabled: true, requests_per_minute: 1, burst_size: 1 } },
    });
    try {
      for (const auth of ['', 'Authorization: Bearer t\r\n', 'Authorization: Bearer t\r\n']) {
        const s = connect(guarded.port, '127.0.0.1');
        s.on('error', () => {});
        s.write(`POST / HTTP/1.1\r\nHost: x\r\n${auth}Content-Length: 100000\r\n\r\n` + 'y'.repeat(500));
        await once(s, 'data');
        s.destroy();
      }
      assert.equal((await request(`${guarded.url}/health`)).status, 200);
      const statuses = guarded.logs.filter((l) => l.msg === 'Request Completed').map((l) => l.status);
      assert.deepEqual(statuses.slice(0, 3), [401, 502, 429]);
    } finally {
      await guarded.close();
    }
  });

  test('an upstream sending an invalid header gives 502, not a crash', async () => {
    const bad = createNetServer((s) => {
      s.once('data', () => s.end('HTTP/1.1 200 OK\r\nX-Bad: a\x01b\r\nContent-Length: 2\r\n\r\nok'));
    });
    bad.listen(0, '127.0.0.1');
    await once(bad, 'listening');
    const port = (bad.address() as AddressInfo).port;
    const p = await startProxy([{ name: 'bad', port }], {});
    try {
      const res = await request(`${p.url}/`);
      assert.equal(res.status, 502);
      assert.equal((await request(`${p.url}/health`)).status, 200);
      assert.equal(p.proxy.balancer.backends[0]!.inflight, 0);
    } finally {
      await p.close();
      bad.close();
    }
  });
});
