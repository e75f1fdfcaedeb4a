import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { request, type Reply } from '../helpers/http.js';
import { startCli, writeConfig } from '../helpers/cli.js';
import { alive, lines, servedBy, startCluster, stopCluster, type Cluster } from '../helpers/cluster.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { startBackend, startHoldingBackend, waitFor, type Backend, type HoldingBackend } from '../helpers/servers.js';

function yaml(port: number, backendPort: number, extra: { server?: string; middleware?: string } = {}): string {
  return [
    'server:',
    `  listen_port: ${port}`,
    '  listen_address: "127.0.0.1"',
    '  workers: 2',
    '  shutdown_grace_ms: 5000',
    '  trusted_proxies: ["127.0.0.1"]',
    extra.server ?? '',
    'load_balancing:',
    '  health_check: { active: { enabled: false } }',
    '  upstreams:',
    `    - { name: b, address: 127.0.0.1, port: ${backendPort} }`,
    'middleware:',
    extra.middleware ??
      // A long wait for the primary: these tests count exactly, and a take that timed out would be let through
      // (on_error: allow) on a loaded machine.
      ['  rate_limit:', '    enabled: true', '    requests_per_minute: 1', '    burst_size: 10', '    store: { type: memory, timeout_ms: 10000 }'].join('\n'),
    // The primary's admin listener on a free port, so instances in parallel tests never compete for 9901.
    'admin:',
    '  port: 0',
  ].join('\n');
}

function as(client: string): { headers: Record<string, string> } {
  return { headers: { 'x-forwarded-for': client } };
}

function count(replies: Reply[]): Record<number, number> {
  const out: Record<number, number> = {};
  for (const r of replies) out[r.status] = (out[r.status] ?? 0) + 1;
  return out;
}

describe('cluster mode (server.workers: 2), through the real CLI', () => {
  let backend: Backend;
  let c: Cluster;
  before(async () => {
    backend = await startBackend('b');
    const port = 0;
    c = await startCluster(yaml(port, backend.port));
  });
  after(async () => {
    await stopCluster(c);
    await backend.close();
  });

  test('burst_size 10 and a slow refill: exactly 10 of 20 requests pass across both workers, not 20', async () => {
    const replies: Reply[] = [];
    for (let i = 0; i < 20; i++) replies.push(await request(`${c.url}/seq`, as('10.0.0.1')));
    assert.deepEqual(count(replies), { 200: 10, 429: 10 });
    assert.deepEqual(
      replies.map((r) => r.status),
      [...Array<number>(10).fill(200), ...Array<number>(10).fill(429)],
    );
    await waitFor(() => lines(c.child).filter((l) => l.path === '/seq').length === 20, 5_000, 'the completion lines');
    assert.equal(servedBy(c.child, '/seq').size, 2, 'both workers served some of the requests');
    // The headers come from the one bucket in the primary: r counts down 9 … 0 whichever worker answers.
    assert.deepEqual(
      replies.slice(0, 10).map((r) => r.headers['ratelimit']),
      [9, 8, 7, 6, 5, 4, 3, 2, 1, 0].map((n) => `"default";r=${n};t=${(10 - n) * 60}`),
    );
  });

  test('30 concurrent requests for one client: exactly 10 pass', async () => {
    const replies = await Promise.all(Array.from({ length: 30 }, () => request(`${c.url}/burst`, as('10.0.0.2'))));
    assert.deepEqual(count(replies), { 200: 10, 429: 20 });
    await waitFor(() => lines(c.child).filter((l) => l.path === '/burst').length === 30, 5_000, 'the completion lines');
    assert.equal(servedBy(c.child, '/burst').size, 2, 'both workers served some of the requests');
  });

  test('/health is answered by every worker', async () => {
    const replies = await Promise.all(Array.from({ length: 10 }, () => request(`${c.url}/health`)));
    for (const r of replies) {
      assert.equal(r.status, 200);
      assert.equal(r.json().status, 'ok');
    }
    await waitFor(() => lines(c.child).filter((l) => l.path === '/health').length === 10, 5_000, 'the completion lines');
    assert.equal(servedBy(c.child, '/health').size, 2);
  });

  test('a worker that dies is restarted (logged); the buckets, kept in the primary, survive it', async () => {
    const client = '10.0.0.3';
    const before = await Promise.all(Array.from({ length: 11 }, () => request(`${c.url}/k`, as(client))));
    assert.deepEqual(count(before), { 200: 10, 429: 1 });
    const victim = c.workerPids[0] as number;
    process.kill(victim, 'SIGKILL');
    await waitFor(() => lines(c.child).some((l) => l.msg === 'worker died; restarting it' && l.worker_pid === victim), 10_000, 'the death to be logged');
    const died = lines(c.child).find((l) => l.msg === 'worker died; restarting it');
    assert.equal(died?.signal, 'SIGKILL');
    assert.equal(typeof died?.restart_in_ms, 'number');
    await waitFor(
      () => lines(c.child).some((l) => l.msg === 'worker started' && l.worker === died?.worker && l.worker_pid !== victim),
      10_000,
      'a new worker in the same slot',
    );
    // Served again, by both workers; the client's bucket is still empty.
    const afterRestart: Reply[] = [];
    for (let i = 0; i < 6; i++) afterRestart.push(await request(`${c.url}/k`, as(client)));
    assert.deepEqual(count(afterRestart), { 429: 6 });
    assert.equal((await request(`${c.url}/k`, as('10.0.0.4'))).status, 200);
  });
});

