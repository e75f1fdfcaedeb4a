import { fstatSync, statSync } from 'node:fs';
import { pino, type DestinationStream, type Logger } from 'pino';
import pretty from 'pino-pretty';
import type { LoggingConfig, LogLevel } from '../config/schema.js';
import { ThrottledLog } from '../util/throttled-log.js';

export interface LoggerHandle {
  logger: Logger;
  /** Writes out whatever is buffered; call before the process exits. */
  flush(): void;
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
 */
export function createLogger(config: LoggingConfig, overrides: LoggerOverrides = {}): LoggerHandle {
  const level = levelFrom(overrides.level, config.level);
  const format = overrides.format ?? config.format;
  if (overrides.stream !== undefined) {
    const { logger, direct } = made(level, null, overrides.bindings, overrides.stream, pino.stdTimeFunctions.epochTime);
    return { logger, flush: () => logger.flush(), direct };
  }
  // maxLength: while writes fail (a full disk), lines beyond 16 MiB waiting to be written are dropped.
  const destination = pino.destination({ dest: config.file ?? 1, sync: toRegularFile(config.file), mkdir: true, maxLength: 16 * 1024 * 1024 });
  survive(destination);
  const stream =
    format === 'pretty'
      ? pretty({ destination, colorize: config.file === undefined && process.stdout.isTTY, sync: false, translateTime: 'SYS:HH:MM:ss.l', hideObject: true, messageFormat: oneLine })
      : destination;
  // `time` is epoch milliseconds, pino's default: the ISO formatter cost 2% of throughput in the profile.
  const { logger, direct } = made(level, { pid: process.pid }, overrides.bindings, stream, pino.stdTimeFunctions.epochTime);
  return {
    logger,
    direct,
    flush() {
      try {
        destination.flushSync();
      } catch {
        // flushSync throws while the destination is still opening; nothing has been buffered yet then.
      }
    },
  };
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
 * Keeps the process up when its log destination fails (a full disk, a device that refuses writes): the
 * error goes to stderr at most once per 5 s, and lines that cannot be written are dropped. Unhandled, the
 * destination's 'error' event would end the process; and sonic-boom's flushSync (4.2, which pino calls at
 * exit) retries a write that keeps failing with anything but EAGAIN forever, so a process exiting on a full
 * disk would never end: while writes fail, flushSync does nothing.
 */
function survive(destination: ReturnType<typeof pino.destination>): void {
  let failing = false;
  const report = new ThrottledLog(5_000);
  destination.on('error', (err: NodeJS.ErrnoException) => {
    failing = true;
    report.event((count) => {
      process.stderr.write(`tollgate: cannot write the log (${err.code ?? err.message}); lines are dropped until it works again (${count} failed writes)\n`);
    });
  });
  destination.on('write', () => {
    failing = false;
  });
  const flushSync = destination.flushSync.bind(destination);
  destination.flushSync = () => {
    if (!failing) flushSync();
  };
}

/**
 * After an uncaught exception or an unhandled rejection the process is in a state nobody knows (in-flight
 * counts, timers, half-done writes; Node's documentation says it is not safe to resume): log it, write out
 * what is buffered, and exit 1. A supervisor starts a clean one: systemd or the container runtime for a
 * single process, the primary for a cluster worker.
 */
export function exitOnFatalErrors(logger: Logger, flush: () => void): void {
  const fatal = (what: string, err: unknown): void => {
    try {
      logger.fatal({ err }, `${what} (a bug: please report it): exiting`);
      flush();
    } finally {
      process.exit(1);
    }
  };
  process.on('uncaughtException', (err) => fatal('uncaught exception', err));
  process.on('unhandledRejection', (reason) => fatal('unhandled rejection', reason));
}
