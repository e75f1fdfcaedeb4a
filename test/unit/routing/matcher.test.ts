import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { compileRoutes, normalizeHost, type HeaderBag, type RouteEntry, type RouteMatch, type RouteTie, type Router } from '../../../src/routing/matcher.js';

function route(value: string, match: RouteMatch): RouteEntry<string> {
  return { value, match };
}

/** The router of routes that must not tie. */
function compile<R>(entries: readonly RouteEntry<R>[]): Router<R> {
  const { router, ties } = compileRoutes(entries);
  assert.deepEqual(ties, []);
  assert.ok(router !== undefined);
  return router;
}

/** The matched route's value (undefined for none). */
function hit(router: Router<string>, host: string | undefined, path: string, method = 'GET', headers: HeaderBag = {}): string | undefined {
  return router.match(host, path, method, headers)?.value;
}

describe('normalizeHost', () => {
  test('lower-cases and drops the port and the trailing dot', () => {
    assert.equal(normalizeHost('API.Example.com.:8080'), 'api.example.com');
    assert.equal(normalizeHost('api.example.com'), 'api.example.com');
    assert.equal(normalizeHost('api.example.com.'), 'api.example.com');
    assert.equal(normalizeHost('[::1]:80'), '[::1]');
    assert.equal(normalizeHost('[FE80::1]'), '[fe80::1]');
    assert.equal(normalizeHost('10.0.0.1:443'), '10.0.0.1');
    assert.equal(normalizeHost(undefined), '');
    assert.equal(normalizeHost(''), '');
  });
});

describe('hosts', () => {
  const router = compile([
    route('none', { pathPrefix: '/' }),
    route('wild', { hosts: ['*.example.com'], pathPrefix: '/' }),
    route('wild-a', { hosts: ['*.a.example.com'], pathPrefix: '/' }),
    route('exact', { hosts: ['API.example.com'], pathPrefix: '/' }),
  ]);

  test('exact beats wildcard beats no host', () => {
    assert.equal(hit(router, 'api.example.com', '/'), 'exact');
    assert.equal(hit(router, 'www.example.com', '/'), 'wild');
    assert.equal(hit(router, 'other.org', '/'), 'none');
    assert.equal(hit(router, undefined, '/'), 'none');
  });

  test('a wildcard matches several levels, and the longer suffix wins', () => {
    assert.equal(hit(router, 'x.y.example.com', '/'), 'wild');
    assert.equal(hit(router, 'b.a.example.com', '/'), 'wild-a');
    assert.equal(hit(router, 'c.b.a.example.com', '/'), 'wild-a');
  });

  test('a wildcard does not match the bare domain', () => {
    assert.equal(hit(router, 'example.com', '/'), 'none');
    assert.equal(hit(router, 'a.example.com', '/'), 'wild'); // not *.a.example.com
    assert.equal(hit(router, '.example.com', '/'), 'none');
  });

  test('host case, port and trailing dot are ignored', () => {
    assert.equal(hit(router, 'API.Example.COM:8443', '/'), 'exact');
    assert.equal(hit(router, 'api.example.com.', '/'), 'exact');
    assert.equal(hit(router, 'WWW.EXAMPLE.COM:80', '/'), 'wild');
  });

  test('an IPv6 host in the config matches the bracketed Host header', () => {
    const v6 = compile([route('v6', { hosts: ['::1'] })]);
    assert.equal(hit(v6, '[::1]:8080', '/'), 'v6');
    assert.equal(hit(v6, '[::2]', '/'), undefined);
  });

  test('a route with several hosts is ranked by the one that matched', () => {
    const multi = compile([
      route('multi', { hosts: ['*.example.com', 'shop.example.com'], pathPrefix: '/' }),
      route('wild-long', { hosts: ['*.eu.example.com'], pathPrefix: '/' }),
    ]);
    assert.equal(hit(multi, 'shop.example.com', '/'), 'multi');
    assert.equal(hit(multi, 'x.eu.example.com', '/'), 'wild-long');
    assert.equal(hit(multi, 'www.example.com', '/'), 'multi');
  });
});

