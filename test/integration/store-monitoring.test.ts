/**
 * Watching the rate-limit store from the admin listener: a real redis-server killed and started again
 * under a proxy with `on_error: allow` (so the requests themselves show nothing), and what
 * `tollgate_ratelimit_store_errors_total` and `/api/status` say meanwhile. One process (with a reload that
 * replaces the store), then cluster mode, where the primary adds up what its workers counted.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import type { Status } from '../../src/admin/status.js';
import type { Config } from '../../src/config/schema.js';
import { RedisStore } from '../../src/limits/redis-store.js';
import type { StoreStatus } from '../../src/limits/store.js';
import { policyFromRate } from '../../src/limits/token-bucket.js';
import { lines, startCluster, stopCluster } from '../helpers/cluster.js';
import { request, type Reply } from '../helpers/http.js';
import { samples, scrape } from '../helpers/metrics.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { closedPort, startBackend, startProxy, waitFor, type Backend } from '../helpers/servers.js';

// No Redis failure may surface as an unhandled rejection: this file fails if one happens while it runs.
const unhandled: unknown[] = [];
process.on('unhandledRejection', (reason) => unhandled.push(reason));

/** The failed checks by `store kind`, as /metrics has them. */
async function storeErrors(adminUrl: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const [labels, value] of samples(await scrape(adminUrl), 'tollgate_ratelimit_store_errors_total')) {
    const m = /^\{store="(\w+)",kind="(\w+)"\}$/.exec(labels);
    assert.ok(m !== null, labels);
    out[`${m[1]} ${m[2]}`] = value;
  }
  return out;
}

/** The six series, with the given counts and zeros elsewhere. */
function counts(given: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const store of ['redis', 'ipc']) for (const kind of ['timeout', 'unavailable', 'error']) out[`${store} ${kind}`] = given[`${store} ${kind}`] ?? 0;
  return out;
}

async function status(adminUrl: string): Promise<Status> {
  const res = await request(`${adminUrl}/api/status`);
  assert.equal(res.status, 200);
  return res.json<Status>();
}

/** Polls /api/status until the one store row is in `state`; returns that document. */
async function waitForState(adminUrl: string, state: StoreStatus['state'], ms = 10_000): Promise<Status> {
  let last: Status | undefined;
  await waitFor(async () => (last = await status(adminUrl)).rate_limit.stores[0]?.state === state, ms, `the store to be ${state} (last: ${JSON.stringify(last?.rate_limit)})`);
  return last as Status;
}

async function sequential(n: number, url: string): Promise<Reply[]> {
  const replies: Reply[] = [];
  for (let i = 0; i < n; i++) replies.push(await request(url));
  return replies;
}

