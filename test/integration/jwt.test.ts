import assert from 'node:assert/strict';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SignJWT } from 'jose';
import { configSchema } from '../../src/config/schema.js';
import { request } from '../helpers/http.js';
import { makeKey, segment, sign, startJwks, type JwksServer, type TestKey } from '../helpers/jwt.js';
import { samples, scrape } from '../helpers/metrics.js';
import { startBackend, startProxy, waitFor, type Backend, type TestProxy } from '../helpers/servers.js';

type Echo = { headers: Record<string, string | undefined> };
const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` });

function jwtAuth(jwks: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    auth: {
      enabled: true,
      auth_type: 'jwt',
      jwt: {
        jwks_url: jwks,
        issuer: 'https://idp.test/',
        audiences: ['api'],
        algorithms: ['RS256', 'ES256', 'EdDSA'],
        claims_to_headers: { sub: 'X-User-Id', email: 'X-User-Email' },
        ...extra,
      },
    },
  };
}

/** The auth failures counted so far, by reason (only those above zero). */
async function failures(proxy: TestProxy, requests: number): Promise<Record<string, number>> {
  await waitFor(() => proxy.logs.filter((l) => l.msg === 'Request Completed').length >= requests, 3000, 'requests logged');
  const out: Record<string, number> = {};
  for (const [labels, n] of samples(await scrape(proxy.adminUrl), 'tollgate_auth_failures_total')) if (n > 0) out[labels] = n;
  return out;
}

describe('JWT auth', () => {
  let backend: Backend;
  let rsa: TestKey;
  let ec: TestKey;
  let ed: TestKey;
  let jwks: JwksServer;
  before(async () => {
    backend = await startBackend('b');
    rsa = makeKey('RS256', 'rsa-1');
    ec = makeKey('ES256', 'ec-1');
    ed = makeKey('EdDSA', 'ed-1');
    jwks = await startJwks([rsa, ec, ed]);
  });
  after(async () => {
    await backend.close();
    await jwks.close();
  });

  test('RS256, ES256 and EdDSA tokens from a JWKS pass; claims reach the upstream as headers, spoofed ones never', async () => {
    const proxy = await startProxy([backend], { middleware: jwtAuth(jwks.url) });
    try {
      for (const key of [rsa, ec, ed]) {
        const token = await sign(key, { email: 'a@example.com' });
        const res = await request(`${proxy.url}/x`, { headers: { ...bearer(token), 'x-user-id': 'admin', 'X-User-Email': 'root@example.com' } });
        assert.equal(res.status, 200, key.alg);
        const seen = res.json<Echo>().headers;
        assert.equal(seen['x-user-id'], 'user-1', `${key.alg}: the claim, not the client's header`);
        assert.equal(seen['x-user-email'], 'a@example.com');
        assert.equal(seen.authorization, undefined, 'the token is not forwarded');
      }
      // A token without the email claim: the client's X-User-Email is removed all the same.
      const res = await request(`${proxy.url}/x`, { headers: { ...bearer(await sign(rsa)), 'x-user-email': 'root@example.com' } });
      assert.equal(res.status, 200);
      assert.equal(res.json<Echo>().headers['x-user-email'], undefined);
      // The JWKS was fetched once, at start, and cached.
      assert.equal(jwks.hits, 1);
    } finally {
      await proxy.close();
    }
  });

  test('each bad token is 401 invalid_token with its own reason in the metrics; a missing one is a bare challenge', async () => {
    const proxy = await startProxy([backend], { middleware: jwtAuth(jwks.url) });
    try {
      const now = Math.floor(Date.now() / 1000);
      const good = await sign(rsa);
      const [h, p, s] = good.split('.') as [string, string, string];
      const tampered = `${h}.${segment({ ...(JSON.parse(Buffer.from(p, 'base64url').toString()) as object), sub: 'admin' })}.${s}`;
      const none = `${segment({ alg: 'none', typ: 'JWT' })}.${p}.`;
      // Algorithm confusion: HS256 with the RSA public key (PEM) as the HMAC secret.
      const pem = rsa.publicKey.export({ format: 'pem', type: 'spki' });
      const confused = await new SignJWT({ iss: 'https://idp.test/', aud: 'api', sub: 'user-1', exp: now + 300 })
        .setProtectedHeader({ alg: 'HS256', kid: rsa.kid })
        .sign(Buffer.from(pem));
      const cases: [string, string, string][] = [
        ['expired', await sign(rsa, { exp: now - 120 }), 'expired'],
        ['not yet valid', await sign(rsa, { nbf: now + 120 }), 'not_yet_valid'],
        ['wrong issuer', await sign(rsa, { iss: 'https://evil.test/' }), 'wrong_issuer'],
        ['wrong audience', await sign(rsa, { aud: 'other' }), 'wrong_audience'],
        ['alg none', none, 'wrong_algorithm'],
        ['alg confusion', confused, 'wrong_algorithm'],
        ['tampered payload', tampered, 'bad_signature'],
        ['signed by an unknown key', await sign(makeKey('RS256', 'rsa-1')), 'bad_signature'],
        ['not a JWT', 'abc.def', 'malformed'],
      ];
      for (const [what, token, reason] of cases) {
        const res = await request(`${proxy.url}/x`, { headers: bearer(token) });
        assert.equal(res.status, 401, what);
        assert.equal(res.json().error, 'unauthorized', what);
        assert.match(String(res.headers['www-authenticate']), /^Bearer realm="tollgate", error="invalid_token", error_description="[^"]+"$/, what);
        const counted = await failures(proxy, cases.indexOf(cases.find((c) => c[0] === what) as [string, string, string]) + 1);
        assert.equal(counted[`{reason="${reason}"}`], cases.filter((c, i) => c[2] === reason && i <= cases.findIndex((x) => x[0] === what)).length, `${what} counted as ${reason}`);
      }
      assert.ok(proxy.logs.some((l) => l.msg === 'Request Completed' && l.auth_failure === 'wrong_audience'), 'the reason is in the access log');
      const missing = await request(`${proxy.url}/x`);
      assert.equal(missing.status, 401);
      assert.equal(missing.headers['www-authenticate'], 'Bearer realm="tollgate"');
      assert.deepEqual(await failures(proxy, cases.length + 1), {
        '{reason="missing"}': 1,
        '{reason="malformed"}': 1,
        '{reason="expired"}': 1,
        '{reason="not_yet_valid"}': 1,
        '{reason="wrong_issuer"}': 1,
        '{reason="wrong_audience"}': 1,
        '{reason="wrong_algorithm"}': 2,
        '{reason="bad_signature"}': 2,
      });
    } finally {
      await proxy.close();
    }
  });

  test('required_claims: a missing scope is 403 insufficient_scope; a space-separated or array claim containing it passes', async () => {
    const proxy = await startProxy([backend], { middleware: jwtAuth(jwks.url, { required_claims: { scope: 'read' } }) });
    try {
      assert.equal((await request(`${proxy.url}/`, { headers: bearer(await sign(rsa, { scope: 'write read' })) })).status, 200);
      assert.equal((await request(`${proxy.url}/`, { headers: bearer(await sign(rsa, { scope: ['read'] })) })).status, 200);
      for (const scope of ['write', 'reader', undefined]) {
        const res = await request(`${proxy.url}/`, { headers: bearer(await sign(rsa, { scope })) });
        assert.equal(res.status, 403, String(scope));
        assert.equal(res.json().error, 'forbidden');
        assert.match(String(res.headers['www-authenticate']), /^Bearer realm="tollgate", error="insufficient_scope"/);
      }
      assert.deepEqual(await failures(proxy, 5), { '{reason="insufficient_scope"}': 3 });
    } finally {
      await proxy.close();
    }
  });

  test('key rotation: a new kid is fetched when a token names it; a retired kid is refused', async () => {
    const k1 = makeKey('ES256', 'k1');
    const k2 = makeKey('ES256', 'k2');
    const server = await startJwks([k1]);
    const proxy = await startProxy([backend], { middleware: jwtAuth(server.url) });
    try {
      assert.equal((await request(`${proxy.url}/`, { headers: bearer(await sign(k1)) })).status, 200);
      server.keys = [k2];
      assert.equal((await request(`${proxy.url}/`, { headers: bearer(await sign(k2)) })).status, 200, 'k2 picked up');
      assert.equal(server.hits, 2);
      const old = await request(`${proxy.url}/`, { headers: bearer(await sign(k1)) });
      assert.equal(old.status, 401, 'k1 retired');
      // Unknown kids refresh at most once per 10 s: a flood of made-up kids costs no more fetches.
      for (let i = 0; i < 5; i++) assert.equal((await request(`${proxy.url}/`, { headers: bearer(await sign(makeKey('ES256', `x${i}`))) })).status, 401);
      assert.equal(server.hits, 2);
      assert.equal((await failures(proxy, 8))['{reason="unknown_key"}'], 6);
    } finally {
      await proxy.close();
      await server.close();
    }
  });

  test('JWKS down: cached keys keep working, the failure is logged, nothing fails open', async () => {
    const k1 = makeKey('RS256', 'k1');
    const server = await startJwks([k1]);
    const proxy = await startProxy([backend], { middleware: jwtAuth(server.url) });
    try {
      assert.equal((await request(`${proxy.url}/`, { headers: bearer(await sign(k1)) })).status, 200);
      server.status = 503;
      // An unknown kid makes the proxy try the endpoint, which fails.
      assert.equal((await request(`${proxy.url}/`, { headers: bearer(await sign(makeKey('RS256', 'new'))) })).status, 401);
      assert.equal(server.hits, 2);
      assert.equal((await request(`${proxy.url}/`, { headers: bearer(await sign(k1)) })).status, 200, 'the cached key still works');
      assert.ok(proxy.logs.some((l) => l.msg === 'JWKS fetch failed; the keys already held stay in use' && l.keys_held === 1));
      assert.equal(samples(await scrape(proxy.adminUrl), 'tollgate_jwks_fetch_failures_total').get(''), 1);
    } finally {
      await proxy.close();
      await server.close();
    }
    // Down from the start: no key at all, every token refused.
    const down = await startJwks([k1]);
    down.status = 500;
    const cold = await startProxy([backend], { middleware: jwtAuth(down.url) });
    try {
      const res = await request(`${cold.url}/`, { headers: bearer(await sign(k1)) });
      assert.equal(res.status, 401);
    } finally {
      await cold.close();
      await down.close();
    }
  });

  test('a hot reload keeps the fetched keys (no new fetch while they are fresh); a changed jwks_url is fetched', async () => {
    const k1 = makeKey('EdDSA', 'k1');
    const server = await startJwks([k1]);
    const other = await startJwks([k1]);
    const proxy = await startProxy([backend], { middleware: jwtAuth(server.url) });
    const configWith = (url: string, realm: string) =>
      configSchema.parse({
        server: { listen_port: 0, listen_address: '127.0.0.1' },
        load_balancing: { upstreams: [{ name: 'b', address: '127.0.0.1', port: backend.port }] },
        middleware: { auth: { ...(jwtAuth(url).auth as object), realm } },
        admin: { port: 0 },
      });
    try {
      assert.equal((await request(`${proxy.url}/`, { headers: bearer(await sign(k1)) })).status, 200);
      assert.equal(server.hits, 1);
      assert.equal((await proxy.proxy.reload(configWith(server.url, 'r2'))).result, 'ok');
      const after = await request(`${proxy.url}/`);
      assert.equal(after.headers['www-authenticate'], 'Bearer realm="r2"', 'the new generation answers');
      assert.equal((await request(`${proxy.url}/`, { headers: bearer(await sign(k1)) })).status, 200);
      assert.equal(server.hits, 1, 'the keys carried over');
      assert.equal((await proxy.proxy.reload(configWith(other.url, 'r3'))).result, 'ok');
      assert.equal((await request(`${proxy.url}/`, { headers: bearer(await sign(k1)) })).status, 200);
      assert.equal(other.hits, 1);
    } finally {
      await proxy.close();
      await server.close();
      await other.close();
    }
  });

  test('HS256 with a secret, the token from a cookie, and a public key file; per route', async () => {
    const secret = 'a-shared-secret-of-at-least-32-characters';
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-jwt-'));
    const keyFile = join(dir, 'rsa.pem');
    writeFileSync(keyFile, rsa.publicKey.export({ format: 'pem', type: 'spki' }));
    const hs = await new SignJWT({ sub: 'svc' }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('5m').sign(Buffer.from(secret));
    const proxy = await startProxy([backend], {
      routes: [
        { name: 'hs', match: { path_prefix: '/hs' }, service: 'default', middleware: { auth: { enabled: true, auth_type: 'jwt', jwt: { secret, algorithms: ['HS256'], cookie: 'session' } } } },
        { name: 'pem', match: { path_prefix: '/pem' }, service: 'default', middleware: { auth: { enabled: true, auth_type: 'jwt', jwt: { public_key_file: keyFile, algorithms: ['RS256'] } } } },
        { name: 'open', match: { path_prefix: '/' }, service: 'default' },
      ],
    });
    try {
      assert.equal((await request(`${proxy.url}/hs`, { headers: bearer(hs) })).status, 200);
      assert.equal((await request(`${proxy.url}/hs`, { headers: { cookie: `a=1; session=${hs}` } })).status, 200);
      assert.equal((await request(`${proxy.url}/hs`, { headers: { cookie: 'session=nope' } })).status, 401);
      assert.equal((await request(`${proxy.url}/hs`, { headers: bearer(await sign(rsa)) })).status, 401, 'RS256 is not allowed there');
      assert.equal((await request(`${proxy.url}/pem`, { headers: bearer(await sign(rsa)) })).status, 200);
      assert.equal((await request(`${proxy.url}/pem`, { headers: bearer(hs) })).status, 401);
      assert.equal((await request(`${proxy.url}/open`)).status, 200);
    } finally {
      await proxy.close();
    }
  });
});