describe('paths', () => {
  const router = compile([
    route('any', {}),
    route('root', { pathPrefix: '/' }),
    route('v1', { pathPrefix: '/v1' }),
    route('v1-users', { pathPrefix: '/v1/users/' }),
    route('v1-exact', { path: '/v1/users' }),
  ]);

  test('an exact path beats the longest prefix, which beats shorter ones', () => {
    assert.deepEqual(router.match(undefined, '/v1/users', 'GET', {}), { value: 'v1-exact', prefix: undefined });
    assert.deepEqual(router.match(undefined, '/v1/users/7', 'GET', {}), { value: 'v1-users', prefix: '/v1/users' });
    assert.deepEqual(router.match(undefined, '/v1/other', 'GET', {}), { value: 'v1', prefix: '/v1' });
    assert.deepEqual(router.match(undefined, '/v2', 'GET', {}), { value: 'root', prefix: '/' });
  });

  test('prefixes match at segment boundaries only; the query is ignored', () => {
    assert.equal(hit(router, undefined, '/v1'), 'v1');
    assert.equal(hit(router, undefined, '/v1/'), 'v1');
    assert.equal(hit(router, undefined, '/v1?q=1'), 'v1');
    assert.equal(hit(router, undefined, '/v1x'), 'root');
    assert.equal(hit(router, undefined, '/v1/users?page=2'), 'v1-exact');
    assert.equal(hit(router, undefined, '/v1/users/'), 'v1-users');
    assert.equal(hit(router, undefined, '/v1/usersx'), 'v1');
  });

  test('a trailing slash in a configured prefix is dropped', () => {
    assert.deepEqual(router.match(undefined, '/v1/users', 'POST', {}), { value: 'v1-exact', prefix: undefined });
    assert.equal(router.match(undefined, '/v1/users/', 'GET', {})?.prefix, '/v1/users');
    const { ties } = compileRoutes([route('a', { pathPrefix: '/v1/' }), route('b', { pathPrefix: '/v1' })]);
    assert.deepEqual(ties, [{ a: 0, b: 1 }]);
  });

  test('a route with neither path nor prefix ranks below the root prefix', () => {
    const anyOnly = compile([route('any', {})]);
    assert.deepEqual(anyOnly.match('example.com', '/anything?x', 'DELETE', {}), { value: 'any', prefix: undefined });
    assert.equal(hit(router, undefined, '*'), 'root');
  });

  test('an exact path does not match with a trailing slash', () => {
    const exact = compile([route('exact', { path: '/health' })]);
    assert.equal(hit(exact, undefined, '/health'), 'exact');
    assert.equal(hit(exact, undefined, '/health?full=1'), 'exact');
    assert.equal(hit(exact, undefined, '/health/'), undefined);
  });
});

describe('methods and headers', () => {
  test('methods', () => {
    const router = compile([route('read', { pathPrefix: '/', methods: ['GET', 'HEAD'] }), route('write', { pathPrefix: '/', methods: ['POST'] })]);
    assert.equal(hit(router, undefined, '/', 'GET'), 'read');
    assert.equal(hit(router, undefined, '/', 'HEAD'), 'read');
    assert.equal(hit(router, undefined, '/', 'POST'), 'write');
    assert.equal(hit(router, undefined, '/', 'PUT'), undefined);
  });

  test('header names are case-insensitive, values exact; an array value is compared joined, as node joins repeats', () => {
    const router = compile([route('beta', { headers: { 'X-Beta': 'on' } }), route('both', { headers: { 'x-beta': 'off, on' } })]);
    assert.equal(hit(router, undefined, '/', 'GET', { 'x-beta': 'on' }), 'beta');
    assert.equal(hit(router, undefined, '/', 'GET', { 'x-beta': 'ON' }), undefined);
    assert.equal(hit(router, undefined, '/', 'GET', { 'x-beta': ['on'] }), 'beta');
    assert.equal(hit(router, undefined, '/', 'GET', { 'x-beta': ['off', 'on'] }), 'both');
    assert.equal(hit(router, undefined, '/', 'GET', {}), undefined);
  });

  test('the route with more conditions wins', () => {
    const router = compile([
      route('plain', { pathPrefix: '/api' }),
      route('get', { pathPrefix: '/api', methods: ['GET'] }),
      route('get-canary', { pathPrefix: '/api', methods: ['GET'], headers: { 'x-canary': '1' } }),
    ]);
    assert.equal(hit(router, undefined, '/api', 'GET', { 'x-canary': '1' }), 'get-canary');
    assert.equal(hit(router, undefined, '/api', 'GET'), 'get');
    assert.equal(hit(router, undefined, '/api', 'POST', { 'x-canary': '1' }), 'plain');
  });
});

