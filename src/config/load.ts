/**
 * Reads a YAML config file, substitutes `${NAME}` environment variables, validates it against the schema
 * and reports every problem as `file:line:col key.path: message`. Runs once at start-up (and later on
 * reload); nothing here is on the request path.
 */
import { readFileSync } from 'node:fs';
import { isMap, isScalar, isSeq, LineCounter, parse, parseDocument, Scalar, visit, type Document, type Node } from 'yaml';
import type { z } from 'zod';
import { compileRoutes } from '../routing/matcher.js';
import { matchOf } from './resolve.js';
import { configSchema, type Config } from './schema.js';

/** Pairs of routes (indices into `routes`) that would match the same requests with equal precedence. */
export function routeTies(config: Config): { a: number; b: number }[] {
  if (config.routes === undefined) return [];
  return compileRoutes(config.routes.map((r, i) => ({ value: i, match: matchOf(r.match) }))).ties;
}

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

type PathKey = string | number;

/** `load_balancing.upstreams[1].port` */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else out += out === '' ? String(key) : `.${String(key)}`;
  }
  return out === '' ? '(root)' : out;
}

const ENV_REF = /\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g;
const WHOLE_ENV_REF = /^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$/;

/** A variable's value read as a YAML scalar: `9000` a number, `true` a boolean, anything else a string. */
function parseScalar(value: string): unknown {
  try {
    const parsed: unknown = parse(value);
    return typeof parsed === 'number' || typeof parsed === 'boolean' ? parsed : value;
  } catch {
    return value;
  }
}

/** Loads and validates a config file; throws ConfigError for anything wrong with it. */
export function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): Config {
  let source: string;
  try {
    source = readFileSync(file, 'utf8');
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : (err as Error).message;
    throw new ConfigError(file, [{ line: 1, col: 1, path: '(root)', message: `cannot read config: ${reason}` }]);
  }
  return parseConfig(source, file, env);
}

/** Validates config text; `file` is used only in messages. */
export function parseConfig(source: string, file: string, env: NodeJS.ProcessEnv = process.env): Config {
  const lines = new LineCounter();
  const doc = parseDocument(source, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const at = (offset: number): { line: number; col: number } => lines.linePos(offset);

  if (doc.errors.length > 0) {
    throw new ConfigError(
      file,
      doc.errors.map((e) => ({ ...at(e.pos[0]), path: '(yaml)', message: e.message.split('\n')[0] ?? e.message })),
    );
  }

  const problems: ConfigProblem[] = [];
  substituteEnv(doc, env, (node, path, name) => {
    problems.push({ ...at(node.range?.[0] ?? 0), path: formatPath(path), message: `environment variable ${name} is not set` });
  });

  const result = configSchema.safeParse(doc.toJS() ?? {});
  if (result.success && problems.length === 0) {
    const ties = routeTies(result.data);
    if (ties.length === 0) return result.data;
    throw new ConfigError(
      file,
      ties.map(({ a, b }) => {
        const other = at((doc.getIn(['routes', b], true) as Node | undefined)?.range?.[0] ?? 0);
        const names = result.data.routes ?? [];
        return {
          ...at((doc.getIn(['routes', a], true) as Node | undefined)?.range?.[0] ?? 0),
          path: `routes[${a}]`,
          message: `matches the same requests with the same precedence as route "${names[b]?.name ?? ''}" (${file}:${other.line}): make one more specific (hosts, path, methods or headers)`,
        };
      }),
    );
  }
  if (!result.success) {
    // A value left unsubstituted is reported once, as the missing variable, not again as a bad value.
    const unsetPaths = new Set(problems.map((p) => p.path));
    for (const problem of result.error.issues.flatMap((issue) => describeIssue(doc, issue, at))) {
      if (!unsetPaths.has(problem.path)) problems.push(problem);
    }
  }
  throw new ConfigError(file, problems);
}

function substituteEnv(doc: Document, env: NodeJS.ProcessEnv, unset: (node: Node, path: PathKey[], name: string) => void): void {
  visit(doc, {
    Scalar(_key, node, ancestors) {
      if (typeof node.value !== 'string' || !node.value.includes('${')) return;
      const whole = WHOLE_ENV_REF.exec(node.value);
      if (whole !== null && node.type === Scalar.PLAIN) {
        // An unquoted `${PORT}` takes the variable's YAML type, so numbers and booleans can come from the
        // environment too; quote it ("${PORT}") to keep a string.
        const value = env[whole[1] as string];
        if (value === undefined) unset(node, pathOf(ancestors, node), whole[1] as string);
        else node.value = parseScalar(value);
        return;
      }
      node.value = node.value.replace(ENV_REF, (_match, name: string) => {
        const value = env[name];
        if (value === undefined) {
          unset(node, pathOf(ancestors, node), name);
          return _match;
        }
        return value;
      });
    },
  });
}

/** Reconstructs the key path of a node from the ancestors `visit` gives. */
function pathOf(ancestors: readonly unknown[], node: unknown): PathKey[] {
  const path: PathKey[] = [];
  const chain = [...ancestors, node];
  for (let i = 0; i < chain.length - 1; i++) {
    const parent = chain[i];
    const child = chain[i + 1];
    if (isSeq(parent)) path.push(parent.items.indexOf(child as never));
    else if (isMap(parent)) {
      const pair = child as { key?: unknown };
      if (pair && typeof pair === 'object' && 'key' in pair) path.push(isScalar(pair.key) ? String(pair.key.value) : String(pair.key));
    }
  }
  return path;
}

function describeIssue(doc: Document, issue: z.core.$ZodIssue, at: (offset: number) => { line: number; col: number }): ConfigProblem[] {
  const path = issue.path.filter((k): k is PathKey => typeof k === 'string' || typeof k === 'number');
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => {
      const keyNode = findKeyNode(doc, path, key);
      return { ...at(keyNode?.range?.[0] ?? nearestNode(doc, path).range?.[0] ?? 0), path: formatPath([...path, key]), message: 'unknown key' };
    });
  }
  const exact = doc.getIn(path, true) as Node | undefined;
  const node = exact ?? nearestNode(doc, path);
  let message = issue.message;
  if (exact === undefined && (issue.code === 'invalid_type' || issue.code === 'invalid_value') && missingValue(doc, path)) {
    message = 'is required';
  } else if (isScalar(exact) && issue.code !== 'custom') {
    message += `, got ${JSON.stringify(exact.toJSON())}`;
  }
  return [{ ...at(node.range?.[0] ?? 0), path: formatPath(path), message }];
}

function missingValue(doc: Document, path: PathKey[]): boolean {
  return !doc.hasIn(path);
}

/** The node at `path`, or the nearest enclosing node that exists (for a missing key). */
function nearestNode(doc: Document, path: PathKey[]): Node {
  for (let n = path.length; n > 0; n--) {
    const node = doc.getIn(path.slice(0, n), true) as Node | undefined;
    if (node && typeof node === 'object' && 'range' in node) return node;
  }
  return (doc.contents as Node | null) ?? ({ range: [0, 0, 0] } as unknown as Node);
}

function findKeyNode(doc: Document, path: PathKey[], key: string): Node | undefined {
  const parent = path.length === 0 ? doc.contents : doc.getIn(path, true);
  if (!isMap(parent)) return undefined;
  for (const pair of parent.items) {
    if (isScalar(pair.key) && pair.key.value === key) return pair.key;
  }
  return undefined;
}
