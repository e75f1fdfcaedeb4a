/**
 * Reads a YAML config file, substitutes `${NAME}` environment variables, validates it against the schema
 * and reports every problem as `file:line:col key.path: message`. Runs once at start-up (and later on
 * reload); nothing here is on the request path.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { isMap, isScalar, isSeq, LineCounter, parseDocument, visit, type Document, type Node } from 'yaml';
import type { z } from 'zod';
import { TlsFileError as UpstreamTlsFileError, tlsMaterial } from '../balancing/upstream-tls.js';
import { resolveAuthFiles } from '../middleware/auth/auth-files.js';
import { compileRoutes } from '../routing/matcher.js';
import { matchOf } from './resolve.js';
import { ConfigError, formatPath, isPluginPath, type ConfigProblem, type PathKey } from './errors.js';
import { readTlsFiles, resolveTlsPaths, TlsFileError } from './tls-files.js';
import { closestKey, configErrorMap, knownKeys } from './messages.js';
import { configSchema, sharedPortMessage, type AuthConfig, type Config, type LoadBalancingConfig, type SharedPort } from './schema.js';

/** Pairs of routes (indices into `routes`) that would match the same requests with equal precedence. */
export function routeTies(config: Config): { a: number; b: number }[] {
  if (config.routes === undefined) return [];
  return compileRoutes(config.routes.map((r, i) => ({ value: i, match: matchOf(r.match) }))).ties;
}

const ENV_REF = /\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g;

/**
 * `${NAME}` is not YAML everywhere: in a flow mapping (`{port: ${PORT}}`) its braces are syntax. So before
 * parsing, each reference is swapped for a marker of the same length that any scalar may hold (`$`, a
 * private-use character, NAME, another private-use character), and the variables are read into the
 * parsed scalars. Offsets stay those of the file, so every message keeps its line and column, and a
 * variable's value is never parsed as YAML.
 */
interface References {
  text: string;
  /** Matches a marker; group 1 is the variable name. */
  marker: RegExp;
  /** The marker's first two characters, to find scalars that hold one. */
  start: string;
}

function markReferences(source: string): References {
  // Two private-use characters the file does not contain (a YAML file holding U+E000 is improbable already).
  let code = 0xe000;
  while (source.includes(String.fromCharCode(code)) || source.includes(String.fromCharCode(code + 1))) code += 2;
  const open = String.fromCharCode(code);
  const close = String.fromCharCode(code + 1);
  return {
    text: source.replace(ENV_REF, (_ref, name: string) => `$${open}${name}${close}`),
    marker: new RegExp(`\\$${open}([A-Za-z_][A-Za-z0-9_]*)${close}`, 'g'),
    start: `$${open}`,
  };
}

/** A scalar value built from environment variables. */
interface Substitution {
  /** As written in the file: `"${HOST}:${PORT}"`. */
  template: string;
  /** The variables' text put together. */
  value: string;
  /** Set once the value has been read as a number or a boolean for a key that takes one. */
  coerced: boolean;
}

/**
 * A substituted value read as the number or boolean a key takes (`listen_port: "${PORT}"`, `enabled:
 * ${FLAG}`), the way YAML reads a plain scalar; undefined when it is neither.
 */
function scalarFromEnv(value: string): number | boolean | undefined {
  if (/^(true|True|TRUE)$/.test(value)) return true;
  if (/^(false|False|FALSE)$/.test(value)) return false;
  if (/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(value)) return Number(value);
  return undefined;
}

/** A problem the schema found where a number or boolean was expected (so a substituted string may be read as one). */
function wantsScalar(issue: z.core.$ZodIssue): boolean {
  if (issue.code === 'invalid_type') return issue.expected === 'number' || issue.expected === 'int' || issue.expected === 'boolean';
  if (issue.code === 'invalid_value') return issue.values.some((v) => typeof v === 'number' || typeof v === 'boolean');
  return issue.code === 'invalid_union';
}