/**
 * Routes with rate limits of their own, and none at the top level: the primary must hold buckets for each
 * policy (made when first asked), and a route's clients must not share buckets with another route's.
 */
function routesYaml(port: number, backendPort: number): string {
  const route = (name: string, prefix: string, burst?: number): string =>
    [
      `  - name: ${name}`,
      `    match: { path_prefix: ${prefix} }`,
      '    service: default',
      ...(burst === undefined ? [] : [`    middleware: { rate_limit: { enabled: true, burst_size: ${burst} } }`]),
    ].join('\n');
  return [
    'server:',
    `  listen_port: ${port}`,
    '  listen_address: "127.0.0.1"',
    '  workers: 2',
    '  trusted_proxies: ["127.0.0.1"]',
    'load_balancing:',
    '  health_check: { active: { enabled: false } }',
    '  upstreams:',
    `    - { name: b, address: 127.0.0.1, port: ${backendPort} }`,
    'middleware:',
    // Off here; the routes turn it on and inherit the slow refill.
    '  rate_limit: { enabled: false, requests_per_minute: 1 }',
    'routes:',
    route('two', '/two', 2),
    route('five', '/five', 5),
    route('two-again', '/two-again', 2),
    route('open', '/'),
    'admin:',
    '  port: 0',
  ].join('\n');
}

