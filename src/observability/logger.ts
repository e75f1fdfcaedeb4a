import { constants, fstatSync, openSync, statSync, write as writeFile } from 'node:fs';
import { createRequire } from 'node:module';
import { pino, type DestinationStream, type Logger } from 'pino';
import type PinoPretty from 'pino-pretty';
import type { LoggingConfig, LogLevel } from '../config/schema.js';
import { requestIdOf } from '../proxy/errors.js';
import { ThrottledLog } from '../util/throttled-log.js';

/**
 * pino-pretty, loaded only for `format: pretty` (its 40 files are not worth the memory of every JSON-logging
 * process); it is CommonJS, so it loads synchronously.
 */
function prettyStream(): typeof PinoPretty {
  return createRequire(import.meta.url)('pino-pretty') as typeof PinoPretty;
}

export interface LoggerHandle {
  logger: Logger;
  /**
   * Writes out every line logged so far. Resolves once they are written, at once when the destination has
   * failed (its lines are dropped: a reader that has gone, a full disk), or after `timeoutMs` (default 2 s)
   * of waiting for a reader that does not read; never rejects. Call before the process exits, then exit.
   */
  flush(timeoutMs?: number): Promise<void>;
  /** The same logger's lines without pino's per-call work, for the access log (see DirectLog). */
  direct: DirectLog;
}

/**
 * What pino puts around a line's own fields, for a logger made by `createLogger`, and that logger's
 * destination: the access log writes its lines from these parts (access-log.ts says why). Built from the
 * options `createLogger` gives pino, through pino's public API only; the access log checks at start that a
 * line built from them is the line pino writes, and logs through pino otherwise.
 */
export interface DirectLog {
  /** `{"level":30`: the start of a line at `info`. */
  readonly info: string;
  /** `{"level":40`. */
  readonly warn: string;
  /** `,"time":…`, now (the logger's own time function). */
  time(): string;
  /** `,"pid":…` and the other bindings, as pino writes them. */
  readonly bindings: string;
  /** Hands finished lines (each ending in a newline) to the logger's destination. */
  write(lines: string): void;
  /**
   * A logger made with the same options (but every level enabled) and its DirectLog, both writing to `sink`,
   * with the time fixed (the access log's start-time check).
   */
  twin(sink: (line: string) => void): { logger: Logger; direct: DirectLog };
}

export interface LoggerOverrides {
  /** LOG_LEVEL from the environment wins over the file. */
  level?: string | undefined;
  /** --log-format from the command line wins over the file. */
  format?: 'json' | 'pretty' | undefined;
  /** A stream to write to instead of stdout or the file (tests). */
  stream?: DestinationStream | undefined;
  /** Fields every line carries after `pid` (a cluster worker's slot). */
  bindings?: Record<string, string | number> | undefined;
}

