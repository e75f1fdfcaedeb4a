import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Backend } from '../../../src/balancing/backend.js';
import { Registry } from 'prom-client';
import {
  AUTH_FAILURE_REASONS,
  METHODS,
  PROTOCOLS,
  ProxyMetrics,
  addCounters,
  emptyCounters,
  methodIndex,
  registerProxyMetrics,
  totalsOf,
  type Counters,
  type CounterSnapshot,
} from '../../../src/observability/metrics.js';
import type { RequestContext } from '../../../src/proxy/context.js';
import { ProxyError } from '../../../src/proxy/errors.js';
import type { Route } from '../../../src/routing/route.js';

function fakeBackend(name: string, service = 'web', port = 3000): Backend {
  return { service, name, address: `127.0.0.1:${port}`, weight: 1, inflight: 0, healthy: true, ejectedUntil: -Infinity, ejectionsTotal: 0 } as unknown as Backend;
}

function fakeRoute(name: string): Route {
  return { name } as unknown as Route;
}

const WEB = fakeRoute('web');

function ctx(fields: { method?: string; status: number; route?: Route | null; backend?: Backend; tried?: Backend[]; retries?: number; error?: ProxyError; authFailure?: string; startedAt?: number }): RequestContext {
  return {
    req: { method: fields.method ?? 'GET' },
    status: fields.status,
    route: fields.route === null ? undefined : (fields.route ?? WEB),
    backend: fields.backend,
    tried: fields.tried,
    retries: fields.retries ?? 0,
    error: fields.error,
    authFailure: fields.authFailure,
    startedAt: fields.startedAt ?? 0,
  } as unknown as RequestContext;
}

function metricsOver(backends: Backend[], options: { recording?: boolean; refused?: () => number; open?: number; clock?: () => number } = {}): ProxyMetrics {
  const metrics = new ProxyMetrics(
    { connectionsOpen: async () => options.open ?? 0, connectionsRefused: options.refused ?? (() => 0), clock: options.clock ?? (() => 0), version: '9.9.9' },
    { recording: options.recording ?? true },
  );
  metrics.useBackends(backends);
  return metrics;
}

/** The value of one sample line of the exposition, or undefined when absent. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** `tollgate_requests_total{...}` of one series. */
function requests(cls: string, method: string, route: string, service: string, upstream: string): string {
  return `tollgate_requests_total{status_class="${cls}",method="${method}",protocol="http/1.1",route="${route}",service="${service}",upstream="${upstream}"}`;
}