/** Every problem in Tollgate's words (the schema's own messages first). */
const PARSE_OPTIONS = { error: configErrorMap } as const;

/** Loads and validates a config file; throws ConfigError for anything wrong with it. */
export function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): Config {
  return parseConfig(readSource(file).toString('utf8'), file, env);
}

/** A config file read and validated, with the SHA-256 of its bytes (what a reload compares). */
export interface LoadedFile {
  config: Config;
  hash: string;
}

/** `loadConfigFile` and the file's SHA-256: what the parse thread does for the proxy (gateway/reload.ts). */
export function readConfig(file: string): LoadedFile {
  const bytes = readSource(file);
  return { config: parseConfig(bytes.toString('utf8'), file), hash: configHash(bytes) };
}

/** The SHA-256 (hex) a generation is tagged with: of the file's bytes, or of a config object's JSON. */
export function configHash(bytes: Buffer | string): string {
  return createHash('sha256').update(bytes).digest('hex');
}

function readSource(file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : (err as Error).message;
    throw new ConfigError(file, [{ line: 1, col: 1, path: '(root)', message: `cannot read config: ${reason}` }]);
  }
}

/** Validates config text; `file` is used only in messages. */
export function parseConfig(source: string, file: string, env: NodeJS.ProcessEnv = process.env): Config {
  const refs = markReferences(source);
  const lines = new LineCounter();
  const doc = parseDocument(refs.text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const at = (offset: number): { line: number; col: number } => lines.linePos(offset);

  if (doc.errors.length > 0) {
    throw new ConfigError(
      file,
      doc.errors.map((e) => ({ ...at(e.pos[0]), path: '(yaml)', message: (e.message.split('\n')[0] ?? e.message).replace(refs.marker, '${$1}') })),
    );
  }

  const problems: ConfigProblem[] = [];
  const substitutions = substituteEnv(doc, refs, env, (node, path, name) => {
    problems.push({ ...at(node.range?.[0] ?? 0), path: formatPath(path), message: `environment variable ${name} is not set` });
  });

  const data: unknown = doc.toJS() ?? {};
  let result = configSchema.safeParse(data, PARSE_OPTIONS);
  // A substituted value is a string; where the schema wants a number or a boolean, it is read as one and
  // the config validated again (each value at most once, so this ends).
  while (!result.success) {
    let coerced = false;
    for (const issue of result.error.issues) {
      const sub = substitutions.get(formatPath(issue.path));
      if (sub === undefined || sub.coerced || !wantsScalar(issue)) continue;
      const value = scalarFromEnv(sub.value);
      if (value === undefined) continue;
      setIn(data, issue.path, value);
      sub.coerced = true;
      coerced = true;
    }
    if (!coerced) break;
    result = configSchema.safeParse(data, PARSE_OPTIONS);
  }
  if (result.success && problems.length === 0) {
    const authProblems: ConfigProblem[] = [];
    const data = withPluginPaths(withAuthFiles(withUpstreamTlsPaths(result.data, dirname(file)), dirname(file), doc, at, authProblems), dirname(file));
    const tlsProblems = [...tlsFileProblems(data, doc, at), ...authProblems];
    if (tlsProblems.length > 0) throw new ConfigError(file, tlsProblems);
    const ties = routeTies(data);
    if (ties.length === 0) return withTlsFiles(data, file, doc, at);
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
    const source = { file, doc, at, data, substitutions };
    for (const problem of result.error.issues.flatMap((issue) => describeIssue(source, issue))) {
      if (!unsetPaths.has(problem.path)) problems.push(problem);
    }
  }
  // In the order of the file, whichever check found them.
  problems.sort((a, b) => a.line - b.line || a.col - b.col);
  throw new ConfigError(file, problems);
}

/** The config with every plugin file taken from the config file's folder (absolute, as workers need it). */
function withPluginPaths(config: Config, dir: string): Config {
  if (config.routes?.some((r) => r.plugins.some((p) => isPluginPath(p.module))) !== true) return config;
  return {
    ...config,
    routes: config.routes.map((r) => ({ ...r, plugins: r.plugins.map((p) => (isPluginPath(p.module) ? { ...p, module: resolve(dir, p.module) } : p)) })),
  };
}

/**
 * Where the value at `path` is written in the config file (1:1 when the file cannot be read or has no such
 * key): for problems found after loading, such as a plugin that cannot be loaded.
 */
export function positionIn(file: string, path: readonly PathKey[]): { line: number; col: number } {
  try {
    const lines = new LineCounter();
    const doc = parseDocument(readFileSync(file, 'utf8'), { lineCounter: lines });
    const node = (doc.getIn(path, true) as Node | undefined) ?? nearestNode(doc, [...path]);
    return lines.linePos(node.range?.[0] ?? 0);
  } catch {
    return { line: 1, col: 1 };
  }
}

/** The config with the files of every service's and upstream's `tls` taken from the config file's folder. */
function withUpstreamTlsPaths(config: Config, dir: string): Config {
  type Files = { ca_file?: string | undefined; cert_file?: string | undefined; key_file?: string | undefined };
  const absolute = <T extends Files>(tls: T | undefined): T | undefined =>
    tls === undefined
      ? undefined
      : {
          ...tls,
          ...(tls.ca_file === undefined ? {} : { ca_file: resolve(dir, tls.ca_file) }),
          ...(tls.cert_file === undefined ? {} : { cert_file: resolve(dir, tls.cert_file) }),
          ...(tls.key_file === undefined ? {} : { key_file: resolve(dir, tls.key_file) }),
        };
  const service = (lb: LoadBalancingConfig): LoadBalancingConfig => {
    if (lb.tls === undefined && lb.upstreams.every((u) => u.tls === undefined)) return lb;
    return { ...lb, tls: absolute(lb.tls), upstreams: lb.upstreams.map((u) => (u.tls === undefined ? u : { ...u, tls: absolute(u.tls) })) };
  };
  return {
    ...config,
    ...(config.load_balancing === undefined ? {} : { load_balancing: service(config.load_balancing) }),
    ...(config.services === undefined ? {} : { services: Object.fromEntries(Object.entries(config.services).map(([name, lb]) => [name, service(lb)])) }),
  };
}

/** The config with every auth block's files taken from `dir` and read; each bad file is put in `problems` at its key. */
function withAuthFiles(config: Config, dir: string, doc: Document, at: (offset: number) => { line: number; col: number }, problems: ConfigProblem[]): Config {
  const resolveAt = (auth: AuthConfig, path: PathKey[]): AuthConfig =>
    resolveAuthFiles(auth, dir, (problem) => {
      const keyPath = [...path, ...problem.path];
      // A route's block inherits keys from the top-level one: an inherited file is reported where it is written.
      const node = (doc.getIn(keyPath, true) as Node | undefined) ?? (doc.getIn(['middleware', 'auth', ...problem.path], true) as Node | undefined) ?? nearestNode(doc, keyPath);
      problems.push({ ...at(node.range?.[0] ?? 0), path: formatPath(keyPath), message: problem.message });
    });
  const auth = resolveAt(config.middleware.auth, ['middleware', 'auth']);
  const routes = config.routes?.map((route, i) =>
    route.middleware.auth === undefined ? route : { ...route, middleware: { ...route.middleware, auth: resolveAt(route.middleware.auth, ['routes', i, 'middleware', 'auth']) } },
  );
  return { ...config, middleware: { ...config.middleware, auth }, ...(routes === undefined ? {} : { routes }) };
}

/**
 * Reads the files of every `tls` block of the services and their upstreams (a file that cannot be read, a
 * CA file without a certificate, a key that does not belong to its certificate), each problem at the key
 * that names the file. The pools read them again when they are built.
 */
function tlsFileProblems(config: Config, doc: Document, at: (offset: number) => { line: number; col: number }): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  const check = (tls: { ca_file?: string | undefined; cert_file?: string | undefined; key_file?: string | undefined } | undefined, path: PathKey[]): void => {
    if (tls === undefined) return;
    try {
      tlsMaterial({ enabled: true, servername: undefined, ca_file: tls.ca_file, verify: true, cert_file: tls.cert_file, key_file: tls.key_file }, 'localhost');
    } catch (err) {
      if (!(err instanceof UpstreamTlsFileError)) throw err;
      const keyPath = [...path, err.key];
      const node = (doc.getIn(keyPath, true) as Node | undefined) ?? nearestNode(doc, keyPath);
      problems.push({ ...at(node.range?.[0] ?? 0), path: formatPath(keyPath), message: err.message });
    }
  };
  const services: [PathKey[], LoadBalancingConfig][] = Object.entries(config.services ?? {}).map(([name, lb]) => [['services', name], lb]);
  if (config.load_balancing !== undefined) services.push([['load_balancing'], config.load_balancing]);
  for (const [path, lb] of services) {
    check(lb.tls, [...path, 'tls']);
    lb.upstreams.forEach((u, i) => check(u.tls, [...path, 'upstreams', i, 'tls']));
  }
  return problems;
}

