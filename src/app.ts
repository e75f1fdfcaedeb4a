/**
 * The composition root: builds every part from a validated config and passes each its dependencies. No
 * part reaches for a global; the CLI, the demo and the tests all start a proxy through `createProxy`.
 */
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { AdminServer, logAdminListening } from './admin/server.js';
import { buildStatus } from './admin/status.js';
import { LoadBalancer } from './balancing/load-balancer.js';
import type { Config } from './config/schema.js';
import { MemoryStore } from './limits/memory-store.js';
import { RedisStore } from './limits/redis-store.js';
import type { RateLimitStore } from './limits/store.js';
import { policyFromRate } from './limits/token-bucket.js';
import { createAuth } from './middleware/auth/auth.js';
import { createRateLimit } from './middleware/rate-limit/rate-limit.js';
import { createServerTiming, createTraceContext } from './middleware/trace-context/trace-context.js';
import { createAccessLog } from './observability/access-log.js';
import { ProxyMetrics } from './observability/metrics.js';
import type { Phases } from './proxy/phases.js';
import { Pipeline } from './proxy/pipeline.js';
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
  readonly balancer: LoadBalancer;
  readonly pipeline: Pipeline;
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
  const balancer = new LoadBalancer(config.load_balancing, { random, clock, logger });

  const phases: Phases[] = [];
  // First of the request filters, so requests refused by auth or the rate limit have a trace id too.
  if (config.tracing.enabled) phases.push(createTraceContext(config.tracing));
  const { auth, rate_limit: rateLimit } = config.middleware;
  const authPhases = auth.enabled ? createAuth(auth) : undefined;
  let store: RateLimitStore | undefined;
  if (authPhases !== undefined) phases.push(authPhases.authenticate);
  if (rateLimit.enabled) {
    const policy = policyFromRate(rateLimit.requests_per_minute, rateLimit.burst_size);
    store =
      options.rateLimitStore ??
      (rateLimit.store.type === 'redis'
        ? new RedisStore({ config: rateLimit.store, policy, logger })
        : new MemoryStore({ policy, maxKeys: rateLimit.max_keys, clock }));
    phases.push(createRateLimit(rateLimit, store));
  }
  if (authPhases !== undefined) phases.push(authPhases.enforce);
  phases.push(...(options.phases ?? []));
  if (config.tracing.server_timing) phases.push(createServerTiming());
  const startedAt = Date.now();
  const version = packageVersion();
  const connectionsOpen = (): Promise<number> =>
    new Promise((resolve) => server.server.getConnections((err, n) => resolve(err === null ? n : 0)));
  const connectionsRefused = (): number => server.refusedConnections;
  const metrics = new ProxyMetrics(
    { backends: balancer.backends, connectionsOpen, connectionsRefused, clock, version },
    { recording: config.metrics.enabled },
  );
  if (metrics.phase !== undefined) phases.push(metrics.phase);
  const accessLog = createAccessLog(logger);
  if (accessLog !== undefined) phases.push(accessLog);

  const pipeline = new Pipeline({ config, balancer, logger, phases, clock, startedAt });
  const server = new ProxyServer({
    config: config.server,
    pipeline,
    logger,
    countConnections: options.clusterWorker === true,
    onClosed: async () => {
      accessLog?.flush();
      store?.close();
      await balancer.close();
    },
    ...(metrics.recording ? { onRejected: (status: number) => metrics.recordRejected(status, performance.now()) } : {}),
  });
  const admin =
    config.admin.enabled && options.admin !== false
      ? new AdminServer({
          config: config.admin,
          logger,
          status: () =>
            buildStatus({ metrics, backends: balancer.backends, clock, connectionsOpen, connectionsRefused, draining: () => pipeline.draining, startedAt, version }),
          scrape: () => metrics.scrape(),
          scrapeContentType: metrics.contentType,
        })
      : undefined;
  return {
    config,
    balancer,
    pipeline,
    server,
    store,
    metrics,
    admin,
    listen: async () => {
      await store?.ready?.();
      const address = await server.listen();
      balancer.start();
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
