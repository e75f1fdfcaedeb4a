/**
 * A cluster worker (cluster/primary.ts forks it): gets its config from the primary, serves the proxy on the
 * shared port with its share of max_connections, answers the primary's snapshot requests, and drains when
 * told to.
 */
import type { AddressInfo } from 'node:net';
import { constants } from 'node:os';
import type { Logger } from 'pino';
import { buildRoutePhases } from '../api/plugins.js';
import { createProxy, type Proxy } from '../app.js';
import type { RoutePhases } from '../gateway/generation.js';
import type { Config, RateLimitConfig } from '../config/schema.js';
import { IpcStore } from '../limits/ipc-store.js';
import type { RateLimitStore, SharedStore, StoreErrorListener } from '../limits/store.js';
import { createLogger, exitOnFatalErrors } from '../observability/logger.js';
import { ListenError } from '../server/listen-error.js';
import {
  isMessage,
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
import { connectionShare } from './primary.js';

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

/**
 * The instance's config as this worker runs it: with its share of max_connections, and of the WebSocket
 * caps (at least one each, so every worker can take a WebSocket on every route that allows them).
 */
function workerConfig(config: Config, workers: number, slot: number): Config {
  const share = (max: number): number => Math.max(1, connectionShare(max, workers, slot));
  const routes = config.routes?.map((route) =>
    typeof route.websocket === 'object' && route.websocket.max_connections !== undefined
      ? { ...route, websocket: { ...route.websocket, max_connections: share(route.websocket.max_connections) } }
      : route,
  );
  return {
    ...config,
    server: { ...config.server, max_connections: connectionShare(config.server.max_connections, workers, slot) },
    websocket: { ...config.websocket, max_connections: share(config.websocket.max_connections) },
    ...(routes === undefined ? {} : { routes }),
  };
}

/** A worker's answer to a reload: the outcome of putting the primary's config in force. */
export async function answerReload(proxy: Pick<Proxy, 'reload'>, message: ReloadMessage, workers: number, slot: number): Promise<ReloadedMessage> {
  try {
    const outcome = await proxy.reload(workerConfig(message.config, workers, slot), message.hash, message.generation);
    return { type: 'tollgate:reloaded', id: message.id, result: outcome.result, generation: outcome.generation, errors: outcome.errors };
  } catch (err) {
    return { type: 'tollgate:reloaded', id: message.id, result: 'error', generation: 0, errors: [(err as Error).message ?? String(err)] };
  }
}

async function startWorker(start: StartMessage): Promise<number> {
  const { slot, workers } = start;
  const config = workerConfig(start.config, workers, slot);
  const server = config.server;
  const handle = createLogger(config.logging, { level: process.env.LOG_LEVEL, format: start.logFormat, bindings: { worker: slot } });
  const logger = handle.logger;
  // A worker that fails this way exits and the primary forks a clean one in its slot.
  const flushing: { all: (timeoutMs?: number) => Promise<void> } = { all: handle.flush };
  exitOnFatalErrors(logger, () => flushing.all());

  // Memory-store limits (each route's policy) take from the primary's buckets; Redis ones go to Redis.
  let shared: IpcStore | undefined;
  const rateLimitStoreFor = (rateLimit: RateLimitConfig, countErrors: (store: SharedStore) => StoreErrorListener): RateLimitStore | undefined => {
    if (rateLimit.store.type !== 'memory') return undefined;
    shared ??= new IpcStore(process, { logger, onErrors: countErrors('ipc') });
    return shared.view(rateLimit, rateLimit.store.timeout_ms);
  };
  // Plugins are loaded here, in the process that serves (the primary checked them; their paths are absolute).
  const build = (next: Config): Promise<RoutePhases> => buildRoutePhases(next, { logger });
  const routePhases = { initial: await build(config), build };
  const proxy: Proxy = createProxy(config, { logger, directLog: handle.direct, clusterWorker: true, admin: false, generation: start.generation, configHash: start.hash, rateLimitStoreFor, routePhases });
  flushing.all = (timeoutMs) => {
    proxy.flushLogs();
    return handle.flush(timeoutMs);
  };
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
  // Reloads come from the primary, which validated the file once for every worker.
  process.on('message', (message: unknown) => {
    if (!isMessage<ReloadMessage>(message, 'tollgate:reload')) return;
    void answerReload(proxy, message, workers, slot).then((reply) => {
      if (reply.result === 'error') logger.error({ errors: reply.errors }, 'worker: reload failed');
      try {
        process.send?.(reply, undefined, undefined, ignoreSendError);
      } catch (err) {
        logger.debug({ err }, 'cannot send the reload answer to the primary');
      }
    });
  });
  // A hangup reaches every process of the group; only the primary reloads (and tells the workers).
  process.on('SIGHUP', () => logger.debug('SIGHUP ignored by a worker: the primary reloads'));
  let address: AddressInfo;
  try {
    address = await proxy.listen();
  } catch (err) {
    if (err instanceof ListenError) {
      // The primary says it, once for the instance, and stops every worker: none would bind this port.
      const failed: ListenFailedMessage = {
        type: 'tollgate:listen-failed',
        listener: err.listener,
        address: err.address,
        port: err.port,
        errno: err.errno,
        detail: err.cause instanceof Error ? err.cause.message : String(err.cause),
      };
      process.send?.(failed, undefined, undefined, ignoreSendError);
      // The primary kills this process once it has the message; exiting first could overtake the message.
      await primaryGone(LISTEN_FAILED_WAIT_MS);
      return 1;
    }
    logger.fatal({ err }, 'cannot listen');
    await proxy.close();
    await flushing.all();
    return 1;
  }
  logger.debug({ port: address.port, max_connections: server.max_connections }, 'worker listening');
  const listening: ListeningMessage = { type: 'tollgate:listening', address };
  process.send?.(listening);

  return new Promise<number>((resolve) => {
    let stopping = false;
    let code = 0;
    const stop = (why: string): void => {
      if (stopping) return;
      stopping = true;
      logger.info({ reason: why }, 'worker draining');
      proxy.close().then(
        () => resolve(code),
        (err: unknown) => {
          logger.error({ err }, 'error during shutdown');
          resolve(1);
        },
      );
    };
    // A signal while draining (a second one, or the primary's after its second): close what is still open
    // now, so the requests on it are logged as cut off, and exit as the CLI does (128 + the signal number).
    const onSignal = (signal: NodeJS.Signals): void => {
      if (!stopping) return stop(signal);
      code = 128 + (constants.signals[signal] ?? 0);
      logger.warn({ signal, exit_code: code }, 'worker: second signal: closing the remaining connections now');
      void proxy.closeNow();
    };
    process.on('message', (message: unknown) => {
      if (isMessage<ShutdownMessage>(message, 'tollgate:shutdown')) stop('primary');
    });
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  }).then(async (code) => {
    shared?.close();
    await flushing.all();
    return code;
  });
}

/** How long a worker that cannot listen waits for the primary to stop it before exiting by itself. */
const LISTEN_FAILED_WAIT_MS = 5_000;

/** Resolves when the IPC channel to the primary closes, or after `ms`. */
function primaryGone(ms: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    process.once('disconnect', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

function ignoreSendError(): void {
  // The primary is gone (the worker is exiting); the reply would have no reader.
}
