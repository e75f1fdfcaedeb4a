/**
 * Cluster mode (`server.workers` > 1 or `auto`): a primary process forks the workers, which all listen on
 * the same port (Node's cluster module: the primary accepts connections and hands them to the workers in
 * turn). The primary serves no HTTP itself. It
 *
 * - holds the instance's rate-limit buckets (one MemoryStore) and answers the workers' batched takes over
 *   IPC, so a client's budget is the configured one for the whole instance, not one per worker;
 * - restarts a worker that dies, after a delay that doubles with each quick death (100 ms up to 10 s);
 * - on SIGTERM / SIGINT tells every worker to drain (the same graceful shutdown as a single process) and
 *   exits once they have all exited.
 *
 * - runs the instance's one admin listener (dashboard, /metrics, /api/status), whose numbers it gathers
 *   from the workers on demand (`tollgate:snapshot`, merged by admin/cluster.ts); workers run none. On
 *   shutdown it stays up while the workers drain, then closes.
 *
 * `max_connections` is split between the workers (`connectionShare`), so the whole instance never holds
 * more; docs/deployment.md explains the trade-off. Every IPC message Tollgate sends is declared in
 * cluster/messages.ts.
 */
import cluster, { type Worker } from 'node:cluster';
import type { AddressInfo } from 'node:net';
import { availableParallelism } from 'node:os';
import type { Logger } from 'pino';
import { ClusterMonitor, type MonitoredWorker } from '../admin/cluster.js';
import { AdminServer, logAdminListening } from '../admin/server.js';
import { createProxy, type Proxy } from '../app.js';
import type { Config } from '../config/schema.js';
import {
  isMessage,
  isTakeRequest,
  type HelloMessage,
  type ListeningMessage,
  type ShutdownMessage,
  type SnapshotReply,
  type SnapshotRequest,
  type StartMessage,
} from '../cluster/messages.js';
import { answerTakes, IpcStore } from '../limits/ipc-store.js';
import { MemoryStore } from '../limits/memory-store.js';
import { policyFromRate } from '../limits/token-bucket.js';
import { createLogger } from '../observability/logger.js';
import { monotonicClock } from '../util/clock.js';
import { packageVersion } from '../util/version.js';

/** The number of workers for a `server.workers` setting: `auto` is one per CPU. */
export function resolveWorkers(setting: Config['server']['workers'], cpus: number = availableParallelism()): number {
  return setting === 'auto' ? Math.max(1, cpus) : setting;
}

/**
 * The connections one worker may hold: max_connections split as evenly as whole numbers allow (the first
 * `max % workers` slots get one more), so the shares add up to exactly max_connections.
 */
export function connectionShare(maxConnections: number, workers: number, slot: number): number {
  return Math.floor(maxConnections / workers) + (slot < maxConnections % workers ? 1 : 0);
}

/** Delay before restarting a worker that died after `quickDeaths` quick deaths in a row (0 for the first). */
export function restartDelayMs(quickDeaths: number): number {
  return Math.min(100 * 2 ** quickDeaths, 10_000);
}

/** A worker that ran at least this long before dying resets its slot's backoff. */
const STABLE_MS = 10_000;

interface Slot {
  worker: Worker | undefined;
  startedAt: number;
  quickDeaths: number;
  restartTimer: NodeJS.Timeout | undefined;
  listening: boolean;
}

export interface PrimaryOptions {
  config: Config;
  logger: Logger;
  workers: number;
  logFormat?: 'json' | 'pretty' | undefined;
  /** The script the workers run (default: this process's own, dist/cli.js). */
  exec?: string;
}

/** The cluster primary (see the file comment). `start()` forks; `shutdown()` drains. */
export class Primary {
  readonly #config: Config;
  readonly #logger: Logger;
  readonly #workers: number;
  readonly #logFormat: 'json' | 'pretty' | undefined;
  readonly #slots: Slot[];
  readonly #store: MemoryStore | undefined;
  /** The admin listener's numbers; undefined with `admin.enabled: false`. */
  readonly #monitor: ClusterMonitor | undefined;
  /** The instance's admin listener; undefined with `admin.enabled: false`. */
  readonly admin: AdminServer | undefined;
  #started = false;
  #shuttingDown = false;
  #onStartFailed: ((err: Error) => void) | undefined;
  #onAllListening: (() => void) | undefined;
  #address: AddressInfo | undefined;
  #onAllExited: (() => void) | undefined;
  #shutdown: Promise<void> | undefined;
  /** Workers restarted since start (tollgate_worker_restarts_total). */
  restarts = 0;

