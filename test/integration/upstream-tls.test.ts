import assert from 'node:assert/strict';
import { once } from 'node:events';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { createSecureServer, type Http2SecureServer, type ServerHttp2Session } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { configSchema, type Config } from '../../src/config/schema.js';
import { runCli, writeConfig } from '../helpers/cli.js';
import { request } from '../helpers/http.js';
import { startProxy, waitFor, type TestProxy } from '../helpers/servers.js';
import { privateCa, startTlsUpstream, type IssuedCert, type PrivateCa, type TlsUpstream } from '../helpers/tls.js';

const NO_HEALTH = { active: { enabled: false }, passive: { enabled: false } };
const VERIFY_OFF_MSG = 'upstream TLS certificate is not verified (tls.verify: false): anyone on the path can pose as this upstream';

/** The proxy's completion line of the request that got `res`. */
function completion(proxy: TestProxy, requestId: unknown): Record<string, unknown> | undefined {
  return proxy.logs.find((l) => l.request_id === requestId && l.msg === 'Request Completed');
}

/** An upstream entry for startProxy's load_balancing.upstreams (which replaces the plain list). */
function upstream(name: string, port: number, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { name, address: '127.0.0.1', port, ...extra };
}

let ca: PrivateCa;
let otherCa: PrivateCa;
let server: IssuedCert;

before(() => {
  ca = privateCa('Upstream CA');
  otherCa = privateCa('Unrelated CA');
  server = ca.issue(['localhost', '127.0.0.1']);
});

describe('TLS to an upstream', () => {
  let up: TlsUpstream;
  before(async () => {
    up = await startTlsUpstream({ cert: server.cert, key: server.key }, (req, res) => res.end(`secure ${req.method} ${req.url}`));
  });
  after(() => up.close());

  test('signed by a private CA given as ca_file: the request passes, checked against the IP in the certificate', async () => {
    const proxy = await startProxy([], { load_balancing: { upstreams: [upstream('s', up.port)], tls: { ca_file: ca.certFile }, health_check: NO_HEALTH } });
    try {
      const res = await request(`${proxy.url}/a?b=1`);
      assert.equal(res.status, 200);
      assert.equal(res.body, 'secure GET /a?b=1');
      assert.equal(proxy.logs.some((l) => l.msg === VERIFY_OFF_MSG), false);
    } finally {
      await proxy.close();
    }
  });

  test('a CA that did not sign the certificate: 502 upstream_tls, the cause in the completion line', async () => {
    const proxy = await startProxy([], { load_balancing: { upstreams: [upstream('s', up.port)], tls: { ca_file: otherCa.certFile }, health_check: NO_HEALTH, retries: { max_retries: 0 } } });
    try {
      const res = await request(`${proxy.url}/`);
      assert.equal(res.status, 502);
      assert.equal(res.json().error, 'upstream_tls');
      const line = completion(proxy, res.headers['x-request-id']);
      assert.equal(line?.error, 'upstream_tls');
      assert.match(String(line?.cause), /^UNABLE_TO_VERIFY_LEAF_SIGNATURE: /);
    } finally {
      await proxy.close();
    }
  });

  test("Node's bundled roots when there is no ca_file: a private CA's certificate is refused", async () => {
    const proxy = await startProxy([], { load_balancing: { upstreams: [upstream('s', up.port, { tls: {} })], health_check: NO_HEALTH, retries: { max_retries: 0 } } });
    try {
      const res = await request(`${proxy.url}/`);
      assert.equal(res.status, 502);
      assert.equal(res.json().error, 'upstream_tls');
    } finally {
      await proxy.close();
    }
  });

  test('verify: false accepts the certificate, and a warning at start names the upstream', async () => {
    const proxy = await startProxy([], { load_balancing: { upstreams: [upstream('lax', up.port)], tls: { ca_file: otherCa.certFile, verify: false }, health_check: NO_HEALTH } });
    try {
      const warning = proxy.logs.find((l) => l.msg === VERIFY_OFF_MSG);
      assert.equal(warning?.level, 40);
      assert.equal(warning?.upstream, 'lax');
      assert.equal(warning?.upstream_addr, `127.0.0.1:${up.port}`);
      const res = await request(`${proxy.url}/`);
      assert.equal(res.status, 200);
      assert.equal(res.body, 'secure GET /');
    } finally {
      await proxy.close();
    }
  });

  test("an upstream's tls overrides the service's key by key; tls: { enabled: false } makes it plain", async () => {
    const plain = await startTlsUpstream(); // any port will do: the plain upstream's failure is what is asserted
    const proxy = await startProxy([], {
      load_balancing: {
        upstreams: [upstream('good', up.port, { tls: { ca_file: ca.certFile } }), upstream('plain', plain.port, { tls: { enabled: false } })],
        tls: { ca_file: otherCa.certFile },
        health_check: NO_HEALTH,
        retries: { max_retries: 0 },
      },
    });
    try {
      const first = await request(`${proxy.url}/`);
      const second = await request(`${proxy.url}/`);
      const byUpstream = new Map([first, second].map((r) => [completion(proxy, r.headers['x-request-id'])?.upstream, r.status]));
      assert.equal(byUpstream.get('good'), 200);
      // Plain HTTP to an https port: the upstream closes the connection.
      assert.equal(byUpstream.get('plain'), 502);
    } finally {
      await proxy.close();
      await plain.close();
    }
  });
});

