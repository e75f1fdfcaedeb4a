import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { ClusterMonitor, mergeLive, mergeStores } from '../../../src/admin/cluster.js';
import type { Backend } from '../../../src/balancing/backend.js';
import type { SnapshotReply, SnapshotRequest } from '../../../src/cluster/messages.js';
import type { MonitoredWorker } from '../../../src/cluster/primary.js';
import { configSchema } from '../../../src/config/schema.js';
import type { StoreStatus } from '../../../src/limits/store.js';
import { ProxyMetrics, type MetricsSnapshot } from '../../../src/observability/metrics.js';
import type { RequestContext } from '../../../src/proxy/context.js';
import { ProxyError } from '../../../src/proxy/errors.js';
import type { Route } from '../../../src/routing/route.js';
import { waitFor } from '../../helpers/servers.js';
import { samples } from '../../helpers/metrics.js';

function config(extra: { metrics?: boolean; workers?: number | 'auto' } = {}) {
  return configSchema.parse({
    server: { workers: extra.workers ?? 2 },
    load_balancing: {
      upstreams: [
        { name: 'a', address: '127.0.0.1', port: 3001 },
        { name: 'b', address: '::1', port: 3002, weight: 2 },
      ],
    },
    metrics: { enabled: extra.metrics ?? true },
  });
}

function logger() {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) if (line !== '') lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { logger: pino({ level: 'debug', base: null }, stream), lines };
}

function fakeBackend(name: string, address: string, weight = 1, service = 'default'): Backend {
  return { service, name, address, weight, inflight: 0, healthy: true, ejectedUntil: -Infinity, ejectionsTotal: 0 } as unknown as Backend;
}

const DEFAULT_ROUTE = { name: 'default' } as unknown as Route;

interface WorkerMetrics {
  metrics: ProxyMetrics;
  a: Backend;
  b: Backend;
  record(status: number, backend?: Backend, ms?: number, error?: ProxyError, authFailure?: string, route?: Route): void;
}

/** A worker's real ProxyMetrics over fake backends (those of config(), unless given), with the rate-limit stores `stores` gives. */
function workerMetrics(metricsOn = true, backends?: Backend[], stores?: () => StoreStatus[]): WorkerMetrics {
  const a = fakeBackend('a', '127.0.0.1:3001');
  const b = fakeBackend('b', '[::1]:3002', 2);
  const metrics = new ProxyMetrics({ connectionsOpen: async () => 3, connectionsRefused: () => 1, clock: () => 0, version: 'test', ...(stores === undefined ? {} : { stores }) }, { recording: metricsOn });
  metrics.useBackends(backends ?? [a, b]);
  return {
    metrics,
    a,
    b,
    record(status, backend, ms = 10, error, authFailure, route = DEFAULT_ROUTE) {
      const now = performance.now();
      const ctx = { req: { method: 'GET' }, status, route, backend, tried: undefined, retries: 0, error, authFailure, startedAt: now - ms } as unknown as RequestContext;
      metrics.recordRequest(ctx, now);
    },
  };
}

/** The label text of a request series on the route `default`. */
function series(cls: string, upstream: string, service = upstream === 'none' ? 'none' : 'default', route = 'default'): string {
  return `{status_class="${cls}",method="GET",protocol="http/1.1",route="${route}",service="${service}",upstream="${upstream}"}`;
}

const up = (name: string, service = 'default'): string => `{service="${service}",upstream="${name}"}`;

type Behaviour = 'answer' | 'stuck' | 'send-error' | 'throw' | 'error-reply';

interface Fake extends MonitoredWorker {
  behaviour: Behaviour;
  requests: SnapshotRequest[];
}

function fakeWorker(monitor: () => ClusterMonitor, slot: number, pid: number, source: () => ProxyMetrics): Fake {
  const worker: Fake = {
    slot,
    pid,
    startedAt: Date.now() - 5000,
    ready: true,
    behaviour: 'answer',
    requests: [],
    send(message, callback) {
      worker.requests.push(message);
      switch (worker.behaviour) {
        case 'stuck':
          return;
        case 'send-error':
          setImmediate(() => callback(new Error('channel closed')));
          return;
        case 'throw':
          throw new Error('not connected');
        case 'error-reply':
          setImmediate(() => monitor().reply(pid, { type: 'tollgate:snapshot-reply', id: message.id, error: 'boom' }));
          return;
        case 'answer':
          void source()
            .snapshot({ stats: message.stats, process: message.process })
            .then((snapshot) => monitor().reply(pid, { type: 'tollgate:snapshot-reply', id: message.id, snapshot }));
      }
    },
  };
  return worker;
}