/**
 * A valid config's `server.tls` with its paths taken from the config file's folder, once every file it
 * names has been read and checked (config/tls-files.ts); a bad file is a ConfigError at its key.
 */
function withTlsFiles(config: Config, file: string, doc: Document, at: (offset: number) => { line: number; col: number }): Config {
  const tls = config.server.tls;
  if (tls === undefined) return config;
  const resolved = resolveTlsPaths(tls, dirname(file));
  try {
    readTlsFiles(resolved);
  } catch (err) {
    if (!(err instanceof TlsFileError)) throw err;
    const path = ['server', 'tls', ...err.path];
    const node = (doc.getIn(path, true) as Node | undefined) ?? nearestNode(doc, path);
    throw new ConfigError(file, [{ ...at(node.range?.[0] ?? 0), path: formatPath(path), message: err.message }]);
  }
  return { ...config, server: { ...config.server, tls: resolved } };
}

/**
 * Puts the environment variables into the scalars that refer to them; returns the substituted values by
 * key path. `unset` is called for each reference to a variable that is not set (the scalar keeps it as
 * written).
 */
function substituteEnv(doc: Document, refs: References, env: NodeJS.ProcessEnv, unset: (node: Node, path: PathKey[], name: string) => void): Map<string, Substitution> {
  const substitutions = new Map<string, Substitution>();
  visit(doc, {
    Scalar(key, node, ancestors) {
      if (typeof node.value !== 'string' || !node.value.includes(refs.start)) return;
      const path = pathOf(ancestors, node);
      let complete = true;
      const value = node.value.replace(refs.marker, (_marker, name: string) => {
        const text = env[name];
        if (text !== undefined) return text;
        unset(node, path, name);
        complete = false;
        return `\${${name}}`;
      });
      const template = node.value.replace(refs.marker, '${$1}');
      node.value = complete ? value : template;
      // A mapping key is substituted too, but only values are read as numbers or booleans.
      if (complete && key !== 'key') substitutions.set(formatPath(path), { template, value, coerced: false });
    },
  });
  return substitutions;
}