describe('fall-through', () => {
  test('a request the better host route does not take goes to a lower-ranked route', () => {
    const router = compile([route('api-v1', { hosts: ['api.example.com'], pathPrefix: '/v1' }), route('default', { pathPrefix: '/' })]);
    assert.equal(hit(router, 'api.example.com', '/v1/x'), 'api-v1');
    assert.equal(hit(router, 'api.example.com', '/v2'), 'default');
  });

  test('through the wildcard levels and from an exact path to a prefix', () => {
    const router = compile([
      route('exact-post', { hosts: ['a.example.com'], path: '/login', methods: ['POST'] }),
      route('wild-long', { hosts: ['*.a.example.com'], pathPrefix: '/x' }),
      route('wild', { hosts: ['*.example.com'], pathPrefix: '/login' }),
    ]);
    assert.equal(hit(router, 'a.example.com', '/login', 'POST'), 'exact-post');
    assert.equal(hit(router, 'a.example.com', '/login', 'GET'), 'wild');
    assert.equal(hit(router, 'b.a.example.com', '/login'), 'wild');
    assert.equal(hit(router, 'b.a.example.com', '/x'), 'wild-long');
    assert.equal(hit(router, 'other.org', '/login'), undefined);
  });
});

describe('ties', () => {
  const ties = (matches: RouteMatch[]): RouteTie[] => compileRoutes(matches.map((m, i) => route(String(i), m))).ties;

  test('routes that match one request with equal precedence tie', () => {
    assert.deepEqual(ties([{ pathPrefix: '/a' }, { pathPrefix: '/a' }]), [{ a: 0, b: 1 }]);
    assert.deepEqual(ties([{}, {}, {}]), [
      { a: 0, b: 1 },
      { a: 0, b: 2 },
      { a: 1, b: 2 },
    ]);
    assert.deepEqual(ties([{ hosts: ['A.com'], path: '/x' }, { hosts: ['a.com.'], path: '/x' }]), [{ a: 0, b: 1 }]);
    // A method list and a header are one condition each, and one request can satisfy both.
    assert.deepEqual(ties([{ methods: ['GET'] }, { headers: { 'x-a': '1' } }]), [{ a: 0, b: 1 }]);
    // An empty method list overlaps any other; so does a header required by only one of them.
    assert.deepEqual(ties([{ methods: ['GET'], headers: { a: '1' } }, { methods: ['GET'], headers: { b: '1' } }]), [{ a: 0, b: 1 }]);
  });

  test('a pair sharing several host keys is reported once', () => {
    assert.deepEqual(ties([{ hosts: ['a.com', '*.b.com'] }, { hosts: ['*.b.com', 'a.com'] }]), [{ a: 0, b: 1 }]);
  });

  test('routes no one request can both match, or ranked apart, do not tie', () => {
    assert.deepEqual(ties([{ methods: ['GET'] }, { methods: ['POST'] }]), []);
    assert.deepEqual(ties([{ headers: { 'X-Env': 'prod' } }, { headers: { 'x-env': 'dev' } }]), []);
    assert.deepEqual(ties([{ pathPrefix: '/a' }, { pathPrefix: '/b' }]), []);
    assert.deepEqual(ties([{ path: '/a' }, { pathPrefix: '/a' }]), []);
    assert.deepEqual(ties([{ hosts: ['a.com'] }, { hosts: ['*.com'] }, {}]), []);
    assert.deepEqual(ties([{ methods: ['GET'] }, { methods: ['GET'], headers: { a: '1' } }]), []);
  });

  test('ties come back instead of a router', () => {
    const result = compileRoutes([route('a', {}), route('b', {})]);
    assert.equal(result.router, undefined);
  });
});

