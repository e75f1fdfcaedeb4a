import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Backend } from '../../../src/balancing/backend.js';
import { Registry } from 'prom-client';
import {
  METHODS,
  ProxyMetrics,
  addCounters,
  emptyCounters,
  methodIndex,
  registerProxyMetrics,
  totalsOf,
} from '../../../src/observability/metrics.js';
import type { RequestContext } from '../../../src/proxy/context.js';
import { ProxyError } from '../../../src/proxy/errors.js';

function fakeBackend(name: string): Backend {
  return { name, weight: 1, inflight: 0, healthy: true, ejectedUntil: -Infinity, ejectionsTotal: 0 } as unknown as Backend;
}

function ctx(fields: { method?: string; status: number; backend?: Backend; tried?: Backend[]; retries?: number; error?: ProxyError; authFailure?: string; startedAt?: number }): RequestContext {
  return {
    req: { method: fields.method ?? 'GET' },
    status: fields.status,
    backend: fields.backend,
    tried: fields.tried,
    retries: fields.retries ?? 0,
    error: fields.error,
    authFailure: fields.authFailure,
    startedAt: fields.startedAt ?? 0,
  } as unknown as RequestContext;
}

/** The value of one sample line of the exposition, or undefined when absent. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
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
    const metrics = new ProxyMetrics({ backends: [a, b], connectionsOpen: async () => 7, connectionsRefused: () => refused, clock: () => 0, version: '9.9.9' }, { recording: true });
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
    assert.equal(sample(text, 'tollgate_requests_total{status_class="2xx",method="GET",upstream="a"}'), 1);
    assert.equal(sample(text, 'tollgate_requests_total{status_class="2xx",method="POST",upstream="a"}'), 1);
    assert.equal(sample(text, 'tollgate_requests_total{status_class="2xx",method="other",upstream="a"}'), 1);
    assert.equal(sample(text, 'tollgate_requests_total{status_class="5xx",method="GET",upstream="b"}'), 1);
    assert.equal(sample(text, 'tollgate_requests_total{status_class="2xx",method="GET",upstream="b"}'), 1);
    assert.equal(sample(text, 'tollgate_requests_total{status_class="4xx",method="GET",upstream="none"}'), 3);
    assert.equal(sample(text, 'tollgate_requests_total{status_class="4xx",method="other",upstream="none"}'), 1, 'the parser-level 400');
    assert.equal(sample(text, 'tollgate_requests_total{status_class="3xx",method="GET",upstream="a"}'), undefined, 'no zero series');
    // a: attempts of requests 1, 2, 3 (tried), 4 (tried) and 8; b: request 3 (tried, also last) and 4.
    assert.equal(sample(text, 'tollgate_upstream_selections_total{upstream="a"}'), 5);
    assert.equal(sample(text, 'tollgate_upstream_selections_total{upstream="b"}'), 2);
    assert.equal(sample(text, 'tollgate_retries_total'), 2);
    assert.equal(sample(text, 'tollgate_auth_failures_total{reason="missing"}'), 1);
    assert.equal(sample(text, 'tollgate_auth_failures_total{reason="invalid"}'), 1);
    assert.equal(sample(text, 'tollgate_auth_failures_total{reason="malformed"}'), 0);
    assert.equal(sample(text, 'tollgate_ratelimit_rejections_total'), 1);
    assert.equal(sample(text, 'tollgate_connections_open'), 7);
    assert.equal(sample(text, 'tollgate_connections_refused_total'), 3);
    assert.equal(sample(text, 'tollgate_build_info{version="9.9.9"}'), 1);
    // Histogram buckets are cumulative: a had 0.5 ms, 3 ms and 1 ms.
    assert.equal(sample(text, 'tollgate_request_duration_seconds_bucket{le="0.001",upstream="a"}'), 2);
    assert.equal(sample(text, 'tollgate_request_duration_seconds_bucket{le="0.005",upstream="a"}'), 3);
    assert.equal(sample(text, 'tollgate_request_duration_seconds_bucket{le="+Inf",upstream="a"}'), 3);
    assert.equal(sample(text, 'tollgate_request_duration_seconds_count{upstream="b"}'), 2);
    assert.equal(sample(text, 'tollgate_request_duration_seconds_bucket{le="1",upstream="b"}'), 1, 'the 2 s request is above 1 s');
    assert.ok(Math.abs((sample(text, 'tollgate_request_duration_seconds_sum{upstream="b"}') as number) - 2.04) < 1e-9);
    assert.match(text, /^# TYPE tollgate_request_duration_seconds histogram$/m);
    assert.match(text, /^process_cpu_user_seconds_total /m, 'process metrics');
    assert.deepEqual(metrics.totals(), { requests: 9, byClass: [4, 0, 4, 1], unauthorized: 2, rateLimited: 1, retries: 2, byUpstream: [4, 3, 2] });
    // Scraping twice gives the same counts (collect resets before it adds).
    assert.equal(sample(await metrics.scrape(), 'tollgate_requests_total{status_class="4xx",method="GET",upstream="none"}'), 3);
  });

  test('with recording off there is no logging phase and no request series, but the gauges remain', async () => {
    const a = fakeBackend('a');
    a.inflight = 4;
    const metrics = new ProxyMetrics({ backends: [a], connectionsOpen: async () => 0, connectionsRefused: () => 0, clock: () => 0, version: '1' }, { recording: false });
    assert.equal(metrics.phase, undefined);
    assert.equal(metrics.stats, undefined);
    metrics.recordRejected(400, 0);
    const text = await metrics.scrape();
    assert.doesNotMatch(text, /tollgate_requests_total/);
    assert.equal(sample(text, 'tollgate_upstream_inflight{upstream="a"}'), 4);
    assert.equal(sample(text, 'tollgate_upstream_healthy{upstream="a"}'), 1);
  });

  test('snapshot(): the counters and gauges as plain arrays; the history and process metrics only when asked', async () => {
    const a = fakeBackend('a');
    const b = fakeBackend('b');
    a.inflight = 2;
    b.ejectionsTotal = 3;
    (b as unknown as { ejectedUntil: number }).ejectedUntil = 10;
    const metrics = new ProxyMetrics({ backends: [a, b], connectionsOpen: async () => 4, connectionsRefused: () => 5, clock: () => 0, version: '1' }, { recording: true });
    const now = performance.now();
    metrics.recordRequest(ctx({ status: 200, backend: a, startedAt: now - 3 }), now);
    metrics.recordRequest(ctx({ status: 429, error: new ProxyError('rate_limited'), startedAt: now - 1 }), now);
    const plain = await metrics.snapshot({ stats: false, process: false });
    assert.equal(plain.stats, undefined);
    assert.equal(plain.process, undefined);
    assert.deepEqual(plain.upstreams, { inflight: [2, 0], healthy: [1, 1], ejected: [0, 1], weight: [1, 1] });
    assert.equal(plain.connectionsOpen, 4);
    assert.equal(plain.counters.connectionsRefused, 5);
    assert.equal(plain.counters.rateLimited, 1);
    assert.deepEqual(plain.counters.ejections, [0, 3]);
    assert.ok(Array.isArray(plain.counters.requests), 'plain arrays (JSON over IPC), not typed arrays');
    assert.deepEqual(totalsOf(plain.counters), metrics.totals());
    assert.deepEqual(JSON.parse(JSON.stringify(plain)), plain, 'survives JSON (the IPC channel)');
    const full = await metrics.snapshot({ stats: true, process: true });
    assert.ok(full.stats !== undefined && Array.isArray(full.stats.seconds));
    assert.ok(full.process?.some((f) => f.name === 'process_cpu_user_seconds_total'));
    assert.ok(!full.process?.some((f) => f.name.startsWith('tollgate_')), 'only the process metrics');
  });

  test('addCounters sums element by element; emptyCounters is all zeros of the right shape', () => {
    const sum = emptyCounters(2);
    assert.equal(sum.requests.length, 3 * METHODS.length * 4);
    assert.equal(sum.durationBuckets.length, 3 * 15);
    assert.equal(sum.ejections.length, 2);
    const one = emptyCounters(2);
    one.requests[0] = 2;
    one.selections[1] = 1;
    one.authFailures[2] = 1;
    one.rateLimited = 3;
    one.retries = 1;
    one.connectionsRefused = 7;
    one.ejections[1] = 2;
    addCounters(sum, one);
    addCounters(sum, one);
    addCounters(sum, { ...one, requests: [1] }); // shorter arrays add what they share
    assert.equal(sum.requests[0], 5);
    assert.equal(sum.selections[1], 3);
    assert.equal(sum.rateLimited, 9);
    assert.equal(sum.connectionsRefused, 21);
    assert.deepEqual(sum.ejections, [0, 6]);
    assert.deepEqual(totalsOf(sum), { requests: 5, byClass: [5, 0, 0, 0], unauthorized: 3, rateLimited: 9, retries: 3, byUpstream: [5, 0, 0] });
  });

  test('registerProxyMetrics: an upstream without a gauge value has no sample (not a stale one)', async () => {
    const registry = new Registry();
    let healthy: number[] = [1, 0];
    registerProxyMetrics(
      registry,
      ['a', 'b'],
      { counters: () => emptyCounters(2), upstreams: () => ({ inflight: [], healthy, ejected: [] }), connectionsOpen: async () => 0 },
      { recording: false, version: '1' },
    );
    const first = await registry.metrics();
    assert.equal(sample(first, 'tollgate_upstream_healthy{upstream="b"}'), 0);
    assert.equal(sample(first, 'tollgate_upstream_inflight{upstream="a"}'), undefined);
    healthy = [];
    assert.equal(sample(await registry.metrics(), 'tollgate_upstream_healthy{upstream="a"}'), undefined);
  });
});
