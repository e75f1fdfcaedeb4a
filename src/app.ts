/**
 * The composition root: builds every part from a validated config and passes each its dependencies. No
 * part reaches for a global; the CLI, the demo and the tests all start a proxy through `createProxy`.
 */
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { AdminServer, logAdminListening } from './admin/server.js';
import { buildStatus, topologyOf } from './admin/status.js';
import { Counter } from 'prom-client';
import type { LoadBalancer } from './balancing/load-balancer.js';
import { ConfigError } from './config/errors.js';
import { DEFAULT_NAME } from './config/constants.js';
import type { Config, RateLimitConfig } from './config/schema.js';
import { Gateway, type ReloadOutcome } from './gateway/gateway.js';
import type { Generation, RoutePhases } from './gateway/generation.js';
import type { UserPhaseDeps } from './api/adapt.js';
import { readConfigOffThread } from './gateway/reload.js';
import { MemoryStore } from './limits/memory-store.js';
import { RedisStore } from './limits/redis-store.js';
import type { RateLimitStore, SharedStore, StoreErrorListener, StoreStatus } from './limits/store.js';
import { policyFromRate } from './limits/token-bucket.js';
import { createServerTiming, createTraceContext } from './middleware/trace-context/trace-context.js';
import { createAccessLog } from './observability/access-log.js';
import type { DirectLog } from './observability/logger.js';
import { ProxyMetrics } from './observability/metrics.js';
import type { Phases } from './proxy/phases.js';
import { ProxyServer } from './server/proxy-server.js';
import { mathRandom, monotonicClock, type Clock, type Random } from './util/clock.js';
import { packageVersion } from './util/version.js';

export interface ProxyOptions {
  logger: Logger;
  /** The logger's DirectLog, when `createLogger` made it: the access log writes its lines faster with it. */
  directLog?: DirectLog;
  clock?: Clock;
  random?: Random;
  /** Extra phases (library use), run after the built-in request filters. */
  phases?: readonly Phases[];
  /**
   * Public-API phases by route (createGateway's, and the config's plugins): `initial` for the first
   * generation, `build` for each reload's config (a ConfigError fails that reload and changes nothing).
   */
  routePhases?: { initial: RoutePhases; build: (config: Config) => Promise<RoutePhases> };
  /**
   * The bucket store for a rate-limit policy instead of the one its config names (a cluster worker's stores
   * ask the primary); undefined: the one the config names. Called when a policy first comes into use (at
   * start or on a reload); the store is closed once no generation uses its policy, or with the proxy.
   * `countErrors(store)` is a listener that counts the failed checks of such a store into this proxy's
   * `tollgate_ratelimit_store_errors_total`.
   */
  rateLimitStoreFor?: (config: RateLimitConfig, countErrors: (store: SharedStore) => StoreErrorListener) => RateLimitStore | undefined;
  /** Running as a cluster worker: max_connections is counted by the server itself (see ProxyServer). */
  clusterWorker?: boolean;
  /** false: no admin listener whatever the config says (a process that is not the one serving it). */
  admin?: boolean;
  /**
   * The file the config was read from: `reloadFile()`, SIGHUP (command.ts) and `POST /api/reload` re-read it.
   * Without it the proxy can still be reloaded with a config object (`reload`).
   */
  configFile?: string;
  /** SHA-256 of that file's bytes, shown in the status document. */
  configHash?: string;
  /** The number of the first generation (a cluster worker takes the primary's); default 1. */
  generation?: number;
}

export interface Proxy {
  /** The config in force now (changes with a reload). */
  readonly config: Config;
  /** The service `default` (a top-level load_balancing), or the first service, of the current generation. */
  readonly balancer: LoadBalancer;
  /** The routes and services serving now (a reload swaps in the next). */
  readonly generation: Generation;
  readonly gateway: Gateway;
  readonly server: ProxyServer;
  /** The rate-limit bucket store; undefined when rate limiting is off. */
  readonly store: RateLimitStore | undefined;
  readonly metrics: ProxyMetrics;
  /** The admin listener (dashboard, /metrics, /api/status); undefined when `admin.enabled` is false. */
  readonly admin: AdminServer | undefined;
  /**
   * Waits for the store (Redis: connected, or given up after 2 s), listens, then starts the admin listener.
   * Rejects with a ListenError naming the listener that could not bind (nothing is left listening).
   */
  listen(): Promise<AddressInfo>;
  /** Graceful shutdown (see ProxyServer.shutdown). */
  close(): Promise<void>;
  /** Shutdown that closes the connections still open now (see ProxyServer.closeNow). */
  closeNow(): Promise<void>;
  /** Puts a validated config in force without dropping a request (see Gateway.reload); its plugins are built first. */
  reload(config: Config, hash?: string, generation?: number): Promise<ReloadOutcome>;
  /**
   * Re-reads `configFile`, validates it as `--check` does and reloads; a bad file changes nothing and is
   * answered (and logged) with its errors.
   */
  reloadFile(): Promise<ReloadOutcome>;
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

