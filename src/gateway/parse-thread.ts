/**
 * Reads and validates a config file on a worker thread, for a reload: YAML parsing and validation of a
 * large file (1,000 routes) take a few hundred milliseconds of CPU, which on the main thread would hold up
 * every request in flight. The thread does what `loadForReload` does and sends back the validated config
 * (structured clone) and its hash, or the problems of a bad file; the main thread only builds the
 * generation.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { ConfigError } from '../config/load.js';
import { loadForReload } from './reload.js';

/** What the thread sends back. */
export type ParseReply =
  | { ok: true; config: unknown; hash: string }
  | { ok: false; file: string; problems: ConfigError['problems'] }
  | { ok: false; file: string; failure: string };

const { file } = workerData as { file: string };
let reply: ParseReply;
try {
  const loaded = loadForReload(file);
  reply = { ok: true, config: loaded.config, hash: loaded.hash };
} catch (err) {
  reply = err instanceof ConfigError ? { ok: false, file, problems: err.problems } : { ok: false, file, failure: (err as Error).stack ?? String(err) };
}
parentPort?.postMessage(reply);
