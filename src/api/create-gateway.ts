/**
 * `createGateway`: Tollgate as a library. Builds a proxy from a config object or file, with phases written
 * in TypeScript (for every route, or by route name) and the config's plugins, and hands back a small
 * object to run it. Everything else stays internal.
 */
import { dirname, resolve } from 'node:path';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { createProxy } from '../app.js';
import { ConfigError, formatPath } from '../config/errors.js';
import { configHash, loadConfigFile } from '../config/load.js';
import { configErrorMap } from '../config/messages.js';
import { configSchema, type Config } from '../config/schema.js';
import type { ReloadOutcome } from '../gateway/gateway.js';
import { createLogger } from '../observability/logger.js';
import type { AnyPhases } from './phases.js';
import { buildRoutePhases, checkPhases, type PhaseSources, type PluginRegistry } from './plugins.js';

/** The config as written (YAML's shape, snake_case keys): validated by createGateway. */
export type ConfigInput = Record<string, unknown>;

export interface GatewayOptions {
  /** The config as an object; give this or `configFile`. */
  config?: ConfigInput;
  /** A YAML config file, read and validated as `tollgate --check` does; `reload()` reads it again. */
  configFile?: string;
  /** Phases run on every route, in this order, after the route's auth and rate limit. */
  phases?: readonly AnyPhases[];
  /** Phases for one route each, by route name, after `phases` and before that route's config plugins. */
  routes?: Readonly<Record<string, readonly AnyPhases[]>>;
  /** Plugin factories that `routes[].plugins[].module` may name instead of a file. */
  plugins?: PluginRegistry;
  /** Where the plugin paths of a `config` object are taken from (default: the working directory). */
  baseDir?: string;
  /** A pino logger; default: one built from the config's `logging` (JSON lines on stdout). */
  logger?: Logger;
}

/** Where the gateway listens. */
export interface GatewayAddress {
  readonly address: string;
  readonly port: number;
}

export type { ReloadOutcome };

/** A running (or ready to run) gateway. */
export interface Gateway {
  /** Listens on `server.listen_address:listen_port` (0: a free port) and starts the health checks and the admin listener. */
  listen(): Promise<GatewayAddress>;
  /** The bound address once listening; undefined before. */
  readonly address: GatewayAddress | undefined;
  /**
   * Puts a new config in force without dropping a request: `config` (an object), or without it the config
   * file again. Plugins are built again too. A bad config changes nothing and is answered with its errors.
   */
  reload(config?: ConfigInput): Promise<ReloadOutcome>;
  /** Graceful shutdown: stops accepting, lets requests in flight finish (up to `server.shutdown_grace_ms`), closes everything. */
  close(): Promise<void>;
  /** The config in force, validated, with its defaults. */
  readonly config: Config;
  /** The Prometheus registry (`tollgate_*` metrics, `tollgate_phase_errors_total` included); `metrics()` gives the text. */
  readonly metrics: Registry;
}

/**
 * Builds a gateway: validates the config, loads the plugins it names and builds the routes with the given
 * phases. Rejects with a ConfigError (every problem, with file, line and column for a file) for a bad
 * config or a plugin that cannot be loaded, and with a TypeError for phases that are not phases. Nothing
 * listens until `listen()`.
 */
export async function createGateway(options: GatewayOptions): Promise<Gateway> {
  if ((options.config === undefined) === (options.configFile === undefined)) throw new TypeError('createGateway: give config or configFile (exactly one)');
  checkPhases({ all: options.phases, routes: options.routes });
  const configFile = options.configFile === undefined ? undefined : resolve(options.configFile);
  const config = configFile === undefined ? validate(options.config as ConfigInput) : loadConfigFile(configFile);
  const unknownRoutes = Object.keys(options.routes ?? {}).filter((name) => !routeNames(config).includes(name));
  if (unknownRoutes.length > 0) throw new TypeError(`createGateway: routes names ${unknownRoutes.map((n) => `"${n}"`).join(', ')}, which the config does not have`);
  const own = options.logger === undefined ? createLogger(config.logging) : undefined;
  const logger = options.logger ?? (own as { logger: Logger }).logger;
  const sources: PhaseSources = {
    all: options.phases,
    routes: options.routes,
    registry: options.plugins,
    logger,
    configFile,
    baseDir: configFile === undefined ? (options.baseDir ?? process.cwd()) : dirname(configFile),
  };
  let initial;
  try {
    initial = await buildRoutePhases(config, sources);
  } catch (err) {
    await own?.flush();
    throw err;
  }
  const proxy = createProxy(config, {
    logger,
    ...(own === undefined ? {} : { directLog: own.direct }),
    ...(configFile === undefined ? {} : { configFile }),
    routePhases: { initial, build: (next) => buildRoutePhases(next, sources) },
  });
  let address: GatewayAddress | undefined;
  return {
    async listen() {
      const bound = await proxy.listen();
      address = { address: bound.address, port: bound.port };
      return address;
    },
    get address() {
      return address;
    },
    async reload(next?: ConfigInput) {
      if (next === undefined) return proxy.reloadFile();
      let parsed: Config;
      try {
        parsed = validate(next);
      } catch (err) {
        if (!(err instanceof ConfigError)) throw err;
        return proxy.gateway.reloadFailed(err.message.split('\n'));
      }
      return proxy.reload(parsed, configHash(JSON.stringify(next)));
    },
    async close() {
      await proxy.close();
      proxy.flushLogs();
      await own?.flush();
    },
    get config() {
      return proxy.config;
    },
    metrics: proxy.metrics.registry,
  };
}

/** A config object validated as a file is (without positions: each problem names its key path). */
function validate(input: ConfigInput): Config {
  const result = configSchema.safeParse(input, { error: configErrorMap });
  if (result.success) return result.data;
  throw new ConfigError(
    '(config)',
    result.error.issues.map((issue) => ({ line: 0, col: 0, path: formatPath(issue.path), message: issue.message })),
  );
}

function routeNames(config: Config): string[] {
  return config.routes?.map((r) => r.name) ?? ['default'];
}