// A primary without the route's buckets would leave requests unanswered: fail, do not hang.
describe('cluster mode with per-route rate limits', { timeout: 60_000 }, () => {
  let backend: Backend;
  let c: Cluster;
  before(async () => {
    backend = await startBackend('b');
    const port = 0;
    c = await startCluster(routesYaml(port, backend.port));
  });
  after(async () => {
    await stopCluster(c);
    await backend.close();
  });

  async function eight(path: string, client: string): Promise<Reply[]> {
    const replies: Reply[] = [];
    for (let i = 0; i < 8; i++) replies.push(await request(`${c.url}${path}`, as(client)));
    return replies;
  }

  test('burst 2 on one route and 5 on another, across both workers: each route has its own limit', async () => {
    const two = await eight('/two/x', '10.5.0.1');
    const five = await eight('/five/x', '10.5.0.1');
    assert.deepEqual(
      two.map((r) => r.status),
      [200, 200, 429, 429, 429, 429, 429, 429],
    );
    assert.deepEqual(
      five.map((r) => r.status),
      [200, 200, 200, 200, 200, 429, 429, 429],
    );
    // Each route's headers come from its own bucket in the primary, whichever worker answered.
    assert.deepEqual(
      two.slice(0, 2).map((r) => r.headers['ratelimit']),
      [1, 0].map((n) => `"default";r=${n};t=${(2 - n) * 60}`),
    );
    assert.deepEqual(
      five.slice(0, 5).map((r) => r.headers['ratelimit']),
      [4, 3, 2, 1, 0].map((n) => `"default";r=${n};t=${(5 - n) * 60}`),
    );
    await waitFor(() => lines(c.child).filter((l) => l.path === '/two/x' || l.path === '/five/x').length === 16, 5_000, 'the completion lines');
    assert.equal(servedBy(c.child, '/two/x').size, 2, 'both workers served /two');
    assert.equal(servedBy(c.child, '/five/x').size, 2, 'both workers served /five');
  });

  test('two routes with the same policy keep separate buckets; a route without a limit has none', async () => {
    assert.deepEqual(
      (await eight('/two/y', '10.5.0.2')).map((r) => r.status),
      [200, 200, 429, 429, 429, 429, 429, 429],
    );
    // The same client on another route with the same rate and burst starts with a full bucket.
    assert.deepEqual(
      (await eight('/two-again/y', '10.5.0.2')).map((r) => r.status),
      [200, 200, 429, 429, 429, 429, 429, 429],
    );
    const open = await eight('/y', '10.5.0.2');
    assert.deepEqual(
      open.map((r) => r.status),
      Array<number>(8).fill(200),
    );
    assert.equal(open[0]?.headers['ratelimit'], undefined);
  });
});

