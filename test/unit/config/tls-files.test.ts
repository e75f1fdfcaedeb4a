import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ConfigError } from '../../../src/config/errors.js';
import { parseConfig } from '../../../src/config/load.js';
import { makeTestPki, type TestPki } from '../../helpers/tls.js';

const UPSTREAM = 'load_balancing:\n  upstreams:\n    - { name: a, address: 127.0.0.1, port: 3000 }\n';

/** A config whose server.tls names these files (written as given: relative ones are taken from the config's folder). */
function tlsConfig(cert: string, key: string, extra = ''): string {
  return `server:\n  listen_port: 8443\n  tls:\n    certificates:\n      - cert_file: ${cert}\n        key_file: ${key}\n${extra}${UPSTREAM}`;
}

describe('server.tls files, checked when the config loads', () => {
  let pki: TestPki;
  let file: string;
  before(() => {
    pki = makeTestPki();
    // The config file sits in the PKI's folder, so its relative paths are the bare file names.
    file = join(pki.dir, 'proxy.yaml');
  });
  after(() => pki.remove());

  function problem(source: string): { line: number; col: number; path: string; message: string } {
    try {
      parseConfig(source, file);
    } catch (err) {
      assert.ok(err instanceof ConfigError, String(err));
      assert.equal(err.problems.length, 1, err.message);
      return err.problems[0] as { line: number; col: number; path: string; message: string };
    }
    assert.fail('expected a ConfigError');
  }

  test('good files: paths relative to the config file are resolved to absolute ones', () => {
    const config = parseConfig(tlsConfig('example.pem', 'example-key.pem', `    client_ca_file: ./ca.pem\n`), file);
    assert.deepEqual(config.server.tls?.certificates, [{ cert_file: pki.exampleCert, key_file: pki.exampleKey }]);
    assert.equal(config.server.tls?.client_ca_file, pki.caCert);
    assert.equal(config.server.tls?.min_version, 'TLSv1.2');
  });

  test('a missing certificate file: at the key, with the file', () => {
    const p = problem(tlsConfig('missing.pem', 'example-key.pem'));
    assert.deepEqual([p.line, p.col, p.path], [5, 20, 'server.tls.certificates[0].cert_file']);
    assert.match(p.message, /^cannot read .*missing\.pem: file not found$/);
  });

  test('an unreadable key file (a directory)', () => {
    mkdirSync(join(pki.dir, 'a-directory'), { recursive: true });
    const p = problem(tlsConfig('example.pem', 'a-directory'));
    assert.deepEqual([p.line, p.col, p.path], [6, 19, 'server.tls.certificates[0].key_file']);
    assert.match(p.message, /a-directory: is a directory$/);
  });

  test('a key that does not match its certificate', () => {
    const p = problem(tlsConfig('example.pem', 'api-key.pem'));
    assert.equal(p.path, 'server.tls.certificates[0].key_file');
    assert.match(p.message, /api-key\.pem: the key does not match the certificate .*example\.pem$/);
  });

  test('an expired certificate', () => {
    const p = problem(tlsConfig('expired.pem', 'expired-key.pem'));
    assert.equal(p.path, 'server.tls.certificates[0].cert_file');
    assert.match(p.message, /expired\.pem: the certificate expired on 2020-01-02T00:00:00\.000Z$/);
  });

  test('a file that is not a certificate, and a client CA file that is not one', () => {
    writeFileSync(join(pki.dir, 'garbage.pem'), 'not a certificate\n');
    assert.match(problem(tlsConfig('garbage.pem', 'example-key.pem')).message, /garbage\.pem: not a PEM certificate/);
    const ca = problem(tlsConfig('example.pem', 'example-key.pem', '    client_ca_file: garbage.pem\n'));
    assert.deepEqual([ca.line, ca.path], [7, 'server.tls.client_ca_file']);
  });

  test('a key file holding a certificate is not a key', () => {
    copyFileSync(pki.apiCert, join(pki.dir, 'not-a-key.pem'));
    assert.match(problem(tlsConfig('example.pem', 'not-a-key.pem')).message, /not-a-key\.pem: not a usable PEM private key/);
  });

  test('the second certificate is checked too, and named by its index', () => {
    const source = `server:\n  tls:\n    certificates:\n      - { cert_file: example.pem, key_file: example-key.pem }\n      - { cert_file: api.pem, key_file: example-key.pem }\n${UPSTREAM}`;
    const p = problem(source);
    assert.deepEqual([p.line, p.path], [5, 'server.tls.certificates[1].key_file']);
  });

  test('relative paths are taken from the config file, not the working directory', () => {
    const sub = join(pki.dir, 'conf');
    mkdirSync(sub, { recursive: true });
    const config = parseConfig(tlsConfig('../example.pem', relative(sub, pki.exampleKey)), join(sub, 'proxy.yaml'));
    assert.equal(config.server.tls?.certificates[0]?.cert_file, pki.exampleCert);
  });
});

