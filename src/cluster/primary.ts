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
 * - on a reload (SIGHUP, or POST /api/reload on its admin listener) validates the file once, keeps it as
 *   the config for workers it forks from then on, and tells every worker to switch to it; a worker that
 *   fails to switch, or does not answer in time, is restarted (on the new config).
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
import { ConfigError } from '../config/errors.js';
import { MAX_TIMER_MS } from '../config/constants.js';
import type { Config } from '../config/schema.js';
import { applicableConfig, readConfigOffThread } from '../gateway/reload.js';
import { buildRoutePhases } from '../api/plugins.js';
import { answerTakes, PolicyStores } from '../limits/ipc-store.js';
import { ListenError, type ListenerName } from '../server/listen-error.js';
import { checkPortFree, REUSE_PORT } from '../server/proxy-server.js';
import { monotonicClock } from '../util/clock.js';
import {
  isMessage,
  isTakeRequest,
  type HelloMessage,
  type ListenFailedMessage,
  type ListeningMessage,
  type ReloadedMessage,
  type ReloadMessage,
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
  /** The configuration in force and the generation each worker runs. */
  config(): ClusterConfigStatus;
  /** Re-reads the config file and switches every worker (SIGHUP does the same). */
  reload(): Promise<ClusterReloadOutcome>;
  /** Reloads since start, by result. */
  reloads(): { ok: number; error: number };
  /** The config in force (the last good reload's, or the one it started with). */
  currentConfig(): Config;
}

/** What a cluster reload did, worker by worker. */
export interface ClusterReloadOutcome {
  result: 'ok' | 'error';
  generation: number;
  at: number;
  restart_needed: string[];
  errors: string[];
  /** Each worker's answer: `restarted` when it failed to switch or did not answer in time. */
  workers: { slot: number; pid: number | undefined; generation: number | null; result: 'ok' | 'restarted' }[];
}

export interface ClusterConfigStatus {
  generation: number;
  loaded_at: number;
  hash: string;
  last_reload: ClusterReloadOutcome | undefined;
  workers: { slot: number; generation: number | null }[];
}

/** How long the primary waits for a worker to answer a reload before restarting it. */
const RELOAD_ANSWER_MS = 10_000;

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
  /** The generation its config is, as far as the primary knows (null: it has not said yet). */
  generation: number | null;
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
  /** The file the config came from (what a reload re-reads) and the SHA-256 of its bytes. */
  configFile?: string;
  configHash?: string;
}

/** The cluster primary (see the file comment). `start()` forks; `shutdown()` drains. */
export class Primary {
  #config: Config;
  readonly #configFile: string | undefined;
  #generation = 1;
  #loadedAt = Date.now();
  #hash: string;
  #lastReload: ClusterReloadOutcome | undefined;
  readonly #reloadCounts = { ok: 0, error: 0 };
  #reloadQueue: Promise<unknown> = Promise.resolve();
  #nextReloadId = 1;
  /** Reload answers awaited, by id. */
  readonly #reloadWaits = new Map<number, (answer: ReloadedMessage | undefined) => void>();
  readonly #logger: Logger;
  readonly #workers: number;
  readonly #logFormat: 'json' | 'pretty' | undefined;
  readonly #slots: Slot[];
  /**
   * The buckets of every memory-store policy, made when a worker first takes under it: a reload may turn a
   * route's limit on, so the primary is always ready to answer.
   */
  readonly #buckets = new PolicyStores(monotonicClock);
  /** The instance's admin listener; undefined without `PrimaryOptions.admin`. */
  readonly #admin: PrimaryAdmin | undefined;
  #started = false;
  /** A worker could not listen before the instance started: the workers are being stopped. */
  #startFailed = false;
  #shuttingDown = false;
  #onStartFailed: ((err: Error) => void) | undefined;
  #onAllListening: (() => void) | undefined;
  #address: AddressInfo | undefined;
  /** Called once no worker is left (while shutting down). */
  #exitWaiters: (() => void)[] = [];
  #shutdown: Promise<void> | undefined;
  /** Workers restarted since start (tollgate_worker_restarts_total). */
  restarts = 0;