describe('servername', () => {
  test('sent as SNI and checked against the certificate, whatever Host the client sends (preserve_host)', async () => {
    const named = ca.issue(['api.internal']);
    const seen: { sni: unknown; host: unknown }[] = [];
    const sockets = new Set<unknown>();
    const up = await startTlsUpstream({ cert: named.cert, key: named.key }, (req, res) => {
      seen.push({ sni: (req.socket as TLSSocket).servername, host: req.headers.host });
      sockets.add(req.socket);
      res.end('named');
    });
    const proxy = await startProxy([], { load_balancing: { upstreams: [upstream('s', up.port)], tls: { ca_file: ca.certFile, servername: 'api.internal' }, health_check: NO_HEALTH } });
    try {
      for (const host of ['one.example', 'two.example', 'one.example']) {
        const res = await request(`${proxy.url}/`, { headers: { host } });
        assert.equal(res.status, 200);
      }
      assert.deepEqual(seen, [
        { sni: 'api.internal', host: 'one.example' },
        { sni: 'api.internal', host: 'two.example' },
        { sni: 'api.internal', host: 'one.example' },
      ]);
      // Undici would reconnect when a request's server name changes: one connection served all three.
      assert.equal(sockets.size, 1);
    } finally {
      await proxy.close();
      await up.close();
    }
  });

  test('without servername the address is checked: a certificate for api.internal only is refused for 127.0.0.1', async () => {
    const named = ca.issue(['api.internal']);
    const up = await startTlsUpstream({ cert: named.cert, key: named.key });
    const proxy = await startProxy([], { load_balancing: { upstreams: [upstream('s', up.port)], tls: { ca_file: ca.certFile }, health_check: NO_HEALTH, retries: { max_retries: 0 } } });
    try {
      const res = await request(`${proxy.url}/`);
      assert.equal(res.status, 502);
      assert.equal(res.json().error, 'upstream_tls');
      assert.match(String(completion(proxy, res.headers['x-request-id'])?.cause), /^ERR_TLS_CERT_ALTNAME_INVALID: /);
    } finally {
      await proxy.close();
      await up.close();
    }
  });
});

describe('client certificate (mTLS to the upstream)', () => {
  let clientCa: PrivateCa;
  let up: TlsUpstream;
  before(async () => {
    clientCa = privateCa('Client CA');
    up = await startTlsUpstream({ cert: server.cert, key: server.key, ca: clientCa.cert, requestCert: true, rejectUnauthorized: true }, (req, res) => {
      res.end(`hello ${(req.socket as TLSSocket).getPeerCertificate().subject?.CN ?? '?'}`);
    });
  });
  after(() => up.close());

  test('without cert_file the upstream refuses the handshake: 502 with the cause logged', async () => {
    const proxy = await startProxy([], { load_balancing: { upstreams: [upstream('m', up.port)], tls: { ca_file: ca.certFile }, health_check: NO_HEALTH, retries: { max_retries: 0 } } });
    try {
      const res = await request(`${proxy.url}/`);
      assert.equal(res.status, 502);
      const line = completion(proxy, res.headers['x-request-id']);
      assert.equal(res.json().error, 'upstream_tls', String(line?.cause));
      assert.match(String(line?.cause), /CERTIFICATE_REQUIRED|HANDSHAKE_FAILURE/i);
    } finally {
      await proxy.close();
    }
  });

  test('with cert_file and key_file the upstream takes the certificate', async () => {
    const client = clientCa.issue(['tollgate-proxy'], { cn: 'tollgate-proxy' });
    const proxy = await startProxy([], {
      load_balancing: { upstreams: [upstream('m', up.port)], tls: { ca_file: ca.certFile, cert_file: client.certFile, key_file: client.keyFile }, health_check: NO_HEALTH },
    });
    try {
      const res = await request(`${proxy.url}/`);
      assert.equal(res.status, 200);
      assert.equal(res.body, 'hello tollgate-proxy');
    } finally {
      await proxy.close();
    }
  });
});