function setIn(data: unknown, path: readonly PropertyKey[], value: unknown): void {
  let parent = data as Record<PropertyKey, unknown>;
  for (const key of path.slice(0, -1)) parent = parent[key] as Record<PropertyKey, unknown>;
  parent[path[path.length - 1] as PropertyKey] = value;
}

function getIn(data: unknown, path: readonly PropertyKey[]): unknown {
  let node = data;
  for (const key of path) {
    if (node === null || typeof node !== 'object') return undefined;
    node = (node as Record<PropertyKey, unknown>)[key];
  }
  return node;
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

/** The parsed file, as describeIssue reads it. */
interface Source {
  /** The file's name, as messages give it. */
  file: string;
  doc: Document;
  at: (offset: number) => { line: number; col: number };
  /** What the schema was given (substituted, and read as numbers where it wanted them). */
  data: unknown;
  substitutions: Map<string, Substitution>;
}

function describeIssue({ file, doc, at, data, substitutions }: Source, issue: z.core.$ZodIssue): ConfigProblem[] {
  const path = issue.path.filter((k): k is PathKey => typeof k === 'string' || typeof k === 'number');
  if (issue.code === 'unrecognized_keys') {
    const known = knownKeys(configSchema, path, data);
    return issue.keys.map((key) => {
      const keyNode = findKeyNode(doc, path, key);
      const meant = closestKey(key, known);
      return {
        ...at(keyNode?.range?.[0] ?? nearestNode(doc, path).range?.[0] ?? 0),
        path: formatPath([...path, key]),
        message: meant === undefined ? 'unknown key' : `unknown key, did you mean ${meant}?`,
      };
    });
  }
  if (issue.code === 'invalid_key') {
    // A name used as a key (a service, a header): reported at the key, in the key schema's words.
    const key = path[path.length - 1];
    const keyNode = findKeyNode(doc, path.slice(0, -1), String(key));
    const message = [...new Set(issue.issues.map((i) => i.message))].join('; ');
    return [{ ...at(keyNode?.range?.[0] ?? nearestNode(doc, path).range?.[0] ?? 0), path: formatPath(path), message: `${message}, got key ${JSON.stringify(key)}` }];
  }
  const shared = issue.code === 'custom' ? (issue.params as { sharedPort?: SharedPort } | undefined)?.sharedPort : undefined;
  if (shared !== undefined) return [describeSharedPort({ doc, at, file }, shared)];
  const exact = doc.getIn(path, true) as Node | undefined;
  const node = exact ?? nearestNode(doc, path);
  let message = issue.message;
  if (exact === undefined && (issue.code === 'invalid_type' || issue.code === 'invalid_value') && missingValue(doc, path)) {
    message = 'is required';
  } else if (isScalar(exact) && issue.code !== 'custom') {
    message += `, got ${shownValue(getIn(data, path), substitutions.get(formatPath(path)), issue)}`;
  }
  return [{ ...at(node.range?.[0] ?? 0), path: formatPath(path), message }];
}

/**
 * The proxy and the admin listener on one port: told at whichever key comes later in the file (the one
 * the file is read to), naming the other with its file:line:col, or saying it is the default.
 */
function describeSharedPort({ doc, at, file }: Pick<Source, 'doc' | 'at' | 'file'>, shared: SharedPort): ConfigProblem {
  const keys = [
    { name: 'admin.port', node: doc.getIn(['admin', 'port'], true) as Node | undefined },
    { name: 'server.listen_port', node: doc.getIn(['server', 'listen_port'], true) as Node | undefined },
  ] as const;
  const offset = (key: (typeof keys)[number]): number => key.node?.range?.[0] ?? -1;
  const [here, other] = offset(keys[0]) >= offset(keys[1]) ? [keys[0], keys[1]] : [keys[1], keys[0]];
  const otherPos = offset(other) < 0 ? undefined : at(offset(other));
  const otherAt = otherPos === undefined ? 'its default' : `${file}:${otherPos.line}:${otherPos.col}`;
  return { ...at(offset(here)), path: here.name, message: sharedPortMessage(here.name, shared, otherAt) };
}

/**
 * A bad value as a message shows it. One from the environment is shown where a number or a boolean was
 * wanted; any other string from there may be a secret (a token too short), so only its template is named.
 */
function shownValue(value: unknown, sub: Substitution | undefined, issue: z.core.$ZodIssue): string {
  if (sub === undefined) return JSON.stringify(value);
  if (typeof value !== 'string' || wantsScalar(issue)) return `${JSON.stringify(value)} (from ${sub.template})`;
  return `${sub.template} (value not shown)`;
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