describe('cluster mode: limits, shutdown and failures', () => {
  let backend: HoldingBackend;
  before(async () => {
    backend = await startHoldingBackend('b');
  });
  after(() => backend.close());

  test('max_connections is for the whole instance: 3 split as 2 + 1, never 3 per worker', async () => {
    const port = 0;
    const c = await startCluster(yaml(port, backend.port, { server: '  max_connections: 3' }));
    const sockets: Socket[] = [];
    let closedUnanswered = 0;
    backend.held.length = 0;
    try {
      for (let i = 0; i < 6; i++) {
        const s = connect(c.port, '127.0.0.1');
        s.on('error', () => {});
        let got = '';
        s.on('data', (d: Buffer) => (got += d.toString()));
        s.on('close', () => {
          if (got === '') closedUnanswered++;
        });
        await once(s, 'connect');
        s.write(`GET /hold HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.1.0.${i}\r\n\r\n`);
        sockets.push(s);
      }
      await waitFor(() => backend.held.length + closedUnanswered === 6, 10_000, 'every connection to be served or refused');
      assert.ok(backend.held.length <= 3, `${backend.held.length} connections served at once; the limit is 3 for the instance`);
      assert.ok(backend.held.length >= 1);
      assert.equal(closedUnanswered, 6 - backend.held.length);
      await waitFor(() => lines(c.child).some((l) => l.msg === 'connection refused: max_connections reached'), 5_000, 'the refusal log line');
      const shares = new Set(lines(c.child).filter((l) => l.msg === 'connection refused: max_connections reached').map((l) => l.max_connections));
      for (const share of shares) assert.ok(share === 1 || share === 2, `a worker's share is 1 or 2, got ${String(share)}`);
    } finally {
      for (const res of backend.held) res.end('done');
      for (const s of sockets) s.destroy();
      await stopCluster(c);
    }
  });

  test('SIGTERM to the primary drains every worker: in-flight requests finish, then everything exits 0', async () => {
    const port = 0;
    const c = await startCluster(yaml(port, backend.port));
    backend.held.length = 0;
    try {
      const inflight = Array.from({ length: 4 }, (_, i) => request(`${c.url}/hold`, as(`10.2.0.${i}`)));
      await waitFor(() => backend.held.length === 4, 5_000, 'the requests to reach the backend');
      c.child.kill('SIGTERM');
      await waitFor(() => lines(c.child).filter((l) => l.msg === 'worker draining').length === 2, 5_000, 'both workers to drain');
      assert.equal(c.child.exitCode, null, 'the primary waits for the workers');
      for (const res of backend.held) res.end('finished');
      const replies = await Promise.all(inflight);
      for (const r of replies) {
        assert.equal(r.status, 200);
        assert.equal(r.body, 'finished');
      }
      const [code] = (await once(c.child, 'exit')) as [number];
      assert.equal(code, 0);
      for (const pid of c.workerPids) assert.equal(alive(pid), false, `worker ${pid} has exited`);
      assert.ok(lines(c.child).some((l) => l.msg === 'shutdown complete' && l.worker === undefined), 'the primary logged its shutdown');
      assert.equal(lines(c.child).filter((l) => l.msg === 'worker exited' && l.code === 0).length, 2);
    } finally {
      await stopCluster(c);
    }
  });

  test('a primary killed outright leaves no workers behind', async () => {
    const port = 0;
    const c = await startCluster(yaml(port, backend.port));
    c.child.kill('SIGKILL');
    await once(c.child, 'exit');
    await waitFor(() => c.workerPids.every((p) => !alive(p)), 10_000, 'the orphaned workers to exit');
  });

  test('a port already in use: one line naming the proxy listener, once for the instance, then exit 1 (no restart)', async () => {
    const c = startCli(['--config', writeConfig(yaml(backend.port, backend.port))]);
    const [code] = (await once(c, 'exit')) as [number];
    assert.equal(code, 1);
    assert.equal(c.output.stderr, `tollgate: cannot listen on 127.0.0.1:${backend.port} for the proxy: address already in use\n`);
    // No stack, no restart, no shutdown: only the start-up lines before it.
    assert.doesNotMatch(c.output.stdout, /EADDRINUSE|restarting|died|shutting down|shutdown complete|"level":[56]0/);
  });

  test('workers: auto needs max_connections of at least the number of CPUs: --check exits 2', async () => {
    const file = writeConfig(yaml(1, backend.port, { server: '  max_connections: 1' }).replace('workers: 2', 'workers: auto'));
    const c = startCli(['--check', '--config', file]);
    const [code] = (await once(c, 'exit')) as [number];
    // One CPU would make it valid; CI machines have two or more.
    if (code === 0) return;
    assert.equal(code, 2);
    assert.match(c.output.stderr, /server\.max_connections: must be at least the number of workers \(auto: \d+\), got 1/);
  });
});

describe('cluster mode with the Redis store', () => {
  let redis: TestRedis;
  let backend: Backend;
  before(async () => {
    redis = await startRedis();
    backend = await startBackend('b');
  });
  after(async () => {
    await backend.close();
    await redis.close();
  });

  test('one instance with 2 workers on one Redis: exactly 10 of 20 requests pass', async () => {
    const port = 0;
    const store = `    store: { type: redis, url: "${redis.url}", key_prefix: "tollgate-test:${process.pid}:${Date.now()}:" }`;
    const middleware = ['  rate_limit:', '    enabled: true', '    requests_per_minute: 1', '    burst_size: 10', store].join('\n');
    const c = await startCluster(yaml(port, backend.port, { middleware }));
    try {
      const replies: Reply[] = [];
      for (let i = 0; i < 20; i++) replies.push(await request(`${c.url}/r`, as('10.3.0.1')));
      assert.deepEqual(count(replies), { 200: 10, 429: 10 });
      await waitFor(() => lines(c.child).filter((l) => l.path === '/r').length === 20, 5_000, 'the completion lines');
      assert.equal(servedBy(c.child, '/r').size, 2, 'both workers served some of the requests');
      assert.equal(lines(c.child).filter((l) => l.msg === 'redis connected').length, 2, 'each worker has its own connection');
    } finally {
      await stopCluster(c);
    }
  });
});