describe('ProxyMetrics', () => {
  test('methods map onto a bounded set', () => {
    assert.deepEqual(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'PROPFIND', 'get', undefined].map((m) => METHODS[methodIndex(m)]), [
      'GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'other', 'other', 'other',
    ]);
  });

  test('requests, durations, selections, retries, 401 reasons and 429s, as scraped', async () => {
    const a = fakeBackend('a');
    const b = fakeBackend('b');
    let refused = 2;
    const metrics = metricsOver([a, b], { refused: () => refused, open: 7 });
    const record = (c: RequestContext, ms: number): void => metrics.recordRequest(c, c.startedAt + ms);
    record(ctx({ status: 200, backend: a }), 0.5);
    record(ctx({ status: 200, backend: a, method: 'POST' }), 3);
    record(ctx({ status: 502, backend: b, tried: [a, b], retries: 1 }), 40);
    record(ctx({ status: 200, backend: b, tried: [a], retries: 1 }), 2000);
    record(ctx({ status: 401, error: new ProxyError('unauthorized'), authFailure: 'missing' }), 0.1);
    record(ctx({ status: 401, error: new ProxyError('unauthorized'), authFailure: 'invalid' }), 0.1);
    record(ctx({ status: 429, error: new ProxyError('rate_limited') }), 0.1);
    record(ctx({ status: 200, backend: a, method: 'PROPFIND' }), 1);
    metrics.recordRejected(400, 10);
    refused = 3;
    const text = await metrics.scrape();
    assert.equal(sample(text, requests('2xx', 'GET', 'web', 'web', 'a')), 1);
    assert.equal(sample(text, requests('2xx', 'POST', 'web', 'web', 'a')), 1);
    assert.equal(sample(text, requests('2xx', 'other', 'web', 'web', 'a')), 1);
    assert.equal(sample(text, requests('5xx', 'GET', 'web', 'web', 'b')), 1);
    assert.equal(sample(text, requests('2xx', 'GET', 'web', 'web', 'b')), 1);
    assert.equal(sample(text, requests('4xx', 'GET', 'web', 'none', 'none')), 3, 'refused on the route: route known, no upstream');
    assert.equal(sample(text, requests('4xx', 'other', 'none', 'none', 'none')), 1, 'the parser-level 400: no route either');
    assert.equal(sample(text, requests('3xx', 'GET', 'web', 'web', 'a')), undefined, 'no zero series');
    // a: attempts of requests 1, 2, 3 (tried), 4 (tried) and 8; b: request 3 (tried, also last) and 4.
    assert.equal(sample(text, 'tollgate_upstream_selections_total{service="web",upstream="a"}'), 5);
    assert.equal(sample(text, 'tollgate_upstream_selections_total{service="web",upstream="b"}'), 2);
    assert.equal(sample(text, 'tollgate_retries_total'), 2);
    assert.equal(sample(text, 'tollgate_auth_failures_total{reason="missing"}'), 1);
    assert.equal(sample(text, 'tollgate_auth_failures_total{reason="invalid"}'), 1);
    assert.equal(sample(text, 'tollgate_auth_failures_total{reason="malformed"}'), 0);
    assert.equal(sample(text, 'tollgate_ratelimit_rejections_total'), 1);
    assert.equal(sample(text, 'tollgate_connections_open'), 7);
    assert.equal(sample(text, 'tollgate_connections_refused_total'), 3);
    assert.equal(sample(text, 'tollgate_build_info{version="9.9.9"}'), 1);
    // Histogram buckets are cumulative: a had 0.5 ms, 3 ms and 1 ms.
    assert.equal(sample(text, 'tollgate_request_duration_seconds_bucket{le="0.001",route="web",service="web",upstream="a"}'), 2);
    assert.equal(sample(text, 'tollgate_request_duration_seconds_bucket{le="0.005",route="web",service="web",upstream="a"}'), 3);
    assert.equal(sample(text, 'tollgate_request_duration_seconds_bucket{le="+Inf",route="web",service="web",upstream="a"}'), 3);
    assert.equal(sample(text, 'tollgate_request_duration_seconds_count{route="web",service="web",upstream="b"}'), 2);
    assert.equal(sample(text, 'tollgate_request_duration_seconds_bucket{le="1",route="web",service="web",upstream="b"}'), 1, 'the 2 s request is above 1 s');
    assert.ok(Math.abs((sample(text, 'tollgate_request_duration_seconds_sum{route="web",service="web",upstream="b"}') as number) - 2.04) < 1e-9);
    assert.equal(sample(text, 'tollgate_request_duration_seconds_count{route="none",service="none",upstream="none"}'), 1);
    assert.match(text, /^# TYPE tollgate_request_duration_seconds histogram$/m);
    assert.match(text, /^process_cpu_user_seconds_total /m, 'process metrics');
    const none = { service: 'none', name: 'none' };
    assert.deepEqual(metrics.totals(), {
      requests: 9,
      byClass: [4, 0, 4, 1],
      unauthorized: 2,
      rateLimited: 1,
      retries: 2,
      upstreams: [none, { service: 'web', name: 'a' }, { service: 'web', name: 'b' }],
      byUpstream: [4, 3, 2],
      routes: ['none', 'web'],
      byRoute: [1, 8],
      storeErrors: [0, 0, 0, 0, 0, 0],
    });
    // Scraping twice gives the same counts (collect resets before it adds).
    assert.equal(sample(await metrics.scrape(), requests('4xx', 'GET', 'web', 'none', 'none')), 3);
  });

  test('two services with an upstream of the same name have separate series', async () => {
    const apiOne = fakeBackend('one', 'api', 3001);
    const webOne = fakeBackend('one', 'web', 3002);
    const metrics = metricsOver([apiOne, webOne]);
    const api = fakeRoute('api');
    metrics.recordRequest(ctx({ status: 200, route: api, backend: apiOne }), 1);
    metrics.recordRequest(ctx({ status: 200, route: api, backend: apiOne }), 1);
    metrics.recordRequest(ctx({ status: 503, route: WEB, backend: webOne }), 1);
    apiOne.inflight = 4;
    (webOne as { healthy: boolean }).healthy = false;
    const text = await metrics.scrape();
    assert.equal(sample(text, requests('2xx', 'GET', 'api', 'api', 'one')), 2);
    assert.equal(sample(text, requests('5xx', 'GET', 'web', 'web', 'one')), 1);
    assert.equal(sample(text, 'tollgate_upstream_selections_total{service="api",upstream="one"}'), 2);
    assert.equal(sample(text, 'tollgate_upstream_selections_total{service="web",upstream="one"}'), 1);
    assert.equal(sample(text, 'tollgate_request_duration_seconds_count{route="api",service="api",upstream="one"}'), 2);
    assert.equal(sample(text, 'tollgate_upstream_inflight{service="api",upstream="one"}'), 4);
    assert.equal(sample(text, 'tollgate_upstream_inflight{service="web",upstream="one"}'), 0);
    assert.equal(sample(text, 'tollgate_upstream_healthy{service="api",upstream="one"}'), 1);
    assert.equal(sample(text, 'tollgate_upstream_healthy{service="web",upstream="one"}'), 0);
  });

  test('the route label: the matched route, none when no route matched; Route objects of one name share a series', async () => {
    const a = fakeBackend('a');
    const metrics = metricsOver([a]);
    metrics.recordRequest(ctx({ status: 200, route: fakeRoute('site'), backend: a }), 1);
    // The next generation's Route object of the same name (a reload) counts in the same series.
    metrics.recordRequest(ctx({ status: 200, route: fakeRoute('site'), backend: a }), 1);
    metrics.recordRequest(ctx({ status: 302, route: fakeRoute('login-redirect') }), 1);
    // 404 no_route and /health run on the generation's "none" route; a context without a route counts there too.
    metrics.recordRequest(ctx({ status: 404, route: fakeRoute('none'), error: new ProxyError('no_route') }), 1);
    metrics.recordRequest(ctx({ status: 404, route: null }), 1);
    const text = await metrics.scrape();
    assert.equal(sample(text, requests('2xx', 'GET', 'site', 'web', 'a')), 2);
    assert.equal(sample(text, requests('3xx', 'GET', 'login-redirect', 'none', 'none')), 1);
    assert.equal(sample(text, requests('4xx', 'GET', 'none', 'none', 'none')), 2);
    assert.deepEqual(metrics.routes, ['none', 'site', 'login-redirect']);
    assert.deepEqual(metrics.totals().byRoute, [2, 2, 1]);
  });

  test('useBackends: new upstreams get slots, removed ones keep their counts, the gauges read the current set', async () => {
    const a = fakeBackend('a');
    const b = fakeBackend('b');
    let now = 0;
    const metrics = metricsOver([a, b], { clock: () => now });
    metrics.recordRequest(ctx({ status: 200, backend: a }), 1);
    metrics.recordRequest(ctx({ status: 200, backend: b }), 1);
    b.ejectionsTotal = 2;
    // The next generation: a carried over (the same object), b removed, c added.
    const c = fakeBackend('c');
    metrics.useBackends([a, c]);
    assert.deepEqual(metrics.upstreams.map((u) => u.name), ['none', 'a', 'b', 'c']);
    metrics.recordRequest(ctx({ status: 200, backend: c }), 1);
    metrics.recordRequest(ctx({ status: 200, backend: c }), 1);
    // A request of the old generation finishing on b after the swap still counts for b.
    metrics.recordRequest(ctx({ status: 200, backend: b }), 1);
    let text = await metrics.scrape();
    assert.equal(sample(text, requests('2xx', 'GET', 'web', 'web', 'c')), 2, 'a series for the new upstream');
    assert.equal(sample(text, requests('2xx', 'GET', 'web', 'web', 'b')), 2, "the removed upstream's counter stays");
    assert.equal(sample(text, 'tollgate_upstream_selections_total{service="web",upstream="b"}'), 2);
    assert.equal(sample(text, 'tollgate_upstream_ejections_total{service="web",upstream="b"}'), 2, 'its ejections too');
    assert.equal(sample(text, 'tollgate_upstream_ejections_total{service="web",upstream="c"}'), 0);
    assert.equal(sample(text, 'tollgate_upstream_healthy{service="web",upstream="b"}'), undefined, 'no gauge for an upstream not in use');
    assert.equal(sample(text, 'tollgate_upstream_healthy{service="web",upstream="c"}'), 1);
    assert.equal(sample(text, 'tollgate_upstream_inflight{service="web",upstream="a"}'), 0);

    // b comes back as a new Backend object (counting ejections from 0) and a is replaced by a new object
    // that took over its state (counts included): neither count goes backwards or is counted twice.
    a.ejectionsTotal = 1;
    now = 10;
    (c as { ejectedUntil: number }).ejectedUntil = 20;
    const b2 = fakeBackend('b');
    const a2 = fakeBackend('a', 'web', 3999);
    a2.ejectionsTotal = 1;
    metrics.useBackends([a2, b2, c]);
    b2.ejectionsTotal = 1;
    text = await metrics.scrape();
    assert.equal(sample(text, 'tollgate_upstream_ejections_total{service="web",upstream="a"}'), 1);
    assert.equal(sample(text, 'tollgate_upstream_ejections_total{service="web",upstream="b"}'), 3);
    assert.equal(sample(text, 'tollgate_upstream_ejected{service="web",upstream="c"}'), 1);
    metrics.recordRequest(ctx({ status: 200, backend: b2 }), 1);
    assert.equal(sample(await metrics.scrape(), requests('2xx', 'GET', 'web', 'web', 'b')), 3, 'the same slot for the same service and name');
    assert.deepEqual(metrics.upstreams.map((u) => u.name), ['none', 'a', 'b', 'c'], 'no new slot for upstreams met before');
    const snapshot = await metrics.snapshot({ stats: false, process: false });
    assert.deepEqual(snapshot.upstreams.map((u) => [u.name, u.address, u.ejected]), [
      ['a', '127.0.0.1:3999', 0],
      ['b', '127.0.0.1:3000', 0],
      ['c', '127.0.0.1:3000', 1],
    ]);
    assert.deepEqual(snapshot.counters.ejections, [0, 1, 3, 0]);
  });

  test('the per-second history grows with the upstream slots', async () => {
    const a = fakeBackend('a');
    const metrics = metricsOver([a]);
    const stats = metrics.stats;
    assert.ok(stats !== undefined);
    assert.equal(stats.upstreamSlots, 2);
    const c = fakeBackend('c');
    metrics.useBackends([a, c]);
    assert.equal(stats.upstreamSlots, 3);
    const now = performance.now();
    metrics.recordRequest(ctx({ status: 200, backend: c, startedAt: now - 1 }), now);
    assert.deepEqual(stats.summary(now + 1000, 2).byUpstream, [0, 0, 1]);
  });

  test('more series and upstreams than the arrays first hold', async () => {
    const backends = Array.from({ length: 20 }, (_v, i) => fakeBackend(`u${i}`));
    const metrics = metricsOver(backends);
    for (let r = 0; r < 3; r++) for (const b of backends) metrics.recordRequest(ctx({ status: 200, route: fakeRoute(`r${r}`), backend: b }), 1);
    const totals = metrics.totals();
    assert.equal(totals.requests, 60);
    assert.deepEqual(totals.byRoute, [0, 20, 20, 20]);
    assert.deepEqual(totals.byUpstream, [0, ...Array<number>(20).fill(3)]);
    const text = await metrics.scrape();
    assert.equal(sample(text, requests('2xx', 'GET', 'r2', 'web', 'u19')), 1);
    assert.equal(sample(text, 'tollgate_upstream_selections_total{service="web",upstream="u19"}'), 3);
  });

  test('with recording off there is no logging phase and no request series, but the gauges remain', async () => {
    const a = fakeBackend('a');
    a.inflight = 4;
    const metrics = metricsOver([a], { recording: false });
    assert.equal(metrics.phase, undefined);
    assert.equal(metrics.stats, undefined);
    metrics.recordRejected(400, 0);
    const text = await metrics.scrape();
    assert.doesNotMatch(text, /tollgate_requests_total/);
    assert.equal(sample(text, 'tollgate_upstream_inflight{service="web",upstream="a"}'), 4);
    assert.equal(sample(text, 'tollgate_upstream_healthy{service="web",upstream="a"}'), 1);
  });

  test('snapshot(): the counters with their names and the live upstreams as plain data; the history and process metrics only when asked', async () => {
    const a = fakeBackend('a');
    const b = fakeBackend('b');
    a.inflight = 2;
    b.ejectionsTotal = 3;
    (b as unknown as { ejectedUntil: number }).ejectedUntil = 10;
    const metrics = metricsOver([a, b], { refused: () => 5, open: 4 });
    const now = performance.now();
    metrics.recordRequest(ctx({ status: 200, backend: a, startedAt: now - 3 }), now);
    metrics.recordRequest(ctx({ status: 429, error: new ProxyError('rate_limited'), startedAt: now - 1 }), now);
    const plain = await metrics.snapshot({ stats: false, process: false });
    assert.equal(plain.stats, undefined);
    assert.equal(plain.process, undefined);
    assert.deepEqual(plain.upstreams, [
      { service: 'web', name: 'a', address: '127.0.0.1:3000', inflight: 2, healthy: 1, ejected: 0, weight: 1 },
      { service: 'web', name: 'b', address: '127.0.0.1:3000', inflight: 0, healthy: 1, ejected: 1, weight: 1 },
    ]);
    assert.deepEqual(plain.counters.upstreams, [
      { service: 'none', name: 'none' },
      { service: 'web', name: 'a' },
      { service: 'web', name: 'b' },
    ]);
    assert.deepEqual(plain.counters.routes, ['none', 'web']);
    assert.deepEqual(plain.counters.series, [1, 1, 1, 0], '(web, a), then (web, none)');
    assert.equal(plain.counters.requests.length, 2 * PROTOCOLS.length * METHODS.length * 4, 'exactly the series, no spare room');
    assert.equal(plain.connectionsOpen, 4);
    assert.equal(plain.counters.connectionsRefused, 5);
    assert.equal(plain.counters.rateLimited, 1);
    assert.deepEqual(plain.counters.ejections, [0, 0, 3]);
    assert.deepEqual(plain.counters.selections, [0, 1, 0]);
    assert.ok(Array.isArray(plain.counters.requests), 'plain arrays (JSON over IPC), not typed arrays');
    assert.deepEqual(totalsOf(plain.counters), metrics.totals());
    assert.deepEqual(JSON.parse(JSON.stringify(plain)), plain, 'survives JSON (the IPC channel)');
    const full = await metrics.snapshot({ stats: true, process: true });
    assert.ok(full.stats !== undefined && Array.isArray(full.stats.seconds));
    assert.equal(full.stats.upstreamSlots, full.counters.upstreams.length, 'the history in the slots the counters name');
    assert.ok(full.process?.some((f) => f.name === 'process_cpu_user_seconds_total'));
    assert.ok(!full.process?.some((f) => f.name.startsWith('tollgate_')), 'only the process metrics');
  });

  test('rate-limit store errors: six series at zero from the start, counted as they fail, with recording off too', async () => {
    for (const recording of [true, false]) {
      const metrics = metricsOver([], { recording });
      const series = (store: string, kind: string): string => `tollgate_ratelimit_store_errors_total{store="${store}",kind="${kind}"}`;
      const first = await metrics.scrape();
      for (const store of ['redis', 'ipc']) for (const kind of ['timeout', 'unavailable', 'error']) assert.equal(sample(first, series(store, kind)), 0, `${store} ${kind}`);
      metrics.recordStoreErrors('redis', 'unavailable', 30);
      metrics.recordStoreErrors('redis', 'unavailable', 2);
      metrics.recordStoreErrors('redis', 'timeout', 5);
      metrics.recordStoreErrors('ipc', 'error', 1);
      const text = await metrics.scrape();
      assert.equal(sample(text, series('redis', 'unavailable')), 32);
      assert.equal(sample(text, series('redis', 'timeout')), 5);
      assert.equal(sample(text, series('redis', 'error')), 0);
      assert.equal(sample(text, series('ipc', 'error')), 1);
      assert.equal(sample(text, series('ipc', 'timeout')), 0);
      // [redis][timeout, unavailable, error], then [ipc][...]: in the snapshot, and summed by a primary.
      const counters = (await metrics.snapshot({ stats: false, process: false })).counters;
      assert.deepEqual(counters.storeErrors, [5, 32, 0, 0, 0, 1]);
      assert.deepEqual(metrics.totals().storeErrors, [5, 32, 0, 0, 0, 1]);
      const sum = emptyCounters();
      addCounters(sum, counters);
      addCounters(sum, counters);
      assert.deepEqual(sum.storeErrors, [10, 64, 0, 0, 0, 2]);
    }
  });

  test('snapshot(): the rate-limit stores of the source, none without one', async () => {
    const row = { store: 'redis' as const, target: 'redis://127.0.0.1:6379', routes: ['default'], state: 'down' as const, last_error: { kind: 'unavailable' as const, message: 'connect ECONNREFUSED', at: 5 } };
    const metrics = new ProxyMetrics({ connectionsOpen: async () => 0, connectionsRefused: () => 0, clock: () => 0, version: '1', stores: () => [row] }, { recording: true });
    assert.deepEqual((await metrics.snapshot({ stats: false, process: false })).stores, [row]);
    assert.deepEqual((await metricsOver([]).snapshot({ stats: false, process: false })).stores, []);
  });
});