describe('compileRoutes', () => {
  test('refuses routes the config schema refuses', () => {
    const bad: RouteMatch[] = [
      { path: '/a', pathPrefix: '/a' },
      { path: 'a' },
      { pathPrefix: '/a?x' },
      { hosts: ['*'] },
      { hosts: ['a.*.com'] },
      { hosts: ['a.com:8080'] },
      { hosts: [''] },
      { headers: { 'X-A': '1', 'x-a': '1' } },
    ];
    for (const match of bad) assert.throws(() => compileRoutes([route('bad', match)]), /^Error: route 0: /, JSON.stringify(match));
  });

  test('size, and the same result object for every match', () => {
    const router = compile([route('a', { pathPrefix: '/a' }), route('b', {})]);
    assert.equal(router.size, 2);
    assert.equal(router.match(undefined, '/a/1', 'GET', {}), router.match('x', '/a/2?q', 'PUT', {}));
  });

  test('1,000 routes compile and match correctly', () => {
    const entries: RouteEntry<string>[] = [];
    for (let i = 0; i < 1000; i++) {
      entries.push(route(`host-${i}`, { hosts: [`svc${i}.example.com`], pathPrefix: `/v${i % 10}` }));
      entries.push(route(`wild-${i}`, { hosts: [`*.t${i}.example.com`], path: '/health' }));
      entries.push(route(`prefix-${i}`, { pathPrefix: `/p${i}/` }));
      entries.push(route(`exact-${i}`, { path: `/e/${i}`, methods: ['GET'] }));
    }
    entries.push(route('fallback', {}));
    const router = compile(entries);
    assert.equal(router.size, 4001);
    for (let i = 0; i < 1000; i++) {
      assert.deepEqual(router.match(`SVC${i}.example.com:80`, `/v${i % 10}/x`, 'GET', {}), { value: `host-${i}`, prefix: `/v${i % 10}` });
      assert.equal(hit(router, `svc${i}.example.com`, `/v${(i + 1) % 10}`), 'fallback');
      assert.equal(hit(router, `a.b.t${i}.example.com`, '/health'), `wild-${i}`);
      assert.equal(hit(router, `t${i}.example.com`, '/health'), 'fallback');
      assert.deepEqual(router.match(undefined, `/p${i}/a/b?c`, 'GET', {}), { value: `prefix-${i}`, prefix: `/p${i}` });
      assert.equal(hit(router, undefined, `/e/${i}`), `exact-${i}`);
      assert.equal(hit(router, undefined, `/e/${i}`, 'POST'), 'fallback');
    }
  });
});

// --- The property: the compiled router picks what a scan of every route by the precedence rules picks. ---

/** Host as the reference reads it, written apart from normalizeHost: bracketed IPv6 or up to the first ':'. */
function referenceHost(host: string | undefined): string {
  const name = (/^(\[[^\]]*\]|[^:]*)/.exec(host ?? '')?.[1] ?? '').toLowerCase();
  return name.startsWith('[') ? name : name.replace(/\.$/, '');
}

function referencePrefix(prefix: string): string {
  return prefix.replace(/\/+$/, '') || '/';
}