describe('the Redis store on the admin listener, one process', () => {
  let redis: TestRedis;
  let backend: Backend;
  before(async () => {
    // Killed and restarted here: always a server of our own, even when REDIS_URL is set.
    redis = await startRedis({ own: true });
    backend = await startBackend('b');
  });
  after(async () => {
    await backend.close();
    await redis.close();
    assert.deepEqual(unhandled, [], 'no unhandled rejections');
  });

  test('Redis killed: every failed check counted as unavailable, the store down; a reload that replaces the store loses no count; Redis back: ready', async () => {
    const rateLimit = { enabled: true, requests_per_minute: 60, burst_size: 1000, store: { type: 'redis', url: redis.url, timeout_ms: 100, on_error: 'allow' } };
    const p = await startProxy([backend], { middleware: { rate_limit: rateLimit } });
    try {
      assert.ok((await request(`${p.url}/x`)).headers['ratelimit'] !== undefined, 'counted by Redis');
      let s = await status(p.adminUrl);
      assert.deepEqual(s.rate_limit, {
        stores: [{ store: 'redis', target: redis.url, routes: ['default'], state: 'ready', last_error: null }],
        errors: { redis: { timeout: 0, unavailable: 0, error: 0 }, ipc: { timeout: 0, unavailable: 0, error: 0 } },
      });
      assert.deepEqual(await storeErrors(p.adminUrl), counts({}), 'every series from the start, at zero');

      await redis.stop('SIGKILL');
      s = await waitForState(p.adminUrl, 'down');
      const replies = await sequential(20, `${p.url}/x`);
      assert.deepEqual(replies.map((r) => r.status), Array<number>(20).fill(200), 'on_error allow: every request passes');
      assert.ok(replies.every((r) => r.headers['ratelimit'] === undefined), 'none of them was counted');
      assert.deepEqual(await storeErrors(p.adminUrl), counts({ 'redis unavailable': 20 }));
      s = await status(p.adminUrl);
      assert.deepEqual(s.rate_limit.errors.redis, { timeout: 0, unavailable: 20, error: 0 });
      const down = s.rate_limit.stores[0];
      assert.equal(down?.state, 'down');
      assert.equal(down?.last_error?.kind, 'unavailable');
      assert.ok(typeof down?.last_error?.message === 'string' && down.last_error.message !== '');
      assert.ok(Math.abs((down?.last_error?.at ?? 0) - Date.now()) < 60_000, 'at: epoch milliseconds');

      // Another burst_size is another policy: a new store (and connection), the old one closed.
      const next = structuredClone(p.proxy.config) as Config;
      (next.middleware.rate_limit as { burst_size: number }).burst_size = 999;
      const before = p.proxy.store;
      assert.equal((await p.proxy.reload(next)).result, 'ok');
      await waitFor(() => p.proxy.store !== before && p.proxy.gateway.stores.length === 1, 5_000, 'the old store to be closed');
      assert.deepEqual(await storeErrors(p.adminUrl), counts({ 'redis unavailable': 20 }), 'the counter did not go back');
      await waitForState(p.adminUrl, 'down');
      await sequential(5, `${p.url}/x`);
      assert.deepEqual(await storeErrors(p.adminUrl), counts({ 'redis unavailable': 25 }));

      await redis.restart();
      s = await waitForState(p.adminUrl, 'ready');
      assert.equal(s.rate_limit.stores[0]?.last_error?.kind, 'unavailable', 'the last error stays to be seen');
      assert.ok((await request(`${p.url}/x`)).headers['ratelimit'] !== undefined, 'counted by Redis again');
      assert.deepEqual(await storeErrors(p.adminUrl), counts({ 'redis unavailable': 25 }));
    } finally {
      await p.close();
      if (redis.pid === undefined) await redis.restart();
    }
  });

  test('Redis paused (CLIENT PAUSE): checks time out, counted as timeout, the store failing while connected; the next check that works: ready', async () => {
    const rateLimit = { enabled: true, requests_per_minute: 60, burst_size: 1000, store: { type: 'redis', url: redis.url, timeout_ms: 100, on_error: 'allow' } };
    const p = await startProxy([backend], { middleware: { rate_limit: rateLimit } });
    const admin = new Redis(redis.url);
    try {
      assert.ok((await request(`${p.url}/p`)).headers['ratelimit'] !== undefined);
      await admin.client('PAUSE', 1_500, 'ALL');
      const replies = await Promise.all(Array.from({ length: 3 }, () => request(`${p.url}/p`)));
      assert.deepEqual(replies.map((r) => [r.status, r.headers['ratelimit']]), Array(3).fill([200, undefined]));
      assert.deepEqual(await storeErrors(p.adminUrl), counts({ 'redis timeout': 3 }));
      const s = await status(p.adminUrl);
      assert.equal(s.rate_limit.stores[0]?.state, 'failing');
      assert.equal(s.rate_limit.stores[0]?.last_error?.kind, 'timeout');
      await admin.client('UNPAUSE');
      await waitFor(async () => (await request(`${p.url}/p`)).headers['ratelimit'] !== undefined, 5_000, 'a check that works');
      await waitForState(p.adminUrl, 'ready', 1_000);
    } finally {
      admin.disconnect();
      await p.close();
    }
  });
});

