import { createRequire } from 'node:module';
import type * as IORedis from 'ioredis';
import type { Cluster, ClusterOptions, Redis, RedisOptions } from 'ioredis';
import type { Logger } from 'pino';
import type { RedisStoreConfig } from '../config/schema.js';
import { ThrottledLog } from '../util/throttled-log.js';
import type { RateLimitStore, StoreError, StoreErrorKind, StoreErrorListener, StoreHealth } from './store.js';
import { decisionFor, type RateDecision, type TokenBucketPolicy } from './token-bucket.js';

/**
 * Takes from token buckets, atomically: for each key, the read, the refill, the take and the write happen
 * inside Redis in one script, so concurrent requests for one key (from any worker of any instance) can never
 * both spend the last token, as a GET-then-SET from the proxy could. One call carries the takes of every
 * request that arrived in one turn of the event loop (see RedisStore); a key that appears twice is taken
 * from twice, in order.
 *
 * The clock is Redis's own (`TIME`), not the proxy's: instances' clocks differ by whatever NTP leaves, and
 * a bucket refilled by one instance's clock and then by another's would gain or lose that difference on
 * every alternation. With `TIME` one clock (the key's Redis master) measures every refill of a key. If that
 * clock steps back (a failover to a replica whose clock is behind), the bucket refills nothing until it
 * catches up, as the memory store does for a non-positive elapsed time.
 *
 * A bucket is a hash {tokens, at} that expires when it would be full again: deleting it then changes
 * nothing, because a missing bucket is a full one. `redis.replicate_commands()` (a no-op from Redis 5 on)
 * lets Redis 3.2-4 replicate the writes that follow the non-deterministic `TIME`.
 *
 * KEYS: the buckets; ARGV[1]: capacity; ARGV[2]: tokens gained per millisecond.
 * Returns, per key, 1 when a token was taken (else 0) and the tokens left as a string (a Lua number would
 * be truncated to an integer).
 */
export const TAKE_SCRIPT = `
if redis.replicate_commands then redis.replicate_commands() end
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000
local out = {}
for i, key in ipairs(KEYS) do
  local bucket = redis.call('HMGET', key, 'tokens', 'at')
  local tokens = tonumber(bucket[1])
  local at = tonumber(bucket[2])
  if tokens == nil or at == nil then
    tokens = capacity
    at = now
  elseif now > at then
    tokens = math.min(capacity, tokens + (now - at) * rate)
    at = now
  end
  local taken = 0
  if tokens >= 1 then
    tokens = tokens - 1
    taken = 1
  end
  redis.call('HSET', key, 'tokens', tokens, 'at', at)
  redis.call('PEXPIRE', key, math.max(1, math.ceil((capacity - tokens) / rate)))
  out[2 * i - 1] = taken
  out[2 * i] = tostring(tokens)
end
return out
`;

/**
 * ioredis, loaded the first time a Redis store is made: most instances keep their buckets in memory, and
 * loading it costs about 20 MiB of RSS and 80 ms of start-up that they would pay for nothing.
 */
let ioredisModule: typeof IORedis | undefined;
function ioredis(): typeof IORedis {
  ioredisModule ??= createRequire(import.meta.url)('ioredis') as typeof IORedis;
  return ioredisModule;
}

/** Most takes in one script call, so one call never holds Redis for long. */
const MAX_BATCH = 256;

interface TakeCommand {
  /** `numberOfKeys, ...keys, capacity, refillPerMs` */
  tollgateTake(...args: (string | number)[]): Promise<(number | string)[]>;
}

interface Waiter {
  resolve: (decision: RateDecision) => void;
  reject: (err: Error) => void;
}

/** A rate-limit check that could not be made (Redis down, slow or failing); `on_error` decides the request. */
export class StoreUnavailableError extends Error {
  readonly code = 'TOLLGATE_STORE_UNAVAILABLE';
  constructor(cause: unknown) {
    super(`rate-limit store unavailable: ${(cause as Error | undefined)?.message ?? String(cause)}`, { cause });
    this.name = 'StoreUnavailableError';
  }
}