/** [host rank, path rank, conditions] of a route that matches the request completely, else undefined. */
function referenceRank(match: RouteMatch, host: string | undefined, target: string, method: string, headers: HeaderBag): [number, number, number] | undefined {
  const name = referenceHost(host);
  let hostRank = match.hosts === undefined || match.hosts.length === 0 ? 0 : -1;
  for (const configured of match.hosts ?? []) {
    const h = configured.toLowerCase().replace(/\.$/, '');
    if (h.startsWith('*.')) {
      const suffix = h.slice(1);
      if (name.endsWith(suffix) && name.length > suffix.length) hostRank = Math.max(hostRank, suffix.length);
    } else if (h === name) hostRank = Infinity;
  }
  if (hostRank === -1) return undefined;

  const path = target.split('?')[0] as string;
  let pathRank = 0;
  if (match.path !== undefined) {
    if (path !== match.path) return undefined;
    pathRank = Infinity;
  } else if (match.pathPrefix !== undefined) {
    const prefix = referencePrefix(match.pathPrefix);
    if (prefix !== '/' && path !== prefix && !path.startsWith(`${prefix}/`)) return undefined;
    pathRank = prefix.length;
  }

  const methods = match.methods ?? [];
  if (methods.length > 0 && !methods.includes(method)) return undefined;
  const required = Object.entries(match.headers ?? {});
  for (const [headerName, value] of required) {
    const got = headers[headerName.toLowerCase()];
    if ((Array.isArray(got) ? got.join(', ') : got) !== value) return undefined;
  }
  return [hostRank, pathRank, (methods.length > 0 ? 1 : 0) + required.length];
}

function compareRanks(x: readonly number[], y: readonly number[]): number {
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return (x[i] as number) > (y[i] as number) ? 1 : -1;
  return 0;
}

/** The best route by scanning all of them, and how many share its rank (more than 1 is a tie). */
function referenceMatch(entries: readonly RouteEntry<object>[], host: string | undefined, path: string, method: string, headers: HeaderBag): { best: number; equal: number } {
  let best = -1;
  let bestRank: number[] = [];
  let equal = 0;
  entries.forEach((entry, i) => {
    const rank = referenceRank(entry.match, host, path, method, headers);
    if (rank === undefined) return;
    const order = best === -1 ? 1 : compareRanks(rank, bestRank);
    if (order > 0) [best, bestRank, equal] = [i, rank, 1];
    else if (order === 0) equal++;
  });
  return { best, equal };
}

