import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Cluster, Redis } from 'ioredis';
import { pino } from 'pino';
import type { RedisStoreConfig } from '../../src/config/schema.js';
import { MemoryStore } from '../../src/limits/memory-store.js';
import { RedisStore, StoreUnavailableError } from '../../src/limits/redis-store.js';
import { policyFromRate } from '../../src/limits/token-bucket.js';
import { monotonicClock } from '../../src/util/clock.js';
import { request, type Reply } from '../helpers/http.js';
import { startRedis, startRedisCluster, startRedisSentinel, type TestRedis } from '../helpers/redis.js';
import { startBackend, startProxy, type Backend, type TestProxy } from '../helpers/servers.js';

// No Redis failure may surface as an unhandled rejection: this file fails if one happens while it runs.
const unhandled: unknown[] = [];
process.on('unhandledRejection', (reason) => unhandled.push(reason));

let prefixCount = 0;
/** A key prefix of its own per test, so tests sharing one Redis (REDIS_URL) never see each other's buckets. */
function prefix(): string {
  return `tollgate-test:${process.pid}:${Date.now()}:${prefixCount++}:`;
}

const silent = pino({ level: 'silent' });
/** A slow refill: 1 request a minute, so no token comes back while a test runs. */
const SLOW = policyFromRate(1, 10);

function storeConfig(url: string, extra: Partial<RedisStoreConfig> = {}): RedisStoreConfig {
  return { type: 'redis', url, key_prefix: prefix(), timeout_ms: 100, on_error: 'allow', ...extra };
}

function rateLimit(store: Record<string, unknown>, rpm = 1, burst = 10): Record<string, unknown> {
  return { rate_limit: { enabled: true, requests_per_minute: rpm, burst_size: burst, store } };
}

function statuses(replies: Reply[]): Record<number, number> {
  const out: Record<number, number> = {};
  for (const r of replies) out[r.status] = (out[r.status] ?? 0) + 1;
  return out;
}

