/**
 * The compiled route matcher: which configured route a request belongs to, decided by host, path, method
 * and headers with the precedence nginx and Envoy users expect. Built once when the config is loaded
 * (`compileRoutes`), then asked once per request (`Router.match`), so all the sorting and normalizing is
 * done at build time and a request costs a few Map lookups whatever the number of routes.
 *
 * Precedence among the routes that match a request completely, in order:
 * 1. host: exact name > `*.suffix` wildcard (longer suffix first) > no `hosts`;
 * 2. path: exact `path` > `pathPrefix` (longer first) > neither;
 * 3. more conditions (a non-empty `methods` list counts 1, each header 1).
 * The best route that matches completely wins, so a request falls through to a lower-ranked route when a
 * higher-ranked one fails on its method or headers. Two routes that could win the same request with equal
 * rank are a configuration error (`RouteTie`), reported by `compileRoutes` instead of a router.
 */

export interface RouteMatch {
  /** Exact host names or `*.suffix` wildcards, case-insensitive; empty/undefined = any host. */
  readonly hosts?: readonly string[];
  /** Exact path (no query). */
  readonly path?: string;
  /** Prefix matched at segment boundaries: '/v1' matches '/v1', '/v1/', '/v1/x', never '/v1x'. '/' matches everything. A trailing slash in the config ('/v1/') is the same as '/v1'. */
  readonly pathPrefix?: string;
  /** Upper-case method names (compared exactly, as HTTP methods are case-sensitive); undefined/empty = any method. */
  readonly methods?: readonly string[];
  /** Header name -> exact value; names compared case-insensitively, values exactly. */
  readonly headers?: Readonly<Record<string, string>>;
}

export interface RouteEntry<R> {
  readonly value: R;
  readonly match: RouteMatch;
}

/** Two entries (indices into the list given to compileRoutes) that would match the same request with equal precedence. */
export interface RouteTie {
  readonly a: number;
  readonly b: number;
}

export interface Matched<R> {
  readonly value: R;
  /** The configured prefix that matched (normalized, no trailing slash except '/'), or undefined for an exact `path` match or a route with neither path nor prefix. */
  readonly prefix: string | undefined;
}

/** Request headers as node:http gives them (lower-case names). */
export type HeaderBag = Readonly<Record<string, string | string[] | undefined>>;

/** One route as a table holds it: everything `match` checks, decided at build time. Internal to `compileRoutes`. */
export interface RouteCandidate<R> {
  readonly index: number;
  /** Returned as it is, so a match allocates nothing. */
  readonly result: Matched<R>;
  /** null = any method. */
  readonly methods: ReadonlySet<string> | null;
  /** Lower-case names and their values, side by side. */
  readonly headerNames: readonly string[];
  readonly headerValues: readonly string[];
  readonly conditions: number;
}

/**
 * The routes of one host key (an exact host, a wildcard suffix, or no host), lists sorted by conditions,
 * most first. Internal to `compileRoutes`: exported only because the Router constructor takes it.
 */
export interface RouteTable<R> {
  readonly exact: Map<string, RouteCandidate<R>[]>;
  /** Prefixes other than '/', by their normalized form. */
  readonly prefixes: Map<string, RouteCandidate<R>[]>;
  /** The lengths of the keys of `prefixes`: a path boundary of another length is not even sliced. */
  readonly prefixLengths: Set<number>;
  /** pathPrefix '/'. */
  readonly root: RouteCandidate<R>[];
  /** Neither path nor prefix. */
  readonly any: RouteCandidate<R>[];
}

/** Made by `compileRoutes`; immutable once made, so a config reload swaps in a whole new one. */
export class Router<R> {
  readonly size: number;
  readonly #hosts: ReadonlyMap<string, RouteTable<R>>;
  /** By suffix with its leading dot: '*.example.com' is '.example.com'. */
  readonly #wildcards: ReadonlyMap<string, RouteTable<R>>;
  readonly #wildcardLengths: ReadonlySet<number>;
  readonly #anyHost: RouteTable<R> | undefined;

