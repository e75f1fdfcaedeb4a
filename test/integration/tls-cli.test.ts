/**
 * TLS through the real CLI: bad certificate files stop it with exit 2 (as --check does), SIGHUP and
 * POST /api/reload re-read the certificates, and cluster mode serves TLS from every worker.
 */
import assert from 'node:assert/strict';
import { copyFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { connect } from 'node:tls';
import { listeningPort, runCli, startCli, waitForOutput, writeConfig } from '../helpers/cli.js';
import { raw, request } from '../helpers/http.js';
import { servedBy, startCluster, stopCluster } from '../helpers/cluster.js';
import { startBackend, type Backend } from '../helpers/servers.js';
import { makeTestPki, type TestPki } from '../helpers/tls.js';

/** Handshakes with the listener and sends one request; resolves with the served certificate's CN and the status line. */
function exchange(pki: TestPki, port: number, path = '/'): Promise<{ cn: string; status: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, ca: readFileSync(pki.caCert), checkServerIdentity: () => undefined });
    let cn = '';
    let data = '';
    socket.once('secureConnect', () => {
      cn = /(?:^|\n)CN=([^\n]*)/.exec(socket.getPeerX509Certificate()?.subject ?? '')?.[1] ?? '';
      socket.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    });
    socket.on('data', (c: Buffer) => (data += c.toString()));
    socket.once('end', () => resolve({ cn, status: data.slice(0, data.indexOf('\r\n')) }));
    socket.once('error', reject);
  });
}

function configText(pki: TestPki, backend: number, cert: string, key: string, server = '', admin = 'admin: { enabled: false }'): string {
  return [
    'server:',
    '  listen_port: 0',
    '  listen_address: 127.0.0.1',
    server,
    '  tls:',
    '    certificates:',
    `      - cert_file: ${cert}`,
    `        key_file: ${key}`,
    'load_balancing:',
    '  upstreams:',
    `    - { name: b, address: 127.0.0.1, port: ${backend} }`,
    '  health_check: { active: { enabled: false } }',
    admin,
    '',
  ]
    .filter((l) => l !== '')
    .join('\n');
}

describe('TLS through the CLI', () => {
  let pki: TestPki;
  let backend: Backend;
  before(async () => {
    pki = makeTestPki();
    backend = await startBackend('b');
  });
  after(async () => {
    await backend.close();
    pki.remove();
  });

  test('bad certificate files: exit 2 with file:line:col and the key path, at start and with --check', async () => {
    const cases: [string, string, RegExp][] = [
      ['missing.pem', pki.exampleKey, /proxy\.yaml:6:20 server\.tls\.certificates\[0\]\.cert_file: cannot read .*missing\.pem: file not found/],
      [pki.exampleCert, pki.dir, /proxy\.yaml:7:19 server\.tls\.certificates\[0\]\.key_file: cannot read .*: is a directory/],
      [pki.exampleCert, pki.apiKey, /proxy\.yaml:7:19 server\.tls\.certificates\[0\]\.key_file: .*api-key\.pem: the key does not match the certificate/],
      [pki.expiredCert, pki.expiredKey, /proxy\.yaml:6:20 server\.tls\.certificates\[0\]\.cert_file: .*expired\.pem: the certificate expired on 2020-01-02/],
    ];
    for (const [cert, key, expected] of cases) {
      const file = writeConfig(configText(pki, backend.port, cert, key));
      for (const args of [['--config', file], ['--check', '--config', file]]) {
        const run = await runCli(args);
        assert.equal(run.code, 2, `${args.join(' ')}: ${run.stderr}`);
        assert.match(run.stderr, expected);
        assert.doesNotMatch(run.stdout, /listening on/);
      }
    }
    const good = await runCli(['--check', '--config', writeConfig(configText(pki, backend.port, pki.exampleCert, pki.exampleKey))]);
    assert.equal(good.code, 0, good.stderr);
  });

  test('SIGHUP and POST /api/reload re-read the certificate files: the next connection gets the renewed certificate', async () => {
    const cert = join(pki.dir, 'cli-served.pem');
    const key = join(pki.dir, 'cli-served-key.pem');
    copyFileSync(pki.exampleCert, cert);
    copyFileSync(pki.exampleKey, key);
    const child = startCli(['--config', writeConfig(configText(pki, backend.port, cert, key, '', 'admin: { port: 0, address: 127.0.0.1 }'))], { LOG_LEVEL: 'info' });
    try {
      const port = await listeningPort(child);
      assert.deepEqual(await exchange(pki, port), { cn: 'example.com', status: 'HTTP/1.1 200 OK' });
      copyFileSync(pki.apiCert, cert);
      copyFileSync(pki.apiKey, key);
      child.kill('SIGHUP');
      await waitForOutput(child, /config reloaded: generation 2 serving/);
      assert.doesNotMatch(child.output.stdout, /need a restart/);
      assert.deepEqual(await exchange(pki, port), { cn: 'api.test', status: 'HTTP/1.1 200 OK' });

      // POST /api/reload does the same.
      copyFileSync(pki.exampleCert, cert);
      copyFileSync(pki.exampleKey, key);
      const [, adminPort] = await waitForOutput(child, /admin listening on http:\/\/[^:]+:(\d+)\//);
      const reply = await request(`http://127.0.0.1:${adminPort}/api/reload`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
      assert.equal(reply.status, 200, reply.body);
      assert.deepEqual((reply.json() as { restart_needed: string[] }).restart_needed, []);
      assert.equal((await exchange(pki, port)).cn, 'example.com');
    } finally {
      child.kill('SIGKILL');
    }
  });

  test('cluster mode (workers: 2): every worker serves TLS, and a reload reaches them all', async () => {
    const cert = join(pki.dir, 'cluster-served.pem');
    const key = join(pki.dir, 'cluster-served-key.pem');
    copyFileSync(pki.exampleCert, cert);
    copyFileSync(pki.exampleKey, key);
    const c = await startCluster(configText(pki, backend.port, cert, key, '  workers: 2\n  redirect_http: { port: 0 }'));
    try {
      // Round-robin hands connections to the workers in turn: a few connections reach both.
      for (let i = 0; i < 6; i++) assert.deepEqual(await exchange(pki, c.port, '/cluster-before'), { cn: 'example.com', status: 'HTTP/1.1 200 OK' });
      assert.equal(servedBy(c.child, '/cluster-before').size, 2);
      // The workers share the redirect listener as they share the proxy port.
      const [, redirectPort] = await waitForOutput(c.child, /redirect_http: answering 308 to https on [^\s:]+:(\d+)/);
      const redirect = await raw(Number(redirectPort), 'GET /r?x=1 HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n');
      assert.match(redirect, new RegExp(`^HTTP/1\\.1 308 [^]*\r\nLocation: https://example\\.com:${c.port}/r\\?x=1\r\n`));
      copyFileSync(pki.apiCert, cert);
      copyFileSync(pki.apiKey, key);
      c.child.kill('SIGHUP');
      await waitForOutput(c.child, /config reloaded/);
      for (let i = 0; i < 4; i++) assert.equal((await exchange(pki, c.port, '/cluster-after')).cn, 'api.test');
    } finally {
      await stopCluster(c);
    }
  });
});