/** Counters of one worker that met `upstreams` in this order and counted `n` GETs (2xx) on `route` to each. */
async function workerCounters(upstreams: [service: string, name: string][], route: string, n: number[], ejections: number[] = []): Promise<CounterSnapshot> {
  const backends = upstreams.map(([service, name]) => fakeBackend(name, service));
  backends.forEach((b, i) => (b.ejectionsTotal = ejections[i] ?? 0));
  const metrics = metricsOver(backends);
  backends.forEach((b, i) => {
    for (let k = 0; k < (n[i] ?? 0); k++) metrics.recordRequest(ctx({ status: 200, route: fakeRoute(route), backend: b, startedAt: 0 }), 3);
  });
  return (await metrics.snapshot({ stats: false, process: false })).counters;
}

describe('adding counters up by name (a cluster primary)', () => {
  test('two workers that met the upstreams in a different order: each series adds to the one of the same name', async () => {
    const w0 = await workerCounters([['api', 'x'], ['web', 'x'], ['api', 'y']], 'r', [1, 2, 3], [1, 0, 0]);
    const w1 = await workerCounters([['api', 'y'], ['api', 'x'], ['web', 'z']], 'r', [10, 20, 30], [0, 5, 0]);
    assert.notDeepEqual(w0.upstreams, w1.upstreams);
    const sum = emptyCounters();
    addCounters(sum, w0);
    addCounters(sum, w1);
    const totals = totalsOf(sum);
    const by = (service: string, name: string): number => totals.byUpstream[totals.upstreams.findIndex((u) => u.service === service && u.name === name)] as number;
    assert.equal(by('api', 'x'), 21);
    assert.equal(by('web', 'x'), 2);
    assert.equal(by('api', 'y'), 13);
    assert.equal(by('web', 'z'), 30);
    assert.equal(totals.requests, 66);
    assert.deepEqual(sum.upstreams.map((u) => `${u.service}/${u.name}`), ['none/none', 'api/x', 'web/x', 'api/y', 'web/z'], 'each name once, in the order first met');
    assert.deepEqual(sum.ejections, [0, 6, 0, 0, 0]);
    assert.deepEqual(sum.selections, [0, 21, 2, 13, 30]);
    assert.deepEqual(sum.routes, ['none', 'r']);
    assert.equal(sum.series.length / 2, 4, 'one series per (route, upstream) pair');
    assert.equal(sum.requests.length, 4 * PROTOCOLS.length * METHODS.length * 4);
    assert.equal(sum.durationSum.length, 4);
    // The histogram adds up by name too: every request took 3 ms.
    const registry = new Registry();
    registerProxyMetrics(registry, { counters: () => sum, upstreams: () => [], connectionsOpen: async () => 0, websocketsOpen: () => 0 }, { recording: true, version: '1' });
    const text = await registry.metrics();
    assert.equal(sample(text, 'tollgate_request_duration_seconds_count{route="r",service="api",upstream="x"}'), 21);
    assert.equal(sample(text, 'tollgate_request_duration_seconds_bucket{le="0.0025",route="r",service="api",upstream="x"}'), 0);
    assert.equal(sample(text, 'tollgate_request_duration_seconds_bucket{le="0.005",route="r",service="api",upstream="x"}'), 21);
    assert.equal(sample(text, requests('2xx', 'GET', 'r', 'web', 'z')), 30);
  });

  test('workers on different generations: routes and upstreams only one of them has are kept', async () => {
    const old = await workerCounters([['web', 'a'], ['web', 'b']], 'site', [1, 1]);
    const next = await workerCounters([['web', 'c'], ['web', 'a']], 'site-v2', [4, 4]);
    const sum = emptyCounters();
    addCounters(sum, old);
    addCounters(sum, next);
    const totals = totalsOf(sum);
    assert.deepEqual(totals.routes, ['none', 'site', 'site-v2']);
    assert.deepEqual(totals.byRoute, [0, 2, 8]);
    assert.deepEqual(totals.upstreams.map((u) => u.name), ['none', 'a', 'b', 'c']);
    assert.deepEqual(totals.byUpstream, [0, 5, 1, 4]);
  });

  test('emptyCounters names its slots; slots out of range and values that are not numbers are skipped', () => {
    const sum = emptyCounters([{ service: 'web', name: 'a' }, { service: 'web', name: 'a' }, { service: 'none', name: 'none' }], ['site']);
    assert.deepEqual(sum.upstreams, [{ service: 'none', name: 'none' }, { service: 'web', name: 'a' }], 'each name once');
    assert.deepEqual(sum.routes, ['none', 'site']);
    assert.deepEqual([sum.selections, sum.ejections, sum.series, sum.requests], [[0, 0], [0, 0], [], []]);
    const odd: Counters = {
      ...emptyCounters([{ service: 'web', name: 'a' }]),
      series: [0, 1, 7, 0, 0, 9],
      requests: [1, ...Array<number>(PROTOCOLS.length * METHODS.length * 4 - 1).fill(0), 5, 5],
      durationBuckets: ['x' as unknown as number],
      selections: [0, 2],
      authFailures: Array<number>(AUTH_FAILURE_REASONS.length + 1).fill(1),
      rateLimited: 2,
    };
    addCounters(sum, odd);
    addCounters(sum, odd);
    const totals = totalsOf(sum);
    assert.equal(totals.requests, 2, 'only the series (none, a) is in range');
    assert.deepEqual(sum.selections, [0, 4]);
    assert.deepEqual(sum.durationBuckets.slice(0, 2), [0, 0]);
    assert.deepEqual(sum.authFailures, Array<number>(AUTH_FAILURE_REASONS.length).fill(2));
    assert.equal(sum.rateLimited, 4);
  });

  test('registerProxyMetrics: gauges only for the upstreams listed now (not a stale one)', async () => {
    const registry = new Registry();
    let live = [
      { service: 'web', name: 'a', inflight: 0, healthy: 1, ejected: 0 },
      { service: 'web', name: 'b', inflight: 2, healthy: 0, ejected: 0 },
    ];
    registerProxyMetrics(
      registry,
      { counters: () => emptyCounters([{ service: 'web', name: 'a' }]), upstreams: () => live, connectionsOpen: async () => 0, websocketsOpen: () => 0 },
      { recording: false, version: '1' },
    );
    const first = await registry.metrics();
    assert.equal(sample(first, 'tollgate_upstream_healthy{service="web",upstream="b"}'), 0);
    assert.equal(sample(first, 'tollgate_upstream_inflight{service="web",upstream="b"}'), 2);
    assert.equal(sample(first, 'tollgate_upstream_ejections_total{service="web",upstream="a"}'), 0, 'counters for every upstream named');
    live = [];
    const second = await registry.metrics();
    assert.equal(sample(second, 'tollgate_upstream_healthy{service="web",upstream="a"}'), undefined);
    assert.equal(sample(second, 'tollgate_upstream_healthy{service="web",upstream="b"}'), undefined);
  });
});
