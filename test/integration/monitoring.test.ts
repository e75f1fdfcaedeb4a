import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { startFaultUpstreams } from '../helpers/fault-upstream.js';
import { request } from '../helpers/http.js';
import { startBackend, startProxy, waitFor, type Backend } from '../helpers/servers.js';
import { openEvents, samples, scrape } from '../helpers/metrics.js';

const TOKEN = { authorization: 'Bearer t' };
const NO_HEALTH = { active: { enabled: false }, passive: { enabled: false } };

/** The label text of a `tollgate_requests_total` series. */
function series(cls: string, method: string, upstream: string, route = 'default', service = upstream === 'none' ? 'none' : 'default'): string {
  return `{status_class="${cls}",method="${method}",protocol="http/1.1",route="${route}",service="${service}",upstream="${upstream}"}`;
}

/** The label text of an upstream's series. */
const up = (name: string, service = 'default'): string => `{service="${service}",upstream="${name}"}`;

describe('metrics', () => {
  let a: Backend;
  let b: Backend;
  before(async () => {
    [a, b] = await Promise.all([startBackend('a'), startBackend('b')]);
  });
  after(async () => {
    await Promise.all([a.close(), b.close()]);
  });

  test('a scrape after known traffic has the exact counts per status class, method and upstream', async () => {
    const proxy = await startProxy([a, b], {
      load_balancing: { health_check: NO_HEALTH },
      middleware: { auth: { enabled: true, valid_tokens: ['t'] }, rate_limit: { enabled: true, requests_per_minute: 1, burst_size: 10 } },
    });
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 8; i++) statuses.push((await request(`${proxy.url}/get/${i}`, { headers: TOKEN })).status);
      for (let i = 0; i < 2; i++) statuses.push((await request(`${proxy.url}/post`, { method: 'POST', headers: TOKEN, body: 'x' })).status);
      for (let i = 0; i < 3; i++) statuses.push((await request(`${proxy.url}/limited`, { headers: TOKEN })).status);
      for (let i = 0; i < 4; i++) statuses.push((await request(`${proxy.url}/no-token`)).status);
      statuses.push((await request(`${proxy.url}/bad-token`, { headers: { authorization: 'Bearer wrong' } })).status);
      assert.deepEqual(statuses, [...Array(10).fill(200), 429, 429, 429, 401, 401, 401, 401, 401]);
      await waitFor(() => proxy.logs.filter((l) => l.msg === 'Request Completed').length === 18, 2000, 'all requests finished');

      const text = await scrape(proxy.adminUrl);
      const requests = samples(text, 'tollgate_requests_total');
      assert.deepEqual(
        Object.fromEntries(requests),
        {
          [series('2xx', 'GET', 'a')]: 4,
          [series('2xx', 'GET', 'b')]: 4,
          [series('2xx', 'POST', 'a')]: 1,
          [series('2xx', 'POST', 'b')]: 1,
          [series('4xx', 'GET', 'none')]: 8,
        },
      );
      assert.deepEqual(Object.fromEntries(samples(text, 'tollgate_upstream_selections_total')), { [up('a')]: 5, [up('b')]: 5 });
      assert.deepEqual(Object.fromEntries([...samples(text, 'tollgate_auth_failures_total')].filter(([, n]) => n > 0)), { '{reason="missing"}': 4, '{reason="invalid"}': 1 });
      assert.equal(samples(text, 'tollgate_ratelimit_rejections_total').get(''), 3);
      assert.equal(samples(text, 'tollgate_retries_total').get(''), 0);
      assert.equal(samples(text, 'tollgate_request_duration_seconds_count').get('{route="default",service="default",upstream="a"}'), 5);
      assert.equal(samples(text, 'tollgate_request_duration_seconds_count').get('{route="default",service="none",upstream="none"}'), 8);
      assert.deepEqual(Object.fromEntries(samples(text, 'tollgate_upstream_healthy')), { [up('a')]: 1, [up('b')]: 1 });
      assert.deepEqual(Object.fromEntries(samples(text, 'tollgate_upstream_inflight')), { [up('a')]: 0, [up('b')]: 0 });
      assert.equal(samples(text, 'tollgate_connections_refused_total').get(''), 0);
      assert.ok(samples(text, 'tollgate_connections_open').has(''));
      assert.ok(samples(text, 'process_resident_memory_bytes').has(''), 'process metrics');
      for (const line of text.split('\n').filter((l) => l.startsWith('tollgate_'))) {
        assert.doesNotMatch(line, /\/get|\/post|no-token|Bearer/, 'no path or credential in any label');
      }

      // /api/status carries the same totals, and the upstream addresses that /health does not show.
      const status = (await request(`${proxy.adminUrl}/api/status`)).json<{
        totals: { requests: number; status: Record<string, number>; unauthorized: number; rate_limited: number };
        upstreams: { service: string; name: string; address: string; state: string; requests: number }[];
        services: unknown[];
        routes: unknown[];
      }>();
      assert.equal(status.totals.requests, 18);
      assert.deepEqual(status.totals.status, { '2xx': 10, '3xx': 0, '4xx': 8, '5xx': 0 });
      assert.equal(status.totals.unauthorized, 5);
      assert.equal(status.totals.rate_limited, 3);
      assert.deepEqual(status.upstreams.map((u) => [u.service, u.name, u.address, u.state, u.requests]), [
        ['default', 'a', `127.0.0.1:${a.port}`, 'up', 5],
        ['default', 'b', `127.0.0.1:${b.port}`, 'up', 5],
      ]);
      assert.deepEqual(status.services, [{ name: 'default', strategy: 'round_robin', upstreams: ['a', 'b'], requests: 10 }]);
      assert.deepEqual(status.routes, [{ name: 'default', service: 'default', redirect: null, requests: 18 }]);
      const health = await request(`${proxy.url}/health`);
      assert.doesNotMatch(health.body, new RegExp(`${a.port}|${b.port}|127\\.0\\.0\\.1`));
    } finally {
      await proxy.close();
    }
  });

  test('a retry with no other upstream to go to is not counted (one upstream, refused: retries 0)', async () => {
    const [dead] = await startFaultUpstreams('dead');
    await dead!.kill();
    const proxy = await startProxy([dead!], { load_balancing: { health_check: { active: { enabled: false }, passive: { enabled: false } } } });
    try {
      assert.equal((await request(`${proxy.url}/once`)).status, 502);
      assert.equal(samples(await scrape(proxy.adminUrl), 'tollgate_retries_total').get(''), 0);
      const line = proxy.logs.find((l) => l.msg === 'Request Completed' && l.path === '/once');
      assert.equal(line?.retries, 0);
      assert.equal(line?.status, 502);
    } finally {
      await proxy.close();
    }
  });

  test('retries and ejections are counted; a dead upstream shows as ejected', async () => {
    const [dead, live] = await startFaultUpstreams('dead', 'live');
    await dead!.kill();
    const proxy = await startProxy([dead!, live!], {
      load_balancing: { health_check: { active: { enabled: false }, passive: { consecutive_failures: 1, base_ejection_ms: 60_000 } } },
    });
    try {
      for (let i = 0; i < 4; i++) assert.equal((await request(`${proxy.url}/r${i}`)).status, 200);
      const text = await scrape(proxy.adminUrl);
      assert.equal(samples(text, 'tollgate_retries_total').get(''), 1);
      assert.equal(samples(text, 'tollgate_upstream_ejections_total').get(up('dead')), 1);
      assert.equal(samples(text, 'tollgate_upstream_ejected').get(up('dead')), 1);
      assert.equal(samples(text, 'tollgate_upstream_ejected').get(up('live')), 0);
      assert.deepEqual(Object.fromEntries(samples(text, 'tollgate_upstream_selections_total')), { [up('dead')]: 1, [up('live')]: 4 });
      assert.deepEqual(Object.fromEntries(samples(text, 'tollgate_requests_total')), { [series('2xx', 'GET', 'live')]: 4 });
      const status = (await request(`${proxy.adminUrl}/api/status`)).json<{ upstreams: { name: string; state: string }[] }>();
      assert.deepEqual(status.upstreams.map((u) => u.state), ['ejected', 'up']);
    } finally {
      await proxy.close();
      await live!.kill();
    }
  });

  test('5xx from a dead last upstream and 503 no_upstream: upstream label and status class', async () => {
    const [dead] = await startFaultUpstreams('dead');
    await dead!.kill();
    const proxy = await startProxy([dead!], { load_balancing: { health_check: NO_HEALTH, retries: { max_retries: 0 } } });
    try {
      assert.equal((await request(`${proxy.url}/`)).status, 502);
      proxy.proxy.balancer.setHealthy(proxy.proxy.balancer.backends[0]!, false);
      assert.equal((await request(`${proxy.url}/`)).status, 503);
      const text = await scrape(proxy.adminUrl);
      assert.deepEqual(Object.fromEntries(samples(text, 'tollgate_requests_total')), {
        [series('5xx', 'GET', 'dead')]: 1,
        [series('5xx', 'GET', 'none')]: 1,
      });
      assert.equal(samples(text, 'tollgate_upstream_healthy').get(up('dead')), 0);
    } finally {
      await proxy.close();
    }
  });

  test('services and routes: an upstream name in two services has two series; the route label, none for a 404', async () => {
    const [apiOne, webOne] = await Promise.all([startBackend('api-one'), startBackend('web-one')]);
    const service = (backend: Backend): Record<string, unknown> => ({
      strategy: 'least_conn',
      upstreams: [{ name: 'one', address: '127.0.0.1', port: backend.port }],
      health_check: NO_HEALTH,
    });
    const proxy = await startProxy([a], {
      load_balancing: { health_check: NO_HEALTH },
      services: { api: service(apiOne), web: service(webOne) },
      routes: [
        { name: 'api', match: { path_prefix: '/api' }, service: 'api' },
        { name: 'site', match: { path_prefix: '/site' }, service: 'web' },
        { name: 'rest', match: { path_prefix: '/rest' }, service: 'default' },
        { name: 'login', match: { path: '/login' }, redirect: { to: 'https://auth.example.com/login', status: 302 } },
      ],
    });
    try {
      const got = [];
      for (const path of ['/api/1', '/api/2', '/site/1', '/rest/1', '/login', '/nowhere', '/nowhere/else']) {
        const res = await request(`${proxy.url}${path}`);
        got.push([res.status, res.status === 200 ? res.json().backend : undefined]);
      }
      assert.deepEqual(got, [
        [200, 'api-one'],
        [200, 'api-one'],
        [200, 'web-one'],
        [200, 'a'],
        [302, undefined],
        [404, undefined],
        [404, undefined],
      ]);
      await waitFor(() => proxy.logs.filter((l) => l.msg === 'Request Completed').length === 7, 2000, 'all requests finished');
      const text = await scrape(proxy.adminUrl);
      assert.deepEqual(Object.fromEntries(samples(text, 'tollgate_requests_total')), {
        [series('2xx', 'GET', 'one', 'api', 'api')]: 2,
        [series('2xx', 'GET', 'one', 'site', 'web')]: 1,
        [series('2xx', 'GET', 'a', 'rest')]: 1,
        [series('3xx', 'GET', 'none', 'login')]: 1,
        [series('4xx', 'GET', 'none', 'none')]: 2,
      });
      assert.deepEqual(Object.fromEntries(samples(text, 'tollgate_upstream_selections_total')), { [up('a')]: 1, [up('one', 'api')]: 2, [up('one', 'web')]: 1 });
      assert.deepEqual(Object.fromEntries(samples(text, 'tollgate_upstream_healthy')), { [up('a')]: 1, [up('one', 'api')]: 1, [up('one', 'web')]: 1 });
      assert.equal(samples(text, 'tollgate_request_duration_seconds_count').get('{route="none",service="none",upstream="none"}'), 2);
      assert.equal(samples(text, 'tollgate_request_duration_seconds_count').get('{route="api",service="api",upstream="one"}'), 2);

      const status = (await request(`${proxy.adminUrl}/api/status`)).json<{
        upstreams: { service: string; name: string; address: string; requests: number }[];
        services: { name: string; strategy: string; upstreams: string[]; requests: number }[];
        routes: { name: string; service: string | null; redirect: string | null; requests: number }[];
      }>();
      assert.deepEqual(status.upstreams.map((u) => [u.service, u.name, u.address, u.requests]), [
        ['api', 'one', `127.0.0.1:${apiOne.port}`, 2],
        ['web', 'one', `127.0.0.1:${webOne.port}`, 1],
        ['default', 'a', `127.0.0.1:${a.port}`, 1],
      ]);
      assert.deepEqual(status.services, [
        { name: 'api', strategy: 'least_conn', upstreams: ['one'], requests: 2 },
        { name: 'web', strategy: 'least_conn', upstreams: ['one'], requests: 1 },
        { name: 'default', strategy: 'round_robin', upstreams: ['a'], requests: 1 },
      ]);
      assert.deepEqual(status.routes, [
        { name: 'api', service: 'api', redirect: null, requests: 2 },
        { name: 'site', service: 'web', redirect: null, requests: 1 },
        { name: 'rest', service: 'default', redirect: null, requests: 1 },
        { name: 'login', service: null, redirect: 'https://auth.example.com/login', requests: 1 },
      ]);
    } finally {
      await proxy.close();
      await Promise.all([apiOne.close(), webOne.close()]);
    }
  });

  test('connections open and refused over max_connections', async () => {
    const proxy = await startProxy([a], { server: { max_connections: 1 } });
    const first = connect(proxy.port, '127.0.0.1');
    try {
      await once(first, 'connect');
      await waitFor(() => proxy.proxy.server.server.listening, 1000, 'listening');
      const second = connect(proxy.port, '127.0.0.1');
      second.on('error', () => {});
      await once(second, 'close');
      await waitFor(() => proxy.proxy.server.refusedConnections === 1, 2000, 'the refusal to be counted');
      const text = await scrape(proxy.adminUrl);
      assert.equal(samples(text, 'tollgate_connections_refused_total').get(''), 1);
      assert.equal(samples(text, 'tollgate_connections_open').get(''), 1);
    } finally {
      first.destroy();
      await proxy.close();
    }
  });

  test('metrics.enabled: false: no request series, the scrape-time gauges stay', async () => {
    const proxy = await startProxy([a], { metrics: { enabled: false } });
    try {
      await request(`${proxy.url}/`);
      const text = await scrape(proxy.adminUrl);
      assert.equal(samples(text, 'tollgate_requests_total').size, 0);
      assert.equal(samples(text, 'tollgate_upstream_healthy').get(up('a')), 1);
      const status = (await request(`${proxy.adminUrl}/api/status`)).json<{ metrics: boolean; totals: { requests: number } }>();
      assert.equal(status.metrics, false);
      assert.equal(status.totals.requests, 0);
    } finally {
      await proxy.close();
    }
  });
});

