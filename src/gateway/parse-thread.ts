/**
 * Reads and validates config files on a worker thread, at start and for reloads. The proxy itself never
 * loads the YAML parser, zod and the schema (about 4 MiB of heap for the life of the process), and a
 * large file (1,000 routes takes a few hundred milliseconds of CPU) does not hold up the requests in flight
 * during a reload. For each `{ id, file }` it is sent, the thread does `readConfig` (config/load.ts) and
 * answers with the validated config (structured clone) and its hash, or the problems of a bad file. How
 * long the thread lives is up to gateway/reload.ts.
 */
import { parentPort } from 'node:worker_threads';
import { ConfigError } from '../config/errors.js';
import { readConfig } from '../config/load.js';

/** What the thread answers to a request `id`. */
export type ParseReply = { id: number } & (
  | { ok: true; config: unknown; hash: string }
  | { ok: false; file: string; problems: ConfigError['problems'] }
  | { ok: false; file: string; failure: string }
);

parentPort?.on('message', ({ id, file }: { id: number; file: string }) => {
  let reply: ParseReply;
  try {
    const loaded = readConfig(file);
    reply = { id, ok: true, config: loaded.config, hash: loaded.hash };
  } catch (err) {
    reply = err instanceof ConfigError ? { id, ok: false, file, problems: err.problems } : { id, ok: false, file, failure: (err as Error).stack ?? String(err) };
  }
  parentPort?.postMessage(reply);
});