  // The metrics are built once the first generation's backends exist; the stores made before (and the
  // logging phase, in every generation's phase lists) reach them through this holder.
  const built: { metrics?: ProxyMetrics } = {};
  // Failed checks are counted as they fail, into counters that outlive the stores a reload closes.
  const countErrors =
    (store: SharedStore): StoreErrorListener =>
    (kind, count) =>
      built.metrics?.recordStoreErrors(store, kind, count);
  const makeStore = (rateLimit: RateLimitConfig): RateLimitStore => {
    const given = options.rateLimitStoreFor?.(rateLimit, countErrors);
    if (given !== undefined) return given;
    const policy = policyFromRate(rateLimit.requests_per_minute, rateLimit.burst_size);
    return rateLimit.store.type === 'redis'
      ? new RedisStore({ config: rateLimit.store, policy, logger, onErrors: countErrors('redis') })
      : new MemoryStore({ policy, maxKeys: rateLimit.max_keys, clock });
  };

  // Phases every route runs, built once per process (a reload that changes tracing, metrics or logging
  // needs a restart): trace context first, so requests refused by auth or the rate limit have a trace id too.
  const head: Phases[] = [];
  if (config.tracing.enabled) head.push(createTraceContext(config.tracing));
  const tail: Phases[] = [];
  if (config.tracing.server_timing) tail.push(createServerTiming());
  if (config.metrics.enabled) tail.push({ name: 'metrics', logging: (ctx) => built.metrics?.recordRequest(ctx, performance.now()) });
  const accessLog = createAccessLog(logger, { direct: options.directLog });
  if (accessLog !== undefined) tail.push(accessLog);

  // User phases that throw are counted here; the counter exists (at 0) once the first generation is built.
  const phaseErrors: { counter?: Counter<'phase' | 'hook'> } = {};
  const userDeps: UserPhaseDeps = { logger, countError: (phase, hook) => phaseErrors.counter?.inc({ phase, hook }) };
  const onJwksFailure = (): void => built.metrics?.recordJwksFailure();
  const gateway = new Gateway(config, {
    logger,
    clock,
    random,
    head,
    user: options.phases ?? [],
    tail,
    startedAt,
    makeStore,
    onJwksFailure,
    hash: options.configHash ?? '',
    userDeps,
    routePhases: options.routePhases?.initial,
    ...(options.generation === undefined ? {} : { generation: options.generation }),
  });
  const connectionsOpen = (): Promise<number> => server.openConnections();
  const connectionsRefused = (): number => server.refusedConnections;
  const stores = (): StoreStatus[] => gateway.storeStatus();
  const websocketsOpen = (): number => gateway.webSocketsOpen;
  const metrics = new ProxyMetrics({ connectionsOpen, connectionsRefused, clock, version, stores, websocketsOpen }, { recording: config.metrics.enabled });
  // The gauges read the backends of the generation serving now; every swap hands over the next one's.
  metrics.useBackends(gateway.current.backends);
  gateway.onSwap((generation) => metrics.useBackends(generation.backends));
  built.metrics = metrics;
  const reloads = new Counter({
    name: 'tollgate_config_reloads_total',
    help: 'Config reloads (SIGHUP, POST /api/reload) by result: ok, or error (the old config kept serving).',
    labelNames: ['result'],
    registers: [metrics.registry],
  });
  reloads.inc({ result: 'ok' }, 0);
  reloads.inc({ result: 'error' }, 0);
  phaseErrors.counter = new Counter({
    name: 'tollgate_phase_errors_total',
    help: 'Hooks of library phases and plugins that threw or rejected, by phase name and hook (each answered 500 where a response was still to be sent).',
    labelNames: ['phase', 'hook'],
    registers: [metrics.registry],
  });