describe('trace context', () => {
  let backend: Backend;
  before(async () => {
    backend = await startBackend('traced');
  });
  after(() => backend.close());

  const seen = (body: string): Record<string, string | undefined> => JSON.parse(body).headers as Record<string, string | undefined>;
  const PARENT = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00';

  test("the client's traceparent is continued with a new span id; flags and tracestate are kept; sent once", async () => {
    const proxy = await startProxy([backend]);
    try {
      const res = await request(`${proxy.url}/continue`, { headers: { traceparent: PARENT, tracestate: 'rojo=00f067aa0ba902b7,congo=t61rcWkgMzE' } });
      const got = seen(res.body);
      const m = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/.exec(got.traceparent ?? '');
      assert.ok(m, `one well-formed traceparent upstream, got ${got.traceparent}`);
      assert.equal(m[1], '0af7651916cd43dd8448eb211c80319c', 'same trace id');
      assert.notEqual(m[2], 'b7ad6b7169203331', 'a new span id for this hop');
      assert.notEqual(m[2], '0'.repeat(16));
      assert.equal(m[3], '00', 'flags as the client sent them');
      assert.equal(got.tracestate, 'rojo=00f067aa0ba902b7,congo=t61rcWkgMzE');
      const line = proxy.logs.find((l) => l.msg === 'Request Completed' && l.path === '/continue');
      assert.equal(line?.trace_id, '0af7651916cd43dd8448eb211c80319c');
      assert.equal(line?.request_id, res.headers['x-request-id']);
      // Two hops see two different span ids.
      const again = seen((await request(`${proxy.url}/continue`, { headers: { traceparent: PARENT } })).body);
      assert.notEqual(again.traceparent, got.traceparent);
      assert.equal(again.tracestate, undefined);
    } finally {
      await proxy.close();
    }
  });

  test('without a traceparent, or with an invalid one, a new sampled trace starts and tracestate is dropped', async () => {
    const proxy = await startProxy([backend]);
    try {
      const fresh = seen((await request(`${proxy.url}/fresh`)).body);
      assert.match(fresh.traceparent ?? '', /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
      const freshLine = proxy.logs.find((l) => l.msg === 'Request Completed' && l.path === '/fresh');
      assert.equal(freshLine?.trace_id, fresh.traceparent?.slice(3, 35));
      for (const bad of [PARENT.toUpperCase(), `00-${'0'.repeat(32)}-b7ad6b7169203331-01`, 'garbage']) {
        const got = seen((await request(`${proxy.url}/invalid`, { headers: { traceparent: bad, tracestate: 'rojo=1' } })).body);
        assert.match(got.traceparent ?? '', /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/, bad);
        assert.notEqual(got.traceparent?.slice(3, 35), '0af7651916cd43dd8448eb211c80319c');
        assert.equal(got.tracestate, undefined, 'tracestate never travels without a valid traceparent');
      }
    } finally {
      await proxy.close();
    }
  });

  test('requests refused before any upstream have a trace id in their log line too', async () => {
    const proxy = await startProxy([backend], { middleware: { auth: { enabled: true, valid_tokens: ['t'] } } });
    try {
      const res = await request(`${proxy.url}/refused`, { headers: { traceparent: PARENT } });
      assert.equal(res.status, 401);
      assert.equal(res.headers['server-timing'], undefined, 'no upstream time without an upstream');
      const line = proxy.logs.find((l) => l.msg === 'Request Completed' && l.path === '/refused');
      assert.equal(line?.trace_id, '0af7651916cd43dd8448eb211c80319c');
    } finally {
      await proxy.close();
    }
  });

  test('sample_new_traces: false starts traces with flags 00; tracing off passes the client headers through untouched', async () => {
    const unsampled = await startProxy([backend], { tracing: { sample_new_traces: false } });
    const off = await startProxy([backend], { tracing: { enabled: false } });
    try {
      assert.match(seen((await request(`${unsampled.url}/`)).body).traceparent ?? '', /-00$/);
      const passed = seen((await request(`${off.url}/off`, { headers: { traceparent: PARENT, tracestate: 'a=1' } })).body);
      assert.equal(passed.traceparent, PARENT);
      assert.equal(passed.tracestate, 'a=1');
      assert.equal(seen((await request(`${off.url}/off2`)).body).traceparent, undefined);
      const line = off.logs.find((l) => l.msg === 'Request Completed' && l.path === '/off');
      assert.ok(line !== undefined && !('trace_id' in line));
    } finally {
      await unsampled.close();
      await off.close();
    }
  });

  test('Server-Timing gives the upstream time of proxied responses; server_timing: false leaves it out', async () => {
    const slow = await startBackend('slow', (_req, res) => setTimeout(() => res.end('late'), 60));
    const proxy = await startProxy([slow]);
    const without = await startProxy([slow], { tracing: { server_timing: false } });
    try {
      const res = await request(`${proxy.url}/`);
      const m = /^upstream;dur=(\d+(?:\.\d+)?)$/.exec(String(res.headers['server-timing']));
      assert.ok(m, `Server-Timing: ${res.headers['server-timing']}`);
      assert.ok(Number(m[1]) >= 59, `the upstream took at least its 60 ms timer, got ${m[1]}`);
      assert.equal((await request(`${without.url}/`)).headers['server-timing'], undefined);
    } finally {
      await proxy.close();
      await without.close();
      await slow.close();
    }
  });
});

describe('admin listener', () => {
  let backend: Backend;
  before(async () => {
    backend = await startBackend('echo');
  });
  after(() => backend.close());

  test('the dashboard and its assets are served by Tollgate itself, with a strict CSP; only GET and HEAD', async () => {
    const proxy = await startProxy([backend]);
    try {
      const page = await request(`${proxy.adminUrl}/`);
      assert.equal(page.status, 200);
      assert.match(String(page.headers['content-type']), /^text\/html/);
      assert.match(String(page.headers['content-security-policy']), /default-src 'none'; script-src 'self'/);
      for (const src of [...page.body.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1] as string).filter((s) => s.startsWith('/') && !s.startsWith('/api') && s !== '/metrics')) {
        const asset = await request(`${proxy.adminUrl}${src}`);
        assert.equal(asset.status, 200, src);
        assert.ok(asset.body.length > 100, src);
      }
      assert.doesNotMatch(page.body, /https?:\/\//, 'no asset from another origin');
      const head = await request(`${proxy.adminUrl}/metrics`, { method: 'HEAD' });
      assert.equal(head.status, 200);
      assert.equal(head.body, '');
      const post = await request(`${proxy.adminUrl}/metrics`, { method: 'POST', body: 'x' });
      assert.equal(post.status, 405);
      assert.equal(post.headers.allow, 'GET, HEAD');
      const missing = await request(`${proxy.adminUrl}/nope`);
      assert.equal(missing.status, 404);
      assert.equal(missing.json().error, 'not_found');
    } finally {
      await proxy.close();
    }
  });

  test('the admin API is not reachable through the proxy port', async () => {
    const open = await startProxy([backend]);
    const guarded = await startProxy([backend], { middleware: { auth: { enabled: true, valid_tokens: ['t'] } } });
    try {
      for (const path of ['/metrics', '/api/status', '/api/events', '/']) {
        const res = await request(`${open.url}${path}`);
        assert.equal(res.status, 200, path);
        assert.equal(res.json().backend, 'echo', `${path} went to the upstream`);
        assert.equal((await request(`${guarded.url}${path}`)).status, 401, path);
      }
      // And the admin listener answers without credentials: it is not behind the proxy's auth.
      assert.equal((await request(`${guarded.adminUrl}/api/status`)).status, 200);
    } finally {
      await open.close();
      await guarded.close();
    }
  });

  test('/api/events sends the status at once and then every second; clients that leave are dropped; shutdown is not held up', async () => {
    const proxy = await startProxy([backend]);
    const stream = await openEvents(`${proxy.adminUrl}/api/events`);
    try {
      assert.match(String(stream.res.headers['content-type']), /^text\/event-stream/);
      await waitFor(() => stream.events.length >= 1, 2000, 'the first event');
      await request(`${proxy.url}/x`);
      await waitFor(() => stream.events.length >= 3, 4000, 'two more events');
      const last = stream.events.at(-1) as { totals: { requests: number }; upstreams: unknown[] };
      assert.ok(last.totals.requests >= 1);
      assert.equal(last.upstreams.length, 1);
      const second = await openEvents(`${proxy.adminUrl}/api/events`);
      await waitFor(() => second.events.length >= 1, 2000, 'the second client');
      second.close();
      const started = Date.now();
      await proxy.close();
      assert.ok(Date.now() - started < 5000, 'an open event stream does not delay shutdown');
      await waitFor(() => stream.res.complete || stream.res.destroyed, 2000, 'the stream to end');
    } finally {
      stream.close();
      await proxy.close();
    }
  });

  test('admin.enabled: false: no admin listener', async () => {
    const proxy = await startProxy([backend], { admin: { enabled: false } });
    try {
      assert.equal(proxy.proxy.admin, undefined);
      assert.equal(proxy.adminUrl, '');
      assert.equal((await request(`${proxy.url}/`)).status, 200);
    } finally {
      await proxy.close();
    }
  });
});