/** ioredis' message when `commandTimeout` expires. */
const TIMED_OUT = 'Command timed out';
/** Most one line per this many ms about failed checks, and about connection errors. */
const LOG_INTERVAL_MS = 5_000;

/**
 * Why a take failed: `timeout` when Redis did not answer within `timeout_ms`, `error` when it answered with
 * an error (OOM, READONLY, a script error), `unavailable` for the rest: no connection to send on, or the
 * connection lost with the command in flight.
 */
export function redisErrorKind(err: unknown): StoreErrorKind {
  if (ioredisModule !== undefined && err instanceof ioredisModule.ReplyError) return 'error';
  if ((err as Error | undefined)?.message === TIMED_OUT) return 'timeout';
  return 'unavailable';
}

/** Where a store config points, without credentials or query (the status document shows it). */
export function redisTarget(config: RedisStoreConfig): string {
  if (config.url !== undefined) return withoutCredentials(config.url);
  if (config.cluster !== undefined) return `cluster ${config.cluster.nodes.map(withoutCredentials).join(', ')}`;
  const sentinel = config.sentinel as NonNullable<RedisStoreConfig['sentinel']>;
  return `sentinel ${sentinel.name} via ${sentinel.nodes.map(withoutCredentials).join(', ')}`;
}

function withoutCredentials(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname === '/' ? '' : u.pathname}`;
  } catch {
    return 'redis';
  }
}

/**
 * The ioredis client for a store config: one server (`url`), Redis Cluster (`cluster.nodes`) or Sentinel
 * (`sentinel`). Whatever the topology, a request never waits in a queue: commands fail at once while there
 * is no connection (`enableOfflineQueue: false`), and a command that Redis does not answer within
 * `timeout_ms` fails then (`commandTimeout`, ioredis' one timer per command, so none of our own). Commands
 * cut off by a lost connection are failed, not re-sent later (`maxRetriesPerRequest: 0`,
 * `autoResendUnfulfilledCommands: false`): their requests have already been decided by `on_error`, and a
 * late re-send would charge those clients a second time. ioredis reconnects by itself (`retryStrategy`).
 * Auto-pipelining sends the takes of many concurrent requests in one write.
 */
export function createRedisClient(config: RedisStoreConfig): Redis | Cluster {
  const common: RedisOptions = {
    enableAutoPipelining: true,
    enableOfflineQueue: false,
    commandTimeout: config.timeout_ms,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    // Reconnect after 100 ms, 200 ms, ... at most 2 s apart, for ever.
    retryStrategy: (attempt: number) => Math.min(attempt * 100, 2_000),
    connectionName: 'tollgate',
  };
  const { Cluster, Redis } = ioredis();
  if (config.url !== undefined) return new Redis(config.url, common);
  if (config.cluster !== undefined) {
    const urls = config.cluster.nodes.map((u) => new URL(u));
    const first = urls[0] as URL;
    const options: ClusterOptions = {
      enableAutoPipelining: true,
      enableOfflineQueue: false,
      // The ready check (CLUSTER INFO) would itself be refused while not ready without an offline queue.
      enableReadyCheck: false,
      clusterRetryStrategy: (attempt: number) => Math.min(attempt * 100, 2_000),
      // ioredis keeps the node connections' offline queue and reconnection to itself (the Cluster client
      // needs them for its slot map). Requests still never wait past timeout_ms: the Cluster fails commands
      // at once while it is not ready, and commandTimeout bounds a command queued on a reconnecting node.
      redisOptions: {
        enableAutoPipelining: true,
        commandTimeout: config.timeout_ms,
        maxRetriesPerRequest: 0,
        autoResendUnfulfilledCommands: false,
        connectionName: 'tollgate',
        ...credentials(first),
        ...(first.protocol === 'rediss:' ? { tls: {} } : {}),
      },
    };
    return new Cluster(
      urls.map((u) => ({ host: u.hostname, port: Number(u.port || 6379) })),
      options,
    );
  }
  const sentinel = config.sentinel as NonNullable<RedisStoreConfig['sentinel']>;
  const nodes = sentinel.nodes.map((u) => new URL(u));
  const first = nodes[0] as URL;
  const own = credentials(first);
  return new Redis({
    ...common,
    sentinels: nodes.map((u) => ({ host: u.hostname, port: Number(u.port || 26379) })),
    name: sentinel.name,
    db: sentinel.db,
    ...(sentinel.password !== undefined ? { password: sentinel.password } : {}),
    ...(own.username !== undefined ? { sentinelUsername: own.username } : {}),
    ...(own.password !== undefined ? { sentinelPassword: own.password } : {}),
    ...(first.protocol === 'rediss:' ? { enableTLSForSentinelMode: true, tls: {} } : {}),
  });
}

function credentials(url: URL): { username?: string; password?: string } {
  const out: { username?: string; password?: string } = {};
  if (url.username !== '') out.username = decodeURIComponent(url.username);
  if (url.password !== '') out.password = decodeURIComponent(url.password);
  return out;
}

export interface RedisStoreOptions {
  config: RedisStoreConfig;
  policy: TokenBucketPolicy;
  logger: Logger;
  /** A client to use instead of one built from the config (tests). */
  client?: Redis | Cluster;
  /** Told of every failed take as it fails (the metrics count them). */
  onErrors?: StoreErrorListener;
}

/**
 * Buckets in Redis, shared by every worker of every instance that uses the same Redis and key prefix. The
 * takes of the requests that arrive in one turn of the event loop go to Redis as one EVALSHA of TAKE_SCRIPT
 * (flushed by setImmediate, once the poll phase has handed over every request that arrived): one command,
 * one timer and one reply for the batch instead of one per request. ioredis' `defineCommand` sends the
 * script once per connection, then calls it by its SHA, and re-sends it if Redis answers NOSCRIPT. Redis
 * Cluster gets one call per key (a script's keys must share a hash slot).
 *
 * A take that fails rejects with StoreUnavailableError; the rate-limit middleware then applies `on_error`.
 * Failures are counted here (`failures`, `timeouts`, per request, for as long as this store lives), passed
 * to `onErrors` as they happen, and logged at most once per 5 s.
 */
export class RedisStore implements RateLimitStore {
  readonly client: Redis | Cluster;
  /** Checks that failed since start (each one's request followed `on_error`). */
  failures = 0;
  /** Of `failures`, those where Redis did not answer within `timeout_ms`. */
  timeouts = 0;
  readonly #take: TakeCommand['tollgateTake'];
  readonly #batch: boolean;
  #keys: string[] = [];
  #waiters: Waiter[] = [];
  #scheduled = false;
  readonly #flush = (): void => this.#send();
  readonly #prefix: string;
  readonly #capacity: string;
  readonly #refillPerMs: string;
  readonly #policy: TokenBucketPolicy;
  readonly #logger: Logger;
  readonly #onError: string;
  readonly #onErrors: StoreErrorListener | undefined;
  readonly #target: string;
  readonly #failureLog = new ThrottledLog(LOG_INTERVAL_MS);
  readonly #connectionLog = new ThrottledLog(LOG_INTERVAL_MS);
  /** Set on the first failed take; cleared (with a log line) by the next take that works. */
  #failing = false;
  #failuresInOutage = 0;
  #everReady = false;
  #closed = false;
  /** Set when a connection attempt fails; cleared when a connection is ready. */
  #lost = false;
  /** Why the last take failed; cleared by a take that works, and by a new connection. */
  #failedKind: StoreErrorKind | undefined;
  #lastError: StoreError | null = null;

  constructor(options: RedisStoreOptions) {
    const { config, policy, logger } = options;
    this.#policy = policy;
    this.#logger = logger;
    this.#onError = config.on_error;
    this.#onErrors = options.onErrors;
    this.#target = redisTarget(config);
    this.#prefix = config.key_prefix;
    this.#capacity = String(policy.capacity);
    this.#refillPerMs = String(policy.refillPerMs);
    const client = options.client ?? createRedisClient(config);
    // numberOfKeys is left out: each call says how many keys it carries.
    client.defineCommand('tollgateTake', { lua: TAKE_SCRIPT });
    this.#take = (client as unknown as TakeCommand).tollgateTake.bind(client);
    this.#batch = !(client instanceof ioredis().Cluster);
    // Without an 'error' listener, a connection error would be thrown as an uncaught exception.
    client.on('error', (err: Error) => this.#connectionError(err));
    client.on('ready', () => this.#ready());
    this.client = client;
  }

  take(key: string): Promise<RateDecision> {
    this.#keys.push(this.#prefix + key);
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(this.#flush);
    }
    return new Promise<RateDecision>((resolve, reject) => {
      this.#waiters.push({ resolve, reject });
    });
  }

  #send(): void {
    this.#scheduled = false;
    const keys = this.#keys;
    const waiters = this.#waiters;
    this.#keys = [];
    this.#waiters = [];
    const size = this.#batch ? MAX_BATCH : 1;
    for (let from = 0; from < keys.length; from += size) {
      const part = keys.slice(from, from + size);
      const settle = waiters.slice(from, from + size);
      this.#take(part.length, ...part, this.#capacity, this.#refillPerMs).then(
        (reply) => this.#decide(reply, settle),
        (err: unknown) => this.#fail(err, settle),
      );
    }
  }

  /** Resolves once connected, or after `ms` (the proxy then starts anyway; takes follow `on_error`). */
  ready(ms = 2_000): Promise<void> {
    if (this.client.status === 'ready') return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.client.off('ready', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      timer.unref();
      this.client.on('ready', done);
    });
  }

  close(): void {
    this.#closed = true;
    this.client.disconnect();
  }

  /** `connecting` until the first connection, `down` while reconnecting, `failing` after a failed take. */
  health(): StoreHealth {
    let state: StoreHealth['state'] = 'ready';
    if (this.client.status !== 'ready') state = this.#lost || this.#everReady ? 'down' : 'connecting';
    else if (this.#failedKind !== undefined) state = 'failing';
    return { store: 'redis', target: this.#target, state, last_error: this.#lastError };
  }

  #decide(reply: (number | string)[], waiters: Waiter[]): void {
    this.#failedKind = undefined;
    if (this.#failing) this.#recovered();
    for (let i = 0; i < waiters.length; i++) {
      (waiters[i] as Waiter).resolve(decisionFor(reply[2 * i] === 1, Number(reply[2 * i + 1]), this.#policy));
    }
  }

  #fail(err: unknown, waiters: Waiter[]): void {
    const n = waiters.length;
    const kind = redisErrorKind(err);
    this.failures += n;
    if (kind === 'timeout') this.timeouts += n;
    this.#onErrors?.(kind, n);
    this.#failedKind = kind;
    this.#lastError = { kind, message: (err as Error | undefined)?.message ?? String(err), at: Date.now() };
    this.#failuresInOutage += n;
    if (!this.#failing) {
      this.#failing = true;
      this.#failureLog.reset();
    }
    this.#failureLog.event((count) =>
      this.#logger.warn(
        { err: (err as Error | undefined)?.message ?? String(err), failed: count, failed_total: this.failures, timeouts_total: this.timeouts, on_error: this.#onError },
        `rate-limit store unavailable: requests follow on_error=${this.#onError}`,
      ),
      n,
    );
    const error = new StoreUnavailableError(err);
    for (const w of waiters) w.reject(error);
  }

  #recovered(): void {
    this.#failing = false;
    this.#failureLog.reset();
    this.#logger.info({ failed: this.#failuresInOutage, failed_total: this.failures }, 'rate-limit store answering again');
    this.#failuresInOutage = 0;
  }

  #connectionError(err: Error): void {
    if (this.#closed) return;
    this.#lost = true;
    this.#lastError = { kind: 'unavailable', message: err.message, at: Date.now() };
    this.#connectionLog.event((count) =>
      this.#logger.warn({ err: err.message, errors: count, status: this.client.status }, 'redis connection error (reconnecting)'),
    );
  }

  #ready(): void {
    this.#lost = false;
    // A new connection: failures on the one before say nothing about this one.
    this.#failedKind = undefined;
    this.#connectionLog.reset();
    this.#logger.info(this.#everReady ? 'redis reconnected' : 'redis connected');
    this.#everReady = true;
  }
}