describe('RedisStore against a real redis-server', () => {
  let redis: TestRedis;
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await redis.close();
    assert.deepEqual(unhandled, [], 'no unhandled rejections');
  });

  test('decisions match the memory store take for take: 10 of 15 allowed, same remaining, Retry-After and reset', async () => {
    const store = new RedisStore({ config: storeConfig(redis.url), policy: SLOW, logger: silent });
    const memory = new MemoryStore({ policy: SLOW, maxKeys: 10, clock: monotonicClock });
    try {
      await store.ready();
      for (let i = 0; i < 15; i++) {
        const r = await store.take('client');
        const m = memory.take('client');
        assert.ok(!(m instanceof Promise));
        assert.equal(r.allowed, m.allowed, `take ${i + 1}`);
        assert.equal(r.remaining, m.remaining, `take ${i + 1}`);
        // The two clocks run during the test: at 1 token a minute, a few ms move these by well under 1 s.
        assert.equal(Math.ceil(r.retryAfterMs / 1000), Math.ceil(m.retryAfterMs / 1000), `Retry-After, take ${i + 1}`);
        assert.equal(Math.ceil(r.resetMs / 1000), Math.ceil(m.resetMs / 1000), `reset, take ${i + 1}`);
      }
    } finally {
      store.close();
      memory.close();
    }
  });

  test('200 concurrent takes of one key from 4 clients never overspend: exactly 10 allowed', async () => {
    const config = storeConfig(redis.url);
    const stores = Array.from({ length: 4 }, () => new RedisStore({ config, policy: SLOW, logger: silent }));
    try {
      await Promise.all(stores.map((s) => s.ready()));
      const decisions = await Promise.all(Array.from({ length: 200 }, (_, i) => (stores[i % 4] as RedisStore).take('hot')));
      assert.equal(decisions.filter((d) => d.allowed).length, 10);
      // Every allowed take saw a different number of tokens left: 9, 8, ..., 0, each once.
      assert.deepEqual(
        decisions.filter((d) => d.allowed).map((d) => d.remaining).sort((a, b) => b - a),
        [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
      );
    } finally {
      for (const s of stores) s.close();
    }
  });

  test('a bucket key expires when the bucket would be full again', async () => {
    const config = storeConfig(redis.url);
    // 600 a minute: one token back every 100 ms; after one take, full again in 100 ms.
    const store = new RedisStore({ config, policy: policyFromRate(600, 10), logger: silent });
    const admin = new Redis(redis.url, { lazyConnect: true });
    try {
      await store.ready();
      await admin.connect();
      await store.take('expiring');
      const ttl = await admin.pttl(`${config.key_prefix}expiring`);
      assert.ok(ttl > 0 && ttl <= 100, `PTTL ${ttl} ms, expected 1-100`);
      assert.deepEqual(await admin.hkeys(`${config.key_prefix}expiring`), ['tokens', 'at']);
      const deadline = Date.now() + 5_000;
      while ((await admin.exists(`${config.key_prefix}expiring`)) === 1) {
        assert.ok(Date.now() < deadline, 'the key should have expired');
        await new Promise((r) => setTimeout(r, 20));
      }
      // Ten takes empty it: full again in 1000 ms.
      for (let i = 0; i < 10; i++) await store.take('emptied');
      const full = await admin.pttl(`${config.key_prefix}emptied`);
      assert.ok(full > 900 && full <= 1000, `PTTL ${full} ms, expected about 1000`);
    } finally {
      store.close();
      admin.disconnect();
    }
  });

  test('the script is sent once per connection, then called by SHA (EVALSHA)', async () => {
    const store = new RedisStore({ config: storeConfig(redis.url), policy: SLOW, logger: silent });
    const admin = new Redis(redis.url);
    try {
      await store.ready();
      await admin.config('RESETSTAT');
      for (let i = 0; i < 5; i++) await store.take(`k${i}`);
      const stats = (await admin.info('commandstats')).split('\r\n');
      const calls = (cmd: string): number => Number(/calls=(\d+)/.exec(stats.find((l) => l.startsWith(`cmdstat_${cmd}:`)) ?? '')?.[1] ?? 0);
      assert.equal(calls('eval'), 1, 'the script text goes once, with the first take on the connection');
      assert.equal(calls('evalsha'), 4);
      // After SCRIPT FLUSH, Redis answers NOSCRIPT; ioredis sends the script again and the take succeeds.
      await admin.script('FLUSH');
      assert.equal((await store.take('after-flush')).allowed, true);
      assert.equal(store.failures, 0);
    } finally {
      store.close();
      admin.disconnect();
    }
  });

  test('the takes of one event-loop turn go to Redis as one script call', async () => {
    const store = new RedisStore({ config: storeConfig(redis.url), policy: SLOW, logger: silent });
    const admin = new Redis(redis.url);
    try {
      await store.ready();
      await store.take('warm'); // the first call on the connection loads the script (EVAL)
      await admin.config('RESETSTAT');
      const decisions = await Promise.all(Array.from({ length: 50 }, (_, i) => store.take(`batch-${i % 5}`)));
      assert.deepEqual(
        decisions.map((d) => d.allowed).filter(Boolean).length,
        50,
        '10 takes for each of 5 keys: all allowed',
      );
      assert.deepEqual(
        decisions.filter((_, i) => i % 5 === 0).map((d) => d.remaining),
        [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
        'one key repeated in a batch is taken from in order',
      );
      const stats = await admin.info('commandstats');
      assert.match(stats, /cmdstat_evalsha:calls=1,/);
    } finally {
      store.close();
      admin.disconnect();
    }
  });

  test('Redis Cluster (one node owning every slot) through ioredis Cluster: same exact limit', async () => {
    const cluster = await startRedisCluster();
    const config: RedisStoreConfig = { type: 'redis', cluster: { nodes: [cluster.url] }, key_prefix: prefix(), timeout_ms: 500, on_error: 'allow' };
    const store = new RedisStore({ config, policy: SLOW, logger: silent });
    try {
      await store.ready(5_000);
      assert.ok(store.client instanceof Cluster);
      const decisions = await Promise.all(Array.from({ length: 30 }, () => store.take('c')));
      assert.equal(decisions.filter((d) => d.allowed).length, 10);
    } finally {
      store.close();
      await cluster.close();
    }
  });

  test('Redis Sentinel: the master is found through the sentinel; same exact limit', async () => {
    const sentinel = await startRedisSentinel('tg-master');
    const config: RedisStoreConfig = {
      type: 'redis',
      sentinel: { name: 'tg-master', nodes: [`redis://127.0.0.1:${sentinel.sentinelPort}`], db: 0 },
      key_prefix: prefix(),
      timeout_ms: 500,
      on_error: 'allow',
    };
    const store = new RedisStore({ config, policy: SLOW, logger: silent });
    try {
      await store.ready(5_000);
      const decisions = await Promise.all(Array.from({ length: 30 }, () => store.take('s')));
      assert.equal(decisions.filter((d) => d.allowed).length, 10);
      const admin = new Redis(sentinel.master.url);
      assert.equal(await admin.exists(`${config.key_prefix}s`), 1, 'the bucket is on the master');
      admin.disconnect();
    } finally {
      store.close();
      await sentinel.close();
    }
  });
});

