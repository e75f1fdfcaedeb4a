import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { copyFileSync, readFileSync } from 'node:fs';
import { Agent, request as httpsRequest } from 'node:https';
import { connect as netConnect } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { connect, type TLSSocket } from 'node:tls';
import { raw } from '../helpers/http.js';
import { startBackend, startProxy, type Backend, type TestProxy } from '../helpers/servers.js';
import { makeTestPki, type TestPki } from '../helpers/tls.js';

const unhandled: unknown[] = [];
process.on('unhandledRejection', (reason) => unhandled.push(reason));

interface TlsReply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  /** CN of the certificate the proxy presented. */
  servedCn: string;
  protocol: string | null;
  socket: TLSSocket;
}

interface ClientOptions {
  servername?: string;
  cert?: string;
  key?: string;
  minVersion?: 'TLSv1.2' | 'TLSv1.3';
  maxVersion?: 'TLSv1.2' | 'TLSv1.3';
  headers?: Record<string, string>;
  path?: string;
  agent?: Agent;
}

/** One https request to the proxy, trusting the test CA; names are checked by the tests, not the client. */
function get(pki: TestPki, port: number, options: ClientOptions = {}): Promise<TlsReply> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port,
        path: options.path ?? '/',
        headers: { host: options.servername ?? 'localhost', ...options.headers },
        ca: readFileSync(pki.caCert),
        // A kept-alive socket is reused only for requests without this option (Node 24 keys each such
        // request apart), so requests through an agent verify the name for real (servername).
        ...(options.agent === undefined ? { checkServerIdentity: () => undefined } : {}),
        ...(options.servername === undefined ? {} : { servername: options.servername }),
        ...(options.cert === undefined ? {} : { cert: readFileSync(options.cert), key: readFileSync(options.key as string) }),
        ...(options.minVersion === undefined ? {} : { minVersion: options.minVersion }),
        ...(options.maxVersion === undefined ? {} : { maxVersion: options.maxVersion }),
        agent: options.agent ?? false,
      },
      (res) => {
        // Read now: a kept-alive socket is handed back to the agent at the end of the response.
        const socket = res.socket as TLSSocket;
        const servedCn = cnOf(socket);
        const protocol = socket.getProtocol();
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString(), servedCn, protocol, socket }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

function cnOf(socket: TLSSocket): string {
  const subject = socket.getPeerX509Certificate()?.subject ?? '';
  return /(?:^|\n)CN=([^\n]*)/.exec(subject)?.[1] ?? '';
}

/** A raw TLS handshake: resolves with the certificate CN served, or rejects with the handshake's error. */
function handshake(pki: TestPki, port: number, options: ClientOptions = {}): Promise<{ cn: string; alpn: string | false | null }> {
  return new Promise((resolve, reject) => {
    const socket = connect({
      host: '127.0.0.1',
      port,
      ca: readFileSync(pki.caCert),
      checkServerIdentity: () => undefined,
      ALPNProtocols: ['h2', 'http/1.1'],
      ...(options.servername === undefined ? {} : { servername: options.servername }),
      ...(options.cert === undefined ? {} : { cert: readFileSync(options.cert), key: readFileSync(options.key as string) }),
      ...(options.minVersion === undefined ? {} : { minVersion: options.minVersion }),
      ...(options.maxVersion === undefined ? {} : { maxVersion: options.maxVersion }),
    });
    socket.once('secureConnect', () => {
      const result = { cn: cnOf(socket), alpn: socket.alpnProtocol };
      socket.end();
      resolve(result);
    });
    socket.once('error', reject);
  });
}

function tlsServer(pki: TestPki, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    tls: {
      certificates: [
        { cert_file: pki.exampleCert, key_file: pki.exampleKey },
        { cert_file: pki.apiCert, key_file: pki.apiKey },
        { cert_file: pki.cnOnlyCert, key_file: pki.cnOnlyKey },
      ],
      ...extra,
    },
  };
}

function fingerprintOf(file: string): string {
  return new X509Certificate(readFileSync(file)).fingerprint256.replaceAll(':', '').toLowerCase();
}

