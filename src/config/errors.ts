/**
 * How a config is refused: ConfigError lists every problem with file:line:col and the key path. Kept apart
 * from the loader (load.ts, which brings YAML and zod) so that the running proxy can catch and report a
 * config error without loading them: files are read and validated on a worker thread (gateway/reload.ts).
 */
import { isAbsolute } from 'node:path';

export interface ConfigProblem {
  line: number;
  col: number;
  path: string;
  message: string;
}

/** A config that cannot be used. `message` lists every problem, one per line, each with file:line:col. */
export class ConfigError extends Error {
  readonly code = 'TOLLGATE_CONFIG_INVALID';
  constructor(
    readonly file: string,
    readonly problems: ConfigProblem[],
  ) {
    super(problems.map((p) => `${file}:${p.line}:${p.col} ${p.path}: ${p.message}`).join('\n'));
    this.name = 'ConfigError';
  }
}

export type PathKey = string | number;

/** `load_balancing.upstreams[1].port` */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else out += out === '' ? String(key) : `.${String(key)}`;
  }
  return out === '' ? '(root)' : out;
}

/** Whether a plugin's `module` names a file (else it is a name the library user registered). */
export function isPluginPath(module: string): boolean {
  return module.startsWith('./') || module.startsWith('../') || isAbsolute(module);
}