describe('two Tollgate instances sharing one Redis', () => {
  let redis: TestRedis;
  let backend: Backend;
  before(async () => {
    redis = await startRedis();
    backend = await startBackend('b');
  });
  after(async () => {
    await backend.close();
    await redis.close();
  });

  test('burst_size 10 and a slow refill: exactly 10 of 20 requests pass in total, alternating between the instances', async () => {
    const store = storeConfig(redis.url);
    const a = await startProxy([backend], { middleware: rateLimit(store) });
    const b = await startProxy([backend], { middleware: rateLimit(store) });
    try {
      const replies: Reply[] = [];
      for (let i = 0; i < 20; i++) replies.push(await request(`${(i % 2 === 0 ? a : b).url}/x`));
      assert.deepEqual(statuses(replies), { 200: 10, 429: 10 });
      assert.deepEqual(
        replies.slice(0, 10).map((r) => r.status),
        Array<number>(10).fill(200),
        'the first ten pass, whichever instance they reach',
      );
      // Same headers as the memory store: RateLimit with whole tokens left and seconds until full.
      assert.equal(replies[0]?.headers['ratelimit'], '"default";r=9;t=60');
      assert.equal(replies[9]?.headers['ratelimit'], '"default";r=0;t=600');
      assert.equal(replies[10]?.headers['retry-after'], '60');
      assert.equal(replies[10]?.headers['ratelimit-policy'], '"default";q=1;w=60');
    } finally {
      await a.close();
      await b.close();
    }
  });

  test('40 concurrent requests split over both instances: exactly 10 pass', async () => {
    const store = storeConfig(redis.url);
    const a = await startProxy([backend], { middleware: rateLimit(store) });
    const b = await startProxy([backend], { middleware: rateLimit(store) });
    try {
      const replies = await Promise.all(Array.from({ length: 40 }, (_, i) => request(`${(i % 2 === 0 ? a : b).url}/x`)));
      assert.deepEqual(statuses(replies), { 200: 10, 429: 30 });
    } finally {
      await a.close();
      await b.close();
    }
  });

  test('a client keeps one bucket across instances that list its token in another order (a rolling deploy)', async () => {
    const store = storeConfig(redis.url);
    const auth = (tokens: string[]): Record<string, unknown> => ({ enabled: true, valid_tokens: tokens });
    const a = await startProxy([backend], { middleware: { auth: auth(['alpha-token', 'beta-token']), ...rateLimit(store, 1, 4) } });
    const b = await startProxy([backend], { middleware: { auth: auth(['beta-token', 'alpha-token']), ...rateLimit(store, 1, 4) } });
    const as = (token: string): { headers: Record<string, string> } => ({ headers: { authorization: `Bearer ${token}` } });
    const admin = new Redis(redis.url);
    try {
      // burst_size 4: two through each instance pass, the fifth is refused wherever it goes.
      const alpha: number[] = [];
      for (const p of [a, b, a, b, a, b]) alpha.push((await request(`${p.url}/x`, as('alpha-token'))).status);
      assert.deepEqual(alpha, [200, 200, 200, 200, 429, 429], 'one bucket for alpha, whichever instance counts');
      // Another client has a bucket of its own (with token:<index> keys it would have shared alpha's).
      const beta: number[] = [];
      for (const p of [b, a, b, a, b]) beta.push((await request(`${p.url}/x`, as('beta-token'))).status);
      assert.deepEqual(beta, [200, 200, 200, 200, 429]);
      // The keys name a digest of each token, never the token.
      const keys = (await admin.keys(`${store.key_prefix}*`)).map((k) => k.slice(store.key_prefix.length)).sort();
      assert.equal(keys.length, 2);
      for (const key of keys) assert.match(key, /^cred:[0-9a-f]{16}$/);
      assert.ok(!keys.some((k) => k.includes('token')));
    } finally {
      admin.disconnect();
      await a.close();
      await b.close();
    }
  });

  test('the headers are the ones the memory store gives for the same requests', async () => {
    const viaRedis = await startProxy([backend], { middleware: rateLimit(storeConfig(redis.url), 6, 3) });
    const viaMemory = await startProxy([backend], { middleware: rateLimit({ type: 'memory' }, 6, 3) });
    try {
      for (let i = 0; i < 5; i++) {
        const r = await request(`${viaRedis.url}/h`);
        const m = await request(`${viaMemory.url}/h`);
        assert.equal(r.status, m.status, `request ${i + 1}`);
        for (const h of ['ratelimit', 'ratelimit-policy', 'retry-after']) assert.equal(r.headers[h], m.headers[h], `${h}, request ${i + 1}`);
      }
    } finally {
      await viaRedis.close();
      await viaMemory.close();
    }
  });
});