describe('TLS on the listener', () => {
  let pki: TestPki;
  let backend: Backend;
  let proxy: TestProxy;
  before(async () => {
    pki = makeTestPki();
    backend = await startBackend('b');
    proxy = await startProxy([backend], { server: tlsServer(pki) });
  });
  after(async () => {
    await proxy.close();
    await backend.close();
    pki.remove();
    assert.deepEqual(unhandled, [], 'no unhandled rejections');
  });

  test('TLS 1.2 and TLS 1.3 clients are both served; the upstream is told X-Forwarded-Proto: https', async () => {
    const v12 = await get(pki, proxy.port, { maxVersion: 'TLSv1.2' });
    assert.equal(v12.protocol, 'TLSv1.2');
    assert.equal(v12.status, 200);
    const v13 = await get(pki, proxy.port, { minVersion: 'TLSv1.3' });
    assert.equal(v13.protocol, 'TLSv1.3');
    const seen = JSON.parse(v13.body) as { headers: Record<string, string> };
    assert.equal(seen.headers['x-forwarded-proto'], 'https');
  });

  test('a client forging X-Forwarded-Proto or X-Client-Cert-* headers is not believed', async () => {
    const reply = await get(pki, proxy.port, { headers: { 'x-forwarded-proto': 'http', 'x-client-cert-subject': 'CN=admin', 'x-client-cert-fingerprint': 'ab'.repeat(32) } });
    const seen = JSON.parse(reply.body) as { headers: Record<string, string> };
    assert.equal(seen.headers['x-forwarded-proto'], 'https');
    assert.equal(seen.headers['x-client-cert-subject'], undefined);
    assert.equal(seen.headers['x-client-cert-fingerprint'], undefined);
  });

  test('SNI picks the certificate whose names match; the first is the default otherwise', async () => {
    assert.equal((await handshake(pki, proxy.port, { servername: 'example.com' })).cn, 'example.com');
    assert.equal((await handshake(pki, proxy.port, { servername: 'API.test' })).cn, 'api.test');
    assert.equal((await handshake(pki, proxy.port, { servername: 'www.example.com' })).cn, 'example.com', 'wildcard');
    assert.equal((await handshake(pki, proxy.port, { servername: 'cn-only.test' })).cn, 'cn-only.test', 'CN when there is no SAN');
    assert.equal((await handshake(pki, proxy.port, { servername: 'a.b.example.com' })).cn, 'example.com', 'default: a wildcard covers one label');
    assert.equal((await handshake(pki, proxy.port, { servername: 'other.test' })).cn, 'example.com', 'default for an unknown name');
    assert.equal((await handshake(pki, proxy.port)).cn, 'example.com', 'default without SNI');
  });

  test('ALPN: a client offering h2 and http/1.1 is given h2 (server.http2, on by default; h2.test.ts has the rest)', async () => {
    assert.equal((await handshake(pki, proxy.port, { servername: 'api.test' })).alpn, 'h2');
  });

  test('a plain HTTP request on the TLS port gets no HTTP answer', async () => {
    const reply = await raw(proxy.port, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n').catch(() => '');
    assert.doesNotMatch(reply, /^HTTP\/1\.1 200/);
  });
});

describe('TLS: min_version', () => {
  test('TLSv1.3 refuses a TLS 1.2 client and serves a TLS 1.3 one', async () => {
    const pki = makeTestPki();
    const backend = await startBackend('b');
    const proxy = await startProxy([backend], { server: tlsServer(pki, { min_version: 'TLSv1.3' }) });
    try {
      await assert.rejects(handshake(pki, proxy.port, { maxVersion: 'TLSv1.2' }), /protocol version|alert/i);
      assert.equal((await get(pki, proxy.port)).protocol, 'TLSv1.3');
    } finally {
      await proxy.close();
      await backend.close();
      pki.remove();
    }
  });
});

describe('TLS: client certificates (mTLS)', () => {
  let pki: TestPki;
  let backend: Backend;
  let proxy: TestProxy;
  before(async () => {
    pki = makeTestPki();
    backend = await startBackend('b');
    proxy = await startProxy([backend], {
      server: tlsServer(pki, { client_ca_file: pki.caCert, forward_client_cert: true }),
      routes: [
        { name: 'open', match: { path_prefix: '/open' }, service: 'default' },
        { name: 'locked', match: { path_prefix: '/locked' }, service: 'default', middleware: { auth: { enabled: true, auth_type: 'client_cert', valid_tokens: [fingerprintOf(pki.clientCert)] } } },
        {
          name: 'other',
          match: { path_prefix: '/other' },
          service: 'default',
          middleware: { auth: { enabled: true, auth_type: 'client_cert', valid_tokens: ['AB:'.repeat(31) + 'AB'] } },
        },
      ],
    });
  });
  after(async () => {
    await proxy.close();
    await backend.close();
    pki.remove();
  });

  test('a client certificate signed by the CA is accepted; its subject and fingerprint go upstream', async () => {
    const reply = await get(pki, proxy.port, { cert: pki.clientCert, key: pki.clientKey, path: '/open', headers: { 'x-client-cert-subject': 'CN=forged' } });
    assert.equal(reply.status, 200);
    const seen = JSON.parse(reply.body) as { headers: Record<string, string> };
    assert.equal(seen.headers['x-client-cert-subject'], 'CN=client,O=Example Clients');
    assert.equal(seen.headers['x-client-cert-fingerprint'], fingerprintOf(pki.clientCert));
  });

  test('no client certificate, or one the CA did not sign: the handshake fails', async () => {
    await assert.rejects(get(pki, proxy.port, { path: '/open' }));
    await assert.rejects(get(pki, proxy.port, { cert: pki.strangerCert, key: pki.strangerKey, path: '/open' }));
  });

  test('client_cert auth: an allowed fingerprint passes, another certificate gets 403', async () => {
    const allowed = await get(pki, proxy.port, { cert: pki.clientCert, key: pki.clientKey, path: '/locked/x' });
    assert.equal(allowed.status, 200);
    const refused = await get(pki, proxy.port, { cert: pki.clientCert, key: pki.clientKey, path: '/other/x' });
    assert.equal(refused.status, 403);
    assert.equal((JSON.parse(refused.body) as { error: string }).error, 'forbidden');
    assert.equal(refused.headers['www-authenticate'], undefined);
  });
});

describe('TLS: certificate reload', () => {
  test('a new connection gets the new certificate while an open one keeps working', async () => {
    const pki = makeTestPki();
    const backend = await startBackend('b');
    // The certificate the listener serves lives at one path, rewritten as a renewal would.
    const cert = join(pki.dir, 'served.pem');
    const key = join(pki.dir, 'served-key.pem');
    copyFileSync(pki.exampleCert, cert);
    copyFileSync(pki.exampleKey, key);
    const proxy = await startProxy([backend], { server: { tls: { certificates: [{ cert_file: cert, key_file: key }] } } });
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const before = await get(pki, proxy.port, { agent, servername: 'example.com' });
      assert.equal(before.servedCn, 'example.com');
      copyFileSync(pki.apiCert, cert);
      copyFileSync(pki.apiKey, key);
      const outcome = await proxy.proxy.reload(proxy.proxy.config);
      assert.equal(outcome.result, 'ok');
      assert.deepEqual(outcome.restart_needed, []);

      const fresh = await handshake(pki, proxy.port);
      assert.equal(fresh.cn, 'api.test', 'a new connection sees the new certificate');
      const old = await get(pki, proxy.port, { agent, servername: 'example.com' });
      assert.equal(old.socket, before.socket, 'the connection opened before the reload (example.com) still serves');
      assert.equal(old.status, 200);
    } finally {
      agent.destroy();
      await proxy.close();
      await backend.close();
      pki.remove();
    }
  });

  test('min_version and the client CA change on a reload, for new connections', async () => {
    const pki = makeTestPki();
    const backend = await startBackend('b');
    const proxy = await startProxy([backend], { server: tlsServer(pki, { client_ca_file: pki.caCert }) });
    try {
      const client = { cert: pki.clientCert, key: pki.clientKey };
      assert.equal((await handshake(pki, proxy.port, { ...client, maxVersion: 'TLSv1.2' })).cn, 'example.com');
      const config = proxy.proxy.config;
      const tls = config.server.tls!;
      // The stranger's own certificate becomes the only trusted CA: the CA-signed client is refused from now on.
      const next = { ...config, server: { ...config.server, tls: { ...tls, min_version: 'TLSv1.3' as const, client_ca_file: pki.strangerCert } } };
      const outcome = await proxy.proxy.reload(next);
      assert.deepEqual([outcome.result, outcome.restart_needed], ['ok', []]);
      await assert.rejects(handshake(pki, proxy.port, { cert: pki.strangerCert, key: pki.strangerKey, maxVersion: 'TLSv1.2' }));
      await assert.rejects(get(pki, proxy.port, client));
      for (const servername of [undefined, 'api.test']) {
        const reply = await get(pki, proxy.port, { cert: pki.strangerCert, key: pki.strangerKey, ...(servername === undefined ? {} : { servername }) });
        assert.deepEqual([reply.status, reply.protocol], [200, 'TLSv1.3'], `server name ${servername ?? '(none)'}`);
      }
    } finally {
      await proxy.close();
      await backend.close();
      pki.remove();
    }
  });

  test('a reload whose certificate cannot be used fails and the old one keeps serving', async () => {
    const pki = makeTestPki();
    const backend = await startBackend('b');
    const proxy = await startProxy([backend], { server: { tls: { certificates: [{ cert_file: pki.exampleCert, key_file: pki.exampleKey }] } } });
    try {
      const config = proxy.proxy.config;
      const broken = { ...config, server: { ...config.server, tls: { ...config.server.tls!, certificates: [{ cert_file: pki.exampleCert, key_file: pki.apiKey }] } } };
      const outcome = await proxy.proxy.reload(broken);
      assert.equal(outcome.result, 'error');
      assert.match(outcome.errors[0] ?? '', /server\.tls\.certificates\[0\]\.key_file: .*does not match/);
      assert.equal((await handshake(pki, proxy.port)).cn, 'example.com');
    } finally {
      await proxy.close();
      await backend.close();
      pki.remove();
    }
  });
});

