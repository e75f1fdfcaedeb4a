/**
 * What a reload may change and what it may not. The listener (its certificates aside), the worker
 * processes, the admin listener, logging, metrics and tracing are built once per process; a reload that
 * changes their keys keeps the running values, reports the keys as "needs a restart", and applies
 * everything else. Reading and
 * validating the file is the same as `--check` (config/load.ts); this module only compares.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { ConfigError, parseConfig } from '../config/load.js';
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

/** A config file read and validated for a reload, with the SHA-256 of its bytes. */
export interface LoadedFile {
  config: Config;
  hash: string;
}

/**
 * Reads and validates `file` as `--check` does. Throws ConfigError (file:line:col and the key path per
 * problem) for a bad config, and for a file that cannot be read.
 */
export function loadForReload(file: string): LoadedFile {
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : (err as Error).message;
    throw new ConfigError(file, [{ line: 1, col: 1, path: '(root)', message: `cannot read config: ${reason}` }]);
  }
  const config = parseConfig(bytes.toString('utf8'), file);
  return { config, hash: sha256(bytes) };
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
 * `loadForReload` on a worker thread (parse-thread.ts), so that parsing a large file does not stall the
 * requests in flight. Rejects with the same ConfigError. The thread is started on the first call and kept
 * (idle, it does not keep the process alive); one that fails is replaced on the next call.
 */
export function loadForReloadOffThread(file: string): Promise<LoadedFile> {
  parseThread ??= new ParseThread();
  return parseThread.load(file);
}

let parseThread: ParseThread | undefined;

class ParseThread {
  readonly #worker = new Worker(PARSE_THREAD_START, { eval: true });
  readonly #pending = new Map<number, { resolve: (loaded: LoadedFile) => void; reject: (err: Error) => void }>();
  #nextId = 1;

  constructor() {
    this.#worker.on('message', (reply: ParseReply) => {
      const waiting = this.#pending.get(reply.id);
      if (waiting === undefined) return;
      this.#pending.delete(reply.id);
      if (this.#pending.size === 0) this.#worker.unref();
      if (reply.ok) waiting.resolve({ config: reply.config as Config, hash: reply.hash });
      else if ('problems' in reply) waiting.reject(new ConfigError(reply.file, reply.problems));
      else waiting.reject(new Error(`reading the config on a worker thread failed: ${reply.failure}`));
    });
    const fail = (err: Error): void => {
      if (parseThread === this) parseThread = undefined;
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
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#worker.ref();
      this.#worker.postMessage({ id, file });
    });
  }
}

export function sha256(bytes: Buffer | string): string {
  return createHash('sha256').update(bytes).digest('hex');
}

function sameValue(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}