describe('active health checks over TLS', () => {
  test("an http check uses the upstream's TLS settings: the right CA passes, another fails with the certificate error", async () => {
    const checks: string[] = [];
    const up = await startTlsUpstream({ cert: server.cert, key: server.key }, (req, res) => {
      if (req.headers['user-agent'] === 'tollgate-health-check') checks.push(req.url ?? '');
      res.end('ok');
    });
    const active = { type: 'http', interval_ms: 100, timeout_ms: 1_000, unhealthy_threshold: 1, healthy_threshold: 1, http: { path: '/healthz' } };
    const proxy = await startProxy([], {
      load_balancing: {
        upstreams: [upstream('trusted', up.port, { tls: { ca_file: ca.certFile } }), upstream('untrusted', up.port, { tls: { ca_file: otherCa.certFile } })],
        tls: {},
        health_check: { active, passive: { enabled: false } },
      },
    });
    try {
      await waitFor(() => proxy.logs.some((l) => l.msg === 'upstream unhealthy: taken out of rotation'), 5_000, 'the untrusted upstream taken out');
      const down = proxy.logs.filter((l) => l.msg === 'upstream unhealthy: taken out of rotation');
      assert.deepEqual(
        down.map((l) => l.upstream),
        ['untrusted'],
      );
      assert.match(String(down[0]?.reason), /^1 http check in a row failed, the last: .*(unable to verify|UNABLE_TO_VERIFY)/i);
      assert.doesNotMatch(String(down[0]?.reason), /is it an https port/);
      await waitFor(() => checks.length >= 2, 5_000, 'two checks of the trusted upstream');
      assert.ok(checks.every((p) => p === '/healthz'));
      // Every request now goes to the trusted one.
      for (let i = 0; i < 3; i++) assert.equal((await request(`${proxy.url}/`)).status, 200);
    } finally {
      await proxy.close();
      await up.close();
    }
  });
});

describe('protocol: h2', () => {
  let h2: Http2SecureServer;
  let port = 0;
  const versions: string[] = [];
  before(async () => {
    // HTTP/2 only: an HTTP/1.1 request would fail the ALPN agreement.
    h2 = createSecureServer({ cert: server.cert, key: server.key, allowHTTP1: false }, (req, res) => {
      versions.push(req.httpVersion);
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        res.setHeader('x-upstream', 'h2');
        res.setHeader('set-cookie', ['a=1', 'b=2']);
        res.setHeader('content-type', 'text/plain');
        res.end(`${req.method} ${req.url} ${String(req.headers['x-custom'])} ${Buffer.concat(chunks).toString()}`);
      });
    });
    h2.listen(0, '127.0.0.1');
    await once(h2, 'listening');
    port = (h2.address() as AddressInfo).port;
  });
  after(async () => {
    await new Promise<void>((resolve) => h2.close(() => resolve()));
  });

  test('requests reach an HTTP/2-only upstream; status, headers and body come back', async () => {
    const proxy = await startProxy([], { load_balancing: { upstreams: [upstream('h2', port)], tls: { ca_file: ca.certFile }, protocol: 'h2', health_check: NO_HEALTH } });
    try {
      const get = await request(`${proxy.url}/g?q=1`, { headers: { 'x-custom': 'v' } });
      assert.equal(get.status, 200);
      assert.equal(get.body, 'GET /g?q=1 v ');
      assert.equal(get.headers['x-upstream'], 'h2');
      assert.deepEqual(get.headers['set-cookie'], ['a=1', 'b=2']);
      assert.equal(get.headers['content-type'], 'text/plain');
      const post = await request(`${proxy.url}/p`, { method: 'POST', body: 'payload', headers: { 'x-custom': 'w' } });
      assert.equal(post.status, 200);
      assert.equal(post.body, 'POST /p w payload');
      assert.deepEqual(versions.slice(-2), ['2.0', '2.0']);
    } finally {
      await proxy.close();
    }
  });

  test('many requests at once, and a large body each way', async () => {
    const proxy = await startProxy([], { load_balancing: { upstreams: [upstream('h2', port)], tls: { ca_file: ca.certFile }, protocol: 'h2', pool: { max_connections: 4 }, health_check: NO_HEALTH } });
    try {
      const replies = await Promise.all(Array.from({ length: 20 }, (_, i) => request(`${proxy.url}/n${i}`, { headers: { 'x-custom': String(i) } })));
      assert.deepEqual(
        replies.map((r) => [r.status, r.body]),
        replies.map((_, i) => [200, `GET /n${i} ${i} `]),
      );
      const big = 'x'.repeat(3 * 1024 * 1024);
      const echoed = await request(`${proxy.url}/big`, { method: 'PUT', body: big });
      assert.equal(echoed.status, 200);
      assert.equal(echoed.body, `PUT /big undefined ${big}`);
    } finally {
      await proxy.close();
    }
  });

  test('an upstream that ends its HTTP/2 session (GOAWAY) between requests: the next request gets a new connection', async () => {
    const sessions: ServerHttp2Session[] = [];
    const onSession = (session: ServerHttp2Session): void => void sessions.push(session);
    h2.on('session', onSession);
    const proxy = await startProxy([], { load_balancing: { upstreams: [upstream('h2', port)], tls: { ca_file: ca.certFile }, protocol: 'h2', health_check: NO_HEALTH } });
    try {
      assert.equal((await request(`${proxy.url}/one`)).status, 200);
      assert.equal(sessions.length, 1);
      const closed = once(sessions[0] as ServerHttp2Session, 'close');
      (sessions[0] as ServerHttp2Session).close();
      await closed;
      const next = await request(`${proxy.url}/two`);
      assert.equal(next.status, 200, next.body);
      assert.equal(sessions.length, 2);
    } finally {
      h2.off('session', onSession);
      await proxy.close();
    }
  });

  test('without protocol: h2 the same upstream refuses the HTTP/1.1 handshake: 502 upstream_tls', async () => {
    const proxy = await startProxy([], { load_balancing: { upstreams: [upstream('h2', port)], tls: { ca_file: ca.certFile }, health_check: NO_HEALTH, retries: { max_retries: 0 } } });
    try {
      const res = await request(`${proxy.url}/`);
      assert.equal(res.status, 502);
      const line = completion(proxy, res.headers['x-request-id']);
      assert.equal(res.json().error, 'upstream_tls', String(line?.cause));
    } finally {
      await proxy.close();
    }
  });
});