function setup(options: { metrics?: boolean; timeoutMs?: number; workers?: number | 'auto'; w0?: WorkerMetrics; w1?: WorkerMetrics } = {}) {
  const log = logger();
  const w0 = options.w0 ?? workerMetrics(options.metrics);
  const w1 = options.w1 ?? workerMetrics(options.metrics);
  let restarts = 0;
  let draining = false;
  // eslint-disable-next-line prefer-const
  let monitor: ClusterMonitor;
  const workers: Fake[] = [fakeWorker(() => monitor, 0, 100, () => w0.metrics), fakeWorker(() => monitor, 1, 101, () => w1.metrics)];
  monitor = new ClusterMonitor({
    config: config({ ...(options.metrics === undefined ? {} : { metrics: options.metrics }), ...(options.workers === undefined ? {} : { workers: options.workers }) }),
    logger: log.logger,
    version: '9.9.9',
    startedAt: Date.now() - 10_000,
    workers: () => workers,
    restarts: () => restarts,
    draining: () => draining,
    timeoutMs: options.timeoutMs ?? 50,
  });
  return {
    monitor,
    workers,
    w0,
    w1,
    log,
    setRestarts: (n: number) => (restarts = n),
    setDraining: (d: boolean) => (draining = d),
  };
}

describe('ClusterMonitor', () => {
  // The monitor's timers are unref'd (they never hold a primary's exit); this keeps the test process up.
  let keepAlive: NodeJS.Timeout;
  before(() => {
    keepAlive = setInterval(() => {}, 60_000);
  });
  after(() => clearInterval(keepAlive));

  test('/metrics: counters summed over the workers, gauges by their rule, process metrics labelled by worker', async () => {
    const { monitor, w0, w1 } = setup();
    w0.record(200, w0.a);
    w0.record(200, w0.a);
    w0.record(401, undefined, 1, new ProxyError('unauthorized'), 'missing');
    w1.record(200, w1.b);
    w1.record(429, undefined, 1, new ProxyError('rate_limited'));
    w1.record(401, undefined, 1, new ProxyError('unauthorized'), 'invalid');
    // Worker 0 sees b down and has a ejected; worker 1 sees both up. In flight: 2 + 5 on b.
    (w0.b as { healthy: boolean }).healthy = false;
    w0.a.ejectedUntil = Infinity;
    w0.b.inflight = 2;
    w1.b.inflight = 5;
    w1.a.ejectionsTotal = 4;
    const text = await monitor.scrape();
    assert.deepEqual(Object.fromEntries(samples(text, 'tollgate_requests_total')), {
      [series('2xx', 'a')]: 2,
      [series('2xx', 'b')]: 1,
      [series('4xx', 'none')]: 3,
    });
    assert.deepEqual(Object.fromEntries([...samples(text, 'tollgate_auth_failures_total')].filter(([, n]) => n > 0)), { '{reason="missing"}': 1, '{reason="invalid"}': 1 });
    assert.equal(samples(text, 'tollgate_ratelimit_rejections_total').get(''), 1);
    assert.deepEqual(Object.fromEntries(samples(text, 'tollgate_upstream_selections_total')), { [up('a')]: 2, [up('b')]: 1 });
    assert.equal(samples(text, 'tollgate_request_duration_seconds_count').get('{route="default",service="none",upstream="none"}'), 3);
    assert.equal(samples(text, 'tollgate_request_duration_seconds_bucket').get('{le="+Inf",route="default",service="default",upstream="a"}'), 2);
    assert.deepEqual(Object.fromEntries(samples(text, 'tollgate_upstream_healthy')), { [up('a')]: 1, [up('b')]: 0 }, 'min: down if any worker says so');
    assert.deepEqual(Object.fromEntries(samples(text, 'tollgate_upstream_ejected')), { [up('a')]: 1, [up('b')]: 0 }, 'max: ejected if any worker has it ejected');
    assert.deepEqual(Object.fromEntries(samples(text, 'tollgate_upstream_inflight')), { [up('a')]: 0, [up('b')]: 7 });
    assert.equal(samples(text, 'tollgate_upstream_ejections_total').get(up('a')), 4);
    assert.equal(samples(text, 'tollgate_connections_open').get(''), 6);
    assert.equal(samples(text, 'tollgate_connections_refused_total').get(''), 2);
    assert.equal(samples(text, 'tollgate_build_info').get('{version="9.9.9"}'), 1);
    assert.equal(samples(text, 'tollgate_workers').get(''), 2);
    assert.equal(samples(text, 'tollgate_workers_answered').get(''), 2);
    assert.deepEqual([...samples(text, 'process_cpu_user_seconds_total').keys()].sort(), ['{worker="0"}', '{worker="1"}', '{worker="primary"}']);
    assert.equal((text.match(/^# TYPE process_cpu_user_seconds_total /gm) ?? []).length, 1, 'one family, one series per process');
    assert.equal(monitor.contentType, 'text/plain; version=0.0.4; charset=utf-8');
  });

  test('the status document: totals, per-second history and latency merged, upstream rows, the workers', async () => {
    const { monitor, w0, w1, workers, setDraining } = setup();
    w0.record(200, w0.a, 10);
    w0.record(200, w0.a, 10);
    w1.record(200, w1.b, 100);
    w1.record(429, undefined, 1, new ProxyError('rate_limited'));
    w0.b.weight = 0.5;
    setDraining(true);
    // The history shows complete seconds: the one of these requests is, within a second.
    let s = await monitor.status();
    await waitFor(async () => (s = await monitor.status()).recent.requests === 4, 3_000, 'the second of the requests to be complete');
    assert.equal(s.version, '9.9.9');
    assert.equal(s.draining, true);
    assert.equal(s.metrics, true);
    assert.ok(s.uptime_s >= 10 && s.uptime_s <= 12, `uptime ${s.uptime_s} s of a primary started 10 s ago`);
    assert.deepEqual(s.totals, { requests: 4, status: { '2xx': 3, '3xx': 0, '4xx': 1, '5xx': 0 }, unauthorized: 0, rate_limited: 1, retries: 0 });
    assert.deepEqual(s.connections, { open: 6, refused_total: 2 });
    // The history of both workers, second by second, in epoch seconds.
    assert.equal(s.recent.rate_limited, 1);
    assert.equal(s.series.rps.reduce((n, v) => n + v, 0), 4);
    assert.equal(s.series.t.length, 60);
    const nowS = Math.floor(Date.now() / 1000);
    assert.ok((s.series.t.at(-1) as number) >= nowS - 2 && (s.series.t.at(-1) as number) <= nowS, 'the last complete epoch second');
    // Quantiles of all four requests together: 1, 10, 10, 100 ms.
    assert.ok(Math.abs((s.current.p50_ms as number) - 10) / 10 < 0.05, `p50 ${s.current.p50_ms}`);
    assert.ok(Math.abs((s.current.p99_ms as number) - 100) / 100 < 0.05, `p99 ${s.current.p99_ms}`);
    assert.deepEqual(
      s.upstreams.map((u) => [u.service, u.name, u.address, u.state, u.requests, u.recent_requests, u.share, u.weight]),
      [
        ['default', 'a', '127.0.0.1:3001', 'up', 2, 2, 0.667, 1],
        ['default', 'b', '[::1]:3002', 'up', 1, 1, 0.333, 0.5],
      ],
    );
    assert.deepEqual(s.services, [{ name: 'default', strategy: 'round_robin', upstreams: ['a', 'b'], requests: 3 }]);
    assert.deepEqual(s.routes, [{ name: 'default', service: 'default', redirect: null, requests: 4 }]);
    assert.deepEqual({ ...s.cluster, processes: s.cluster?.processes.map(({ slot, pid, answered }) => ({ slot, pid, answered })) }, {
      workers: 2,
      running: 2,
      answered: 2,
      restarts: 0,
      processes: [
        { slot: 0, pid: 100, answered: true },
        { slot: 1, pid: 101, answered: true },
      ],
    });
    for (const p of s.cluster?.processes ?? []) assert.ok(p.uptime_s >= 5 && p.uptime_s <= 7, `uptime ${p.uptime_s} s of a worker forked 5 s ago`);
    assert.ok(workers.every((w) => w.requests.every((r) => r.stats && !r.process)), 'the status asks for the history, not the process metrics');
  });

  test('a worker that does not answer in time is left out (logged at debug); its counters stay at its last answer', async () => {
    const { monitor, workers, w0, w1, log } = setup({ timeoutMs: 30 });
    w0.record(200, w0.a);
    w1.record(200, w1.b);
    assert.equal(samples(await monitor.scrape(), 'tollgate_requests_total').size, 2);
    (workers[1] as Fake).behaviour = 'stuck';
    w1.record(200, w1.b); // not seen: worker 1 does not answer
    w0.record(200, w0.a);
    const text = await monitor.scrape();
    assert.equal(samples(text, 'tollgate_workers_answered').get(''), 1);
    assert.deepEqual(Object.fromEntries(samples(text, 'tollgate_requests_total')), {
      [series('2xx', 'a')]: 2,
      [series('2xx', 'b')]: 1,
    });
    assert.deepEqual([...samples(text, 'process_cpu_user_seconds_total').keys()].sort(), ['{worker="0"}', '{worker="primary"}']);
    assert.deepEqual(Object.fromEntries(samples(text, 'tollgate_upstream_inflight')), { [up('a')]: 0, [up('b')]: 0 });
    const line = log.lines.find((l) => l.msg === 'worker did not answer the snapshot request in time: left out of this scrape');
    assert.equal(line?.level, 20);
    assert.equal(line?.worker, 1);
    assert.equal(line?.worker_pid, 101);
    const s = await monitor.status();
    assert.equal(s.cluster?.answered, 1);
    assert.deepEqual(s.cluster?.processes.map((p) => p.answered), [true, false]);
    assert.equal(s.totals.requests, 3);
    // A late answer (to a request that timed out) changes nothing.
    const late = (workers[1] as Fake).requests[1] as SnapshotRequest;
    monitor.reply(101, { type: 'tollgate:snapshot-reply', id: late.id, snapshot: await w1.metrics.snapshot({ stats: false, process: false }) });
    assert.equal((await monitor.status()).totals.requests, 3);
  });

  test('rate-limit stores: failed checks summed (an exited worker\'s kept); rows merged in the worst state with the newest error', async () => {
    const redis = (state: StoreStatus['state'], at: number | undefined): StoreStatus => ({
      store: 'redis',
      target: 'redis://127.0.0.1:6379',
      routes: ['default'],
      state,
      last_error: at === undefined ? null : { kind: 'unavailable', message: `at ${at}`, at },
    });
    const rows: StoreStatus[][] = [[redis('down', 200)], [redis('ready', 100)]];
    const w0 = workerMetrics(true, undefined, () => rows[0] as StoreStatus[]);
    const w1 = workerMetrics(true, undefined, () => rows[1] as StoreStatus[]);
    const { monitor, workers } = setup({ w0, w1, timeoutMs: 20 });
    w0.metrics.recordStoreErrors('redis', 'unavailable', 3);
    w1.metrics.recordStoreErrors('redis', 'unavailable', 2);
    w1.metrics.recordStoreErrors('redis', 'timeout', 1);
    const errors = (text: string): Record<string, number> => Object.fromEntries(samples(text, 'tollgate_ratelimit_store_errors_total'));
    assert.deepEqual(errors(await monitor.scrape()), {
      '{store="redis",kind="timeout"}': 1,
      '{store="redis",kind="unavailable"}': 5,
      '{store="redis",kind="error"}': 0,
      '{store="ipc",kind="timeout"}': 0,
      '{store="ipc",kind="unavailable"}': 0,
      '{store="ipc",kind="error"}': 0,
    });
    let s = await monitor.status();
    assert.deepEqual(s.rate_limit.errors, { redis: { timeout: 1, unavailable: 5, error: 0 }, ipc: { timeout: 0, unavailable: 0, error: 0 } });
    assert.deepEqual(s.rate_limit.stores, [redis('down', 200)], 'down: one worker cannot reach Redis');
    // Worker 0 reconnects; worker 1 has a newer error but is connected: the newest error, the worst state.
    rows[0] = [redis('ready', 200)];
    rows[1] = [redis('failing', 300)];
    assert.deepEqual((await monitor.status()).rate_limit.stores, [redis('failing', 300)]);
    // Worker 1 exits: its failed checks stay in the counter.
    monitor.exited(101);
    workers.pop();
    assert.equal(errors(await monitor.scrape())['{store="redis",kind="unavailable"}'], 5);
    assert.deepEqual((await monitor.status()).rate_limit.stores, [redis('ready', 200)], 'the worker left');
    // No worker answers: the rows of the last answers.
    rows[0] = [redis('down', 400)];
    (workers[0] as Fake).behaviour = 'stuck';
    s = await monitor.status();
    assert.equal(s.cluster?.answered, 0);
    assert.deepEqual(s.rate_limit.stores, [redis('ready', 200)]);
  });

  test('mergeStores: rows of another store, target or routes stay apart, in the order first listed', () => {
    const row = (store: StoreStatus['store'], target: string | null, routes: string[], state: StoreStatus['state']): StoreStatus => ({ store, target, routes, state, last_error: null });
    const merged = mergeStores([
      { stores: [row('ipc', 'primary', ['a'], 'ready'), row('redis', 'redis://r1', ['b'], 'ready')] },
      { stores: [row('redis', 'redis://r2', ['b'], 'connecting'), row('redis', 'redis://r1', ['b', 'c'], 'down'), row('ipc', 'primary', ['a'], 'failing')] },
      { stores: [row('redis', 'redis://r1', ['b'], 'connecting')] },
    ]);
    assert.deepEqual(merged, [
      row('ipc', 'primary', ['a'], 'failing'),
      row('redis', 'redis://r1', ['b'], 'connecting'),
      row('redis', 'redis://r2', ['b'], 'connecting'),
      row('redis', 'redis://r1', ['b', 'c'], 'down'),
    ]);
    assert.deepEqual(mergeStores([]), []);
  });

  test('no gauges when no worker answers, and the counters are still there', async () => {
    const { monitor, workers, w0 } = setup({ timeoutMs: 20 });
    w0.record(200, w0.a);
    await monitor.scrape();
    for (const w of workers) w.behaviour = 'stuck';
    const text = await monitor.scrape();
    assert.equal(samples(text, 'tollgate_workers_answered').get(''), 0);
    assert.equal(samples(text, 'tollgate_upstream_healthy').size, 0);
    assert.equal(samples(text, 'tollgate_requests_total').get(series('2xx', 'a')), 1);
    const s = await monitor.status();
    assert.deepEqual(s.upstreams.map((u) => [u.name, u.address, u.state, u.inflight, u.weight]), [
      ['a', '127.0.0.1:3001', 'up', 0, 1],
      ['b', '[::1]:3002', 'up', 0, 2],
    ], 'the upstreams of the last answers');
  });

  test('a worker that exits: its last counts are kept, the new worker in its slot adds to them', async () => {
    const { monitor, workers, w0, w1, setRestarts } = setup();
    w0.record(200, w0.a);
    w1.record(200, w1.b);
    w1.record(200, w1.b);
    assert.equal((await monitor.status()).totals.requests, 3);
    monitor.exited(101);
    workers.pop();
    assert.equal((await monitor.status()).totals.requests, 3, 'while the slot is empty');
    const w2 = workerMetrics();
    workers.push(fakeWorker(() => monitor, 1, 102, () => w2.metrics));
    setRestarts(1);
    assert.equal((await monitor.status()).totals.requests, 3, 'the new worker starts from zero');
    w2.record(200, w2.b);
    const text = await monitor.scrape();
    assert.equal(samples(text, 'tollgate_requests_total').get(series('2xx', 'b')), 3);
    assert.equal(samples(text, 'tollgate_worker_restarts_total').get(''), 1);
    // Exiting twice, or a pid never seen, adds nothing.
    monitor.exited(101);
    monitor.exited(999);
    assert.equal((await monitor.status()).totals.requests, 4);
  });

  test('workers that met the upstreams in another order, or run another generation, are merged by name', async () => {
    // Worker 0 runs the config's generation (a, b); worker 1 a reloaded one: c first, then b, and no a.
    const w1c = fakeBackend('c', '127.0.0.1:3003');
    const w1b = fakeBackend('b', '[::1]:3002', 2);
    const w1 = workerMetrics(true, [w1c, w1b]);
    const { monitor, w0 } = setup({ w1 });
    w0.record(200, w0.a);
    w0.record(200, w0.b);
    w1.record(200, w1b);
    w1.record(200, w1b);
    w1.record(200, w1c, 10, undefined, undefined, { name: 'site-v2' } as unknown as Route);
    w0.b.inflight = 1;
    w1b.inflight = 2;
    w1c.inflight = 5;
    (w1b as { healthy: boolean }).healthy = false;
    const text = await monitor.scrape();
    assert.deepEqual(Object.fromEntries(samples(text, 'tollgate_requests_total')), {
      [series('2xx', 'a')]: 1,
      [series('2xx', 'b')]: 3,
      [series('2xx', 'c', 'default', 'site-v2')]: 1,
    });
    assert.deepEqual(Object.fromEntries(samples(text, 'tollgate_upstream_selections_total')), { [up('a')]: 1, [up('b')]: 3, [up('c')]: 1 });
    assert.deepEqual(Object.fromEntries(samples(text, 'tollgate_upstream_inflight')), { [up('a')]: 0, [up('b')]: 3, [up('c')]: 5 });
    assert.deepEqual(Object.fromEntries(samples(text, 'tollgate_upstream_healthy')), { [up('a')]: 1, [up('b')]: 0, [up('c')]: 1 });
    let s = await monitor.status();
    await waitFor(async () => (s = await monitor.status()).recent.requests === 5, 3_000, 'the second of the requests to be complete');
    assert.deepEqual(
      s.upstreams.map((u) => [u.name, u.address, u.state, u.inflight, u.weight, u.requests, u.recent_requests]),
      [
        ['a', '127.0.0.1:3001', 'up', 0, 1, 1, 1],
        ['b', '[::1]:3002', 'down', 3, 2, 3, 3],
        ['c', '127.0.0.1:3003', 'up', 5, 1, 1, 1],
      ],
      'the union of what the workers use, the per-second history mapped by name',
    );
    assert.equal(s.totals.requests, 5);
  });

  test('mergeLive: the same upstream in any order and place adds up; one only a worker has stays as it is', () => {
    const live = (name: string, inflight: number, healthy: number, ejected: number, weight: number, service = 'web') => ({ service, name, address: `${name}:1`, inflight, healthy, ejected, weight });
    const merged = mergeLive([
      { upstreams: [live('a', 1, 1, 0, 4), live('b', 2, 1, 0, 1), live('a', 9, 1, 0, 1, 'api')] },
      { upstreams: [live('b', 3, 0, 1, 1), live('c', 1, 1, 0, 1), live('a', 4, 1, 1, 2)] },
    ]);
    assert.deepEqual(
      merged.map((u) => [u.service, u.name, u.inflight, u.healthy, u.ejected, u.weight]),
      [
        ['web', 'a', 5, 1, 1, 2],
        ['web', 'b', 5, 0, 1, 1],
        ['api', 'a', 9, 1, 0, 1],
        ['web', 'c', 1, 1, 0, 1],
      ],
    );
  });

  test('an exited worker keeps its counts by name, whatever order the worker restarted in its slot meets the upstreams in', async () => {
    const { monitor, workers, w1 } = setup();
    w1.record(200, w1.b);
    w1.record(200, w1.b);
    w1.record(200, w1.a);
    assert.equal((await monitor.status()).totals.requests, 3);
    monitor.exited(101);
    workers.pop();
    // The new worker runs a reloaded generation: b first, then d; a is gone.
    const b = fakeBackend('b', '[::1]:3002', 2);
    const d = fakeBackend('d', '127.0.0.1:3004');
    const w2 = workerMetrics(true, [b, d]);
    workers.push(fakeWorker(() => monitor, 1, 102, () => w2.metrics));
    w2.record(200, d);
    w2.record(200, b);
    const text = await monitor.scrape();
    assert.deepEqual(Object.fromEntries(samples(text, 'tollgate_requests_total')), {
      [series('2xx', 'a')]: 1,
      [series('2xx', 'b')]: 3,
      [series('2xx', 'd')]: 1,
    });
    const s = await monitor.status();
    assert.deepEqual(s.upstreams.map((u) => [u.name, u.requests]), [
      ['a', 1],
      ['b', 3],
      ['d', 1],
    ], 'worker 0 still uses a and b; the new worker b and d');
  });

  test('a worker that exits while asked: the scrape goes on at once, without waiting for the timeout', { timeout: 10_000 }, async () => {
    const { monitor, workers } = setup({ timeoutMs: 60_000 });
    (workers[1] as Fake).behaviour = 'stuck';
    const scrape = monitor.scrape();
    await new Promise((r) => setImmediate(r));
    monitor.exited(101);
    workers.pop();
    assert.equal(samples(await scrape, 'tollgate_workers_answered').get(''), 1);
  });

  test('send errors, thrown sends, error replies and foreign replies leave the worker out; nothing throws', async () => {
    const { monitor, workers, log } = setup({ timeoutMs: 5_000 });
    (workers[0] as Fake).behaviour = 'send-error';
    (workers[1] as Fake).behaviour = 'throw';
    assert.equal(samples(await monitor.scrape(), 'tollgate_workers_answered').get(''), 0);
    (workers[0] as Fake).behaviour = 'error-reply';
    (workers[1] as Fake).behaviour = 'answer';
    assert.equal((await monitor.status()).cluster?.answered, 1);
    assert.ok(log.lines.some((l) => l.msg === 'worker could not answer the snapshot request' && l.error === 'boom'));
    // A reply from another pid than the one asked, or to an id never sent, is ignored.
    monitor.reply(555, { type: 'tollgate:snapshot-reply', id: 1 } as SnapshotReply);
    monitor.reply(100, { type: 'tollgate:snapshot-reply', id: 12345, snapshot: {} as MetricsSnapshot });
  });

  test('workers still starting are not asked', async () => {
    const { monitor, workers } = setup();
    (workers[1] as Fake).ready = false;
    const s = await monitor.status();
    assert.equal(s.cluster?.running, 2);
    assert.equal(s.cluster?.answered, 1);
    assert.equal((workers[1] as Fake).requests.length, 0);
  });

  test('concurrent scrapes share one round of asking; status and scrape ask for what each needs', async () => {
    const { monitor, workers } = setup();
    const [x, y] = await Promise.all([monitor.scrape(), monitor.scrape()]);
    assert.equal(x, y);
    assert.equal((workers[0] as Fake).requests.length, 1);
    assert.deepEqual((workers[0] as Fake).requests[0], { type: 'tollgate:snapshot', id: (workers[0] as Fake).requests[0]?.id, stats: false, process: true });
    await Promise.all([monitor.status(), monitor.status()]);
    assert.equal((workers[0] as Fake).requests.length, 2);
    assert.equal((workers[0] as Fake).requests[1]?.stats, true);
    await monitor.scrape();
    assert.equal((workers[0] as Fake).requests.length, 3, 'a later scrape asks again');
  });

  test('close() answers what is pending and asks no more', async () => {
    const { monitor, workers } = setup({ timeoutMs: 60_000 });
    for (const w of workers) w.behaviour = 'stuck';
    const pending = monitor.status();
    await new Promise((r) => setImmediate(r));
    monitor.close();
    assert.equal((await pending).cluster?.answered, 0);
    const before = (workers[0] as Fake).requests.length;
    await monitor.scrape();
    assert.equal((workers[0] as Fake).requests.length, before);
  });

  test('metrics.enabled: false: no request series, an empty history; workers: auto counts the running ones', async () => {
    const { monitor } = setup({ metrics: false, workers: 'auto' });
    const text = await monitor.scrape();
    assert.doesNotMatch(text, /tollgate_requests_total/);
    assert.equal(samples(text, 'tollgate_upstream_healthy').get(up('a')), 1);
    const s = await monitor.status();
    assert.equal(s.metrics, false);
    assert.deepEqual(s.series.rps, []);
    assert.equal(s.current.p50_ms, null);
    assert.equal(s.cluster?.workers, 2);
  });
});
