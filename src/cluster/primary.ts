/**
 * Cluster mode (`server.workers` > 1 or `auto`): a primary process forks the workers, which all listen on
 * the same port (Node's cluster module: the primary accepts connections and hands them to the workers in
 * turn). The primary serves no HTTP itself. It
 *
 * - holds the instance's rate-limit buckets (one MemoryStore per rate-limit policy, made on first use, so
 *   each route keeps its own rate and burst) and answers the workers' batched takes over IPC, so a client's
 *   budget is the configured one for the whole instance, not one per worker;
 * - restarts a worker that dies, after a delay that doubles with each quick death (100 ms up to 10 s);
 * - on SIGTERM / SIGINT tells every worker to drain (the same graceful shutdown as a single process) and
 *   exits once they have all exited.
 *
 * - runs the instance's one admin listener, when it is given one (`PrimaryOptions.admin`; the composition
 *   root builds it, with admin/cluster-admin.ts): the primary passes it the workers' snapshot replies and
 *   exits and lets it see the workers through a `PrimaryView`; it knows nothing else of the admin UI.
 *   Workers run none. On shutdown the listener stays up while the workers drain, then closes.
 *
 * `max_connections` is split between the workers (`connectionShare`), so the whole instance never holds
 * more; docs/deployment.md explains the trade-off. The messages are declared in cluster/messages.ts; the
 * worker's side is cluster/worker.ts.
 */
import cluster, { type Worker } from 'node:cluster';
import type { AddressInfo } from 'node:net';
import { availableParallelism } from 'node:os';
import type { Logger } from 'pino';
import { routesOf } from '../config/resolve.js';
import type { Config } from '../config/schema.js';
import { answerTakes, PolicyStores } from '../limits/ipc-store.js';
import { monotonicClock } from '../util/clock.js';
import {
  isMessage,
  isTakeRequest,
  type HelloMessage,
  type ListeningMessage,
  type ShutdownMessage,
  type SnapshotReply,
  type SnapshotRequest,
  type StartMessage,
} from './messages.js';

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

/** A worker as the admin side sees it: where it is and how to ask it. */
export interface MonitoredWorker {
  slot: number;
  pid: number;
  /** Epoch milliseconds when it was forked. */
  startedAt: number;
  /** Listening (it answers snapshot requests from then on); workers still starting are not asked. */
  ready: boolean;
  /** Sends it a request; `callback` gets the error when the message cannot be sent. */
  send(message: SnapshotRequest, callback: (err: Error | null) => void): void;
}

/** What the primary shows of itself to its admin listener; read on each scrape or status document. */
export interface PrimaryView {
  /** The workers running now (any state). */
  workers(): MonitoredWorker[];
  /** Workers restarted since start. */
  restarts(): number;
  /** Shutting down (draining the workers). */
  draining(): boolean;
}

/** The instance's admin listener, as the primary drives it. */
export interface PrimaryAdmin {
  /** Starts listening and logs where; rejects with the listen error. */
  listen(): Promise<AddressInfo>;
  /** A worker's `tollgate:snapshot-reply`, with the sender's pid. */
  reply(pid: number, message: SnapshotReply): void;
  /** A worker exited (its pending requests get no answer). */
  exited(pid: number): void;
  /** Answers the requests still waiting (with nothing), at once, then closes the listener. */
  close(): Promise<void>;
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
  /** Builds the admin listener (called once, by the constructor); none when undefined. */
  admin?: ((view: PrimaryView) => PrimaryAdmin) | undefined;
}

/** The cluster primary (see the file comment). `start()` forks; `shutdown()` drains. */
export class Primary {
  readonly #config: Config;
  readonly #logger: Logger;
  readonly #workers: number;
  readonly #logFormat: 'json' | 'pretty' | undefined;
  readonly #slots: Slot[];
  /** The buckets of every memory-store policy; undefined when no route limits with the memory store. */
  readonly #buckets: PolicyStores | undefined;
  /** The instance's admin listener; undefined without `PrimaryOptions.admin`. */
  readonly #admin: PrimaryAdmin | undefined;
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
    // Any route's limit, not only the top-level one: a route may turn rate limiting on for itself.
    const memoryLimited = routesOf(options.config).some((r) => r.rateLimit.enabled && r.rateLimit.store.type === 'memory');
    if (memoryLimited) this.#buckets = new PolicyStores(monotonicClock);
    cluster.setupPrimary({ exec: options.exec ?? (process.argv[1] as string), args: [], silent: false });
    const view: PrimaryView = {
      workers: () => this.#monitored(),
      restarts: () => this.restarts,
      draining: () => this.#shuttingDown,
    };
    this.#admin = options.admin?.(view);
  }

  /** The pids of the running workers, by slot. */
  get workerPids(): (number | undefined)[] {
    return this.#slots.map((s) => s.worker?.process.pid);
  }

  /**
   * Starts the admin listener, if there is one (before `start()`, so a taken admin port stops the instance
   * before any worker is forked); rejects with the listen error.
   */
  async listenAdmin(): Promise<AddressInfo | undefined> {
    return this.#admin?.listen();
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
    void this.#admin?.close();
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

  /** The running workers, for the admin listener (it asks the ready ones). */
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
      if (this.#buckets === undefined) return;
      worker.send(answerTakes(this.#buckets, message), undefined, undefined, ignoreSendError);
      return;
    }
    if (isMessage<SnapshotReply>(message, 'tollgate:snapshot-reply')) {
      const pid = worker.process.pid;
      if (pid !== undefined) this.#admin?.reply(pid, message);
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
    if (pid !== undefined) this.#admin?.exited(pid);
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
    this.#buckets?.close();
    // The admin listener stayed up while the workers drained; open dashboards are cut, not waited for.
    await this.#admin?.close();
    this.#logger.info('shutdown complete');
  }
}

function ignoreSendError(): void {
  // The worker is exiting; its pending requests end with it.
}