  constructor(options: PrimaryOptions) {
    this.#config = options.config;
    this.#configFile = options.configFile;
    this.#hash = options.configHash ?? '';
    this.#logger = options.logger;
    this.#workers = options.workers;
    this.#logFormat = options.logFormat;
    this.#slots = Array.from({ length: options.workers }, () => ({ worker: undefined, startedAt: 0, quickDeaths: 0, restartTimer: undefined, listening: false, generation: null }));
    cluster.setupPrimary({ exec: options.exec ?? (process.argv[1] as string), args: [], silent: false });
    const view: PrimaryView = {
      workers: () => this.#monitored(),
      restarts: () => this.restarts,
      draining: () => this.#shuttingDown,
      config: () => this.configStatus(),
      reload: () => this.reload(),
      reloads: () => ({ ...this.#reloadCounts }),
      currentConfig: () => this.#config,
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

  /**
   * Forks every worker; resolves once all listen. Rejects with a ListenError when a worker cannot bind the
   * port (the workers are stopped, nothing is logged: the caller says it), or with an Error when one
   * exits first for another reason.
   */
  async start(): Promise<AddressInfo> {
    await this.#checkPortsFree();
    return new Promise((resolve, reject) => {
      this.#onAllListening = () => resolve(this.#address as AddressInfo);
      this.#onStartFailed = reject;
      for (let slot = 0; slot < this.#workers; slot++) this.#fork(slot);
    });
  }

  /**
   * Workers that bind the port themselves (SO_REUSEPORT, see ownsListeningSocket) would share it with
   * another process of this user that bound it the same way, such as a second instance started by mistake,
   * instead of failing. So the primary binds each such port once without SO_REUSEPORT first (checkPortFree):
   * a port in use fails here with the usual listen error, and is released before the workers bind it.
   */
  async #checkPortsFree(): Promise<void> {
    const server = this.#config.server;
    if (!REUSE_PORT) return;
    const ports: [ListenerName, number][] = [['proxy', server.listen_port]];
    if (server.tls !== undefined && server.redirect_http !== undefined) ports.push(['redirect_http listener', server.redirect_http.port]);
    for (const [name, port] of ports) {
      if (port !== 0) await checkPortFree(name, server.listen_address, port);
    }
  }

  /** Graceful shutdown of every worker; resolves when all have exited. Safe to call more than once. */
  shutdown(): Promise<void> {
    this.#shutdown ??= this.#drain();
    return this.#shutdown;
  }

  configStatus(): ClusterConfigStatus {
    return {
      generation: this.#generation,
      loaded_at: this.#loadedAt,
      hash: this.#hash,
      last_reload: this.#lastReload,
      workers: this.#slots.map((s, slot) => ({ slot, generation: s.worker === undefined ? null : s.generation })),
    };
  }

  /**
   * Re-reads the config file, validates it once (as `--check`), and switches every worker to it. A bad
   * file changes nothing. Reloads run one after another.
   */
  reload(): Promise<ClusterReloadOutcome> {
    const run = this.#reloadQueue.then(() => this.#reload());
    this.#reloadQueue = run.catch(() => undefined);
    return run;
  }

  async #reload(): Promise<ClusterReloadOutcome> {
    const failed = (errors: string[]): ClusterReloadOutcome => {
      this.#reloadCounts.error++;
      this.#logger.error({ errors, config: this.#configFile }, 'config reload failed: the previous config keeps serving');
      this.#lastReload = { result: 'error', generation: this.#generation, at: Date.now(), restart_needed: [], errors, workers: [] };
      return this.#lastReload;
    };
    if (this.#configFile === undefined) return failed(['the primary was not started from a config file: nothing to re-read']);
    if (this.#shuttingDown) return failed(['shutting down']);
    let loaded;
    try {
      loaded = await readConfigOffThread(this.#configFile);
      // The workers load the plugins again; a plugin that cannot be loaded or built fails the reload here first.
      await buildRoutePhases(loaded.config, { logger: this.#logger, configFile: this.#configFile });
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      return failed(err.message.split('\n'));
    }
    const { config, restartNeeded } = applicableConfig(this.#config, loaded.config);
    this.#config = config;
    this.#generation++;
    this.#loadedAt = Date.now();
    this.#hash = loaded.hash;
    const generation = this.#generation;
    const workers = await Promise.all(
      this.#slots.map(async (state, slot) => {
        const worker = state.worker;
        if (worker === undefined || !state.listening) {
          // Not serving yet: it is sent this generation when it listens (see #message).
          return { slot, pid: worker?.process.pid, generation: state.generation, result: 'ok' as const };
        }
        const answer = await this.#sendReload(worker);
        if (answer !== undefined && answer.result === 'ok') {
          state.generation = answer.generation;
          return { slot, pid: worker.process.pid, generation: answer.generation, result: 'ok' as const };
        }
        this.#logger.error({ worker: slot, worker_pid: worker.process.pid, errors: answer?.errors ?? ['no answer in time'] }, 'worker failed to switch to the new config: restarting it');
        // One that answered drains as on shutdown; one that did not answer may be stuck, and is killed.
        worker.process.kill(answer === undefined ? 'SIGKILL' : 'SIGTERM');
        return { slot, pid: worker.process.pid, generation: null, result: 'restarted' as const };
      }),
    );
    this.#reloadCounts.ok++;
    this.#logger.info({ generation, restart_needed: restartNeeded, workers }, `config reloaded: generation ${generation} serving`);
    if (restartNeeded.length > 0) {
      this.#logger.warn({ restart_needed: restartNeeded }, `config reload: ${restartNeeded.join(', ')} changed and need a restart; their running values are kept`);
    }
    this.#lastReload = { result: 'ok', generation, at: Date.now(), restart_needed: restartNeeded, errors: [], workers };
    return this.#lastReload;
  }

  /** Sends the current config to a worker as a reload; resolves with its answer, or undefined (no answer). */
  #sendReload(worker: Worker): Promise<ReloadedMessage | undefined> {
    const id = this.#nextReloadId++;
    const message: ReloadMessage = { type: 'tollgate:reload', id, config: this.#config, hash: this.#hash, generation: this.#generation };
    return new Promise((resolve) => {
      const timer = setTimeout(() => done(undefined), RELOAD_ANSWER_MS);
      const done = (answer: ReloadedMessage | undefined): void => {
        clearTimeout(timer);
        this.#reloadWaits.delete(id);
        resolve(answer);
      };
      this.#reloadWaits.set(id, done);
      worker.once('exit', () => done(undefined));
      worker.send(message, undefined, undefined, (err) => {
        if (err !== null) done(undefined);
      });
    });
  }

  /**
   * Second signal: every worker still running closes its remaining connections now (SIGTERM, which a
   * draining worker takes as its second signal: its cut-off requests are logged); resolves once all have
   * exited.
   */
  stopNow(): Promise<void> {
    this.#shuttingDown = true;
    for (const slot of this.#slots) {
      if (slot.restartTimer !== undefined) clearTimeout(slot.restartTimer);
      slot.restartTimer = undefined;
      slot.worker?.process.kill('SIGTERM');
    }
    return this.#allExited();
  }

  /** Stops every worker at once (SIGKILL) and closes the admin listener. */
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
      worker.send(answerTakes(this.#buckets, message), undefined, undefined, ignoreSendError);
      return;
    }
    if (isMessage<SnapshotReply>(message, 'tollgate:snapshot-reply')) {
      const pid = worker.process.pid;
      if (pid !== undefined) this.#admin?.reply(pid, message);
      return;
    }
    if (isMessage<ReloadedMessage>(message, 'tollgate:reloaded')) {
      this.#reloadWaits.get(message.id)?.(message);
      return;
    }
    if (isMessage<HelloMessage>(message, 'tollgate:hello')) {
      const start: StartMessage = {
        type: 'tollgate:start',
        config: this.#config,
        slot,
        workers: this.#workers,
        logFormat: this.#logFormat,
        generation: this.#generation,
        hash: this.#hash,
      };
      (this.#slots[slot] as Slot).generation = this.#generation;
      worker.send(start, undefined, undefined, ignoreSendError);
      this.#logger.info({ worker: slot, worker_pid: worker.process.pid }, 'worker started');
      return;
    }
    if (isMessage<ListenFailedMessage>(message, 'tollgate:listen-failed')) {
      const err = new ListenError(message.listener, message.address, message.port, { code: message.errno, message: message.detail });
      if (this.#started) {
        // The port was bound once; a worker that cannot use it now is restarted like one that died.
        this.#logger.error({ worker: slot, worker_pid: worker.process.pid }, err.message);
        worker.process.kill('SIGKILL');
        return;
      }
      if (this.#startFailed) return;
      // One line for the instance (the CLI prints it): every worker would fail the same way.
      this.#startFailed = true;
      this.kill();
      this.#onStartFailed?.(err);
      return;
    }
    if (isMessage<ListeningMessage>(message, 'tollgate:listening')) {
      const state = this.#slots[slot] as Slot;
      state.listening = true;
      this.#address ??= message.address;
      if (state.generation !== this.#generation) {
        // A reload came while it was starting on the previous config: switch it now.
        void this.#sendReload(worker).then((answer) => {
          if (answer?.result === 'ok') state.generation = answer.generation;
          else if (state.worker === worker) worker.process.kill('SIGTERM');
        });
      }
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
    // Stopped because the port cannot be bound: that is all there is to say.
    if (this.#startFailed) return;
    if (this.#shuttingDown) {
      this.#logger.info({ worker: slot, worker_pid: worker.process.pid, code, signal }, 'worker exited');
      if (this.#slots.every((s) => s.worker === undefined)) for (const waiter of this.#exitWaiters.splice(0)) waiter();
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

  /** Resolves once no worker is running. */
  #allExited(): Promise<void> {
    if (this.#slots.every((s) => s.worker === undefined)) return Promise.resolve();
    return new Promise((resolve) => this.#exitWaiters.push(resolve));
  }

  async #drain(): Promise<void> {
    this.#shuttingDown = true;
    const live = this.#slots.filter((s) => s.worker !== undefined);
    for (const slot of this.#slots) {
      if (slot.restartTimer !== undefined) clearTimeout(slot.restartTimer);
      slot.restartTimer = undefined;
    }
    this.#logger.info({ workers: live.length }, 'shutting down: draining the workers');
    const allExited = this.#allExited();
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
    }, Math.min(this.#config.server.shutdown_grace_ms + 5_000, MAX_TIMER_MS));
    await allExited;
    clearTimeout(deadline);
    this.#buckets.close();
    // The admin listener stayed up while the workers drained; open dashboards are cut, not waited for.
    await this.#admin?.close();
    this.#logger.info('shutdown complete');
  }
}

function ignoreSendError(): void {
  // The worker is exiting; its pending requests end with it.
}
