/**
 * The command line (run by cli.ts once the runtime settings are in force). Parses flags, loads the config (exit 2 when it is bad, as `nginx -t`),
 * starts the proxy and shuts it down gracefully on SIGTERM / SIGINT.
 */
import cluster from 'node:cluster';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { constants } from 'node:os';
import { parseArgs } from 'node:util';
import { pino, type Logger } from 'pino';
import { buildRoutePhases } from './api/plugins.js';
import { createClusterAdmin } from './admin/cluster-admin.js';
import { createProxy } from './app.js';
import { Primary, resolveWorkers, type PrimaryView } from './cluster/primary.js';
import { runWorker } from './cluster/worker.js';
import { ConfigError } from './config/errors.js';
import { LOG_LEVELS } from './config/constants.js';
import type { Config } from './config/schema.js';
import type { RoutePhases } from './gateway/generation.js';
import { allUpstreams, routesOf, servicesOf } from './config/resolve.js';
import { readConfigOffThread, stopParseThread } from './gateway/reload.js';
import { HASH_ALGORITHMS, hashSecret, type HashAlgorithm } from './middleware/auth/hashed.js';
import { createLogger, exitOnFatalErrors } from './observability/logger.js';
import { ListenError } from './server/listen-error.js';

const DEFAULT_CONFIG = 'config/proxy.yaml';

const HELP = `Usage: tollgate [options]
       tollgate hash-secret [--algorithm bcrypt|argon2id|sha256] < secret

A reverse proxy with load balancing, authentication, rate limiting, health checks and request tracing.

Options:
  -c, --config FILE        YAML config to use (default: ${DEFAULT_CONFIG})
  -t, --check              validate the config and exit: 0 when valid, 2 when not
      --log-format FORMAT  json (default) or pretty; overrides logging.format
  -v, --version            print the version and exit
  -h, --help               print this help and exit

hash-secret reads a secret from standard input (one trailing newline is dropped) and prints its stored
form: a bcrypt (default) or argon2id hash for a Basic user's password_hash, or sha256:<hex> for an entry
of valid_tokens.

Environment:
  LOG_LEVEL                fatal, error, warn, info, debug, trace or silent; overrides logging.level
  \${NAME} in any value of the config is replaced by the environment variable NAME.

Signals:
  SIGTERM, SIGINT          graceful shutdown: stop accepting, finish in-flight requests, exit 0; a
                           second signal closes the remaining connections and exits at once with
                           128 + the signal's number (143 for SIGTERM, 130 for SIGINT); with
                           server.workers > 1, send them to the primary: it drains every worker
  SIGHUP                   reload: re-read the config file, validate it as --check does and put it in
                           force without dropping a request; a bad file is logged and changes nothing
                           (POST /api/reload on the admin listener does the same and answers the result)

Exit status: 0 after a clean shutdown or a valid --check, 1 when the proxy cannot start (port in use)
or after an internal error (logged at fatal), 2 for a bad config or bad flags, 143 or 130 after a second
SIGTERM or SIGINT.`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