  const server = new ProxyServer({
    config: config.server,
    handler: gateway,
    logger,
    countConnections: options.clusterWorker === true,
    onClosed: async () => {
      accessLog?.flush();
      await gateway.close();
    },
    ...(metrics.recording ? { onRejected: (status: number) => metrics.recordRejected(status, performance.now()) } : {}),
    ...(gateway.current.tls === undefined ? {} : { tls: gateway.current.tls }),
  });
  // New handshakes get the certificates of the generation serving now (re-read from their files on each reload).
  gateway.onSwap((generation) => server.useTls(generation.tls));

  const reload = async (next: Config, hash = '', generation?: number): Promise<ReloadOutcome> => {
    let routePhases: RoutePhases | undefined;
    if (options.routePhases !== undefined) {
      try {
        routePhases = await options.routePhases.build(next);
      } catch (err) {
        if (!(err instanceof ConfigError)) throw err;
        reloads.inc({ result: 'error' });
        const errors = err.message.split('\n');
        logger.error({ errors }, 'config reload failed: the previous config keeps serving');
        return gateway.reloadFailed(errors);
      }
    }
    const outcome = await gateway.reload(next, hash, generation, routePhases);
    reloads.inc({ result: outcome.result });
    if (outcome.result === 'ok') {
      logger.info({ generation: outcome.generation, restart_needed: outcome.restart_needed, config_hash: hash }, `config reloaded: generation ${outcome.generation} serving`);
      if (outcome.restart_needed.length > 0) {
        logger.warn({ restart_needed: outcome.restart_needed }, `config reload: ${outcome.restart_needed.join(', ')} changed and need a restart; their running values are kept`);
      }
    } else logger.error({ errors: outcome.errors }, 'config reload failed: the previous config keeps serving');
    return outcome;
  };
  const reloadFile = async (): Promise<ReloadOutcome> => {
    const file = options.configFile;
    if (file === undefined) {
      reloads.inc({ result: 'error' });
      return gateway.reloadFailed(['the proxy was not started from a config file: nothing to re-read']);
    }
    let loaded;
    try {
      loaded = await readConfigOffThread(file);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      reloads.inc({ result: 'error' });
      const errors = err.message.split('\n');
      logger.error({ errors, config: file }, 'config reload failed: the previous config keeps serving');
      return gateway.reloadFailed(errors);
    }
    return reload(loaded.config, loaded.hash);
  };

  const admin =
    config.admin.enabled && options.admin !== false
      ? new AdminServer({
          config: config.admin,
          logger,
          status: async () => ({
            ...(await buildStatus({
              metrics,
              backends: gateway.current.backends,
              topology: () => topologyOf(gateway.config),
              stores,
              clock,
              connectionsOpen,
              connectionsRefused,
              draining: () => gateway.shared.draining,
              startedAt,
              version,
            })),
            config: gateway.info(),
          }),
          scrape: () => metrics.scrape(),
          scrapeContentType: metrics.contentType,
          reload: reloadFile,
        })
      : undefined;
  return {
    get config() {
      return gateway.config;
    },
    get balancer() {
      const services = gateway.current.services;
      return services.get(DEFAULT_NAME) ?? (services.values().next().value as LoadBalancer);
    },
    get generation() {
      return gateway.current;
    },
    gateway,
    server,
    get store() {
      return gateway.stores[0];
    },
    metrics,
    admin,
    listen: async () => {
      await gateway.start();
      const address = await server.listen();
      const redirect = server.redirectAddress;
      if (redirect !== undefined) logger.info({ address: redirect.address, port: redirect.port }, `redirect_http: answering 308 to https on ${redirect.address}:${redirect.port}`);
      if (admin !== undefined) {
        try {
          logAdminListening(logger, await admin.listen());
        } catch (err) {
          // Nothing stays bound when listen() fails: the proxy port is released before the error goes on.
          await server.stopListening();
          throw err;
        }
      }
      return address;
    },
    // The admin listener stays up while the proxy drains, so the drain can be watched.
    close: async () => {
      await server.shutdown();
      await admin?.close();
    },
    closeNow: async () => {
      await server.closeNow();
      await admin?.close();
    },
    reload,
    reloadFile,
    flushLogs: () => accessLog?.flush(),
  };
}
