/**
 * The admin listener in cluster mode, through the real CLI with `workers: 2`: the primary serves it and
 * shows the whole instance (counts summed over the workers, kept across a worker's restart, and served
 * even while a worker is stuck).
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { ServerResponse } from 'node:http';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { startCli, writeConfig } from '../helpers/cli.js';
import { alive, lines, startCluster, stopCluster, type Cluster } from '../helpers/cluster.js';
import { request, type Reply } from '../helpers/http.js';
import { startBackend, startHoldingBackend, waitFor, type Backend, type HoldingBackend } from '../helpers/servers.js';
import { openEvents, samples, scrape } from '../helpers/metrics.js';

const TOKEN = 'Bearer t';

function yaml(port: number, backends: Backend[], extra: { admin?: string; middleware?: string } = {}): string {
  return [
    'server:',
    `  listen_port: ${port}`,
    '  listen_address: "127.0.0.1"',
    '  workers: 2',
    '  shutdown_grace_ms: 5000',
    '  trusted_proxies: ["127.0.0.1"]',
    'load_balancing:',
    '  health_check: { active: { enabled: false }, passive: { enabled: false } }',
    '  upstreams:',
    ...backends.map((b) => `    - { name: ${b.name}, address: 127.0.0.1, port: ${b.port} }`),
    'middleware:',
    extra.middleware ??
      [
        '  auth: { enabled: true, valid_tokens: ["t"] }',
        '  rate_limit: { enabled: true, requests_per_minute: 1, burst_size: 10, store: { type: memory, timeout_ms: 10000 } }',
      ].join('\n'),
    'admin:',
    extra.admin ?? '  port: 0',
  ].join('\n');
}

function total(text: string, name: string): number {
  let sum = 0;
  for (const v of samples(text, name).values()) sum += v;
  return sum;
}

interface StatusDoc {
  draining: boolean;
  totals: { requests: number; status: Record<string, number>; unauthorized: number; rate_limited: number; retries: number };
  recent: { requests: number; status: Record<string, number>; unauthorized: number; rate_limited: number };
  current: { p50_ms: number | null; p99_ms: number | null };
  series: { t: number[]; rps: number[] };
  connections: { open: number; refused_total: number };
  upstreams: { service: string; name: string; address: string; state: string; requests: number; recent_requests: number; share: number | null; inflight: number }[];
  services: { name: string; strategy: string; upstreams: string[]; requests: number }[];
  routes: { name: string; service: string | null; redirect: string | null; requests: number }[];
  cluster?: { workers: number; running: number; answered: number; restarts: number; processes: { slot: number; pid: number; uptime_s: number; answered: boolean }[] };
}

async function status(adminUrl: string): Promise<StatusDoc> {
  const res = await request(`${adminUrl}/api/status`);
  assert.equal(res.status, 200);
  return res.json<StatusDoc>();
}

function from(client: string, token?: string): { headers: Record<string, string> } {
  return { headers: token === undefined ? { 'x-forwarded-for': client } : { 'x-forwarded-for': client, authorization: token } };
}

function completed(c: Cluster): number {
  return lines(c.child).filter((l) => l.msg === 'Request Completed').length;
}

describe('cluster mode: the admin listener in the primary', () => {
  let a: Backend;
  let b: Backend;
  let c: Cluster;
  before(async () => {
    [a, b] = await Promise.all([startBackend('a'), startBackend('b')]);
    const port = 0;
    c = await startCluster(yaml(port, [a, b]));
  });
  after(async () => {
    await stopCluster(c);
    await Promise.all([a.close(), b.close()]);
  });

  test('one admin listener for the instance: the primary logs its address, the workers start none', () => {
    assert.notEqual(c.adminUrl, '');
    const adminLines = lines(c.child).filter((l) => typeof l.msg === 'string' && l.msg.startsWith('admin listening on'));
    assert.equal(adminLines.length, 1);
    assert.equal(adminLines[0]?.worker, undefined, 'logged by the primary');
    assert.ok(!c.workerPids.includes(adminLines[0]?.pid as number));
  });

  test('after 20 known requests spread over both workers, /metrics has the exact instance totals', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 8; i++) statuses.push((await request(`${c.url}/get/${i}`, from('10.0.0.1', TOKEN))).status);
    for (let i = 0; i < 2; i++) statuses.push((await request(`${c.url}/post`, { method: 'POST', body: 'x', ...from('10.0.0.1', TOKEN) })).status);
    for (let i = 0; i < 3; i++) statuses.push((await request(`${c.url}/limited`, from('10.0.0.1', TOKEN))).status);
    for (let i = 0; i < 6; i++) statuses.push((await request(`${c.url}/no-token`, from(`10.0.1.${i}`))).status);
    statuses.push((await request(`${c.url}/bad-token`, from('10.0.2.1', 'Bearer wrong'))).status);
    assert.deepEqual(statuses, [...Array<number>(10).fill(200), 429, 429, 429, ...Array<number>(7).fill(401)]);
    await waitFor(() => completed(c) === 20, 5_000, 'the 20 completion lines');
    const pids = new Set(lines(c.child).filter((l) => l.msg === 'Request Completed').map((l) => l.pid as number));
    assert.equal(pids.size, 2, 'both workers served some of the requests');
    assert.equal(a.hits + b.hits, 10);

    const text = await scrape(c.adminUrl);
    const requests = samples(text, 'tollgate_requests_total');
    assert.equal(total(text, 'tollgate_requests_total'), 20);
    // By upstream: what each backend itself received (each worker balances on its own).
    const byUpstream = (name: string): number => [...requests].filter(([k]) => k.includes(`upstream="${name}"`)).reduce((n, [, v]) => n + v, 0);
    assert.equal(byUpstream('a'), a.hits);
    assert.equal(byUpstream('b'), b.hits);
    assert.equal(byUpstream('none'), 10);
    // By status class and method.
    const byClass = (cls: string, method?: string): number =>
      [...requests].filter(([k]) => k.includes(`status_class="${cls}"`) && (method === undefined || k.includes(`method="${method}"`))).reduce((n, [, v]) => n + v, 0);
    assert.equal(byClass('2xx', 'GET'), 8);
    assert.equal(byClass('2xx', 'POST'), 2);
    assert.equal(byClass('4xx', 'GET'), 10);
    assert.equal(requests.get('{status_class="4xx",method="GET",protocol="http/1.1",route="default",service="none",upstream="none"}'), 10);
    for (const key of requests.keys()) assert.match(key, /route="default"/);
    assert.equal(byClass('5xx'), 0);
    assert.deepEqual(Object.fromEntries([...samples(text, 'tollgate_auth_failures_total')].filter(([, n]) => n > 0)), { '{reason="missing"}': 6, '{reason="invalid"}': 1 });
    assert.equal(samples(text, 'tollgate_ratelimit_rejections_total').get(''), 3);
    assert.equal(samples(text, 'tollgate_retries_total').get(''), 0);
    assert.deepEqual(Object.fromEntries(samples(text, 'tollgate_upstream_selections_total')), { '{service="default",upstream="a"}': a.hits, '{service="default",upstream="b"}': b.hits });
    assert.equal(total(text, 'tollgate_request_duration_seconds_count'), 20);
    assert.equal(samples(text, 'tollgate_request_duration_seconds_bucket').get('{le="+Inf",route="default",service="none",upstream="none"}'), 10);
    assert.deepEqual(Object.fromEntries(samples(text, 'tollgate_upstream_healthy')), { '{service="default",upstream="a"}': 1, '{service="default",upstream="b"}': 1 });
    assert.deepEqual(Object.fromEntries(samples(text, 'tollgate_upstream_inflight')), { '{service="default",upstream="a"}': 0, '{service="default",upstream="b"}': 0 });
    assert.equal(samples(text, 'tollgate_connections_refused_total').get(''), 0);
    assert.equal(samples(text, 'tollgate_workers').get(''), 2);
    assert.equal(samples(text, 'tollgate_workers_answered').get(''), 2);
    assert.equal(samples(text, 'tollgate_worker_restarts_total').get(''), 0);
    // Process metrics: one series per process, labelled by worker slot (and the primary's own).
    assert.deepEqual([...samples(text, 'process_resident_memory_bytes').keys()].sort(), ['{worker="0"}', '{worker="1"}', '{worker="primary"}']);
  });

  test('/api/status has the same totals, per-second history summed over the workers, and the workers', async () => {
    const s = await status(c.adminUrl);
    assert.equal(s.totals.requests, 20);
    assert.deepEqual(s.totals.status, { '2xx': 10, '3xx': 0, '4xx': 10, '5xx': 0 });
    assert.equal(s.totals.unauthorized, 7);
    assert.equal(s.totals.rate_limited, 3);
    assert.deepEqual(
      s.upstreams.map((u) => [u.service, u.name, u.address, u.state, u.requests]),
      [
        ['default', 'a', `127.0.0.1:${a.port}`, 'up', a.hits],
        ['default', 'b', `127.0.0.1:${b.port}`, 'up', b.hits],
      ],
    );
    assert.deepEqual(s.services, [{ name: 'default', strategy: 'round_robin', upstreams: ['a', 'b'], requests: 10 }]);
    assert.deepEqual(s.routes, [{ name: 'default', service: 'default', redirect: null, requests: 20 }]);
    assert.equal(s.cluster?.workers, 2);
    assert.equal(s.cluster?.running, 2);
    assert.equal(s.cluster?.answered, 2);
    assert.deepEqual(s.cluster?.processes.map((p) => p.pid).sort(), [...c.workerPids].sort());
    // Once the seconds of the traffic are complete, the merged history has every request.
    let last = s;
    await waitFor(async () => (last = await status(c.adminUrl)).recent.requests === 20, 5_000, 'the recent window to hold the 20 requests');
    assert.equal(last.recent.requests, 20);
    assert.deepEqual(last.recent.status, { '2xx': 10, '3xx': 0, '4xx': 10, '5xx': 0 });
    assert.equal(last.recent.unauthorized, 7);
    assert.equal(last.recent.rate_limited, 3);
    assert.equal(last.series.rps.reduce((n, v) => n + v, 0), 20);
    assert.equal(last.upstreams.reduce((n, u) => n + u.recent_requests, 0), 10);
    assert.equal(last.upstreams.reduce((n, u) => n + (u.share ?? 0), 0).toFixed(2), '1.00');
    assert.notEqual(last.current.p50_ms, null, 'latency quantiles from the merged sketches');
  });

  test('the dashboard and its event stream are served by the primary', async () => {
    for (const path of ['/', '/dashboard.js', '/dashboard.css', '/vendor/uPlot.iife.min.js', '/vendor/uPlot.min.css']) {
      assert.equal((await request(`${c.adminUrl}${path}`)).status, 200, path);
    }
    assert.match((await request(`${c.adminUrl}/`)).body, /<title>Tollgate<\/title>/);
    const stream = await openEvents<StatusDoc>(`${c.adminUrl}/api/events`);
    try {
      await waitFor(() => stream.events.length >= 2, 5_000, 'two events');
      for (const e of stream.events) {
        assert.equal(e.totals.requests, 20);
        assert.equal(e.cluster?.running, 2);
      }
    } finally {
      stream.close();
    }
  });

  test('a worker killed with SIGKILL is restarted and the instance counters do not go backwards', async () => {
    const before = await scrape(c.adminUrl);
    assert.equal(total(before, 'tollgate_requests_total'), 20);
    const victim = c.workerPids[0] as number;
    process.kill(victim, 'SIGKILL');
    await waitFor(() => lines(c.child).some((l) => l.msg === 'worker died; restarting it' && l.worker_pid === victim), 10_000, 'the death to be logged');
    // Scraped while the slot is empty, and again once the new worker listens: still 20.
    assert.equal(total(await scrape(c.adminUrl), 'tollgate_requests_total'), 20);
    await waitFor(() => lines(c.child).some((l) => l.msg === 'worker started' && l.worker === 0 && l.worker_pid !== victim), 10_000, 'a new worker in slot 0');
    let text = '';
    await waitFor(async () => samples((text = await scrape(c.adminUrl)), 'tollgate_workers_answered').get('') === 2, 10_000, 'both workers to answer');
    assert.equal(total(text, 'tollgate_requests_total'), 20);
    assert.equal(samples(text, 'tollgate_worker_restarts_total').get(''), 1);
    assert.deepEqual(Object.fromEntries([...samples(text, 'tollgate_auth_failures_total')].filter(([, n]) => n > 0)), { '{reason="missing"}': 6, '{reason="invalid"}': 1 });
    assert.equal(samples(text, 'tollgate_ratelimit_rejections_total').get(''), 3);

    // New traffic adds to what the dead worker had counted, whichever worker serves it.
    const before2 = completed(c);
    const replies: Reply[] = [];
    for (let i = 0; i < 4; i++) replies.push(await request(`${c.url}/after/${i}`, from(`10.0.3.${i}`)));
    assert.deepEqual(replies.map((r) => r.status), [401, 401, 401, 401]);
    await waitFor(() => completed(c) === before2 + 4, 5_000, 'the completion lines');
    const after = await scrape(c.adminUrl);
    assert.equal(total(after, 'tollgate_requests_total'), 24);
    assert.equal(samples(after, 'tollgate_auth_failures_total').get('{reason="missing"}'), 10);
    assert.equal((await status(c.adminUrl)).totals.requests, 24);
  });

  test('a stuck worker (SIGSTOP) is left out after the timeout: /metrics still answers, and its last counts stay in', async () => {
    const s = await status(c.adminUrl);
    const stuck = s.cluster?.processes.find((p) => p.slot === 1)?.pid as number;
    assert.equal(typeof stuck, 'number');
    process.kill(stuck, 'SIGSTOP');
    try {
      // Not a speed assertion: a scrape that waited for the stopped worker would never finish (the
      // request below fails the test after 10 s); one that leaves it out answers after its 500 ms timeout.
      const text = await Promise.race([
        scrape(c.adminUrl),
        new Promise<never>((_r, reject) => setTimeout(() => reject(new Error('/metrics hung on the stopped worker')), 10_000).unref()),
      ]);
      assert.equal(samples(text, 'tollgate_workers').get(''), 2);
      assert.equal(samples(text, 'tollgate_workers_answered').get(''), 1);
      assert.equal(total(text, 'tollgate_requests_total'), 24, 'the stuck worker counts with its last answer');
      assert.deepEqual([...samples(text, 'process_resident_memory_bytes').keys()].sort(), ['{worker="0"}', '{worker="primary"}'], 'the other worker answered');
      const during = await status(c.adminUrl);
      assert.equal(during.cluster?.answered, 1);
      assert.deepEqual(during.cluster?.processes.map((p) => [p.slot, p.answered]).sort(), [
        [0, true],
        [1, false],
      ]);
      assert.equal(during.totals.requests, 24);
    } finally {
      process.kill(stuck, 'SIGCONT');
    }
    let text = '';
    await waitFor(async () => samples((text = await scrape(c.adminUrl)), 'tollgate_workers_answered').get('') === 2, 10_000, 'the continued worker to answer again');
    assert.equal(total(text, 'tollgate_requests_total'), 24);
  });
});

describe('cluster mode: the admin listener at start and shutdown', () => {
  let backend: HoldingBackend;
  before(async () => {
    backend = await startHoldingBackend('b');
  });
  after(() => backend.close());

  test('SIGTERM: the admin listener stays up while the workers drain, then closes; an open event stream does not delay the exit', async () => {
    const port = 0;
    const c = await startCluster(yaml(port, [backend], { middleware: '  {}' }));
    backend.held.length = 0;
    const stream = await openEvents<StatusDoc>(`${c.adminUrl}/api/events`);
    try {
      await waitFor(() => stream.events.length >= 1, 5_000, 'the first event');
      const inflight = request(`${c.url}/hold`);
      await waitFor(() => backend.held.length === 1, 5_000, 'the request to reach the backend');
      c.child.kill('SIGTERM');
      await waitFor(() => lines(c.child).filter((l) => l.msg === 'worker draining').length === 2, 5_000, 'both workers to drain');
      const during = await status(c.adminUrl);
      assert.equal(during.draining, true);
      assert.ok(during.cluster !== undefined && during.cluster.running >= 1);
      assert.equal((await request(`${c.adminUrl}/metrics`)).status, 200);
      assert.equal(c.child.exitCode, null, 'the primary waits for the workers');
      (backend.held[0] as ServerResponse).end('finished');
      assert.equal((await inflight).body, 'finished');
      const [code] = (await once(c.child, 'exit')) as [number];
      assert.equal(code, 0);
      await waitFor(() => stream.res.destroyed || stream.res.complete, 5_000, 'the event stream to be closed by the primary');
      const adminPort = Number(new URL(c.adminUrl).port);
      const refused = await new Promise<boolean>((resolve) => {
        const s = connect(adminPort, '127.0.0.1');
        s.on('connect', () => {
          s.destroy();
          resolve(false);
        });
        s.on('error', () => resolve(true));
      });
      assert.ok(refused, 'the admin port is closed');
    } finally {
      stream.close();
      await stopCluster(c);
    }
  });

  test('an admin port in use: the primary exits 1 before forking any worker', async () => {
    const port = 0;
    const child = startCli(['--config', writeConfig(yaml(port, [backend], { admin: `  port: ${backend.port}`, middleware: '  {}' }))]);
    const [code] = (await once(child, 'exit')) as [number];
    assert.equal(code, 1);
    assert.equal(child.output.stderr, `tollgate: cannot listen on 127.0.0.1:${backend.port} for the admin listener: address already in use\n`);
    assert.doesNotMatch(child.output.stdout, /worker started|EADDRINUSE|shutting down|shutdown complete/);
  });

  test('admin.enabled: false in cluster mode: no admin listener anywhere, the workers serve as before', async () => {
    const port = 0;
    const c = await startCluster(yaml(port, [backend], { admin: '  enabled: false', middleware: '  {}' }));
    try {
      assert.equal(c.adminUrl, '');
      const replies = await Promise.all(Array.from({ length: 6 }, (_, i) => request(`${c.url}/x${i}`)));
      assert.deepEqual(replies.map((r) => r.status), Array<number>(6).fill(200));
      assert.doesNotMatch(c.child.output.stdout, /admin listening/);
      await waitFor(() => completed(c) === 6, 5_000, 'the completion lines');
      for (const pid of c.workerPids) assert.ok(alive(pid));
    } finally {
      await stopCluster(c);
    }
  });
});
