/**
 * The public-API phases of one generation, by route: the library's phases for every route, those it gave
 * by route name, then each route's `plugins` from the config, loaded with a dynamic import and built by
 * their factories. Runs where a generation is built (at start and before each reload, in the process that
 * serves) and for `--check`; a plugin that cannot be loaded or built is a ConfigError naming the module.
 */
import { basename, isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Logger } from 'pino';
import { ConfigError, formatPath, isPluginPath, type ConfigProblem } from '../config/errors.js';
import { routesOf } from '../config/resolve.js';
import type { Config } from '../config/schema.js';
import type { RoutePhases } from '../gateway/generation.js';
import { ProxyError } from '../proxy/errors.js';
import type { UserPhase } from './adapt.js';
import type { AnyPhases, PluginApi, PluginFactory } from './phases.js';

/** Plugin factories by name, for `module` values that are not paths. */
export type PluginRegistry = Readonly<Record<string, PluginFactory<never>>>;

export interface PhaseSources {
  /** Phases for every route, first. */
  all?: readonly AnyPhases[] | undefined;
  /** Phases by route name, after `all`. */
  routes?: Readonly<Record<string, readonly AnyPhases[]>> | undefined;
  registry?: PluginRegistry | undefined;
  logger: Logger;
  /** The config file, for the positions in messages; undefined for a config given as an object. */
  configFile?: string | undefined;
  /** Where the plugin paths of a config object are taken from (default: the working directory). */
  baseDir?: string | undefined;
}

const HOOKS = ['newContext', 'requestFilter', 'upstreamPeer', 'upstreamRequestFilter', 'responseFilter', 'failToProxy', 'logging'] as const;

/** Why `phases` is not a Phases object (an unknown key is taken for a misspelt hook), or undefined. */
export function phasesProblem(phases: unknown): string | undefined {
  if (typeof phases !== 'object' || phases === null || Array.isArray(phases)) return `must be a phases object, got ${phases === null ? 'null' : Array.isArray(phases) ? 'an array' : typeof phases}`;
  for (const key of Object.keys(phases)) {
    const value = (phases as Record<string, unknown>)[key];
    if (key === 'name') {
      if (typeof value !== 'string' && value !== undefined) return 'name must be a string';
    } else if (!(HOOKS as readonly string[]).includes(key)) return `unknown hook "${key}" (hooks: ${HOOKS.join(', ')})`;
    else if (typeof value !== 'function' && value !== undefined) return `${key} must be a function`;
  }
  return undefined;
}

/** Checks the library's own phases once (a TypeError names the bad one), before any generation is built. */
export function checkPhases(sources: Pick<PhaseSources, 'all' | 'routes'>): void {
  const lists: [string, readonly AnyPhases[]][] = [['phases', sources.all ?? []], ...Object.entries(sources.routes ?? {}).map(([name, list]): [string, readonly AnyPhases[]] => [`routes.${name}`, list])];
  for (const [where, list] of lists) {
    if (!Array.isArray(list)) throw new TypeError(`${where} must be a list of phases`);
    list.forEach((phases, i) => {
      const problem = phasesProblem(phases);
      if (problem !== undefined) throw new TypeError(`${where}[${i}]: ${problem}`);
    });
  }
}

/** Builds every route's public-API phases for `config`; rejects with a ConfigError for plugins that fail. */
export async function buildRoutePhases(config: Config, sources: PhaseSources): Promise<RoutePhases> {
  const all: UserPhase[] = (sources.all ?? []).map((phases, i) => ({ name: phases.name ?? `phase-${i + 1}`, phases }));
  const out = new Map<string, readonly UserPhase[]>();
  const problems: ConfigProblem[] = [];
  for (const route of routesOf(config)) {
    const name = route.config.name;
    const list: UserPhase[] = [...all];
    (sources.routes?.[name] ?? []).forEach((phases, i) => list.push({ name: phases.name ?? `${name}-phase-${i + 1}`, phases }));
    for (const [j, plugin] of route.config.plugins.entries()) {
      const path = ['routes', route.index, 'plugins', j, 'module'];
      try {
        const phases = await buildPlugin(plugin.module, plugin.options, name, sources);
        list.push({ name: phases.name ?? basename(plugin.module).replace(/\.[cm]?[jt]s$/, ''), phases });
      } catch (err) {
        // The loader (YAML, zod) only on this path: a proxy that started does not keep it loaded (config/errors.ts).
        const at = sources.configFile === undefined ? { line: 0, col: 0 } : (await import('../config/load.js')).positionIn(sources.configFile, path);
        problems.push({ ...at, path: formatPath(path), message: `plugin "${plugin.module}": ${(err as Error).message ?? String(err)}` });
      }
    }
    if (list.length > 0) out.set(name, list);
  }
  if (problems.length > 0) throw new ConfigError(sources.configFile ?? '(config)', problems);
  return out;
}

async function buildPlugin(module: string, options: unknown, route: string, sources: PhaseSources): Promise<AnyPhases> {
  let factory: unknown;
  if (isPluginPath(module)) {
    const file = isAbsolute(module) ? module : resolve(sources.baseDir ?? process.cwd(), module);
    let loaded: { default?: unknown };
    try {
      loaded = (await import(pathToFileURL(file).href)) as { default?: unknown };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new Error(code === 'ERR_MODULE_NOT_FOUND' && (err as Error).message.includes(file) ? 'cannot load it: file not found' : `cannot load it: ${(err as Error).message}`, { cause: err });
    }
    factory = loaded.default;
    if (typeof factory !== 'function') throw new Error('has no default export that is a function (options, api) => phases');
  } else {
    factory = sources.registry?.[module];
    if (typeof factory !== 'function') throw new Error('is not a file path (./ or ../ or absolute) and no plugin of that name is registered');
  }
  const api: PluginApi = {
    route,
    module,
    logger: sources.logger.child({ route, plugin: module }),
    error: (code, message) => new ProxyError(code, message === undefined ? undefined : { message }),
  };
  let phases: unknown;
  try {
    phases = await (factory as (options: unknown, api: PluginApi) => unknown)(options ?? {}, api);
  } catch (err) {
    throw new Error(`its factory failed: ${(err as Error).message ?? String(err)}`, { cause: err });
  }
  const problem = phasesProblem(phases);
  if (problem !== undefined) throw new Error(`its factory returned something else than phases: ${problem}`);
  return phases as AnyPhases;
}
