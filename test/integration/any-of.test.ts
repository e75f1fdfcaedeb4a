import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { hashSync } from '@node-rs/bcrypt';
import { request } from '../helpers/http.js';
import { makeKey, sign, startJwks, type JwksServer, type TestKey } from '../helpers/jwt.js';
import { samples, scrape } from '../helpers/metrics.js';
import { startBackend, startProxy, waitFor, type Backend } from '../helpers/servers.js';

type Echo = { headers: Record<string, string | undefined> };
const basic = (user: string, password: string): string => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

describe('auth any_of', () => {
  let backend: Backend;
  let key: TestKey;
  let jwks: JwksServer;
  before(async () => {
    backend = await startBackend('b');
    key = makeKey('RS256', 'k');
    jwks = await startJwks([key]);
  });
  after(async () => {
    await backend.close();
    await jwks.close();
  });

  function anyOf(): Record<string, unknown> {
    return {
      enabled: true,
      any_of: [
        { auth_type: 'jwt', jwt: { jwks_url: jwks.url, issuer: 'https://idp.test/', audiences: ['api'], algorithms: ['RS256'], required_claims: { scope: 'read' }, claims_to_headers: { sub: 'X-User-Id' } } },
        { auth_type: 'api_key', valid_tokens: ['key-1'] },
        { auth_type: 'basic', users: [{ username: 'alice', password_hash: hashSync('alice-pw', 4) }] },
        { auth_type: 'bearer', valid_tokens: ['opaque-token'] },
      ],
    };
  }

  test('each scheme is accepted; none: 401 with every challenge; the most telling failure is counted', async () => {
    const proxy = await startProxy([backend], { middleware: { auth: anyOf() } });
    try {
      const jwt = await request(`${proxy.url}/`, { headers: { authorization: `Bearer ${await sign(key, { scope: 'read' })}`, 'x-user-id': 'spoof' } });
      assert.equal(jwt.status, 200);
      assert.equal(jwt.json<Echo>().headers['x-user-id'], 'user-1');
      const apiKey = await request(`${proxy.url}/`, { headers: { 'x-api-key': 'key-1', 'x-user-id': 'spoof' } });
      assert.equal(apiKey.status, 200);
      assert.equal(apiKey.json<Echo>().headers['x-user-id'], undefined, 'claim headers are removed whichever scheme accepts');
      assert.equal(apiKey.json<Echo>().headers['x-api-key'], undefined);
      assert.equal((await request(`${proxy.url}/`, { headers: { authorization: basic('alice', 'alice-pw') } })).status, 200);
      assert.equal((await request(`${proxy.url}/`, { headers: { authorization: 'Bearer opaque-token' } })).status, 200, 'not a JWT, but a bearer token of the last scheme');

      const none = await request(`${proxy.url}/`);
      assert.equal(none.status, 401);
      assert.equal(none.headers['www-authenticate'], 'Bearer realm="tollgate", ApiKey header="X-API-Key", Basic realm="tollgate", charset="UTF-8", Bearer realm="tollgate"');
      const expired = await request(`${proxy.url}/`, { headers: { authorization: `Bearer ${await sign(key, { scope: 'read', exp: Math.floor(Date.now() / 1000) - 120 })}` } });
      assert.equal(expired.status, 401);
      assert.match(String(expired.headers['www-authenticate']), /^Bearer realm="tollgate", error="invalid_token"/);
      const wrongKey = await request(`${proxy.url}/`, { headers: { 'x-api-key': 'key-2' } });
      assert.equal(wrongKey.status, 401);
      const scope = await request(`${proxy.url}/`, { headers: { authorization: `Bearer ${await sign(key, { scope: 'write' })}` } });
      assert.equal(scope.status, 403);
      assert.equal(scope.json().error, 'forbidden');
      await waitFor(() => proxy.logs.filter((l) => l.msg === 'Request Completed').length === 8, 3000, 'logged');
      const counted = Object.fromEntries([...samples(await scrape(proxy.adminUrl), 'tollgate_auth_failures_total')].filter(([, n]) => n > 0));
      assert.deepEqual(counted, { '{reason="missing"}': 1, '{reason="expired"}': 1, '{reason="invalid"}': 1, '{reason="insufficient_scope"}': 1 });
    } finally {
      await proxy.close();
    }
  });

  test('per route, and config errors', async () => {
    const proxy = await startProxy([backend], {
      routes: [
        { name: 'api', match: { path_prefix: '/api' }, service: 'default', middleware: { auth: anyOf() } },
        { name: 'open', match: { path_prefix: '/' }, service: 'default' },
      ],
    });
    try {
      assert.equal((await request(`${proxy.url}/api`)).status, 401);
      assert.equal((await request(`${proxy.url}/api`, { headers: { 'x-api-key': 'key-1' } })).status, 200);
      assert.equal((await request(`${proxy.url}/open`)).status, 200);
    } finally {
      await proxy.close();
    }
    await assert.rejects(startProxy([backend], { middleware: { auth: { enabled: true, any_of: [{ auth_type: 'client_cert', valid_tokens: ['a'.repeat(64)] }] } } }), /must be one of bearer, basic, api_key, jwt in any_of/);
    await assert.rejects(startProxy([backend], { middleware: { auth: { enabled: true, any_of: [{ auth_type: 'api_key' }] } } }), /api_key auth needs at least one token/);
  });
});