async function main(argv: string[]): Promise<number> {
  // A cluster worker gets its config from the primary, not from flags.
  if (cluster.isWorker) return runWorker();
  if (argv[0] === 'hash-secret') return hashSecretCommand(argv.slice(1));
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        config: { type: 'string', short: 'c' },
        check: { type: 'boolean', short: 't' },
        'log-format': { type: 'string' },
        version: { type: 'boolean', short: 'v' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    process.stderr.write(`tollgate: ${(err as Error).message}\nTry 'tollgate --help'.\n`);
    return 2;
  }
  if (values.help === true) {
    process.stdout.write(`${HELP}\n`);
    return 0;
  }
  if (values.version === true) {
    process.stdout.write(`tollgate ${version()}\n`);
    return 0;
  }
  const format = values['log-format'];
  if (format !== undefined && format !== 'json' && format !== 'pretty') {
    process.stderr.write(`tollgate: --log-format must be json or pretty, got "${format}"\n`);
    return 2;
  }

  const envLevel = process.env.LOG_LEVEL?.trim().toLowerCase();
  if (envLevel !== undefined && envLevel !== '' && !(LOG_LEVELS as readonly string[]).includes(envLevel)) {
    process.stderr.write(`tollgate: LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}, got "${process.env.LOG_LEVEL ?? ''}"\n`);
    return 2;
  }

  const file = values.config ?? DEFAULT_CONFIG;
  let config;
  let hash;
  try {
    ({ config, hash } = await readConfigOffThread(file));
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\ntollgate: configuration ${file} is invalid\n`);
      return 2;
    }
    throw err;
  } finally {
    // Read on a worker thread so that this process never loads the YAML parser and zod; the thread is
    // not kept for a reload that may never come (gateway/reload.ts starts one when it does).
    stopParseThread();
  }
  const workers = resolveWorkers(config.server.workers);
  if (workers > config.server.max_connections) {
    // Only possible with `workers: auto` (the schema checks a number): more CPUs than connections allowed.
    process.stderr.write(
      `${file}: server.max_connections: must be at least the number of workers (auto: ${workers}), got ${config.server.max_connections}\ntollgate: configuration ${file} is invalid\n`,
    );
    return 2;
  }
  // Plugins are loaded (and their factories run) for --check too: one that fails makes the config invalid.
  const buildPhases = (next: Config, logger: Logger): Promise<RoutePhases> => buildRoutePhases(next, { logger, configFile: file });
  const invalid = async (err: unknown, flush?: () => Promise<void>): Promise<number> => {
    if (!(err instanceof ConfigError)) throw err;
    await flush?.();
    process.stderr.write(`${err.message}\ntollgate: configuration ${file} is invalid\n`);
    return 2;
  };
  if (values.check === true) {
    try {
      await buildPhases(config, pino({ level: 'silent' }));
    } catch (err) {
      return invalid(err);
    }
    process.stdout.write(`tollgate: configuration ${file} is valid\n`);
    return 0;
  }

  const { logger, flush, direct } = createLogger(config.logging, { level: process.env.LOG_LEVEL, format });
  let initialPhases: RoutePhases;
  try {
    initialPhases = await buildPhases(config, logger);
  } catch (err) {
    return invalid(err, flush);
  }
  // The access log's lines are written out too (once the proxy exists).
  const flushing: { all: (timeoutMs?: number) => Promise<void> } = { all: flush };
  exitOnFatalErrors(logger, () => flushing.all());

  const listening = (address: AddressInfo, extra: Record<string, unknown> = {}): void =>
    logger.info(
      { address: address.address, port: address.port, services: servicesOf(config).size, routes: routesOf(config).length, upstreams: allUpstreams(config).length, config: file, ...extra },
      `Tollgate ${version()} listening on ${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`,
    );

  if (workers > 1) {
    // The primary's admin listener is built here: the cluster layer does not know the admin UI.
    const admin = config.admin.enabled ? function clusterAdmin(view: PrimaryView) { return createClusterAdmin(view, { config, logger }); } : undefined;
    return runPrimary(new Primary({ config, logger, workers, logFormat: format, admin, configFile: file, configHash: hash }), logger, flush, listening);
  }

  const routePhases = { initial: initialPhases, build: (next: Config) => buildPhases(next, logger) };
  const proxy = createProxy(config, { logger, directLog: direct, configFile: file, configHash: hash, routePhases });
  flushing.all = (timeoutMs) => {
    proxy.flushLogs();
    return flush(timeoutMs);
  };
  process.on('SIGHUP', () => {
    proxy.reloadFile().catch((err: unknown) => logger.error({ err }, 'config reload failed'));
  });
  try {
    listening(await proxy.listen());
  } catch (err) {
    if (err instanceof ListenError) return cannotListen(err, flush);
    logger.fatal({ err }, 'cannot listen');
    await proxy.close();
    await flushing.all();
    return 1;
  }

  return untilSignals(logger, {
    secondSignal: 'second signal: closing the remaining connections and exiting now',
    drain: () => proxy.close(),
    cut: () => proxy.closeNow(),
    abandon: () => undefined,
    flush: flushing.all,
  });
}


/**
 * Cluster mode: start the admin listener, fork the workers, then drain them all on the first signal (the
 * admin listener closes once they have exited; exit at once on a second signal).
 */
async function runPrimary(
  primary: Primary,
  logger: Logger,
  flush: (timeoutMs?: number) => Promise<void>,
  listening: (address: AddressInfo, extra: Record<string, unknown>) => void,
): Promise<number> {
  // The instance's admin listener is the primary's; workers run none.
  try {
    await primary.listenAdmin();
  } catch (err) {
    if (err instanceof ListenError) return cannotListen(err, flush);
    logger.fatal({ err }, 'cannot listen');
    await flush();
    return 1;
  }
  try {
    listening(await primary.start(), { workers: primary.workerPids.length, worker_pids: primary.workerPids });
  } catch (err) {
    if (err instanceof ListenError) return cannotListen(err, flush);
    logger.fatal({ err }, 'cannot start the workers');
    await flush();
    return 1;
  }
  process.on('SIGHUP', () => {
    primary.reload().catch((err: unknown) => logger.error({ err }, 'config reload failed'));
  });
  return untilSignals(logger, {
    secondSignal: "second signal: cutting the workers' remaining requests and exiting now",
    drain: () => primary.shutdown(),
    cut: () => primary.stopNow(),
    abandon: () => primary.kill(),
    flush,
  });
}

/** After a second signal: how long the cut requests get to be logged (and workers to exit) before the exit. */
const SECOND_SIGNAL_MS = 1_000;

/**
/**
 * A listener that cannot bind (the port is taken, ...): one line on stderr, as for a bad config, and exit
 * status 1. Nothing was serving, so there is nothing to drain and no shutdown to log.
 */
async function cannotListen(err: ListenError, flush: () => Promise<void>): Promise<number> {
  await flush();
  process.stderr.write(`tollgate: ${err.message}\n`);
  return 1;
}

/**
 * Waits for SIGTERM or SIGINT, then drains (exit status 0, or 1 when draining fails) and writes out the
 * logs (`flush`, bounded). A second signal runs `cut` (close what is still open, so those requests are
 * logged as cut off), waits for it at most SECOND_SIGNAL_MS, runs `abandon` (kill what is left), writes out
 * the logs for at most as long again, and exits with 128 + the signal's number, as a shell reports a
 * process ended by that signal: not a clean stop. A third signal exits without waiting for anything.
 */
function untilSignals(
  logger: Logger,
  how: { secondSignal: string; drain: () => Promise<void>; cut: () => Promise<void>; abandon: () => void; flush: (timeoutMs?: number) => Promise<void> },
): Promise<number> {
  // After a second signal, the drain may still complete first (it is cut short): the exit status is the
  // second signal's all the same.
  let forced: number | undefined;
  return new Promise<number>((resolve) => {
    let signals = 0;
    const onSignal = (signal: NodeJS.Signals): void => {
      signals++;
      const code = 128 + (constants.signals[signal] ?? 0);
      if (signals > 2) process.exit(code);
      if (signals === 2) {
        forced = code;
        logger.warn({ signal, exit_code: code }, how.secondSignal);
        const timer = new Promise<void>((done) => setTimeout(done, SECOND_SIGNAL_MS));
        void Promise.race([how.cut().catch(() => undefined), timer])
          .then(() => {
            how.abandon();
            return how.flush(SECOND_SIGNAL_MS);
          })
          .finally(() => process.exit(code));
        return;
      }
      logger.info({ signal }, 'signal received: shutting down gracefully');
      how.drain().then(
        () => resolve(0),
        (err: unknown) => {
          logger.error({ err }, 'error during shutdown');
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  }).then(async (code) => {
    await how.flush();
    return forced ?? code;
  });
}

/** `tollgate hash-secret`: the secret from stdin, its hash to stdout; 2 for bad flags or an empty secret. */
async function hashSecretCommand(argv: string[]): Promise<number> {
  let algorithm: HashAlgorithm;
  try {
    const { values } = parseArgs({ args: argv, options: { algorithm: { type: 'string', short: 'a' } }, strict: true, allowPositionals: false });
    const given = values.algorithm ?? 'bcrypt';
    if (!(HASH_ALGORITHMS as readonly string[]).includes(given)) throw new Error(`--algorithm must be one of ${HASH_ALGORITHMS.join(', ')}, got "${given}"`);
    algorithm = given as HashAlgorithm;
  } catch (err) {
    process.stderr.write(`tollgate hash-secret: ${(err as Error).message}\n`);
    return 2;
  }
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  const secret = Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
  if (secret === '') {
    process.stderr.write('tollgate hash-secret: no secret on standard input (try: printf %s "$SECRET" | tollgate hash-secret)\n');
    return 2;
  }
  process.stdout.write(`${await hashSecret(secret, algorithm)}\n`);
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`tollgate: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
