/**
 * config/routes.example.yaml is documentation users copy from: it must parse, use every route key, and
 * route requests the way its comments say.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { ConfigError } from '../../../src/config/errors.js';
import { loadConfigFile } from '../../../src/config/load.js';
import { routesOf } from '../../../src/config/resolve.js';
import type { Config } from '../../../src/config/schema.js';
import { compileRoutes } from '../../../src/routing/matcher.js';

const EXAMPLE = fileURLToPath(new URL('../../../config/routes.example.yaml', import.meta.url));
const ENV = { API_KEY: 'k-123' };

/** The route each request goes to, by name ('' for none), using the matcher the proxy uses. */
function router(config: Config): (host: string, path: string, method?: string, headers?: Record<string, string>) => string {
  const routes = config.routes ?? [];
  const compiled = compileRoutes(
    routes.map((r) => ({
      value: r.name,
      match: {
        ...(r.match.hosts === undefined ? {} : { hosts: r.match.hosts }),
        ...(r.match.path === undefined ? {} : { path: r.match.path }),
        ...(r.match.path_prefix === undefined ? {} : { pathPrefix: r.match.path_prefix }),
        ...(r.match.methods === undefined ? {} : { methods: r.match.methods }),
        ...(r.match.headers === undefined ? {} : { headers: r.match.headers }),
      },
    })),
  );
  assert.ok(compiled.router !== undefined, 'no ties');
  const r = compiled.router;
  return (host, path, method = 'GET', headers = {}) => r.match(host, path, method, headers)?.value ?? '';
}

describe('config/routes.example.yaml', () => {
  test('parses with API_KEY set; services api and web on the demo ports', () => {
    const config = loadConfigFile(EXAMPLE, ENV);
    assert.deepEqual(Object.keys(config.services ?? {}), ['api', 'web']);
    assert.deepEqual(
      Object.values(config.services ?? {}).flatMap((s) => s.upstreams.map((u) => `${u.address}:${u.port}`)),
      ['127.0.0.1:3000', '127.0.0.1:3001', '127.0.0.1:3002'],
    );
    assert.equal(config.load_balancing, undefined);
  });

  test('without API_KEY it is refused, naming the variable at both places it is used', () => {
    assert.throws(
      () => loadConfigFile(EXAMPLE, {}),
      (err: unknown) => err instanceof ConfigError && err.problems.length === 2 && err.problems.every((p) => p.message === 'environment variable API_KEY is not set'),
    );
  });

  test('every route key is used at least once, hosts both exact and wildcard', () => {
    const raw = parse(readFileSync(EXAMPLE, 'utf8')) as { routes: Record<string, Record<string, unknown>>[] };
    const used = new Set<string>();
    for (const route of raw.routes) {
      for (const [key, value] of Object.entries(route)) {
        used.add(key);
        if (typeof value === 'object' && value !== null && !Array.isArray(value)) for (const sub of Object.keys(value)) used.add(`${key}.${sub}`);
      }
    }
    const keys = [
      'name',
      'match.hosts',
      'match.path',
      'match.path_prefix',
      'match.methods',
      'match.headers',
      'service',
      'redirect.to',
      'redirect.status',
      'strip_prefix',
      'rewrite_prefix',
      'middleware.auth',
      'middleware.rate_limit',
      'request_headers.set',
      'request_headers.remove',
      'response_headers.set',
      'response_headers.remove',
    ];
    assert.deepEqual(
      keys.filter((k) => !used.has(k)),
      [],
    );
    const hosts = raw.routes.flatMap((r) => ((r.match as { hosts?: string[] } | undefined)?.hosts ?? []) as string[]);
    assert.ok(hosts.some((h) => h.startsWith('*.')) && hosts.some((h) => !h.startsWith('*.')));
  });

  test('per-route middleware inherits the keys it does not give', () => {
    const routes = new Map(routesOf(loadConfigFile(EXAMPLE, ENV)).map((r) => [r.config.name, r]));
    const api = routes.get('api');
    assert.deepEqual([api?.auth.enabled, api?.auth.auth_type, api?.auth.valid_tokens, api?.auth.api_key_header], [true, 'api_key', ['k-123'], 'X-API-Key']);
    assert.deepEqual([api?.rateLimit.enabled, api?.rateLimit.requests_per_minute, api?.rateLimit.burst_size], [true, 600, 20]);
    const account = routes.get('account');
    assert.deepEqual([account?.auth.enabled, account?.auth.auth_type, account?.auth.valid_tokens], [true, 'bearer', ['dev-token-123']]);
    const contact = routes.get('contact');
    assert.deepEqual([contact?.rateLimit.enabled, contact?.rateLimit.requests_per_minute, contact?.rateLimit.burst_size], [true, 10, 3]);
    assert.deepEqual([routes.get('site')?.auth.enabled, routes.get('site')?.rateLimit.burst_size], [false, 50]);
  });

  test('requests go where the comments say', () => {
    const route = router(loadConfigFile(EXAMPLE, ENV));
    assert.equal(route('api.example.com', '/v1/users?id=7'), 'api');
    assert.equal(route('eu.api.example.com:8080', '/v1'), 'api');
    assert.equal(route('api.example.com', '/v1/users', 'GET', { 'x-preview': 'true' }), 'api-preview');
    assert.equal(route('api.example.com', '/v1/users', 'GET', { 'x-preview': 'no' }), 'api');
    assert.equal(route('api.example.com', '/v1beta'), 'site');
    assert.equal(route('api.example.com', '/other'), 'site');
    assert.equal(route('docs.example.com', '/any/page?x=1'), 'docs-moved');
    assert.equal(route('www.example.com', '/contact', 'POST'), 'contact');
    assert.equal(route('www.example.com', '/contact'), 'site');
    assert.equal(route('www.example.com', '/contact/more', 'POST'), 'site');
    assert.equal(route('localhost', '/account/settings'), 'account');
    assert.equal(route('localhost', '/'), 'site');
  });
});