  constructor(size: number, hosts: ReadonlyMap<string, RouteTable<R>>, wildcards: ReadonlyMap<string, RouteTable<R>>, anyHost: RouteTable<R> | undefined) {
    this.size = size;
    this.#hosts = hosts;
    this.#wildcards = wildcards;
    this.#wildcardLengths = new Set(Array.from(wildcards.keys(), (suffix) => suffix.length));
    this.#anyHost = anyHost;
  }

  /**
   * The best route that matches the request completely, or undefined. `host` as received (Host header or
   * :authority, may include a port, may be '[::1]:8080', may be undefined); `path` is the normalized
   * origin-form target and may include '?query' (ignored for matching).
   */
  match(host: string | undefined, path: string, method: string, headers: HeaderBag): Matched<R> | undefined {
    const name = normalizeHost(host);
    const q = path.indexOf('?');
    const end = q === -1 ? path.length : q;

    const exact = this.#hosts.get(name);
    if (exact !== undefined) {
      const found = matchTable(exact, path, end, method, headers);
      if (found !== undefined) return found;
    }
    if (this.#wildcards.size > 0) {
      // Longest suffix first: the dots left to right. The search starts at 1 so the label before the
      // suffix is never empty ('*.example.com' matches neither 'example.com' nor '.example.com').
      for (let dot = name.indexOf('.', 1); dot !== -1; dot = name.indexOf('.', dot + 1)) {
        if (!this.#wildcardLengths.has(name.length - dot)) continue;
        const table = this.#wildcards.get(name.slice(dot));
        if (table === undefined) continue;
        const found = matchTable(table, path, end, method, headers);
        if (found !== undefined) return found;
      }
    }
    return this.#anyHost === undefined ? undefined : matchTable(this.#anyHost, path, end, method, headers);
  }
}

/** The best candidate of one host's table: exact path, then prefixes longest first, then '/', then any path. */
function matchTable<R>(table: RouteTable<R>, path: string, end: number, method: string, headers: HeaderBag): Matched<R> | undefined {
  if (table.exact.size > 0) {
    const found = firstAccepted(table.exact.get(end === path.length ? path : path.slice(0, end)), method, headers);
    if (found !== undefined) return found;
  }
  if (table.prefixLengths.size > 0) {
    // Candidate prefixes end where the path ends or just before a '/': '/v1/x' tries '/v1/x' and '/v1'.
    // A length no configured prefix has is skipped before slicing, so most boundaries cost one Set lookup.
    for (let j = end; j > 1; j = path.lastIndexOf('/', j - 1)) {
      if (!table.prefixLengths.has(j)) continue;
      const found = firstAccepted(table.prefixes.get(j === path.length ? path : path.slice(0, j)), method, headers);
      if (found !== undefined) return found;
    }
  }
  return firstAccepted(table.root, method, headers) ?? firstAccepted(table.any, method, headers);
}

/** The first candidate whose methods and headers accept the request (the list is in precedence order). */
function firstAccepted<R>(list: readonly RouteCandidate<R>[] | undefined, method: string, headers: HeaderBag): Matched<R> | undefined {
  if (list === undefined) return undefined;
  for (let i = 0; i < list.length; i++) {
    const candidate = list[i] as RouteCandidate<R>;
    if (accepts(candidate, method, headers)) return candidate.result;
  }
  return undefined;
}

/**
 * Methods and headers. A header node:http hands over as an array is compared as its values joined with
 * ', ', the form node gives every other repeated header: one request then has one value per header, so
 * routes requiring different values never both match (which the tie rule relies on).
 */
function accepts(candidate: RouteCandidate<unknown>, method: string, headers: HeaderBag): boolean {
  if (candidate.methods !== null && !candidate.methods.has(method)) return false;
  const names = candidate.headerNames;
  for (let i = 0; i < names.length; i++) {
    const got = headers[names[i] as string];
    const value = Array.isArray(got) ? got.join(', ') : got;
    if (value !== candidate.headerValues[i]) return false;
  }
  return true;
}

/** Lower-case host without port and trailing dot: 'API.Example.com.:8080' -> 'api.example.com', '[::1]:80' -> '[::1]'. */
export function normalizeHost(host: string | undefined): string {
  if (host === undefined) return '';
  let end: number;
  if (host.charCodeAt(0) === 91 /* [ */) {
    const close = host.indexOf(']');
    end = close === -1 ? host.length : close + 1;
  } else {
    const colon = host.indexOf(':');
    end = colon === -1 ? host.length : colon;
    if (end > 0 && host.charCodeAt(end - 1) === 46 /* . */) end--;
  }
  let lower = true;
  for (let i = 0; i < end; i++) {
    const c = host.charCodeAt(i);
    if ((c >= 65 && c <= 90) || c > 127) {
      lower = false;
      break;
    }
  }
  // The usual Host ('api.example.com') is returned as it is: no copy, no allocation.
  const name = end === host.length ? host : host.slice(0, end);
  return lower ? name : name.toLowerCase();
}

/**
 * Builds the router once (config load time). Returns the ties instead of a router when there are any,
 * every tying pair once with a < b, sorted. Throws on a route the config schema should have refused
 * (both path and pathPrefix, a path without its leading '/' or with a query, a malformed host, a header
 * named twice), since such a route has no one meaning to match by.
 */
export function compileRoutes<R>(entries: readonly RouteEntry<R>[]): { router: Router<R>; ties: [] } | { router: undefined; ties: RouteTie[] } {
  const hosts = new Map<string, RouteTable<R>>();
  const wildcards = new Map<string, RouteTable<R>>();
  let anyHost: RouteTable<R> | undefined;

  for (let index = 0; index < entries.length; index++) {
    const entry = entries[index] as RouteEntry<R>;
    const { match } = entry;
    const place = pathPlace(index, match);
    const candidate = buildCandidate(index, entry, place);

    const hostList = match.hosts ?? [];
    if (hostList.length === 0) {
      anyHost ??= newTable();
      addTo(anyHost, place, candidate);
      continue;
    }
    // One route may name a host twice ('a.com', 'A.com.'): it is added to each table once.
    const seen = new Set<RouteTable<R>>();
    for (const raw of hostList) {
      const key = hostKey(index, raw);
      const map = key.wildcard ? wildcards : hosts;
      let table = map.get(key.name);
      if (table === undefined) map.set(key.name, (table = newTable()));
      if (seen.has(table)) continue;
      seen.add(table);
      addTo(table, place, candidate);
    }
  }

  const tables = [...hosts.values(), ...wildcards.values(), ...(anyHost === undefined ? [] : [anyHost])];
  const ties = new Map<number, RouteTie>();
  for (const table of tables) {
    for (const list of [...table.exact.values(), ...table.prefixes.values(), table.root, table.any]) {
      // Stable: equal condition counts keep config order (which only matters for routes that cannot both match).
      list.sort((x, y) => y.conditions - x.conditions);
      collectTies(list, entries.length, ties);
    }
    for (const prefix of table.prefixes.keys()) table.prefixLengths.add(prefix.length);
  }
  if (ties.size > 0) return { router: undefined, ties: [...ties.values()].sort((x, y) => x.a - y.a || x.b - y.b) };
  return { router: new Router(entries.length, hosts, wildcards, anyHost), ties: [] };
}

/** Where a route goes in a table: by exact path, by normalized prefix, or under any path. */
type PathPlace = { readonly kind: 'exact' | 'prefix'; readonly key: string } | { readonly kind: 'any' };

function pathPlace(index: number, match: RouteMatch): PathPlace {
  if (match.path !== undefined && match.pathPrefix !== undefined) throw invalidRoute(index, 'give path or pathPrefix, not both');
  if (match.path !== undefined) return { kind: 'exact', key: checkedPath(index, match.path) };
  if (match.pathPrefix === undefined) return { kind: 'any' };
  let end = checkedPath(index, match.pathPrefix).length;
  while (end > 1 && match.pathPrefix.charCodeAt(end - 1) === 47 /* / */) end--;
  return { kind: 'prefix', key: match.pathPrefix.slice(0, end) };
}

function checkedPath(index: number, path: string): string {
  if (path.charCodeAt(0) !== 47 /* / */ || path.includes('?')) throw invalidRoute(index, `path ${JSON.stringify(path)} must start with "/" and have no query`);
  return path;
}

/** An exact host ('[::1]' for the IPv6 '::1', as a Host header writes it) or a wildcard's suffix ('.example.com'). */
function hostKey(index: number, raw: string): { readonly wildcard: boolean; readonly name: string } {
  const lower = raw.toLowerCase();
  const wildcard = lower.startsWith('*.');
  let name = wildcard ? lower.slice(1) : lower;
  if (name.endsWith('.')) name = name.slice(0, -1);
  if (!wildcard && name.includes(':') && !name.startsWith('[')) {
    // node:http hands over '[::1]:8080'; the config may say '::1'. Anything else with a colon is a port.
    if (!/^[0-9a-f:.]+$/.test(name)) throw invalidRoute(index, `host ${JSON.stringify(raw)} must not have a port`);
    name = `[${name}]`;
  }
  const bad = name === '' || name === '.' || name.includes('*') || (!name.startsWith('[') && name.includes(':')) || (name.startsWith('[') && !name.endsWith(']'));
  if (bad) throw invalidRoute(index, `host ${JSON.stringify(raw)} must be a host name, an IP address or *.suffix`);
  return { wildcard, name };
}

function buildCandidate<R>(index: number, entry: RouteEntry<R>, place: PathPlace): RouteCandidate<R> {
  const { match } = entry;
  const methods = match.methods === undefined || match.methods.length === 0 ? null : new Set(match.methods);
  const headerNames: string[] = [];
  const headerValues: string[] = [];
  for (const [name, value] of Object.entries(match.headers ?? {})) {
    const lower = name.toLowerCase();
    if (headerNames.includes(lower)) throw invalidRoute(index, `header ${JSON.stringify(name)} is named twice`);
    headerNames.push(lower);
    headerValues.push(value);
  }
  return {
    index,
    result: Object.freeze({ value: entry.value, prefix: place.kind === 'prefix' ? place.key : undefined }),
    methods,
    headerNames,
    headerValues,
    conditions: (methods === null ? 0 : 1) + headerNames.length,
  };
}

function newTable<R>(): RouteTable<R> {
  return { exact: new Map(), prefixes: new Map(), prefixLengths: new Set(), root: [], any: [] };
}

function addTo<R>(table: RouteTable<R>, place: PathPlace, candidate: RouteCandidate<R>): void {
  if (place.kind === 'any') table.any.push(candidate);
  else if (place.kind === 'prefix' && place.key === '/') table.root.push(candidate);
  else {
    const map = place.kind === 'exact' ? table.exact : table.prefixes;
    const list = map.get(place.key);
    if (list === undefined) map.set(place.key, [candidate]);
    else list.push(candidate);
  }
}

/** Pairs in one list (same host key, same path key) with the same condition count that one request could both satisfy. */
function collectTies(list: readonly RouteCandidate<unknown>[], count: number, ties: Map<number, RouteTie>): void {
  for (let i = 0; i < list.length; i++) {
    const x = list[i] as RouteCandidate<unknown>;
    for (let k = i + 1; k < list.length; k++) {
      const y = list[k] as RouteCandidate<unknown>;
      if (y.conditions !== x.conditions) break; // sorted by conditions: no equal count further on
      if (!overlap(x, y)) continue;
      const a = Math.min(x.index, y.index);
      const b = Math.max(x.index, y.index);
      // Routes sharing several host keys meet in several tables: one report per pair.
      ties.set(a * count + b, { a, b });
    }
  }
}

/** Some request satisfies both: the method sets overlap and no header is required with two values. */
function overlap(x: RouteCandidate<unknown>, y: RouteCandidate<unknown>): boolean {
  if (x.methods !== null && y.methods !== null && ![...x.methods].some((m) => y.methods?.has(m) === true)) return false;
  for (let i = 0; i < x.headerNames.length; i++) {
    const k = y.headerNames.indexOf(x.headerNames[i] as string);
    if (k !== -1 && y.headerValues[k] !== x.headerValues[i]) return false;
  }
  return true;
}

function invalidRoute(index: number, message: string): Error {
  return new Error(`route ${index}: ${message}`);
}
