import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { request } from '../helpers/http.js';
import { makeKey, sign, startJwks, type JwksServer, type TestKey } from '../helpers/jwt.js';
import { startBackend, startProxy, type Backend } from '../helpers/servers.js';

/** Statuses of `n` requests sent one after another with these headers. */
async function statuses(url: string, headers: Record<string, string>, n: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push((await request(url, { headers })).status);
  return out;
}

// One token a minute with a burst of 2: a bucket allows exactly 2 requests, the third is 429.
const LIMIT = { enabled: true, requests_per_minute: 1, burst_size: 2 };

describe('rate_limit.key', () => {
  let backend: Backend;
  let key: TestKey;
  let jwks: JwksServer;
  before(async () => {
    backend = await startBackend('b');
    key = makeKey('ES256', 'k');
    jwks = await startJwks([key]);
  });
  after(async () => {
    await backend.close();
    await jwks.close();
  });

  test('credential: each token has its own bucket, whatever its place in valid_tokens; failed auth is charged to the address', async () => {
    const proxy = await startProxy([backend], { middleware: { auth: { enabled: true, valid_tokens: ['t1', 't2'] }, rate_limit: { ...LIMIT, key: 'credential' } } });
    try {
      assert.deepEqual(await statuses(`${proxy.url}/`, { authorization: 'Bearer t1' }, 3), [200, 200, 429]);
      assert.deepEqual(await statuses(`${proxy.url}/`, { authorization: 'Bearer t2' }, 3), [200, 200, 429]);
      assert.deepEqual(await statuses(`${proxy.url}/`, { authorization: 'Bearer wrong' }, 3), [401, 401, 429], 'the address bucket');
    } finally {
      await proxy.close();
    }
  });

  test('client_address: every token of one address shares its bucket', async () => {
    const proxy = await startProxy([backend], { middleware: { auth: { enabled: true, valid_tokens: ['t1', 't2'] }, rate_limit: { ...LIMIT, key: 'client_address' } } });
    try {
      assert.deepEqual(await statuses(`${proxy.url}/`, { authorization: 'Bearer t1' }, 2), [200, 200]);
      assert.deepEqual(await statuses(`${proxy.url}/`, { authorization: 'Bearer t2' }, 1), [429]);
    } finally {
      await proxy.close();
    }
  });

  test('header:X-Tenant: one bucket per value; without the header, the address', async () => {
    const proxy = await startProxy([backend], { middleware: { rate_limit: { ...LIMIT, key: 'header:X-Tenant' } } });
    try {
      assert.deepEqual(await statuses(`${proxy.url}/`, { 'x-tenant': 'a' }, 3), [200, 200, 429]);
      assert.deepEqual(await statuses(`${proxy.url}/`, { 'x-tenant': 'b' }, 3), [200, 200, 429]);
      assert.deepEqual(await statuses(`${proxy.url}/`, { 'x-tenant': 'A' }, 2), [200, 200], 'values are exact (case counts)');
      assert.deepEqual(await statuses(`${proxy.url}/`, {}, 3), [200, 200, 429]);
    } finally {
      await proxy.close();
    }
  });

  test('claim:sub: two tokens of one subject share a bucket; another subject has its own', async () => {
    const proxy = await startProxy([backend], {
      middleware: {
        auth: { enabled: true, auth_type: 'jwt', jwt: { jwks_url: jwks.url, algorithms: ['ES256'] } },
        rate_limit: { ...LIMIT, key: 'claim:sub' },
      },
    });
    try {
      const alice1 = await sign(key, { sub: 'alice', jti: '1' });
      const alice2 = await sign(key, { sub: 'alice', jti: '2' });
      assert.notEqual(alice1, alice2);
      assert.deepEqual(await statuses(`${proxy.url}/`, { authorization: `Bearer ${alice1}` }, 2), [200, 200]);
      assert.deepEqual(await statuses(`${proxy.url}/`, { authorization: `Bearer ${alice2}` }, 1), [429], 'same subject, same bucket');
      assert.deepEqual(await statuses(`${proxy.url}/`, { authorization: `Bearer ${await sign(key, { sub: 'bob' })}` }, 3), [200, 200, 429]);
      assert.deepEqual(await statuses(`${proxy.url}/`, { authorization: 'Bearer not-a-jwt' }, 3), [401, 401, 429], 'refused tokens: the address');
    } finally {
      await proxy.close();
    }
  });

  test('a bad key is refused when the config loads', async () => {
    await assert.rejects(startProxy([backend], { middleware: { rate_limit: { ...LIMIT, key: 'cookie:x' } } }), /must be client_address, credential, header:NAME or claim:NAME/);
  });
});
