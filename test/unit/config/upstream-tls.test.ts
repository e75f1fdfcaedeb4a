import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ConfigError, type ConfigProblem } from '../../../src/config/errors.js';
import { parseConfig } from '../../../src/config/load.js';
import { upstreamProtocol, upstreamTls } from '../../../src/config/resolve.js';
import type { Config } from '../../../src/config/schema.js';
import { privateCa, type IssuedCert, type PrivateCa } from '../../helpers/tls.js';

function problems(source: string): ConfigProblem[] {
  try {
    parseConfig(source, 'proxy.yaml', {});
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    return err.problems;
  }
  assert.fail('expected a ConfigError');
}

const lb = (tls: string, upstreamExtra = '', more = ''): string => `load_balancing:
  upstreams:
    - name: a
      address: 10.0.0.1
      port: 443${upstreamExtra}
${tls}${more}`;

let ca: PrivateCa;
let leaf: IssuedCert;
let other: IssuedCert;
let dir: string;

before(() => {
  ca = privateCa();
  leaf = ca.issue(['client']);
  other = ca.issue(['other']);
  dir = mkdtempSync(join(tmpdir(), 'tollgate-tls-config-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

describe('tls and protocol: what each upstream gets', () => {
  function services(source: string): Config {
    return parseConfig(source, 'proxy.yaml', {});
  }

  test('no tls: plain HTTP/1.1', () => {
    const config = services(lb(''));
    const service = config.load_balancing as NonNullable<Config['load_balancing']>;
    assert.deepEqual(upstreamTls(service, service.upstreams[0] as never), { enabled: false, servername: undefined, ca_file: undefined, verify: true, cert_file: undefined, key_file: undefined });
    assert.equal(upstreamProtocol(service, service.upstreams[0] as never), 'http1');
  });

  test("a service's tls block turns TLS on for each upstream; an upstream's keys replace the service's one by one", () => {
    const source = `load_balancing:
  tls: { ca_file: ${ca.certFile}, servername: api.internal, cert_file: ${leaf.certFile}, key_file: ${leaf.keyFile} }
  protocol: h2
  upstreams:
    - { name: a, address: 10.0.0.1, port: 443 }
    - { name: b, address: 10.0.0.2, port: 443, tls: { servername: b.internal, verify: false }, protocol: http1 }
    - { name: c, address: 10.0.0.3, port: 443, tls: { cert_file: ${other.certFile}, key_file: ${other.keyFile} } }
    - { name: d, address: 10.0.0.4, port: 80, tls: { enabled: false }, protocol: http1 }
`;
    const service = services(source).load_balancing as NonNullable<Config['load_balancing']>;
    const [a, b, c, d] = service.upstreams.map((u) => ({ ...upstreamTls(service, u), protocol: upstreamProtocol(service, u) }));
    const base = { enabled: true, servername: 'api.internal', ca_file: ca.certFile, verify: true, cert_file: leaf.certFile, key_file: leaf.keyFile, protocol: 'h2' };
    assert.deepEqual(a, base);
    assert.deepEqual(b, { ...base, servername: 'b.internal', verify: false, protocol: 'http1' });
    assert.deepEqual(c, { ...base, cert_file: other.certFile, key_file: other.keyFile });
    assert.deepEqual(d, { ...base, enabled: false, protocol: 'http1' });
  });

  test("an upstream's tls block alone turns TLS on for it; enabled: false in a service block turns it off", () => {
    const source = `load_balancing:
  upstreams:
    - { name: a, address: api.example.com, port: 443, tls: {} }
    - { name: b, address: 10.0.0.2, port: 80 }
services:
  off:
    tls: { enabled: false, verify: false }
    upstreams:
      - { name: c, address: 10.0.0.3, port: 80 }
routes:
  - { name: r, match: { path_prefix: /off }, service: off }
  - { name: s, match: { path_prefix: / }, service: default }
`;
    const config = services(source);
    const main = config.load_balancing as NonNullable<Config['load_balancing']>;
    assert.equal(upstreamTls(main, main.upstreams[0] as never).enabled, true);
    assert.equal(upstreamTls(main, main.upstreams[1] as never).enabled, false);
    const off = config.services?.off as NonNullable<Config['load_balancing']>;
    assert.equal(upstreamTls(off, off.upstreams[0] as never).enabled, false);
  });
});

describe('tls and protocol: config errors with file:line:col and the key path', () => {
  test('a missing ca_file, at the key that names it', () => {
    const missing = join(dir, 'nope.pem');
    assert.deepEqual(problems(lb(`  tls:\n    ca_file: ${missing}\n`)), [{ line: 7, col: 14, path: 'load_balancing.tls.ca_file', message: `cannot read ${missing}: file not found` }]);
  });

  test("an unreadable file, and a file without a certificate, in an upstream's block", () => {
    const garbage = join(dir, 'garbage.pem');
    writeFileSync(garbage, 'not a certificate\n');
    assert.deepEqual(problems(lb('', `\n      tls: { ca_file: ${garbage} }`)), [
      { line: 6, col: 23, path: 'load_balancing.upstreams[0].tls.ca_file', message: `${garbage} holds no PEM certificate` },
    ]);
    // A directory cannot be read as a file (a locked file would be read by root, who may run the tests).
    assert.deepEqual(problems(lb('', `\n      tls: { ca_file: ${dir} }`)), [
      { line: 6, col: 23, path: 'load_balancing.upstreams[0].tls.ca_file', message: `cannot read ${dir}: is a directory` },
    ]);
  });

  test('a key that does not belong to the certificate', () => {
    assert.deepEqual(problems(lb(`  tls:\n    cert_file: ${leaf.certFile}\n    key_file: ${other.keyFile}\n`)), [
      { line: 8, col: 15, path: 'load_balancing.tls.key_file', message: `${other.keyFile} does not belong to the certificate in ${leaf.certFile}` },
    ]);
  });

  test('cert_file without key_file, key_file without cert_file', () => {
    assert.deepEqual(
      problems(lb(`  tls:\n    cert_file: ${leaf.certFile}\n`)).map((p) => `${p.line}:${p.col} ${p.path}: ${p.message}`),
      ["7:5 load_balancing.tls.key_file: is required with cert_file (the client certificate's key)"],
    );
    assert.deepEqual(
      problems(lb('', `\n      tls: { key_file: ${leaf.keyFile} }`)).map((p) => `${p.path}: ${p.message}`),
      ['load_balancing.upstreams[0].tls.cert_file: is required with key_file'],
    );
  });

  test('servername must be a host name; verify must be a boolean; unknown keys are named', () => {
    assert.deepEqual(
      problems(lb('  tls:\n    servername: 10.0.0.1\n    verify: "no"\n    ca_flie: x\n')).map((p) => `${p.line}:${p.col} ${p.path}: ${p.message}`),
      [
        '7:17 load_balancing.tls.servername: must be a host name (not an IP address: a certificate for an IP is checked against the address)',
        '8:13 load_balancing.tls.verify: must be true or false, got "no"',
        '9:5 load_balancing.tls.ca_flie: unknown key, did you mean ca_file?',
      ],
    );
  });

  test('h2 without TLS, for the service or for one upstream', () => {
    assert.deepEqual(
      problems(lb('  protocol: h2\n')).map((p) => `${p.line}:${p.col} ${p.path}: ${p.message}`),
      ['6:13 load_balancing.protocol: h2 needs TLS (HTTP/2 is agreed in the TLS handshake): give upstream "a" tls'],
    );
    assert.deepEqual(
      problems(lb('', '\n      protocol: h2')).map((p) => `${p.line}:${p.col} ${p.path}: ${p.message}`),
      ['6:17 load_balancing.upstreams[0].protocol: h2 needs TLS (HTTP/2 is agreed in the TLS handshake): give upstream "a" tls'],
    );
    assert.deepEqual(problems(lb('  protocol: h3\n')).map((p) => `${p.path}: ${p.message}`), ['load_balancing.protocol: must be http1, h2 or h2c, got "h3"']);
  });

  test('h2c with TLS, and grpc health checks towards an HTTP/1.1 upstream', () => {
    assert.deepEqual(
      problems(lb('  protocol: h2c\n  tls: { enabled: true }\n')).map((p) => `${p.path}: ${p.message}`),
      ['load_balancing.protocol: h2c is HTTP/2 without TLS: upstream "a" has tls, so use h2'],
    );
    assert.deepEqual(
      problems(lb('  health_check: { active: { type: grpc } }\n')).map((p) => `${p.path}: ${p.message}`),
      ['load_balancing.health_check.active.type: grpc checks need HTTP/2: give upstream "a" protocol h2 (with tls) or h2c'],
    );
  });
});