/** Every pair sharing host key, path key and condition count that one request could both match. */
function referenceTies(entries: readonly RouteEntry<object>[]): RouteTie[] {
  const hostKeys = (m: RouteMatch): Set<string> => new Set(m.hosts?.length ? m.hosts.map((h) => h.toLowerCase().replace(/\.$/, '')) : ['(none)']);
  const pathKey = (m: RouteMatch): string => (m.path !== undefined ? `=${m.path}` : m.pathPrefix !== undefined ? `^${referencePrefix(m.pathPrefix)}` : '(any)');
  const conditions = (m: RouteMatch): number => (m.methods?.length ? 1 : 0) + Object.keys(m.headers ?? {}).length;
  const headers = (m: RouteMatch): Map<string, string> => new Map(Object.entries(m.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
  const out: RouteTie[] = [];
  for (let a = 0; a < entries.length; a++) {
    for (let b = a + 1; b < entries.length; b++) {
      const x = (entries[a] as RouteEntry<object>).match;
      const y = (entries[b] as RouteEntry<object>).match;
      const yHosts = hostKeys(y);
      if (![...hostKeys(x)].some((h) => yHosts.has(h))) continue;
      if (pathKey(x) !== pathKey(y) || conditions(x) !== conditions(y)) continue;
      if (x.methods?.length && y.methods?.length && !x.methods.some((m) => y.methods?.includes(m))) continue;
      const yHeaders = headers(y);
      if ([...headers(x)].some(([k, v]) => yHeaders.has(k) && yHeaders.get(k) !== v)) continue;
      out.push({ a, b });
    }
  }
  return out;
}

const HOST_POOL = ['example.com', 'a.example.com', 'b.a.example.com', 'A.Example.COM', '*.example.com', '*.a.example.com', '*.A.example.com', 'other.org', '*.org'];
const REQUEST_HOSTS = [undefined, 'example.com', 'a.example.com', 'b.a.example.com', 'c.b.a.example.com', 'A.EXAMPLE.com:8080', 'example.com.', 'www.example.com', '.example.com', 'other.org', 'x.other.org', '[::1]:80'];
const segments = (pool: readonly string[]) => fc.array(fc.constantFrom(...pool), { maxLength: 3 }).map((s) => `/${s.join('/')}`);
const configPath = segments(['v1', 'v2', 'x']);

const routeMatch: fc.Arbitrary<RouteMatch> = fc
  .record({
    hosts: fc.option(fc.uniqueArray(fc.constantFrom(...HOST_POOL), { maxLength: 2 }), { nil: undefined }),
    path: fc.oneof(
      fc.constant({}),
      configPath.map((path) => ({ path })),
      fc.tuple(configPath, fc.boolean()).map(([p, slash]) => ({ pathPrefix: slash && p !== '/' ? `${p}/` : p })),
    ),
    methods: fc.option(fc.subarray(['GET', 'POST']), { nil: undefined }),
    headers: fc.option(fc.dictionary(fc.constantFrom('X-Env', 'x-beta'), fc.constantFrom('prod', 'dev'), { maxKeys: 2 }), { nil: undefined }),
  })
  .map(function toRouteMatch({ hosts, path, methods, headers }): RouteMatch {
    // Absent keys rather than undefined ones (exactOptionalPropertyTypes).
    return { ...(hosts && { hosts }), ...path, ...(methods && { methods }), ...(headers && { headers }) };
  });

const request = fc.record({
  host: fc.constantFrom(...REQUEST_HOSTS),
  path: fc
    .tuple(segments(['v1', 'v2', 'x', 'v1x']), fc.boolean(), fc.boolean())
    .map(([p, slash, query]) => `${p}${slash && p !== '/' ? '/' : ''}${query ? '?q=1' : ''}`),
  method: fc.constantFrom('GET', 'POST', 'PUT'),
  headers: fc.record(
    { 'x-env': fc.constantFrom<string | string[]>('prod', 'dev', 'PROD', ['dev'], ['dev', 'prod']), 'x-beta': fc.constantFrom('prod', 'dev') },
    { requiredKeys: [] },
  ),
});

test('property: the compiled router agrees with a scan of every route', () => {
  let compared = 0;
  fc.assert(
    fc.property(fc.array(routeMatch, { minLength: 1, maxLength: 6 }), fc.array(request, { minLength: 1, maxLength: 12 }), (matches, requests) => {
      const entries = matches.map((match) => ({ value: {}, match }));
      const { router, ties } = compileRoutes(entries);
      assert.deepEqual(ties, referenceTies(entries));
      if (router === undefined) return;
      for (const { host, path, method, headers } of requests) {
        const { best, equal } = referenceMatch(entries, host, path, method, headers);
        // No tie reported means no request finds two routes with the best rank.
        assert.ok(equal <= 1, `tie not reported for ${JSON.stringify({ host, path, method, headers })}`);
        const got = router.match(host, path, method, headers);
        if (best === -1) {
          assert.equal(got, undefined);
          continue;
        }
        const want = entries[best] as RouteEntry<object>;
        assert.equal(got?.value, want.value);
        const prefix = want.match.path === undefined && want.match.pathPrefix !== undefined ? referencePrefix(want.match.pathPrefix) : undefined;
        assert.equal(got.prefix, prefix);
        compared++;
      }
    }),
    { numRuns: 500 },
  );
  // The pools are small enough that many sets tie; enough must not, or the comparison proves little.
  assert.ok(compared > 500, `only ${compared} matches compared`);
});
