/**
 * The three examples in examples/, run as users run them (they import the package by its name, so the
 * built dist/ is what they use) and driven through real sockets.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { start as startAb } from '../../examples/ab-routing.js';
import { MemoryKeyStore, start as startAuth, TtlCache } from '../../examples/auth-lookup.js';
import { start as startTiming } from '../../examples/upstream-timing.js';
import { closedPort, startBackend, type Backend } from '../helpers/servers.js';
import { request } from '../helpers/http.js';

type Echo = { backend: string; headers: Record<string, string> };

describe('examples/ab-routing.ts', () => {
  let stable: Backend;
  let canary: Backend;
  before(async () => {
    [stable, canary] = await Promise.all([startBackend('stable'), startBackend('canary')]);
  });
  after(async () => Promise.all([stable.close(), canary.close()]));

  test('header and cookie choose the variant; new clients are assigned and told by cookie', async () => {
    const none = await startAb({ port: 0, stablePort: stable.port, canaryPort: canary.port, canaryPercent: 0, logLevel: 'silent' });
    const all = await startAb({ port: 0, stablePort: stable.port, canaryPort: canary.port, canaryPercent: 100, logLevel: 'silent' });
    try {
      const url = `http://127.0.0.1:${none.address?.port}`;
      const fresh = await request(`${url}/x`);
      assert.equal(fresh.json<Echo>().backend, 'stable');
      assert.equal(fresh.headers['x-variant'], 'a');
      assert.match(String(fresh.headers['set-cookie']), /^variant=a; Path=\//);
      const byHeader = await request(`${url}/x`, { headers: { 'x-variant': 'b' } });
      assert.equal(byHeader.json<Echo>().backend, 'canary');
      assert.equal(byHeader.headers['set-cookie'], undefined, 'a client that chose is not assigned');
      const byCookie = await request(`${url}/x`, { headers: { cookie: 'session=1; variant=b' } });
      assert.equal(byCookie.json<Echo>().backend, 'canary');
      const headerWins = await request(`${url}/x`, { headers: { 'x-variant': 'a', cookie: 'variant=b' } });
      assert.equal(headerWins.json<Echo>().backend, 'stable');
      const assigned = await request(`http://127.0.0.1:${all.address?.port}/x`);
      assert.equal(assigned.json<Echo>().backend, 'canary');
      assert.match(String(assigned.headers['set-cookie']), /^variant=b;/);
    } finally {
      await Promise.all([none.close(), all.close()]);
    }
  });
});

describe('examples/auth-lookup.ts', () => {
  let backend: Backend;
  before(async () => {
    backend = await startBackend('app');
  });
  after(() => backend.close());

  test('keys are looked up once per TTL; unknown keys are 401; a failing store is 503; the key never goes upstream', async () => {
    const store = new MemoryKeyStore({ 'key-alice': 'alice' });
    let now = 0;
    const cache = new TtlCache<string | undefined>(1000, 100, () => now);
    const gateway = await startAuth({ port: 0, backendPort: backend.port, store, cache, logLevel: 'silent' });
    try {
      const url = `http://127.0.0.1:${gateway.address?.port}`;
      const first = await request(`${url}/x`, { headers: { 'x-api-key': 'key-alice' } });
      assert.equal(first.status, 200);
      assert.equal(first.json<Echo>().headers['x-user'], 'alice');
      assert.equal(first.json<Echo>().headers['x-api-key'], undefined);
      assert.equal((await request(`${url}/x`, { headers: { 'x-api-key': 'key-alice' } })).status, 200);
      assert.equal(store.lookups, 1, 'the second request was answered from the cache');
      const unknown = await request(`${url}/x`, { headers: { 'x-api-key': 'key-mallory' } });
      assert.equal(unknown.status, 401);
      assert.equal(unknown.json().message, 'Unknown API key.');
      await request(`${url}/x`, { headers: { 'x-api-key': 'key-mallory' } });
      assert.equal(store.lookups, 2, 'unknown keys are cached too');
      assert.equal((await request(`${url}/x`)).status, 401);
      now = 1001;
      store.down = true;
      const outage = await request(`${url}/x`, { headers: { 'x-api-key': 'key-alice' } });
      assert.equal(outage.status, 503, 'the cache entry expired and the store is down');
      assert.equal(outage.json().message, 'Credentials cannot be checked right now.');
      store.down = false;
      assert.equal((await request(`${url}/x`, { headers: { 'x-api-key': 'key-alice' } })).status, 200);
      assert.equal(store.lookups, 4);
    } finally {
      await gateway.close();
    }
  });
});

describe('examples/upstream-timing.ts', () => {
  test('the upstream that answered and its time are on the response; generated answers say none', async () => {
    const slow = await startBackend('slow', (_req, res) => setTimeout(() => res.end('late'), 30));
    const dead = await closedPort();
    const gateway = await startTiming({ port: 0, backendPorts: [slow.port, dead], logLevel: 'silent' });
    try {
      const url = `http://127.0.0.1:${gateway.address?.port}`;
      const seen = new Map<string, string | string[] | undefined>();
      for (let i = 0; i < 2; i++) {
        const res = await request(`${url}/x`);
        seen.set(String(res.status), res.headers['x-upstream']);
        assert.match(String(res.headers['x-total-time']), /^\d+\.\d$/);
        if (res.status === 200) assert.match(String(res.headers['x-upstream-time']), /^\d+\.\d$/);
        else assert.equal(res.headers['x-upstream-time'], undefined);
      }
      assert.deepEqual(Object.fromEntries(seen), { 200: 'default/app-1', 502: 'none' });
    } finally {
      await gateway.close();
      await slow.close();
    }
  });
});
