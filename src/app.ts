/**
 * The composition root: builds every part from a validated config and passes each its dependencies. No
 * part reaches for a global; the CLI, the demo and the tests all start a proxy through `createProxy`.
 */
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { AdminServer, logAdminListening } from './admin/server.js';
import { buildStatus, topologyOf } from './admin/status.js';
import type { LoadBalancer } from './balancing/load-balancer.js';
import { DEFAULT_NAME, type Config, type RateLimitConfig } from './config/schema.js';
import { Generation } from './gateway/generation.js';
import { MemoryStore } from './limits/memory-store.js';
import { RedisStore } from './limits/redis-store.js';
import type { RateLimitStore } from './limits/store.js';
import { policyFromRate } from './limits/token-bucket.js';
import { createServerTiming, createTraceContext } from './middleware/trace-context/trace-context.js';
import { createAccessLog } from './observability/access-log.js';
import { ProxyMetrics } from './observability/metrics.js';
import type { Phases } from './proxy/phases.js';
import type { PipelineShared } from './proxy/pipeline.js';
import { ProxyServer } from './server/proxy-server.js';
import { mathRandom, monotonicClock, type Clock, type Random } from './util/clock.js';
import { packageVersion } from './util/version.js';

export interface ProxyOptions {
  logger: Logger;
  clock?: Clock;
  random?: Random;
  /** Extra phases (library use), run after the built-in request filters. */
  phases?: readonly Phases[];
  /**
   * The bucket store to use instead of the one the config names (a cluster worker passes the store that
   * asks the primary). Closed with the proxy.
   */
  rateLimitStore?: RateLimitStore;
  /** Running as a cluster worker: max_connections is counted by the server itself (see ProxyServer). */
  clusterWorker?: boolean;
  /** false: no admin listener whatever the config says (a process that is not the one serving it). */
  admin?: boolean;
}

export interface Proxy {
  readonly config: Config;
  /** The service `default` (the brief's load_balancing), or the first service. */
  readonly balancer: LoadBalancer;
  /** The routes and services serving now. */
  readonly generation: Generation;
  readonly server: ProxyServer;
  /** The rate-limit bucket store; undefined when rate limiting is off. */
  readonly store: RateLimitStore | undefined;
  readonly metrics: ProxyMetrics;
  /** The admin listener (dashboard, /metrics, /api/status); undefined when `admin.enabled` is false. */
  readonly admin: AdminServer | undefined;
  /** Waits for the store (Redis: connected, or given up after 2 s), listens, then starts the admin listener. */
  listen(): Promise<AddressInfo>;
  /** Graceful shutdown (see ProxyServer.shutdown). */
  close(): Promise<void>;
  /** Writes out access-log lines not yet handed to the logger's destination (call before exiting). */
  flushLogs(): void;
}

/** Builds a proxy from a config; nothing listens until `listen()`. */
export function createProxy(config: Config, options: ProxyOptions): Proxy {
  const clock = options.clock ?? monotonicClock;
  const random = options.random ?? mathRandom;
  const logger = options.logger;
  const startedAt = Date.now();
  const version = packageVersion();
  const shared: PipelineShared = { draining: false };

  // Rate-limit stores by policy, shared by the routes with that policy and kept across generations.
  const stores = new Map<string, RateLimitStore>();
  const storeFor = (rateLimit: RateLimitConfig): RateLimitStore => {
    const key = JSON.stringify([rateLimit.requests_per_minute, rateLimit.burst_size, rateLimit.max_keys, rateLimit.store]);
    let store = stores.get(key);
    if (store === undefined) {
      const policy = policyFromRate(rateLimit.requests_per_minute, rateLimit.burst_size);
      store =
        options.rateLimitStore ??
        (rateLimit.store.type === 'redis'
          ? new RedisStore({ config: rateLimit.store, policy, logger })
          : new MemoryStore({ policy, maxKeys: rateLimit.max_keys, clock }));
      stores.set(key, store);
    }
    return store;
  };

  const head: Phases[] = [];
  // First of the request filters, so requests refused by auth or the rate limit have a trace id too.
  if (config.tracing.enabled) head.push(createTraceContext(config.tracing));
  const tail: Phases[] = [];
  if (config.tracing.server_timing) tail.push(createServerTiming());
  const connectionsOpen = (): Promise<number> =>
    new Promise((resolve) => server.server.getConnections((err, n) => resolve(err === null ? n : 0)));
  const connectionsRefused = (): number => server.refusedConnections;
  // The metrics are built once the generation's backends exist (useBackends below); the logging phase that
  // feeds them is in the generation's phase lists already.
  const built: { metrics?: ProxyMetrics } = {};
  if (config.metrics.enabled) tail.push({ name: 'metrics', logging: (ctx) => built.metrics?.recordRequest(ctx, performance.now()) });
  const accessLog = createAccessLog(logger);
  if (accessLog !== undefined) tail.push(accessLog);

  const current = new Generation(
    config,
    { logger, clock, random, shared, stores: { get: storeFor }, head, user: options.phases ?? [], tail, startedAt },
    { id: 1, loadedAt: startedAt, hash: '' },
  );
  const recorder = new ProxyMetrics({ connectionsOpen, connectionsRefused, clock, version }, { recording: config.metrics.enabled });
  // Called again with the next generation's backends whenever one is swapped in.
  recorder.useBackends(current.backends);
  built.metrics = recorder;
  const defaultService = current.services.get(DEFAULT_NAME) ?? (current.services.values().next().value as LoadBalancer);
  const store = stores.values().next().value;

  const server = new ProxyServer({
    config: config.server,
    handler: {
      handle: (req, res) => current.pipeline.handle(req, res),
      handleExpectContinue: (req, res) => current.pipeline.handleExpectContinue(req, res),
      startDraining: () => {
        shared.draining = true;
      },
    },
    logger,
    countConnections: options.clusterWorker === true,
    onClosed: async () => {
      accessLog?.flush();
      for (const s of stores.values()) s.close();
      await current.retire(undefined);
      await Promise.all(current.backends.map((b) => b.pool.destroy()));
    },
    ...(recorder.recording ? { onRejected: (status: number) => recorder.recordRejected(status, performance.now()) } : {}),
  });
  const admin =
    config.admin.enabled && options.admin !== false
      ? new AdminServer({
          config: config.admin,
          logger,
          status: () =>
            buildStatus({ metrics: recorder, backends: current.backends, topology: () => topologyOf(current.config), clock, connectionsOpen, connectionsRefused, draining: () => shared.draining, startedAt, version }),
          scrape: () => recorder.scrape(),
          scrapeContentType: recorder.contentType,
        })
      : undefined;
  return {
    config,
    balancer: defaultService,
    generation: current,
    server,
    store,
    metrics: recorder,
    admin,
    listen: async () => {
      for (const s of stores.values()) await s.ready?.();
      const address = await server.listen();
      current.start();
      if (admin !== undefined) {
        logAdminListening(logger, await admin.listen());
      }
      return address;
    },
    // The admin listener stays up while the proxy drains, so the drain can be watched.
    close: async () => {
      await server.shutdown();
      await admin?.close();
    },
    flushLogs: () => accessLog?.flush(),
  };
}
