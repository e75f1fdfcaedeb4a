import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { ConfigError } from '../../../src/config/errors.js';
import { loadConfigFile } from '../../../src/config/load.js';
import { JwksCache, maxAge, parseJwks } from '../../../src/middleware/auth/jwks.js';
import { claimHas, keyFits, secretKey } from '../../../src/middleware/auth/jwt.js';

const UPSTREAM = 'load_balancing:\n  upstreams:\n    - name: a\n      address: 127.0.0.1\n      port: 3000\n';

/** Writes `yaml` (and `files`) to a fresh folder and loads it; returns the error message, or '' when it loads. */
function load(yaml: string, files: Record<string, string> = {}): string {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-jwt-config-'));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  const file = join(dir, 'proxy.yaml');
  writeFileSync(file, UPSTREAM + yaml);
  try {
    loadConfigFile(file, {});
    return '';
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.message.replaceAll(`${dir}/`, '');
  }
}

const rsaPem = String(generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ format: 'pem', type: 'spki' }));
const ecPem = String(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'pem', type: 'spki' }));

describe('jwt config', () => {
  test('"none" is refused at load, at its line and key', () => {
    const msg = load('middleware:\n  auth:\n    enabled: true\n    auth_type: jwt\n    jwt:\n      secret: "0123456789abcdef0123456789abcdef"\n      algorithms: [HS256, none]\n');
    assert.equal(msg, 'proxy.yaml:12:27 middleware.auth.jwt.algorithms[1]: "none" is never allowed: a token without a signature proves nothing');
  });

  test('an HS algorithm with a JWKS or a key file, or a public-key algorithm with a secret, is refused', () => {
    assert.match(load('middleware:\n  auth:\n    enabled: true\n    auth_type: jwt\n    jwt:\n      jwks_url: https://idp.example/jwks\n      algorithms: [RS256, HS256]\n'), /algorithms\[1\]: HS256 needs jwt.secret: an HMAC key is never taken from jwks_url/);
    assert.match(load('middleware:\n  auth:\n    enabled: true\n    auth_type: jwt\n    jwt:\n      secret: "0123456789abcdef0123456789abcdef"\n      algorithms: [RS256]\n'), /algorithms\[0\]: RS256 needs a public key/);
  });

  test('jwks_url: https, or http to loopback only', () => {
    const at = (url: string): string => load(`middleware:\n  auth:\n    enabled: true\n    auth_type: jwt\n    jwt:\n      jwks_url: ${url}\n`);
    assert.equal(at('https://idp.example/jwks'), '');
    assert.equal(at('http://127.0.0.1:8080/jwks'), '');
    assert.equal(at('http://[::1]:8080/jwks'), '');
    assert.match(at('http://idp.example/jwks'), /^proxy.yaml:11:17 middleware.auth.jwt.jwks_url: must be an https:\/\/ URL \(http:\/\/ is allowed only to a loopback address/);
  });

  test('public_key_file: read at load, relative to the config; a missing file or a key of the wrong type is an error at its key', () => {
    const base = 'middleware:\n  auth:\n    enabled: true\n    auth_type: jwt\n    jwt:\n      public_key_file: key.pem\n      algorithms: [RS256]\n';
    assert.equal(load(base, { 'key.pem': rsaPem }), '');
    assert.equal(load(base), 'proxy.yaml:11:24 middleware.auth.jwt.public_key_file: key.pem: cannot read: file not found');
    assert.equal(load(base, { 'key.pem': ecPem }), 'proxy.yaml:11:24 middleware.auth.jwt.public_key_file: key.pem: a ec key fits none of jwt.algorithms (RS256)');
    assert.match(load(base, { 'key.pem': 'not a key' }), /^proxy.yaml:11:24 middleware.auth.jwt.public_key_file: key.pem: not a PEM public key or certificate/);
  });

  test('jwt auth needs a jwt block with one key source', () => {
    assert.match(load('middleware:\n  auth:\n    enabled: true\n    auth_type: jwt\n'), /middleware.auth.jwt: jwt auth needs a jwt block/);
    assert.match(load('middleware:\n  auth:\n    enabled: true\n    auth_type: jwt\n    jwt:\n      issuer: x\n'), /middleware.auth.jwt.jwks_url: is required \(or public_key_file, or secret\)/);
  });
});

describe('keys and claims', () => {
  test('a key verifies only the algorithms of its type', () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey;
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey;
    assert.equal(keyFits('RS256', rsa), true);
    assert.equal(keyFits('HS256', rsa), false, 'an RSA public key is never an HMAC secret');
    assert.equal(keyFits('ES256', ec), false, 'P-384 is not ES256');
    assert.equal(keyFits('ES384', ec), true);
    assert.equal(keyFits('RS256', secretKey('x'.repeat(32))), false);
    assert.equal(keyFits('none', rsa), false);
  });

  test('claimHas: exact, a word of a space-separated string, an element of an array', () => {
    assert.equal(claimHas('read', 'read'), true);
    assert.equal(claimHas('write read', 'read'), true);
    assert.equal(claimHas('reader', 'read'), false);
    assert.equal(claimHas(['a', 'read'], 'read'), true);
    assert.equal(claimHas(true, true), true);
    assert.equal(claimHas('true', true), false);
    assert.equal(claimHas(undefined, 'read'), false);
  });

  test('parseJwks keeps signing keys only: no oct, no encryption keys', () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ format: 'jwk' });
    const keys = parseJwks({ keys: [{ ...rsa, kid: 'a' }, { ...rsa, kid: 'b', use: 'enc' }, { kty: 'oct', k: 'c2VjcmV0', kid: 'c' }, { kty: 'RSA', kid: 'd' }] });
    assert.deepEqual(keys.map((k) => k.kid), ['a']);
    assert.throws(() => parseJwks({}), /no "keys" list/);
  });

  test('maxAge: the header within 30 s to 1 day, 5 minutes without one', () => {
    assert.equal(maxAge(null), 300_000);
    assert.equal(maxAge('public, max-age=600'), 600_000);
    assert.equal(maxAge('max-age=1'), 30_000);
    assert.equal(maxAge('max-age=9999999'), 86_400_000);
  });
});