describe('server.tls: keys that depend on others', () => {
  function messages(source: string): string[] {
    try {
      parseConfig(source, 'test.yaml');
    } catch (err) {
      assert.ok(err instanceof ConfigError);
      return err.problems.map((p) => `${p.path}: ${p.message}`);
    }
    return [];
  }

  test('redirect_http needs tls; forward_client_cert needs client_ca_file; client_cert auth needs client_ca_file', () => {
    assert.deepEqual(messages(`server:\n  redirect_http: { port: 80 }\n${UPSTREAM}`), ['server.redirect_http: needs server.tls: it redirects to the https listener']);
    assert.deepEqual(messages(`server:\n  tls: { certificates: [{ cert_file: a, key_file: b }], forward_client_cert: true }\n${UPSTREAM}`), [
      'server.tls.forward_client_cert: needs client_ca_file: only verified client certificates are forwarded',
    ]);
    assert.deepEqual(messages(`middleware:\n  auth: { enabled: true, auth_type: client_cert, valid_tokens: ["${'ab'.repeat(32)}"] }\n${UPSTREAM}`), [
      'middleware.auth.auth_type: client_cert auth needs server.tls.client_ca_file',
    ]);
  });

  test('client_cert valid_tokens must be SHA-256 fingerprints', () => {
    const [message] = messages(`middleware:\n  auth: { enabled: true, auth_type: client_cert, valid_tokens: [nope] }\n${UPSTREAM}`).filter((m) => m.startsWith('middleware.auth.valid_tokens'));
    assert.equal(message, 'middleware.auth.valid_tokens[0]: must be a SHA-256 fingerprint: 64 hex digits, in pairs separated by ":" or not');
  });

  test('HTTP/2 keys: defaults, h2c only without tls, limits checked at their line', () => {
    const config = parseConfig(UPSTREAM, 'test.yaml');
    assert.equal(config.server.http2, true);
    assert.equal(config.server.h2c, false);
    assert.deepEqual(config.server.http2_limits, {
      max_concurrent_streams: 100,
      max_resets_per_second: 100,
      max_control_frames_per_second: 100,
      max_overhead_bytes_per_second: 1_048_576,
      hpack_table_size: 4096,
      idle_timeout_ms: 75_000,
      header_timeout_ms: 10_000,
    });
    assert.deepEqual(messages(`server:\n  h2c: true\n  tls: { certificates: [{ cert_file: a, key_file: b }] }\n${UPSTREAM}`).filter((m) => m.startsWith('server.h2c')), [
      'server.h2c: is for a plain listener: with server.tls, HTTP/2 is server.http2',
    ]);
    assert.deepEqual(messages(`server:\n  http2_limits: { max_concurrent_streams: 0, hpack_table_size: 70000, max_overhead_bytes_per_second: 100, rapid: 1 }\n${UPSTREAM}`), [
      'server.http2_limits.max_concurrent_streams: must be a whole number from 1 to 10000, got 0',
      'server.http2_limits.hpack_table_size: must be a whole number of bytes from 0 to 65536, got 70000',
      'server.http2_limits.max_overhead_bytes_per_second: must be a whole number of bytes from 1024 to 1000000000, got 100',
      'server.http2_limits.rapid: unknown key',
    ]);
    try {
      parseConfig(`server:\n  http2_limits:\n    idle_timeout_ms: 5\n${UPSTREAM}`, 'test.yaml');
      assert.fail('accepted');
    } catch (err) {
      assert.ok(err instanceof ConfigError);
      assert.match(err.message, /test\.yaml:3:22 server\.http2_limits\.idle_timeout_ms: must be at least 100 milliseconds/);
    }
  });

  test('min_version takes TLSv1.2 or TLSv1.3', () => {
    const [message] = messages(`server:\n  tls: { certificates: [{ cert_file: a, key_file: b }], min_version: TLSv1.1 }\n${UPSTREAM}`);
    assert.match(message ?? '', /^server\.tls\.min_version: must be TLSv1\.2 or TLSv1\.3/);
  });
});