describe('when Redis fails', () => {
  let redis: TestRedis;
  let backend: Backend;
  before(async () => {
    // These tests stop and pause the server: always one of our own, even when REDIS_URL is set.
    redis = await startRedis({ own: true });
    backend = await startBackend('b');
  });
  after(async () => {
    await backend.close();
    await redis.close();
    assert.deepEqual(unhandled, [], 'no unhandled rejections');
  });

  async function timed(url: string): Promise<Reply & { ms: number }> {
    const started = Date.now();
    const reply = await request(url);
    return { ...reply, ms: Date.now() - started };
  }

  function redisStore(p: TestProxy): RedisStore {
    assert.ok(p.proxy.store instanceof RedisStore);
    return p.proxy.store;
  }

  test('on_error allow: Redis stopped mid-test, requests pass at once, counted, logged a few times; restarted, limits work again', async () => {
    const p = await startProxy([backend], { middleware: rateLimit(storeConfig(redis.url, { on_error: 'allow', timeout_ms: 100 })) }, { level: 'info' });
    try {
      const before = await Promise.all(Array.from({ length: 12 }, () => request(`${p.url}/a`)));
      assert.deepEqual(statuses(before), { 200: 10, 429: 2 });

      await redis.stop();
      const during: (Reply & { ms: number })[] = [];
      for (let i = 0; i < 30; i++) during.push(await timed(`${p.url}/a`));
      assert.deepEqual(statuses(during), { 200: 30 }, 'allow: every request passes while Redis is down');
      for (const r of during) {
        assert.ok(r.ms < 100 + 900, `answered in ${r.ms} ms, within timeout_ms + margin`);
        assert.equal(r.headers['ratelimit'], undefined, 'no RateLimit header: nothing is known about the bucket');
      }
      const store = redisStore(p);
      assert.ok(store.failures >= 30, `failures counted: ${store.failures}`);
      const lines = p.logs.filter((l) => l.msg === 'rate-limit store unavailable: requests follow on_error=allow');
      assert.ok(lines.length >= 1 && lines.length <= 2, `logged ${lines.length} times for 30 failures`);
      assert.equal(lines[0]?.on_error, 'allow');

      await redis.restart();
      // Tollgate reconnects by itself: poll until a request is counted by Redis again.
      let reply = await request(`${p.url}/a`);
      const deadline = Date.now() + 10_000;
      while (reply.headers['ratelimit'] === undefined) {
        assert.ok(Date.now() < deadline, 'the store should answer again within 10 s of the restart');
        await new Promise((r) => setTimeout(r, 50));
        reply = await request(`${p.url}/a`);
      }
      // The restarted Redis is empty: the first counted request took 1 of a full bucket; 9 more pass, then 429.
      assert.equal(reply.headers['ratelimit'], '"default";r=9;t=60');
      const afterRestart = await Promise.all(Array.from({ length: 12 }, () => request(`${p.url}/a`)));
      assert.deepEqual(statuses(afterRestart), { 200: 9, 429: 3 });
      assert.ok(p.logs.some((l) => l.msg === 'redis reconnected'));
      assert.ok(p.logs.some((l) => l.msg === 'rate-limit store answering again'));
    } finally {
      await p.close();
      if (redis.pid === undefined) await redis.restart();
    }
  });

  test('on_error deny: Redis stopped, requests get 503 rate_limit_unavailable with Retry-After, within timeout_ms', async () => {
    const p = await startProxy([backend], { middleware: rateLimit(storeConfig(redis.url, { on_error: 'deny', timeout_ms: 100 })) });
    try {
      assert.equal((await request(`${p.url}/d`)).status, 200);
      await redis.stop();
      for (let i = 0; i < 5; i++) {
        const r = await timed(`${p.url}/d`);
        assert.equal(r.status, 503);
        assert.equal(r.json().error, 'rate_limit_unavailable');
        assert.equal(r.headers['retry-after'], '1');
        assert.ok(r.ms < 100 + 900, `answered in ${r.ms} ms`);
      }
      assert.equal(backend.hits > 0, true);
      assert.ok(p.logs.some((l) => l.msg === 'rate-limit store unavailable: requests follow on_error=deny'));
      // /health does not depend on Redis.
      assert.equal((await request(`${p.url}/health`)).status, 200);
    } finally {
      await p.close();
      await redis.restart();
    }
  });

  test('a slow Redis (CLIENT PAUSE): each request waits at most timeout_ms, then on_error applies; counted as timeouts', async () => {
    const p = await startProxy([backend], { middleware: rateLimit(storeConfig(redis.url, { on_error: 'deny', timeout_ms: 150 })) });
    const admin = new Redis(redis.url);
    try {
      assert.equal((await request(`${p.url}/s`)).status, 200);
      await admin.client('PAUSE', 3_000, 'ALL');
      const replies = await Promise.all(Array.from({ length: 5 }, () => timed(`${p.url}/s`)));
      for (const r of replies) {
        assert.equal(r.status, 503);
        assert.ok(r.ms >= 140, `waited ${r.ms} ms: the timeout, not an instant failure`);
        assert.ok(r.ms < 150 + 1_000, `answered in ${r.ms} ms, within timeout_ms + margin`);
      }
      const store = redisStore(p);
      assert.equal(store.timeouts, 5);
      await admin.client('UNPAUSE');
      let status = 0;
      while (status !== 200) {
        status = (await request(`${p.url}/s`)).status;
        if (status !== 200) await new Promise((r) => setTimeout(r, 50));
      }
    } finally {
      admin.disconnect();
      await p.close();
    }
  });

  test('Redis down before Tollgate starts: it starts anyway (after a bounded wait), follows on_error, then connects when Redis comes', async () => {
    await redis.stop();
    const started = Date.now();
    const p = await startProxy([backend], { middleware: rateLimit(storeConfig(redis.url, { on_error: 'allow' })) });
    try {
      assert.ok(Date.now() - started < 5_000, 'listening within the bounded wait');
      assert.equal((await request(`${p.url}/early`)).status, 200);
      await redis.restart();
      let limited = false;
      const deadline = Date.now() + 10_000;
      while (!limited) {
        assert.ok(Date.now() < deadline, 'the store should connect once Redis is up');
        limited = (await request(`${p.url}/early`)).headers['ratelimit'] !== undefined;
        if (!limited) await new Promise((r) => setTimeout(r, 50));
      }
    } finally {
      await p.close();
    }
  });

  test('a take that fails rejects with StoreUnavailableError (the middleware applies on_error)', async () => {
    const store = new RedisStore({ config: storeConfig('redis://127.0.0.1:1'), policy: SLOW, logger: silent });
    try {
      await assert.rejects(store.take('x'), StoreUnavailableError);
      assert.equal(store.failures, 1);
    } finally {
      store.close();
    }
  });
});