describe('reload', () => {
  function config(port: number, caFile: string): Config {
    return configSchema.parse({
      server: { listen_port: 0, listen_address: '127.0.0.1' },
      load_balancing: { upstreams: [upstream('s', port)], tls: { ca_file: caFile }, health_check: NO_HEALTH, retries: { max_retries: 0 } },
      admin: { enabled: false },
    });
  }

  test('another CA makes another backend with a pool of its own; the kept-alive connection is not reused', async () => {
    const up = await startTlsUpstream({ cert: server.cert, key: server.key });
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-reload-ca-'));
    const caFile = join(dir, 'ca.pem');
    copyFileSync(ca.certFile, caFile);
    const proxy = await startProxy([], { load_balancing: { upstreams: [upstream('s', up.port)], tls: { ca_file: caFile }, health_check: NO_HEALTH, retries: { max_retries: 0 } } });
    try {
      assert.equal((await request(`${proxy.url}/`)).status, 200);
      const first = proxy.proxy.generation.backends[0];

      // The same settings: the same backend, its connection kept.
      await proxy.proxy.reload(config(up.port, caFile));
      assert.equal(proxy.proxy.generation.backends[0], first);

      // Another file: a new backend, and the old connection (still open) is not used for the next request.
      await proxy.proxy.reload(config(up.port, otherCa.certFile));
      assert.notEqual(proxy.proxy.generation.backends[0], first);
      const refused = await request(`${proxy.url}/`);
      assert.equal(refused.status, 502);
      assert.equal(refused.json().error, 'upstream_tls');

      // The same path with new contents (a rotated CA file): another backend again.
      await proxy.proxy.reload(config(up.port, caFile));
      const restored = proxy.proxy.generation.backends[0];
      assert.equal((await request(`${proxy.url}/`)).status, 200);
      copyFileSync(otherCa.certFile, caFile);
      await proxy.proxy.reload(config(up.port, caFile));
      assert.notEqual(proxy.proxy.generation.backends[0], restored);
      assert.equal((await request(`${proxy.url}/`)).status, 502);
    } finally {
      await proxy.close();
      await up.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('tollgate --check', () => {
  test('a key that does not belong to its certificate: file:line:col and the key path, exit 2', async () => {
    const a = ca.issue(['a']);
    const b = ca.issue(['b']);
    const file = writeConfig(`load_balancing:
  upstreams:
    - name: api
      address: 10.0.0.1
      port: 443
      tls:
        cert_file: ${a.certFile}
        key_file: ${b.keyFile}
`);
    const run = await runCli(['--check', '--config', file]);
    assert.equal(run.code, 2);
    assert.ok(run.stderr.includes(`${file}:8:19 load_balancing.upstreams[0].tls.key_file: ${b.keyFile} does not belong to the certificate in ${a.certFile}`), run.stderr);
  });
});
