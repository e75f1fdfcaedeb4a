import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Cluster, Redis, ReplyError } from 'ioredis';
import type { RedisStoreConfig } from '../../../src/config/schema.js';
import { createRedisClient, redisErrorKind, redisTarget, TAKE_SCRIPT } from '../../../src/limits/redis-store.js';

const BASE = { type: 'redis', key_prefix: 'tollgate:', timeout_ms: 250, on_error: 'allow' } as const;

/** Builds the client and disconnects it at once (the ports are closed: nothing is reached). */
function build(config: RedisStoreConfig): Redis | Cluster {
  const client = createRedisClient(config);
  client.on('error', () => {});
  client.disconnect();
  return client;
}

describe('createRedisClient', () => {
  test('url: one server; requests never queue, time out at timeout_ms, are not re-sent; auto-pipelining on', () => {
    const client = build({ ...BASE, url: 'redis://user:p%40ss@127.0.0.1:1/3' });
    assert.ok(client instanceof Redis);
    const o = client.options;
    assert.equal(o.host, '127.0.0.1');
    assert.equal(o.port, 1);
    assert.equal(o.db, 3);
    assert.equal(o.username, 'user');
    assert.equal(o.password, 'p@ss');
    assert.equal(o.enableOfflineQueue, false);
    assert.equal(o.enableAutoPipelining, true);
    assert.equal(o.commandTimeout, 250);
    assert.equal(o.maxRetriesPerRequest, 0);
    assert.equal(o.autoResendUnfulfilledCommands, false);
    assert.equal(typeof o.retryStrategy, 'function');
    assert.equal(o.retryStrategy?.(1), 100);
    assert.equal(o.retryStrategy?.(100), 2_000, 'reconnects for ever, at most 2 s apart');
  });

  test('cluster: ioredis Cluster with the seed nodes; credentials of the first node for all', () => {
    const client = build({ ...BASE, cluster: { nodes: ['redis://:secret@127.0.0.1:2', 'redis://127.0.0.1:3'] } });
    assert.ok(client instanceof Cluster);
    assert.deepEqual(
      // startupNodes is private in ioredis' types; it is what the Cluster client starts from.
      (client as unknown as { startupNodes: { host: string; port: number }[] }).startupNodes.map((n) => [n.host, n.port]),
      [
        ['127.0.0.1', 2],
        ['127.0.0.1', 3],
      ],
    );
    assert.equal(client.options.enableOfflineQueue, false);
    assert.equal(client.options.enableAutoPipelining, true);
    assert.equal(client.options.redisOptions?.password, 'secret');
    assert.equal(client.options.redisOptions?.commandTimeout, 250);
  });

  test('sentinel: the sentinels, the master name, its password and db', () => {
    const client = build({ ...BASE, sentinel: { name: 'mymaster', nodes: ['redis://:sentpw@127.0.0.1:4', 'redis://127.0.0.1:5'], password: 'masterpw', db: 2 } });
    assert.ok(client instanceof Redis);
    const o = client.options;
    assert.deepEqual(o.sentinels, [
      { host: '127.0.0.1', port: 4 },
      { host: '127.0.0.1', port: 5 },
    ]);
    assert.equal(o.name, 'mymaster');
    assert.equal(o.password, 'masterpw');
    assert.equal(o.sentinelPassword, 'sentpw');
    assert.equal(o.db, 2);
    assert.equal(o.commandTimeout, 250);
  });

  test('the take script reads the clock from Redis (TIME) and sets an expiry', () => {
    assert.match(TAKE_SCRIPT, /redis\.call\('TIME'\)/);
    assert.match(TAKE_SCRIPT, /PEXPIRE/);
  });
});

describe('what the status and the metrics say about a Redis store', () => {
  test('redisTarget: where the store points, without credentials or query', () => {
    assert.equal(redisTarget({ ...BASE, url: 'redis://user:p%40ss@10.0.0.1:6380/3?x=1' }), 'redis://10.0.0.1:6380/3');
    assert.equal(redisTarget({ ...BASE, url: 'rediss://:secret@redis.internal' }), 'rediss://redis.internal');
    assert.equal(redisTarget({ ...BASE, cluster: { nodes: ['redis://:pw@a:7000', 'redis://b:7001'] } }), 'cluster redis://a:7000, redis://b:7001');
    assert.equal(
      redisTarget({ ...BASE, sentinel: { name: 'mymaster', nodes: ['redis://u:pw@s1:26379', 'redis://s2:26379'], db: 0 } }),
      'sentinel mymaster via redis://s1:26379, redis://s2:26379',
    );
  });

  test('redisErrorKind: an error reply is error, an expired command timeout, anything else unavailable', () => {
    assert.equal(redisErrorKind(new ReplyError('WRONGTYPE Operation against a key holding the wrong kind of value')), 'error');
    assert.equal(redisErrorKind(new Error('Command timed out')), 'timeout');
    assert.equal(redisErrorKind(new Error("Stream isn't writeable and enableOfflineQueue options is false")), 'unavailable');
    assert.equal(redisErrorKind(new Error('Connection is closed.')), 'unavailable');
    assert.equal(redisErrorKind(undefined), 'unavailable');
  });
});