  constructor(options: PrimaryOptions) {
    this.#config = options.config;
    this.#logger = options.logger;
    this.#workers = options.workers;
    this.#logFormat = options.logFormat;
    this.#slots = Array.from({ length: options.workers }, () => ({ worker: undefined, startedAt: 0, quickDeaths: 0, restartTimer: undefined, listening: false }));
    const rateLimit = options.config.middleware.rate_limit;
    if (rateLimit.enabled && rateLimit.store.type === 'memory') {
      this.#store = new MemoryStore({ policy: policyFromRate(rateLimit.requests_per_minute, rateLimit.burst_size), maxKeys: rateLimit.max_keys, clock: monotonicClock });
    }
    cluster.setupPrimary({ exec: options.exec ?? (process.argv[1] as string), args: [], silent: false });
    if (options.config.admin.enabled) {
      const monitor = new ClusterMonitor({
        config: options.config,
        logger: options.logger,
        version: packageVersion(),
        startedAt: Date.now(),
        workers: () => this.#monitored(),
        restarts: () => this.restarts,
        draining: () => this.#shuttingDown,
      });
      this.#monitor = monitor;
      this.admin = new AdminServer({
        config: options.config.admin,
        logger: options.logger,
        status: () => monitor.status(),
        scrape: () => monitor.scrape(),
        scrapeContentType: monitor.contentType,
      });
    }
  }

  /** The pids of the running workers, by slot. */
  get workerPids(): (number | undefined)[] {
    return this.#slots.map((s) => s.worker?.process.pid);
  }

