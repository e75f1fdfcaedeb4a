/**
 * Reads and validates config files on a worker thread, for reloads: YAML parsing and validation of a large
 * file (1,000 routes) take a few hundred milliseconds of CPU, which on the main thread would hold up every
 * request in flight. For each `{ id, file }` it is sent, the thread does what `loadForReload` does and
 * answers with the validated config (structured clone) and its hash, or the problems of a bad file. It
 * lives as long as the process: a fresh thread for each reload would load the config modules again, about
 * 250 ms of CPU, where reading a small file with them loaded takes 3 ms.
 */
import { parentPort } from 'node:worker_threads';
import { ConfigError } from '../config/load.js';
import { loadForReload } from './reload.js';

/** What the thread answers to a request `id`. */
export type ParseReply = { id: number } & (
  | { ok: true; config: unknown; hash: string }
  | { ok: false; file: string; problems: ConfigError['problems'] }
  | { ok: false; file: string; failure: string }
);

parentPort?.on('message', ({ id, file }: { id: number; file: string }) => {
  let reply: ParseReply;
  try {
    const loaded = loadForReload(file);
    reply = { id, ok: true, config: loaded.config, hash: loaded.hash };
  } catch (err) {
    reply = err instanceof ConfigError ? { id, ok: false, file, problems: err.problems } : { id, ok: false, file, failure: (err as Error).stack ?? String(err) };
  }
  parentPort?.postMessage(reply);
});