describe('JwksCache', () => {
  const jwk = { ...generateKeyPairSync('ed25519').publicKey.export({ format: 'jwk' }), kid: 'k1' };
  function cache(status = 200): { cache: JwksCache; clock: { now: number }; calls: () => number; setStatus: (s: number) => void } {
    const clock = { now: 0 };
    let calls = 0;
    let current = status;
    const fake = (async () => {
      calls++;
      return new Response(current === 200 ? JSON.stringify({ keys: [jwk] }) : '', { status: current, headers: { 'cache-control': 'max-age=60' } });
    }) as typeof fetch;
    return { cache: new JwksCache('https://idp.example/jwks', { timeoutMs: 1000, now: () => clock.now, fetch: fake }), clock, calls: () => calls, setStatus: (s) => (current = s) };
  }

  test('unknown kids refresh at most once per 10 s; stale sets refresh in the background; failures keep the keys', async () => {
    const { cache: c, clock, calls, setStatus } = cache();
    c.start();
    assert.equal((await c.candidates('EdDSA', 'k1')).length, 1);
    assert.equal(calls(), 1);
    assert.equal((await c.candidates('EdDSA', 'nope')).length, 0);
    assert.equal(calls(), 2, 'an unknown kid refreshes');
    for (let i = 0; i < 10; i++) await c.candidates('EdDSA', `nope${i}`);
    assert.equal(calls(), 2, 'not again within 10 s');
    clock.now = 10_000;
    await c.candidates('EdDSA', 'nope');
    assert.equal(calls(), 3);
    setStatus(503);
    clock.now = 80_000; // past max-age 60 s: a background refresh, which fails
    assert.equal((await c.candidates('EdDSA', 'k1')).length, 1);
    await c.refresh(); // joins the background fetch
    assert.equal(c.failures, 1);
    assert.equal(calls(), 4);
    assert.equal((await c.candidates('EdDSA', 'k1')).length, 1, 'the cached key still works');
    c.close();
    assert.equal(await c.refresh(), false, 'closed: no more fetches');
  });

  test('a new cache starts with the keys of the one it replaces', async () => {
    const { cache: old } = cache();
    await old.refresh();
    const next = new JwksCache(old.url, { timeoutMs: 1000, fetch: (async () => new Response('', { status: 500 })) as typeof fetch }, old);
    assert.equal((await next.candidates('EdDSA', 'k1')).length, 1);
    next.close();
    old.close();
  });
});

describe('JwtVerifier cache', () => {
  test('a verified token is answered from the cache until its exp (skew included); a refetched key set verifies it again', async () => {
    const { SignJWT } = await import('jose');
    const { JwtVerifier } = await import('../../../src/middleware/auth/jwt.js');
    const pair = generateKeyPairSync('ed25519');
    const clock = { now: Date.now() };
    const exp = Math.floor(clock.now / 1000) + 60;
    const token = await new SignJWT({ sub: 'a' }).setProtectedHeader({ alg: 'EdDSA', kid: 'k1' }).setExpirationTime(exp).sign(pair.privateKey);
    const config = { algorithms: ['EdDSA'], clock_skew_ms: 1000, required_claims: {}, claims_to_headers: {}, jwks_timeout_ms: 5000 };
    const jwks = new JwksCache('https://idp.example/jwks', {
      timeoutMs: 1000,
      fetch: (async () => new Response(JSON.stringify({ keys: [{ ...pair.publicKey.export({ format: 'jwk' }), kid: 'k1' }] }))) as typeof fetch,
    });
    const verifier = new JwtVerifier(config, { jwks }, () => clock.now);
    const first = verifier.verify(token);
    assert.ok(first instanceof Promise);
    assert.equal((await first).claims?.sub, 'a');
    const second = verifier.verify(token);
    assert.ok(!(second instanceof Promise), 'cached: answered at once');
    assert.equal(second.principal, (await first).principal);
    await jwks.refresh();
    assert.ok(verifier.verify(token) instanceof Promise, 'new key set: verified again');
    await verifier.verify(token);
    clock.now = exp * 1000 + 1001;
    const late = verifier.verify(token);
    assert.ok(late instanceof Promise, 'past exp + skew: not from the cache');
    assert.equal((await late).failure, 'expired');
    jwks.close();
  });
});

describe('claims_to_headers config', () => {
  test('a header Tollgate or the connection owns cannot carry a claim', () => {
    const msg = load('middleware:\n  auth:\n    enabled: true\n    auth_type: jwt\n    jwt:\n      jwks_url: https://idp.example/jwks\n      claims_to_headers: { sub: Host }\n');
    assert.match(msg, /^proxy.yaml:12:\d+ middleware.auth.jwt.claims_to_headers.sub: Host cannot carry a claim/);
  });
});