describe('the Redis store\'s state and failed checks, at the store', () => {
  let redis: TestRedis;
  before(async () => {
    // The status shows the URL it was given: one of our own, whose URL has no credentials to strip.
    redis = await startRedis({ own: true });
  });
  after(async () => {
    await redis.close();
  });

  test('connecting before the first connection, down once an attempt fails; an error reply (WRONGTYPE) is an error and makes it failing', async () => {
    const told: [string, number][] = [];
    const onErrors = (kind: string, n: number): void => {
      told.push([kind, n]);
    };
    const prefix = `tollgate-test:${process.pid}:${Date.now()}:`;
    const config = { type: 'redis', url: redis.url, key_prefix: prefix, timeout_ms: 500, on_error: 'allow' } as const;
    const store = new RedisStore({ config, policy: policyFromRate(60, 10), logger: pino({ level: 'silent' }), onErrors });
    const nowhere = new RedisStore({ config: { ...config, url: `redis://127.0.0.1:${await closedPort()}` }, policy: policyFromRate(60, 10), logger: pino({ level: 'silent' }), onErrors });
    const admin = new Redis(redis.url);
    try {
      assert.equal(store.health().state, 'connecting');
      assert.equal(nowhere.health().state, 'connecting');
      await store.ready();
      assert.deepEqual(store.health(), { store: 'redis', target: redis.url, state: 'ready', last_error: null });
      await waitFor(() => nowhere.health().state === 'down', 5_000, 'the refused connection');
      const refused = nowhere.health();
      assert.match(refused.last_error?.message ?? '', /ECONNREFUSED/);

      await admin.set(`${prefix}not-a-bucket`, 'x');
      await assert.rejects(store.take('not-a-bucket'));
      await assert.rejects(nowhere.take('k'));
      assert.deepEqual(told, [['error', 1], ['unavailable', 1]]);
      const failing = store.health();
      assert.equal(failing.state, 'failing');
      assert.equal(failing.last_error?.kind, 'error');
      assert.match(failing.last_error?.message ?? '', /WRONGTYPE/);
      assert.equal((await store.take('a-bucket')).allowed, true);
      assert.equal(store.health().state, 'ready');
      assert.deepEqual([store.failures, store.timeouts], [1, 0]);
    } finally {
      admin.disconnect();
      store.close();
      nowhere.close();
    }
  });
});

describe('the Redis store on the admin listener, cluster mode', () => {
  let redis: TestRedis;
  let backend: Backend;
  before(async () => {
    redis = await startRedis({ own: true });
    backend = await startBackend('b');
  });
  after(async () => {
    await backend.close();
    await redis.close();
  });

  test('Redis killed: the primary sums the failed checks of both workers and shows the store down; Redis back: ready in every worker', async () => {
    const port = 0;
    const yaml = [
      `server: { listen_port: ${port}, listen_address: "127.0.0.1", workers: 2 }`,
      'load_balancing:',
      '  health_check: { active: { enabled: false } }',
      `  upstreams: [ { name: b, address: 127.0.0.1, port: ${backend.port} } ]`,
      'middleware:',
      '  rate_limit:',
      '    enabled: true',
      '    requests_per_minute: 60',
      '    burst_size: 1000',
      `    store: { type: redis, url: "${redis.url}", timeout_ms: 100, on_error: allow }`,
      'admin: { port: 0 }',
    ].join('\n');
    const cluster = await startCluster(yaml);
    try {
      await waitForState(cluster.adminUrl, 'ready');
      assert.deepEqual(await storeErrors(cluster.adminUrl), counts({}));

      await redis.stop('SIGKILL');
      await waitForState(cluster.adminUrl, 'down');
      const replies = await sequential(20, `${cluster.url}/c`);
      assert.deepEqual(replies.map((r) => r.status), Array<number>(20).fill(200));
      // Both workers took some of the requests, and each counted its own failures.
      await waitFor(() => new Set(lines(cluster.child).filter((l) => l.msg === 'rate-limit store unavailable: requests follow on_error=allow').map((l) => l.pid)).size === 2, 5_000, 'both workers to log failed checks');
      const errors = await storeErrors(cluster.adminUrl);
      // Each request's check failed once, in the worker that served it; a check sent just as the
      // connection went would time out instead of failing at once.
      assert.equal(errors['redis unavailable']! + errors['redis timeout']!, 20, JSON.stringify(errors));
      assert.deepEqual(counts(errors), counts({ 'redis unavailable': errors['redis unavailable']!, 'redis timeout': errors['redis timeout']! }));
      const s = await status(cluster.adminUrl);
      assert.equal(s.rate_limit.errors.redis.unavailable + s.rate_limit.errors.redis.timeout, 20);
      assert.deepEqual(s.rate_limit.stores.map((r) => [r.store, r.target, r.routes, r.state]), [['redis', redis.url, ['default'], 'down']], 'one row for the store both workers use');

      await redis.restart();
      // The worst state of the two workers: ready only once both have reconnected.
      await waitForState(cluster.adminUrl, 'ready');
      assert.equal(Object.values(await storeErrors(cluster.adminUrl)).reduce((a, b) => a + b, 0), 20, 'the counts stay');
    } finally {
      await stopCluster(cluster);
      if (redis.pid === undefined) await redis.restart();
    }
  });
});