  /**
   * Starts the admin listener, if enabled (before `start()`, so a taken admin port stops the instance
   * before any worker is forked); rejects with the listen error.
   */
  async listenAdmin(): Promise<AddressInfo | undefined> {
    if (this.admin === undefined) return undefined;
    const at = await this.admin.listen();
    logAdminListening(this.#logger, at);
    return at;
  }

  /** Forks every worker; resolves once all listen, rejects if one exits first (the port is taken, ...). */
  start(): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.#onAllListening = () => resolve(this.#address as AddressInfo);
      this.#onStartFailed = reject;
      for (let slot = 0; slot < this.#workers; slot++) this.#fork(slot);
    });
  }

  /** Graceful shutdown of every worker; resolves when all have exited. Safe to call more than once. */
  shutdown(): Promise<void> {
    this.#shutdown ??= this.#drain();
    return this.#shutdown;
  }

  /** Second signal: stop every worker at once. */
  kill(): void {
    this.#shuttingDown = true;
    this.#monitor?.close();
    void this.admin?.close();
    for (const slot of this.#slots) {
      if (slot.restartTimer !== undefined) clearTimeout(slot.restartTimer);
      slot.worker?.process.kill('SIGKILL');
    }
  }

  #fork(slot: number): void {
    const state = this.#slots[slot] as Slot;
    state.restartTimer = undefined;
    state.listening = false;
    state.startedAt = Date.now();
    const worker = cluster.fork({ TOLLGATE_WORKER_SLOT: String(slot) });
    state.worker = worker;
    worker.on('message', (message: unknown) => this.#message(slot, worker, message));
    worker.on('exit', (code: number | null, signal: string | null) => this.#exited(slot, worker, code, signal));
    // An IPC write to a worker that is exiting fails; the exit handler deals with the worker.
    worker.on('error', (err: Error) => this.#logger.debug({ err, worker: slot }, 'worker IPC error'));
  }

  /** The running workers, for the monitor (it asks the ready ones). */
  #monitored(): MonitoredWorker[] {
    const out: MonitoredWorker[] = [];
    this.#slots.forEach((state, slot) => {
      const worker = state.worker;
      const pid = worker?.process.pid;
      if (worker === undefined || pid === undefined) return;
      out.push({
        slot,
        pid,
        startedAt: state.startedAt,
        ready: state.listening && worker.isConnected(),
        send: (message, callback) => worker.send(message, undefined, undefined, callback),
      });
    });
    return out;
  }

  #message(slot: number, worker: Worker, message: unknown): void {
    if (isTakeRequest(message)) {
      if (this.#store === undefined) return;
      worker.send(answerTakes(this.#store, message), undefined, undefined, ignoreSendError);
      return;
    }
    if (isMessage<SnapshotReply>(message, 'tollgate:snapshot-reply')) {
      const pid = worker.process.pid;
      if (pid !== undefined) this.#monitor?.reply(pid, message);
      return;
    }
    if (isMessage<HelloMessage>(message, 'tollgate:hello')) {
      const start: StartMessage = { type: 'tollgate:start', config: this.#config, slot, workers: this.#workers, logFormat: this.#logFormat };
      worker.send(start, undefined, undefined, ignoreSendError);
      this.#logger.info({ worker: slot, worker_pid: worker.process.pid }, 'worker started');
      return;
    }
    if (isMessage<ListeningMessage>(message, 'tollgate:listening')) {
      const state = this.#slots[slot] as Slot;
      state.listening = true;
      this.#address ??= message.address;
      if (!this.#started && this.#slots.every((s) => s.listening)) {
        this.#started = true;
        this.#onAllListening?.();
      }
    }
  }

  #exited(slot: number, worker: Worker, code: number | null, signal: string | null): void {
    const pid = worker.process.pid;
    if (pid !== undefined) this.#monitor?.exited(pid);
    const state = this.#slots[slot] as Slot;
    if (state.worker !== worker) return;
    state.worker = undefined;
    state.listening = false;
    if (this.#shuttingDown) {
      this.#logger.info({ worker: slot, worker_pid: worker.process.pid, code, signal }, 'worker exited');
      if (this.#slots.every((s) => s.worker === undefined)) this.#onAllExited?.();
      return;
    }
    if (!this.#started) {
      // A worker that cannot start (the port is taken, ...) will not start on a retry either.
      this.#logger.fatal({ worker: slot, worker_pid: worker.process.pid, code, signal }, 'worker exited while starting');
      this.kill(); // closes the admin listener too
      this.#onStartFailed?.(new Error(`worker ${slot} exited while starting (code ${code}, signal ${signal})`));
      return;
    }
    const lived = Date.now() - state.startedAt;
    state.quickDeaths = lived >= STABLE_MS ? 0 : state.quickDeaths + 1;
    const delay = restartDelayMs(Math.max(0, state.quickDeaths - 1));
    this.#logger.warn({ worker: slot, worker_pid: worker.process.pid, code, signal, lived_ms: lived, restart_in_ms: delay }, 'worker died; restarting it');
    state.restartTimer = setTimeout(() => {
      if (this.#shuttingDown) return;
      this.restarts++;
      this.#fork(slot);
    }, delay);
  }

  async #drain(): Promise<void> {
    this.#shuttingDown = true;
    const live = this.#slots.filter((s) => s.worker !== undefined);
    for (const slot of this.#slots) {
      if (slot.restartTimer !== undefined) clearTimeout(slot.restartTimer);
      slot.restartTimer = undefined;
    }
    this.#logger.info({ workers: live.length }, 'shutting down: draining the workers');
    const allExited = new Promise<void>((resolve) => {
      this.#onAllExited = resolve;
      if (live.length === 0) resolve();
    });
    const shutdown: ShutdownMessage = { type: 'tollgate:shutdown' };
    for (const slot of live) {
      const worker = slot.worker as Worker;
      if (worker.isConnected()) worker.send(shutdown, undefined, undefined, (err) => err && worker.process.kill('SIGTERM'));
      else worker.process.kill('SIGTERM');
    }
    // The workers cut their own connections after shutdown_grace_ms; this is the backstop for a stuck one.
    const deadline = setTimeout(() => {
      this.#logger.warn('workers still running after the grace period: killing them');
      for (const slot of this.#slots) slot.worker?.process.kill('SIGKILL');
    }, this.#config.server.shutdown_grace_ms + 5_000);
    await allExited;
    clearTimeout(deadline);
    this.#store?.close();
    // The admin listener stayed up while the workers drained; open dashboards are cut, not waited for.
    this.#monitor?.close();
    await this.admin?.close();
    this.#logger.info('shutdown complete');
  }
}

function ignoreSendError(): void {
  // The worker is exiting; its pending requests end with it.
}

/**
 * A worker's life: wait for the primary's start message, build the proxy from the config it carries (with
 * this worker's share of max_connections and, for the memory store, buckets in the primary), listen, and
 * drain when the primary says so or on SIGTERM / SIGINT. Resolves with the exit status.
 */
export function runWorker(): Promise<number> {
  return new Promise<number>((resolve) => {
    const onStart = (message: unknown): void => {
      if (!isMessage<StartMessage>(message, 'tollgate:start')) return;
      process.off('message', onStart);
      startWorker(message).then(resolve, (err: unknown) => {
        process.stderr.write(`tollgate worker: ${(err as Error).stack ?? String(err)}\n`);
        resolve(1);
      });
    };
    process.on('message', onStart);
    const hello: HelloMessage = { type: 'tollgate:hello' };
    process.send?.(hello);
  });
}

/** A worker's answer to a snapshot request: its numbers, or the error (logged) that prevented them. */
export async function answerSnapshot(proxy: Pick<Proxy, 'metrics'>, request: SnapshotRequest, logger: Logger): Promise<SnapshotReply> {
  try {
    const snapshot = await proxy.metrics.snapshot({ stats: request.stats === true, process: request.process === true });
    return { type: 'tollgate:snapshot-reply', id: request.id, snapshot };
  } catch (err) {
    logger.error({ err }, 'cannot take a metrics snapshot for the primary');
    return { type: 'tollgate:snapshot-reply', id: request.id, error: (err as Error).message ?? String(err) };
  }
}

async function startWorker(start: StartMessage): Promise<number> {
  const { slot, workers } = start;
  const server = { ...start.config.server, max_connections: connectionShare(start.config.server.max_connections, workers, slot) };
  const config: Config = { ...start.config, server };
  const handle = createLogger(config.logging, { level: process.env.LOG_LEVEL, format: start.logFormat });
  const logger = handle.logger.child({ worker: slot });
  process.on('unhandledRejection', (reason) => logger.error({ err: reason }, 'unhandled rejection (a bug: please report it)'));
  process.on('uncaughtException', (err) => logger.error({ err }, 'uncaught exception (a bug: please report it)'));

  const rateLimit = config.middleware.rate_limit;
  const shared = rateLimit.enabled && rateLimit.store.type === 'memory' ? new IpcStore(process) : undefined;
  const proxy: Proxy = createProxy(config, { logger, clusterWorker: true, admin: false, ...(shared !== undefined ? { rateLimitStore: shared } : {}) });
  // The primary's admin listener asks for this worker's numbers; answering never throws.
  process.on('message', (message: unknown) => {
    if (!isMessage<SnapshotRequest>(message, 'tollgate:snapshot')) return;
    void answerSnapshot(proxy, message, logger).then((reply) => {
      try {
        process.send?.(reply, undefined, undefined, ignoreSendError);
      } catch (err) {
        logger.debug({ err }, 'cannot send the snapshot to the primary');
      }
    });
  });
  let address: AddressInfo;
  try {
    address = await proxy.listen();
  } catch (err) {
    logger.fatal({ err }, 'cannot listen');
    handle.flush();
    await proxy.close();
    return 1;
  }
  logger.debug({ port: address.port, max_connections: server.max_connections }, 'worker listening');
  const listening: ListeningMessage = { type: 'tollgate:listening', address };
  process.send?.(listening);

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (why: string): void => {
      if (stopping) return;
      stopping = true;
      logger.info({ reason: why }, 'worker draining');
      proxy.close().then(
        () => resolve(0),
        (err: unknown) => {
          logger.error({ err }, 'error during shutdown');
          resolve(1);
        },
      );
    };
    process.on('message', (message: unknown) => {
      if (isMessage<ShutdownMessage>(message, 'tollgate:shutdown')) stop('primary');
    });
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  }).then((code) => {
    handle.flush();
    return code;
  });
}
