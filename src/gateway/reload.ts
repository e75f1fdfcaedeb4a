/**
 * What a reload may change and what it may not. The listener (its certificates aside), the worker
 * processes, the admin listener, logging, metrics and tracing are built once per process; a reload that
 * changes their keys keeps the running values, reports the keys as "needs a restart", and applies
 * everything else. Reading and
 * validating the file is the same as `--check` (config/load.ts); this module only compares.
 */
import { Worker } from 'node:worker_threads';
import { ConfigError } from '../config/errors.js';
import type { LoadedFile } from '../config/load.js';
import type { Config } from '../config/schema.js';
import type { ParseReply } from './parse-thread.js';

/** Keys of `server` that the listener (node:http server) or the process layout was built from. */
const LISTENER_KEYS = [
  'workers',
  'listen_port',
  'listen_address',
  'listen_sockets',
  'max_connections',
  'keepalive_timeout_ms',
  'shutdown_grace_ms',
  'header_timeout_ms',
  'max_header_count',
  'max_header_bytes',
  'redirect_http',
  'http2',
  'h2c',
  'http2_limits',
] as const satisfies readonly (keyof Config['server'])[];

/** Top-level sections built once per process. */
const PROCESS_SECTIONS = ['admin', 'logging', 'metrics', 'tracing'] as const satisfies readonly (keyof Config)[];

/**
 * The config a reload puts in force: `next`, with the keys that need a restart kept at their running
 * values (from `running`), and those keys' paths.
 */
export function applicableConfig(running: Config, next: Config): { config: Config; restartNeeded: string[] } {
  const restartNeeded: string[] = [];
  const server = { ...next.server };
  for (const key of LISTENER_KEYS) {
    if (!sameValue(running.server[key], next.server[key])) {
      restartNeeded.push(`server.${key}`);
      (server as Record<string, unknown>)[key] = running.server[key];
    }
  }
  // Certificates, min_version and the client CA are re-read on every reload; whether the listener speaks
  // TLS at all, and whether it asks for client certificates, is fixed when it is created.
  const { tls: runningTls } = running.server;
  const nextTls = next.server.tls;
  if ((runningTls === undefined) !== (nextTls === undefined)) {
    restartNeeded.push('server.tls');
    server.tls = runningTls;
  } else if (runningTls !== undefined && nextTls !== undefined && (runningTls.client_ca_file === undefined) !== (nextTls.client_ca_file === undefined)) {
    restartNeeded.push('server.tls.client_ca_file');
    server.tls = { ...nextTls, client_ca_file: runningTls.client_ca_file, forward_client_cert: runningTls.forward_client_cert };
    if (runningTls.client_ca_file === undefined) delete server.tls.client_ca_file;
  }
  const config: Config = { ...next, server };
  for (const section of PROCESS_SECTIONS) {
    if (!sameValue(running[section], next[section])) {
      restartNeeded.push(section);
      (config as Record<string, unknown>)[section] = running[section];
    }
  }
  return { config, restartNeeded };
}

/**
 * What the thread runs: the compiled parse-thread.js beside this file. When the TypeScript sources run
 * directly (the tests, under tsx), the thread does not inherit tsx's loader, so it registers it first.
 */
const FROM_SOURCES = import.meta.url.endsWith('.ts');
const PARSE_THREAD = new URL(`./parse-thread${FROM_SOURCES ? '.ts' : '.js'}`, import.meta.url);
const PARSE_THREAD_START = FROM_SOURCES
  ? `import('tsx/esm/api').then((tsx) => { tsx.register(); return import(${JSON.stringify(PARSE_THREAD.href)}); })`
  : `import(${JSON.stringify(PARSE_THREAD.href)})`;

/**
 * How long a thread is kept after its last answer, for the next reload: a fresh one loads the config
 * modules again (about 250 ms of CPU), where reading a small file with them loaded takes 3 ms. An idle
 * thread costs memory, a V8 heap of its own with those modules in it, so it does not stay for good.
 */
const PARSE_THREAD_IDLE_MS = 30_000;

/**
 * `readConfig` (config/load.ts) on a worker thread (parse-thread.ts): see there for why. Rejects with the
 * same ConfigError. The thread is started by the first call and ends PARSE_THREAD_IDLE_MS after its last
 * answer, or at `stopParseThread()`; it never keeps the process alive while idle. One that fails is
 * replaced on the next call.
 */
export function readConfigOffThread(file: string): Promise<LoadedFile> {
  parseThread ??= new ParseThread();
  return parseThread.load(file);
}

/** Ends the thread now (once the config read at start is in hand); the next read starts a new one. */
export function stopParseThread(): void {
  parseThread?.stop();
}

let parseThread: ParseThread | undefined;

class ParseThread {
  readonly #worker = new Worker(PARSE_THREAD_START, { eval: true });
  readonly #pending = new Map<number, { resolve: (loaded: LoadedFile) => void; reject: (err: Error) => void }>();
  #nextId = 1;
  #idle: NodeJS.Timeout | undefined;

  constructor() {
    this.#worker.on('message', (reply: ParseReply) => {
      const waiting = this.#pending.get(reply.id);
      if (waiting === undefined) return;
      this.#pending.delete(reply.id);
      if (this.#pending.size === 0) {
        this.#worker.unref();
        this.#idle = setTimeout(() => this.stop(), PARSE_THREAD_IDLE_MS).unref();
      }
      if (reply.ok) waiting.resolve({ config: reply.config as Config, hash: reply.hash });
      else if ('problems' in reply) waiting.reject(new ConfigError(reply.file, reply.problems));
      else waiting.reject(new Error(`reading the config on a worker thread failed: ${reply.failure}`));
    });
    const fail = (err: Error): void => {
      this.#forget();
      for (const waiting of this.#pending.values()) waiting.reject(err);
      this.#pending.clear();
    };
    this.#worker.on('error', fail);
    this.#worker.on('exit', (code) => fail(new Error(`the config reading thread exited (code ${code})`)));
    // Idle, the thread does not keep the process alive (set after the listeners: adding a 'message'
    // listener refs its port again); while a file is being read, it does.
    this.#worker.unref();
  }

  load(file: string): Promise<LoadedFile> {
    clearTimeout(this.#idle);
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#worker.ref();
      this.#worker.postMessage({ id, file });
    });
  }

  /** Ends the thread; a read still in progress is rejected (its 'exit'). */
  stop(): void {
    this.#forget();
    void this.#worker.terminate();
  }

  #forget(): void {
    clearTimeout(this.#idle);
    if (parseThread === this) parseThread = undefined;
  }
}

function sameValue(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}