describe('TLS: redirect_http', () => {
  test('the plain listener answers 308 to the https URL of the same host, path and query', async () => {
    const pki = makeTestPki();
    const backend = await startBackend('b');
    const proxy = await startProxy([backend], { server: { ...tlsServer(pki), redirect_http: { port: 0 } } });
    try {
      const port = proxy.proxy.server.redirectAddress?.port as number;
      const reply = await raw(port, 'GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: Example.com:8080\r\nConnection: close\r\n\r\n');
      assert.match(reply, /^HTTP\/1\.1 308 /);
      assert.match(reply, new RegExp(`\r\nLocation: https://example\\.com:${proxy.port}/a/b\\?x=1&y=2\r\n`));
      assert.match(reply, /\r\nX-Request-ID: /);
      const bad = await raw(port, 'GET / HTTP/1.0\r\n\r\n');
      assert.match(bad, /^HTTP\/1\.1 400 /);
      // Kept alive like any other answer: two requests on one connection.
      const two = await raw(port, 'GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      assert.equal(two.match(/HTTP\/1\.1 308 /g)?.length, 2);
      // A body is not read: the answer closes the connection.
      const withBody = await raw(port, 'POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello');
      assert.match(withBody, /^HTTP\/1\.1 308 [^]*\r\nConnection: close\r\n/);
      assert.match(withBody, new RegExp(`\r\nLocation: https://x:${proxy.port}/upload\r\n`));
      const head = await raw(port, 'HEAD /h HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      assert.ok(head.endsWith('\r\n\r\n'), 'no body after the head of a HEAD answer');
    } finally {
      await proxy.close();
      await backend.close();
      pki.remove();
    }
  });
});

describe('TLS: slow handshakes and shutdown', () => {
  test('a connection that never completes its handshake is closed (handshake limited by header_timeout_ms)', { timeout: 15_000 }, async () => {
    const pki = makeTestPki();
    const backend = await startBackend('b');
    const proxy = await startProxy([backend], { server: { ...tlsServer(pki), header_timeout_ms: 1000 } });
    try {
      const socket = netConnect(proxy.port, '127.0.0.1');
      socket.on('error', () => undefined);
      // Sends nothing: the server closes it (without the limit Node would wait 120 s; the test's own limit is lower).
      await once(socket, 'close');
    } finally {
      await proxy.close();
      await backend.close();
      pki.remove();
    }
  });

  test('shutdown closes an idle kept-alive TLS connection and completes', async () => {
    const pki = makeTestPki();
    const backend = await startBackend('b');
    const proxy = await startProxy([backend], { server: tlsServer(pki) });
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const reply = await get(pki, proxy.port, { agent, servername: 'example.com' });
      assert.equal(reply.status, 200);
      const closed = once(reply.socket, 'close');
      await proxy.close();
      await closed;
    } finally {
      agent.destroy();
      await backend.close();
      pki.remove();
    }
  });
});
