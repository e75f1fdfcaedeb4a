/**
 * Services and routes through real sockets: precedence, 404 no_route, path rewrites, header edits, per-route
 * auth and rate limits, redirects. Every backend answers with its name and what it received (echo).
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { createProxy, type Proxy } from '../../src/app.js';
import { ConfigError } from '../../src/config/errors.js';
import { parseConfig } from '../../src/config/load.js';
import { configSchema } from '../../src/config/schema.js';
import { request } from '../helpers/http.js';
import { startBackend, type Backend } from '../helpers/servers.js';

type Json = Record<string, unknown>;

async function start(config: Json): Promise<{ proxy: Proxy; url: string; logs: Json[] }> {
  const logs: Json[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) if (line !== '') logs.push(JSON.parse(line) as Json);
      done();
    },
  });
  const parsed = configSchema.parse({ server: { listen_port: 0, listen_address: '127.0.0.1' }, admin: { enabled: false }, ...config });
  const proxy = createProxy(parsed, { logger: pino({ level: 'info', base: null }, stream) });
  const address = await proxy.listen();
  return {
    proxy,
    url: `http://127.0.0.1:${address.port}`,
    get logs() {
      proxy.flushLogs();
      return logs;
    },
  };
}

const service = (...backends: Backend[]): Json => ({ upstreams: backends.map((b) => ({ name: b.name, address: '127.0.0.1', port: b.port })), health_check: { active: { enabled: false } } });

describe('routes', () => {
  let api: Backend;
  let web: Backend;
  let admin: Backend;
  let proxy: Proxy;
  let url: string;
  let logs: () => Json[];

  before(async () => {
    [api, web, admin] = await Promise.all([startBackend('api1'), startBackend('web1'), startBackend('admin1')]);
    const started = await start({
      services: { api: service(api), web: service(web), admin: service(admin) },
      routes: [
        {
          name: 'api',
          match: { hosts: ['api.example.com', '*.api.example.com'], path_prefix: '/v1' },
          service: 'api',
          strip_prefix: true,
          middleware: { auth: { enabled: true, auth_type: 'api_key', valid_tokens: ['k1'] }, rate_limit: { enabled: true, requests_per_minute: 600, burst_size: 100 } },
          request_headers: { set: { 'X-Env': 'prod' }, remove: ['X-Debug'] },
          response_headers: { set: { 'Cache-Control': 'no-store' }, remove: ['X-Proxy-By'] },
        },
        { name: 'api-any-host', match: { path_prefix: '/v1' }, service: 'admin' },
        { name: 'wild', match: { hosts: ['*.example.com'], path_prefix: '/' }, service: 'admin' },
        { name: 'v2', match: { path_prefix: '/old' }, service: 'api', rewrite_prefix: '/v2' },
        { name: 'exact', match: { path: '/v1/status' }, service: 'web' },
        { name: 'posts', match: { path_prefix: '/forms', methods: ['POST'] }, service: 'admin' },
        { name: 'canary', match: { path_prefix: '/forms', methods: ['POST'], headers: { 'X-Canary': 'yes' } }, service: 'api' },
        { name: 'login-redirect', match: { path: '/login' }, redirect: { to: 'https://auth.example.com/login', status: 302 } },
        { name: 'limited', match: { path_prefix: '/limited' }, service: 'web', middleware: { rate_limit: { enabled: true, requests_per_minute: 1, burst_size: 2 } } },
        { name: 'limited-too', match: { path_prefix: '/also-limited' }, service: 'web', middleware: { rate_limit: { enabled: true, requests_per_minute: 1, burst_size: 2 } } },
        { name: 'site', match: { path_prefix: '/site' }, service: 'web' },
      ],
    });
    proxy = started.proxy;
    url = started.url;
    logs = () => started.logs;
  });
  after(async () => {
    await proxy.close();
    await Promise.all([api.close(), web.close(), admin.close()]);
  });

  const get = async (path: string, headers: Record<string, string> = {}, method = 'GET') => {
    const reply = await request(`${url}${path}`, { method, headers });
    return { status: reply.status, headers: reply.headers, body: reply.status === 200 ? reply.json() : reply.body === '' ? {} : reply.json() };
  };

  test('an exact host beats a wildcard, which beats no host; the port of Host is ignored', async () => {
    assert.equal((await get('/v1/x', { host: 'API.example.com:8080', 'x-api-key': 'k1' })).body.backend, 'api1');
    assert.equal((await get('/v1/x', { host: 'eu.api.example.com', 'x-api-key': 'k1' })).body.backend, 'api1');
    // *.example.com has only a '/' prefix: the no-host '/v1' route is a longer prefix but a weaker host.
    assert.equal((await get('/v1/x', { host: 'www.example.com' })).body.backend, 'admin1');
    assert.equal((await get('/v1/x', { host: 'other.test' })).body.backend, 'admin1');
    assert.equal((await get('/anything', { host: 'a.b.example.com' })).body.backend, 'admin1');
  });

  test('an exact path beats the longest prefix; prefixes match at segment boundaries only', async () => {
    assert.equal((await get('/v1/status', { host: 'other.test' })).body.backend, 'web1');
    assert.equal((await get('/v1/status/more', { host: 'other.test' })).body.backend, 'admin1');
    const miss = await get('/v1x', { host: 'other.test' });
    assert.equal(miss.status, 404);
    assert.equal(miss.body.error, 'no_route');
    assert.equal(typeof miss.body.request_id, 'string');
    assert.equal(miss.headers['x-request-id'], miss.body.request_id);
  });

  test('methods and headers: the route with more conditions wins, others fall through', async () => {
    // canary (prefix, method, header) outranks posts (prefix, method); a request without the header falls to posts.
    assert.equal((await get('/forms/a', { 'x-canary': 'yes' }, 'POST')).body.backend, 'api1');
    assert.equal((await get('/forms/a', { 'x-canary': 'no' }, 'POST')).body.backend, 'admin1');
    assert.equal((await get('/forms/a', {}, 'POST')).body.backend, 'admin1');
    // Neither route takes GET.
    assert.equal((await get('/forms/a', { 'x-canary': 'yes' })).status, 404);
  });

  test('strip_prefix and rewrite_prefix edit the upstream path and keep the query', async () => {
    const stripped = await get('/v1/users?id=7&x=1', { host: 'api.example.com', 'x-api-key': 'k1' });
    assert.equal(stripped.body.url, '/users?id=7&x=1');
    const bare = await get('/v1?q=1', { host: 'api.example.com', 'x-api-key': 'k1' });
    assert.equal(bare.body.url, '/?q=1');
    const rewritten = await get('/old/items?page=2');
    assert.equal(rewritten.body.url, '/v2/items?page=2');
    assert.equal((await get('/old')).body.url, '/v2');
  });

  test('request and response header edits, applied after Tollgate\'s own headers', async () => {
    const reply = await get('/v1/h', { host: 'api.example.com', 'x-api-key': 'k1', 'x-debug': '1', 'x-env': 'dev' });
    const seen = reply.body.headers as Record<string, string>;
    assert.equal(seen['x-env'], 'prod');
    assert.equal(seen['x-debug'], undefined);
    assert.equal(typeof seen['x-request-id'], 'string');
    assert.equal(reply.headers['cache-control'], 'no-store');
    assert.equal(reply.headers['x-proxy-by'], undefined, 'a route may remove a header Tollgate adds');
    assert.equal(typeof reply.headers['x-request-id'], 'string');
    // Another route keeps Tollgate's headers and sees the client's X-Debug.
    const other = await get('/site/h', { 'x-debug': '1' });
    assert.equal((other.body.headers as Record<string, string>)['x-debug'], '1');
    assert.equal(typeof other.headers['x-proxy-by'], 'string');
  });

  test('auth on one route and not on another', async () => {
    assert.equal((await get('/v1/a', { host: 'api.example.com' })).status, 401);
    assert.equal((await get('/v1/a', { host: 'api.example.com', 'x-api-key': 'wrong' })).status, 401);
    assert.equal((await get('/site/a')).status, 200);
  });

  test('per-route rate limits are separate buckets', async () => {
    const codes = async (path: string) => {
      const out: number[] = [];
      for (let i = 0; i < 3; i++) out.push((await get(path)).status);
      return out;
    };
    assert.deepEqual(await codes('/limited/a'), [200, 200, 429]);
    // The same client and the same policy on another route: a bucket of its own.
    assert.deepEqual(await codes('/also-limited/a'), [200, 200, 429]);
  });

  test('a redirect route answers itself', async () => {
    const before = web.hits + api.hits + admin.hits;
    const reply = await get('/login');
    assert.equal(reply.status, 302);
    assert.equal(reply.headers.location, 'https://auth.example.com/login');
    assert.equal(typeof reply.headers['x-request-id'], 'string');
    assert.equal(web.hits + api.hits + admin.hits, before, 'no backend sees a redirected request');
  });

  test('the completion line names the route and the service', async () => {
    await get('/site/logged');
    await get('/nowhere-at-all');
    const line = logs().find((l) => l.path === '/site/logged');
    assert.equal(line?.route, 'site');
    assert.equal(line?.service, 'web');
    const missed = logs().find((l) => l.path === '/nowhere-at-all');
    assert.equal(missed?.route, 'none');
    assert.equal(missed?.status, 404);
  });
});

describe('routes in the config', () => {
  const base = 'services:\n  a:\n    upstreams: [{ name: a1, address: 127.0.0.1, port: 4000 }]\n';

  test('a precedence tie is a config error naming both routes and their lines', () => {
    const text = `${base}routes:\n  - name: one\n    match: { path_prefix: /x }\n    service: a\n  - name: two\n    match: { path_prefix: /x/ }\n    service: a\n`;
    assert.throws(
      () => parseConfig(text, 'tie.yaml'),
      (err: unknown) => err instanceof ConfigError && /tie\.yaml:5:\d+ routes\[0\]/.test(err.message) && err.message.includes('"two" (tie.yaml:8)'),
    );
  });

  test('an unknown service, a route with both service and redirect, strip_prefix without a prefix, removing X-Request-ID, setting a hop-by-hop header', () => {
    const cases: [string, RegExp][] = [
      [`${base}routes:\n  - name: r\n    service: b\n`, /routes\[0\]\.service: no service named "b"/],
      [`${base}routes:\n  - name: r\n    service: a\n    redirect: { to: /x }\n`, /routes\[0\]\.service: give service or redirect/],
      [`${base}routes:\n  - name: r\n    service: a\n    strip_prefix: true\n`, /routes\[0\]\.strip_prefix: needs match\.path_prefix/],
      [`${base}routes:\n  - name: r\n    service: a\n    request_headers: { remove: [X-Request-Id] }\n`, /X-Request-ID is Tollgate's own/],
      [`${base}routes:\n  - name: r\n    service: a\n    response_headers: { set: { Connection: close } }\n`, /routes\[0\]\.response_headers\.set\.Connection: is a hop-by-hop header/],
      [`${base}routes:\n  - name: none\n    service: a\n`, /routes\[0\]\.name: "none" is reserved/],
      [`services:\n  none:\n    upstreams: [{ name: a1, address: 127.0.0.1, port: 4000 }]\nroutes:\n  - name: r\n    service: none\n`, /"none" is reserved/],
    ];
    for (const [text, message] of cases) assert.throws(() => parseConfig(text, 'c.yaml'), (err: unknown) => err instanceof ConfigError && message.test(err.message), text);
  });

  test('a route inherits the top-level middleware keys it does not give', () => {
    const config = parseConfig(
      `${base}middleware:\n  rate_limit: { enabled: true, requests_per_minute: 60, burst_size: 5 }\nroutes:\n  - name: r\n    service: a\n    middleware: { rate_limit: { burst_size: 50 } }\n`,
      'c.yaml',
    );
    assert.deepEqual([config.routes?.[0]?.middleware.rate_limit?.enabled, config.routes?.[0]?.middleware.rate_limit?.requests_per_minute, config.routes?.[0]?.middleware.rate_limit?.burst_size], [true, 60, 50]);
  });

  test('the brief\'s file is one service and one route "default"', async () => {
    const b = await startBackend('only');
    try {
      const { proxy, url, logs } = await start({ load_balancing: service(b) });
      try {
        const reply = await request(`${url}/any/path?q=1`);
        assert.equal(reply.status, 200);
        assert.equal(reply.json().url, '/any/path?q=1');
        assert.equal(logs.find((l) => l.path === '/any/path?q=1')?.route, 'default');
      } finally {
        await proxy.close();
      }
    } finally {
      await b.close();
    }
  });
});
