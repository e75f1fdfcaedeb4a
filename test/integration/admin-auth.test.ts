/**
 * The admin listener's token: with `admin.token` set, every admin request (dashboard, /metrics, the APIs,
 * the reload) needs it, as a bearer token or as a Basic password; without a token the listener may only be
 * on a loopback address (a config error otherwise, found by --check too).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ConfigError } from '../../src/config/errors.js';
import { parseConfig } from '../../src/config/load.js';
import { runCli, writeConfig } from '../helpers/cli.js';
import { request } from '../helpers/http.js';
import { startBackend, startProxy, type Backend, type TestProxy } from '../helpers/servers.js';

const TOKEN = 'admin-token-0123456789';

describe('admin.token', () => {
  let backend: Backend;
  let proxy: TestProxy;
  before(async () => {
    backend = await startBackend('b');
    proxy = await startProxy([backend], { admin: { token: TOKEN } });
  });
  after(async () => {
    await proxy.close();
    await backend.close();
  });

  test('without the token every admin path is 401 with a Basic challenge', async () => {
    for (const path of ['/', '/metrics', '/api/status', '/api/events', '/dashboard.js', '/nowhere']) {
      const reply = await request(`${proxy.adminUrl}${path}`);
      assert.equal(reply.status, 401, path);
      assert.equal(reply.headers['www-authenticate'], 'Basic realm="tollgate admin", charset="UTF-8"');
      assert.equal(reply.json().error, 'unauthorized');
    }
    const reload = await request(`${proxy.adminUrl}/api/reload`, { method: 'POST', headers: { 'content-type': 'application/json' } });
    assert.equal(reload.status, 401);
    assert.equal(proxy.proxy.generation.meta.id, 1);
  });

  test('a wrong token, or the token in the user name, is refused', async () => {
    const basic = (user: string, password: string): string => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
    for (const authorization of [`Bearer ${TOKEN}x`, `Bearer ${TOKEN.slice(1)}`, basic(TOKEN, 'nope'), 'Bearer', `Token ${TOKEN}`]) {
      assert.equal((await request(`${proxy.adminUrl}/metrics`, { headers: { authorization } })).status, 401, authorization);
    }
  });

  test('the token as Bearer or as a Basic password opens every path', async () => {
    const bearer = { authorization: `Bearer ${TOKEN}` };
    const basic = { authorization: `Basic ${Buffer.from(`admin:${TOKEN}`).toString('base64')}` };
    assert.equal((await request(`${proxy.adminUrl}/metrics`, { headers: bearer })).status, 200);
    assert.equal((await request(`${proxy.adminUrl}/api/status`, { headers: basic })).status, 200);
    assert.equal((await request(`${proxy.adminUrl}/`, { headers: basic })).status, 200);
    // The proxy port is not affected by the admin token.
    assert.equal((await request(`${proxy.url}/x`)).status, 200);
  });
});

describe('an admin listener off loopback needs a token', () => {
  const base = 'load_balancing:\n  upstreams: [{ name: a, address: 127.0.0.1, port: 4000 }]\n';

  test('0.0.0.0 or :: without a token is a config error at admin.token; --check exits 2', async () => {
    for (const address of ['0.0.0.0', '::', '10.1.2.3']) {
      assert.throws(
        () => parseConfig(`${base}admin:\n  address: "${address}"\n`, 'a.yaml'),
        (err: unknown) => err instanceof ConfigError && /a\.yaml:\d+:\d+ admin\.token: is required when address is not a loopback address/.test(err.message),
        address,
      );
    }
    const run = await runCli(['--check', '--config', writeConfig(`${base}admin:\n  address: "0.0.0.0"\n`)]);
    assert.equal(run.code, 2);
    assert.match(run.stderr, /admin\.token: is required when address is not a loopback address \(0\.0\.0\.0\)/);
  });

  test('with a token, or on 127.x or ::1, or with the listener off, it is valid; a short token is refused', () => {
    assert.doesNotThrow(() => parseConfig(`${base}admin:\n  address: "0.0.0.0"\n  token: "${TOKEN}"\n`, 'a.yaml'));
    assert.doesNotThrow(() => parseConfig(`${base}admin:\n  address: "127.0.0.2"\n`, 'a.yaml'));
    assert.doesNotThrow(() => parseConfig(`${base}admin:\n  address: "::1"\n`, 'a.yaml'));
    assert.doesNotThrow(() => parseConfig(`${base}admin:\n  enabled: false\n  address: "0.0.0.0"\n`, 'a.yaml'));
    assert.throws(() => parseConfig(`${base}admin:\n  token: short\n`, 'a.yaml'), /admin\.token: must be at least 16 characters/);
  });
});