const LEVELS: readonly string[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/** How long `flush` waits by default for a log reader that takes no lines. */
export const LOG_FLUSH_MS = 2_000;

/** A `LOG_LEVEL` value (any case), or `fallback` when there is none; the CLI refuses an unknown one first. */
export function levelFrom(value: string | undefined, fallback: LogLevel): LogLevel {
  const v = value?.trim().toLowerCase();
  return v !== undefined && LEVELS.includes(v) ? (v as LogLevel) : fallback;
}

/**
 * The process logger: JSON lines by default (pino), or human-readable with `pretty`; to stdout or to
 * `logging.file`. To a regular file (`logging.file`, or stdout redirected to one) lines are written
 * synchronously, as nginx writes its access log: a file write never waits for a reader, and one write(2) on
 * the event loop costs less than handing each batch to libuv's thread pool and back. To anything else (a
 * pipe, a terminal) writes are asynchronous (sonic-boom): a stalled reader (a paused pager, a full pipe)
 * must not stop the event loop; lines written while a write is under way are joined into the next one.
 * Whatever the destination does (a reader that has gone, one that stopped reading, a full disk), `flush`
 * returns within its bound and the process can exit.
 */
export function createLogger(config: LoggingConfig, overrides: LoggerOverrides = {}): LoggerHandle {
  const level = levelFrom(overrides.level, config.level);
  const format = overrides.format ?? config.format;
  if (overrides.stream !== undefined) {
    const { logger, direct } = made(level, null, overrides.bindings, overrides.stream, epochTime);
    return {
      logger,
      direct,
      flush: async () => {
        logger.flush();
      },
    };
  }
  ignoreBrokenStdio();
  const regular = toRegularFile(config.file);
  const health: DestinationHealth = { failing: false, lastEagain: -Infinity, stuck: false };
  const destination = pino.destination({
    dest: regular ? (config.file ?? 1) : nonBlocking(config.file),
    sync: regular,
    mkdir: true,
    // While writes fail (a full disk) or wait (a full pipe), lines beyond 16 MiB waiting are dropped.
    maxLength: 16 * 1024 * 1024,
    // sonic-boom calls this for each write that found the reader's side full; it retries 100 ms later.
    retryEAGAIN: () => {
      health.lastEagain = Date.now();
      return true;
    },
  });
  survive(destination, health);
  process.on('exit', () => {
    if (health.stuck) endNow();
  });
  const stream =
    format === 'pretty'
      ? prettyStream()({ destination, colorize: config.file === undefined && process.stdout.isTTY, sync: false, translateTime: 'SYS:HH:MM:ss.l', hideObject: true, messageFormat: oneLine })
      : destination;
  // `time` is epoch milliseconds, pino's default: the ISO formatter cost 2% of throughput in the profile.
  const { logger, direct } = made(level, { pid: process.pid }, overrides.bindings, stream, epochTime);
  return { logger, direct, flush: (timeoutMs = LOG_FLUSH_MS) => writeOut(destination, health, timeoutMs) };
}

let epochMs = -1;
let epochText = '';

/**
 * pino's default time field (`stdTimeFunctions.epochTime`: `,"time":` and epoch milliseconds), made once per
 * millisecond instead of once per line: an epoch-millisecond number is too large for V8's small-integer
 * fast path, so each conversion to text took V8's general double formatting, and a busy proxy writes
 * several lines in the same millisecond.
 */
export function epochTime(): string {
  const now = Date.now();
  if (now !== epochMs) {
    epochMs = now;
    epochText = `,"time":${now}`;
  }
  return epochText;
}

type Destination = ReturnType<typeof pino.destination>;

interface DestinationHealth {
  /** The last write failed (its lines are dropped). */
  failing: boolean;
  /** Date.now() of the last write that found the reader's side full (EAGAIN). */
  lastEagain: number;
  /** `flush` gave up while a write had not returned: the process must not wait for it to exit. */
  stuck: boolean;
}

/**
 * A file descriptor for a destination that is not a regular file, in non-blocking mode. A blocking write to
 * a pipe whose reader has stopped reading never returns: it holds a libuv pool thread, and a process with a
 * busy pool thread cannot exit (process.exit waits for the pool; tried on Node 20: the process stayed until
 * the reader went away). Non-blocking, such a write fails with EAGAIN, which sonic-boom retries every
 * 100 ms, and `flush` can stop waiting for it. Cluster mode undoes this: fd 1 is shared with the workers,
 * and forking a worker (libuv) and a worker's exit (Node restores its stdio flags) make it blocking again;
 * `flush` notices a write that does not return, and the process then ends itself (see endNow).
 */
function nonBlocking(file: string | undefined): number | string {
  if (file === undefined) {
    // Node's stdout stream for a pipe or a socket puts fd 1 in non-blocking mode when it is created (libuv's
    // uv_pipe_open); from JavaScript there is no other way to do that. (For a terminal, Node keeps writes
    // blocking: a terminal takes them at once unless it is paused with Ctrl-S.)
    return process.stdout.fd;
  }
  try {
    return openSync(file, constants.O_WRONLY | constants.O_APPEND | constants.O_NONBLOCK);
  } catch {
    // A FIFO without a reader yet (ENXIO): sonic-boom opens it the usual way, waiting for one.
    return file;
  }
}

/** Nothing is written to stdout or stderr that is worth crashing for when their reader has gone (EPIPE). */
function ignoreBrokenStdio(): void {
  for (const stream of [process.stdout, process.stderr]) {
    if (!stream.listeners('error').includes(ignoreStdioError)) stream.on('error', ignoreStdioError);
  }
}

function ignoreStdioError(): void {
  // The reader has gone: there is nobody to tell.
}

/**
 * Waits until every line logged so far is written, the destination fails, or `timeoutMs` passes. Only
 * sonic-boom's public API: `write('')` makes it emit 'drain' once everything before it is written; lines
 * in a pretty stream (or an access-log batch) reach the destination in later turns, so this goes round
 * until a round writes nothing new. Never sonic-boom's flushSync: in 4.2 it retries a failing write
 * forever (EPIPE included), sleeping 100 ms between tries, with the event loop and signals blocked.
 */
async function writeOut(destination: Destination, health: DestinationHealth, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let written = 0;
  const count = (n: number): void => {
    written += n;
  };
  destination.on('write', count);
  try {
    for (;;) {
      const before = written;
      await new Promise((resolve) => setImmediate(resolve));
      if (health.failing) return;
      const outcome = await drained(destination, deadline - Date.now());
      if (outcome === 'timeout') {
        // A write that keeps finding the pipe full returns EAGAIN every 100 ms; none for longer means a write
        // is blocked in the kernel, which process.exit would wait for.
        health.stuck = Date.now() - health.lastEagain > 300;
        const text = `tollgate: the log's reader did not take the last lines within ${timeoutMs} ms; exiting without them${health.stuck ? ' (a write to it is blocked: ending with SIGTERM)' : ''}\n`;
        // When stuck, stderr may be as blocked as stdout (2>&1): written from the pool, not the event loop.
        if (health.stuck) writeFile(2, text, ignoreError);
        else process.stderr.write(text);
        return;
      }
      if (outcome === 'failed' || written === before) return;
    }
  } finally {
    destination.off('write', count);
  }
}

/** Resolves when the destination has written everything handed to it, has failed, or after `ms`. */
function drained(destination: Destination, ms: number): Promise<'drained' | 'failed' | 'timeout'> {
  return new Promise((resolve) => {
    const finish = (outcome: 'drained' | 'failed' | 'timeout'): void => {
      clearTimeout(timer);
      destination.off('drain', onDrain);
      destination.off('error', onError);
      resolve(outcome);
    };
    const onDrain = (): void => finish('drained');
    const onError = (): void => finish('failed');
    const timer = setTimeout(finish, Math.max(ms, 0), 'timeout');
    destination.on('drain', onDrain);
    destination.on('error', onError);
    try {
      destination.write('');
    } catch {
      finish('failed'); // destroyed
    }
  });
}

/**
 * The pretty format's text after the time, level and pid: the message, then the entry's other fields as one
 * line of JSON, so every entry is one line (pino-pretty's own layout puts each field, and an error's stack,
 * on lines of their own: 13 lines per completion line).
 */
export function oneLine(log: Record<string, unknown>, messageKey: string): string {
  const { [messageKey]: message, level: _level, time: _time, pid: _pid, hostname: _hostname, ...fields } = log;
  const text = typeof message === 'string' ? message.replace(/\r?\n/g, ' ') : '';
  const rest = JSON.stringify(fields);
  return rest === '{}' ? text : `${text} ${rest}`;
}

/** A pino logger and its DirectLog, from the same options. */
function made(
  level: LogLevel,
  base: Record<string, number> | null,
  bindings: Record<string, string | number> | undefined,
  stream: DestinationStream,
  time: () => string,
): { logger: Logger; direct: DirectLog } {
  const root = pino({ level, base, timestamp: time }, stream);
  const logger = bindings === undefined ? root : root.child(bindings);
  let fixed = '';
  for (const [key, value] of Object.entries({ ...base, ...bindings })) fixed += `,${JSON.stringify(key)}:${JSON.stringify(value)}`;
  const direct: DirectLog = {
    info: `{"level":${logger.levels.values.info}`,
    warn: `{"level":${logger.levels.values.warn}`,
    time,
    bindings: fixed,
    write(lines) {
      stream.write(lines);
    },
    // At the lowest level, so every probe line is written whatever this logger's level is.
    twin: (sink) => made('trace', base, bindings, { write: sink }, () => ',"time":0'),
  };
  return { logger, direct };
}

/**
 * Whether log lines go to a regular file: `logging.file` (unless it names a pipe or a device, such as
 * /dev/stdout), or stdout redirected to a file.
 */
export function toRegularFile(file: string | undefined): boolean {
  try {
    if (file === undefined) return fstatSync(1).isFile();
    return statSync(file, { throwIfNoEntry: false })?.isFile() ?? true; // a new file is created as a regular one
  } catch {
    return false;
  }
}

/**
 * Keeps the process up when its log destination fails (a full disk, a device that refuses writes, a pipe
 * whose reader has gone): the error goes to stderr at most once per 5 s, and lines that cannot be written
 * are dropped (after EPIPE, all of them: pino stops writing). Unhandled, the destination's 'error' event
 * would end the process. flushSync, which pino calls when the process exits, does nothing: in sonic-boom
 * 4.2 it retries a write that keeps failing forever, so a process exiting with its reader gone or its disk
 * full would never end; every exit path awaits `flush` instead.
 */
function survive(destination: Destination, health: DestinationHealth): void {
  const report = new ThrottledLog(5_000);
  destination.on('error', (err: NodeJS.ErrnoException) => {
    health.failing = true;
    report.event((count) => {
      process.stderr.write(
        err.code === 'EPIPE'
          ? "tollgate: the log's reader has gone (EPIPE); log lines are dropped from now on\n"
          : `tollgate: cannot write the log (${err.code ?? err.message}); lines are dropped until it works again (${count} failed writes)\n`,
      );
    });
  });
  destination.on('write', () => {
    health.failing = false;
  });
  destination.flushSync = () => undefined;
}

/**
 * Ends the process now, from its 'exit' event, when a log write is blocked in the kernel: process.exit would
 * wait for that pool thread forever. The default action of SIGTERM ends the process whatever its threads
 * are doing (a shell reports exit status 143); SIGKILL if SIGTERM is ignored.
 */
function endNow(): void {
  process.removeAllListeners('SIGTERM');
  process.kill(process.pid, 'SIGTERM');
  process.kill(process.pid, 'SIGKILL');
}

function ignoreError(): void {
  // Nothing more can be done about a message that cannot be written.
}

/**
 * After an uncaught exception or an unhandled rejection the process is in a state nobody knows (in-flight
 * counts, timers, half-done writes; Node's documentation says it is not safe to resume): log it, write out
 * what is buffered (`flush`, bounded), and exit 1. A supervisor starts a clean one: systemd or the container
 * runtime for a single process, the primary for a cluster worker. The line has the `request_id` of the
 * request whose handling threw, when known. A second failure while the logs are written out is not logged:
 * the exit is already under way.
 */
export function exitOnFatalErrors(logger: Logger, flush: () => Promise<void>): void {
  let exiting = false;
  const fatal = (what: string, err: unknown): void => {
    if (exiting) return;
    exiting = true;
    const exit = (): never => process.exit(1);
    try {
      // The request it came from, when it escaped the handling of one (markRequest).
      const requestId = requestIdOf(err);
      logger.fatal(requestId === undefined ? { err } : { err, request_id: requestId }, `${what} (a bug: please report it): exiting`);
      flush().then(exit, exit);
    } catch {
      exit();
    }
  };
  process.on('uncaughtException', (err) => fatal('uncaught exception', err));
  process.on('unhandledRejection', (reason) => fatal('unhandled rejection', reason));
}
