import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { request } from '../helpers/http.js';
import { startFaultUpstreams, type FaultUpstream } from '../helpers/fault-upstream.js';
import { closedPorts, seededRandom, startBackend, startProxy, waitFor, type TestProxy } from '../helpers/servers.js';

const FAST_CHECKS = { active: { interval_ms: 100, timeout_ms: 200, healthy_threshold: 2, unhealthy_threshold: 2 } };
const NO_HEALTH = { active: { enabled: false }, passive: { enabled: false } };

function nameOf(body: string): string {
  return body.split(' ')[0] ?? '';
}

async function closeAll(proxy: TestProxy, upstreams: FaultUpstream[]): Promise<void> {
  await proxy.close();
  await Promise.all(upstreams.map((u) => u.kill()));
}

describe('resilient upstreams', () => {
  test('one of three backends killed under a steady stream of GETs: no failed request; it rejoins after passing checks', async () => {
    const ups = await startFaultUpstreams('a', 'b', 'c');
    const proxy = await startProxy(ups, { load_balancing: { health_check: FAST_CHECKS } });
    try {
      const statuses: number[] = [];
      let stop = false;
      const errors: string[] = [];
      const client = async (): Promise<void> => {
        while (!stop) {
          try {
            statuses.push((await request(`${proxy.url}/stream`)).status);
          } catch (err) {
            errors.push(`${(err as Error).message} (proxy port ${proxy.port}, upstreams ${ups.map((u) => u.port).join(',')})`);
            statuses.push(0);
          }
        }
      };
      const clients = [client(), client(), client(), client()];
      await waitFor(() => statuses.length >= 100, 10_000, 'traffic');
      await ups[1]!.kill();
      const killedAt = statuses.length;
      await waitFor(() => proxy.logs.some((l) => l.msg === 'upstream unhealthy: taken out of rotation' && l.upstream === 'b'), 5000, 'b marked down');
      await waitFor(() => statuses.length >= killedAt + 200, 10_000, 'traffic after the kill');
      const down = proxy.logs.find((l) => l.msg === 'upstream unhealthy: taken out of rotation');
      assert.equal(down?.reason, '2 tcp checks in a row failed, the last: connection refused');
      const hitsWhileDown = ups[1]!.hits;
      await ups[1]!.revive();
      await waitFor(() => proxy.logs.some((l) => l.msg === 'upstream healthy again: taking requests' && l.upstream === 'b'), 5000, 'b back up');
      const up = proxy.logs.find((l) => l.msg === 'upstream healthy again: taking requests');
      assert.equal(up?.reason, '2 tcp checks in a row passed, the last: connected');
      await waitFor(() => ups[1]!.hits > hitsWhileDown + 10, 5000, 'b to take requests again');
      stop = true;
      await Promise.all(clients);
      assert.ok(statuses.length > 300);
      assert.deepEqual(errors, []);
      assert.deepEqual(statuses.filter((s) => s !== 200), [], 'every client request succeeded');
      const retried = proxy.logs.filter((l) => l.msg === 'Request Completed' && (l.retries as number) > 0).length;
      assert.ok(retried >= 1, 'requests in flight or sent to b before health knew were retried');
    } finally {
      await closeAll(proxy, ups);
    }
  });

  test('a POST whose connection is reset after its body was sent is not replayed and gets 502', async () => {
    const ups = await startFaultUpstreams('a', 'b');
    for (const u of ups) u.mode = 'read-body-then-reset';
    const proxy = await startProxy(ups, { load_balancing: { health_check: NO_HEALTH } });
    try {
      const res = await request(`${proxy.url}/pay`, { method: 'POST', body: 'amount=10', headers: { 'content-type': 'text/plain' } });
      assert.equal(res.status, 502);
      assert.equal(ups[0]!.hits + ups[1]!.hits, 1, 'the backends saw the POST once');
      // A GET failing the same way (reset before any answer) is retried once on the other backend.
      for (const u of ups) u.mode = 'reset-before-headers';
      ups[1]!.mode = 'ok';
      ups[0]!.mode = 'reset-before-headers';
      const hits = ups[0]!.hits + ups[1]!.hits;
      for (let i = 0; i < 4; i++) assert.equal((await request(`${proxy.url}/get`)).status, 200);
      assert.ok(ups[0]!.hits + ups[1]!.hits > hits + 4, 'some GETs were retried');
    } finally {
      await closeAll(proxy, ups);
    }
  });

  test('a POST to a refused backend is retried on another, whatever its method (nothing was sent)', async () => {
    const ups = await startFaultUpstreams('a', 'b');
    await ups[0]!.kill();
    const proxy = await startProxy(ups, { load_balancing: { health_check: NO_HEALTH, strategy: 'round_robin' } });
    try {
      for (let i = 0; i < 4; i++) {
        const res = await request(`${proxy.url}/post-${i}`, { method: 'POST', body: `body-${i}` });
        assert.equal(res.status, 200);
        assert.equal(nameOf(res.body), 'b');
      }
      assert.deepEqual(ups[1]!.paths, ['/post-0', '/post-1', '/post-2', '/post-3']);
    } finally {
      await closeAll(proxy, ups);
    }
  });

  test('one of three upstreams a closed port, one request at a time, health checks off: every request gets 200 (retries in flight are under min_concurrent_retries)', async () => {
    const ups = await startFaultUpstreams('a', 'b');
    const [dead] = await closedPorts(1);
    const upstreams = [ups[0]!, { name: 'dead', port: dead! }, ups[1]!];
    const run = async (retries: Record<string, number>): Promise<{ statuses: number[]; retried: number }> => {
      const proxy = await startProxy(upstreams, { load_balancing: { strategy: 'round_robin', health_check: NO_HEALTH, retries } });
      try {
        const statuses: number[] = [];
        for (let i = 0; i < 60; i++) statuses.push((await request(`${proxy.url}/seq-${i}`)).status);
        const retried = proxy.logs.filter((l) => l.msg === 'Request Completed' && l.retries === 1).length;
        return { statuses, retried };
      } finally {
        await proxy.close();
      }
    };
    try {
      // Every third request goes to the closed port first: 20 retries for 60 requests, a third, while the
      // budget's share is 20% and its floor 3 per 10 s.
      const withFloor = await run({});
      assert.deepEqual(withFloor.statuses.filter((s) => s !== 200), []);
      assert.equal(withFloor.retried, 20);
      // The same traffic without the in-flight floor runs out of budget: some clients get the 502.
      const without = await run({ min_concurrent_retries: 0 });
      assert.ok(without.statuses.includes(502), `statuses without the floor: ${[...new Set(without.statuses)].join(',')}`);
    } finally {
      await Promise.all(ups.map((u) => u.kill()));
    }
  });

  test('all backends down: once health knows, 503 no_upstream at once for every request, nothing piles up', async () => {
    const ups = await startFaultUpstreams('a', 'b');
    const proxy = await startProxy(ups, { load_balancing: { health_check: FAST_CHECKS } });
    try {
      await Promise.all(ups.map((u) => u.kill()));
      await waitFor(() => proxy.logs.filter((l) => l.msg === 'upstream unhealthy: taken out of rotation').length === 2, 5000, 'both marked down');
      const replies = await Promise.all(Array.from({ length: 50 }, () => request(`${proxy.url}/`)));
      assert.deepEqual([...new Set(replies.map((r) => r.status))], [503]);
      assert.equal(replies[0]!.json().error, 'no_upstream');
      assert.equal(replies[0]!.headers['retry-after'], '1');
      assert.ok(proxy.proxy.balancer.backends.every((b) => b.inflight === 0));
      assert.equal((await request(`${proxy.url}/health`)).status, 503);
    } finally {
      await closeAll(proxy, ups);
    }
  });

  test('passive ejection: a backend that keeps resetting is ejected after 5 failures; the others take the traffic', async () => {
    const ups = await startFaultUpstreams('a', 'b', 'c');
    ups[0]!.mode = 'reset-before-headers';
    // A full budget: this test is about ejection, the budget has its own test.
    const proxy = await startProxy(ups, { load_balancing: { health_check: { active: { enabled: false } }, retries: { budget_percent: 100 } } });
    try {
      for (let i = 0; i < 30; i++) assert.equal((await request(`${proxy.url}/`)).status, 200);
      const ejected = proxy.logs.find((l) => l.msg === 'upstream ejected after consecutive failures');
      assert.equal(ejected?.upstream, 'a');
      assert.equal(ejected?.ejected_ms, 10_000);
      assert.match(String(ejected?.reason), /^5 requests in a row failed, the last: (connection closed by the upstream before the response was complete|connection reset)$/);
      assert.equal(ups[0]!.hits, 5, 'a saw exactly the 5 failing requests before its ejection');
    } finally {
      await closeAll(proxy, ups);
    }
  });

  test('retry budget: with half the backends failing, retries stay within 20% of requests (plus the floor of 3)', async () => {
    const ups = await startFaultUpstreams('a', 'b', 'c', 'd');
    ups[0]!.mode = 'reset-before-headers';
    ups[1]!.mode = 'reset-before-headers';
    // No in-flight floor: one request at a time would always be under it (its own test is above).
    const retries = { max_retries: 3, budget_percent: 20, min_concurrent_retries: 0 };
    const proxy = await startProxy(ups, { load_balancing: { health_check: NO_HEALTH, retries } });
    try {
      let failed = 0;
      for (let i = 0; i < 200; i++) if ((await request(`${proxy.url}/`)).status !== 200) failed++;
      const completed = (): Record<string, unknown>[] => proxy.logs.filter((l) => l.msg === 'Request Completed');
      await waitFor(() => completed().length >= 200, 2000, '200 completion lines');
      const lines = completed();
      const retries = lines.reduce((n, l) => n + (l.retries as number), 0);
      assert.equal(lines.length, 200);
      assert.ok(retries <= 0.2 * 200 + 3, `${retries} retries for 200 requests`);
      assert.ok(retries >= 30, `the budget was used (${retries} retries)`);
      assert.ok(failed > 0, 'without budget every request would have been saved; with it some fail');
    } finally {
      await closeAll(proxy, ups);
    }
  });

  test('consistent_hash: a key always reaches the same backend, across proxy restarts', async () => {
    const ups = await startFaultUpstreams('a', 'b', 'c', 'd');
    const config = { load_balancing: { strategy: 'consistent_hash', hash_key: { source: 'header', name: 'X-User' }, health_check: NO_HEALTH } };
    const first = await startProxy(ups, config);
    const mapping = new Map<string, string>();
    try {
      for (let i = 0; i < 40; i++) {
        const user = `user-${i}`;
        const a = nameOf((await request(`${first.url}/`, { headers: { 'x-user': user } })).body);
        const b = nameOf((await request(`${first.url}/`, { headers: { 'x-user': user } })).body);
        assert.equal(a, b);
        mapping.set(user, a);
      }
      assert.ok(new Set(mapping.values()).size >= 3, 'keys spread over the backends');
    } finally {
      await first.close();
    }
    const second = await startProxy(ups, config);
    try {
      for (const [user, backend] of mapping) assert.equal(nameOf((await request(`${second.url}/`, { headers: { 'x-user': user } })).body), backend, user);
    } finally {
      await closeAll(second, ups);
    }
  });

  test('p2c_ewma sends almost nothing to a backend that answers 100 ms later than the other', async () => {
    const ups = await startFaultUpstreams('fast', 'slow');
    ups[1]!.mode = 'slow';
    ups[1]!.delayMs = 100; // a timer never fires early: every answer of `slow` takes at least 100 ms
    // Seeded draws, and one request at a time: nothing is in flight at a selection, so only the measured
    // latencies decide (fast loses a draw only if its answers take longer than 100 ms too).
    const proxy = await startProxy(ups, { load_balancing: { strategy: 'p2c_ewma', health_check: NO_HEALTH } }, { random: seededRandom(5) });
    try {
      for (let i = 0; i < 100; i++) assert.equal((await request(`${proxy.url}/`)).status, 200);
      assert.equal(ups[0]!.hits + ups[1]!.hits, 100);
      assert.ok(ups[1]!.hits >= 1, 'both were measured');
      assert.ok(ups[1]!.hits <= 5, `slow backend got ${ups[1]!.hits} of 100 requests`);
    } finally {
      await closeAll(proxy, ups);
    }
  });

  test('total_timeout_ms bounds the whole upstream exchange: 504 before the upstream answers', async () => {
    const ups = await startFaultUpstreams('a');
    ups[0]!.mode = 'slow';
    ups[0]!.delayMs = 3000;
    const proxy = await startProxy(ups, { load_balancing: { total_timeout_ms: 200, health_check: NO_HEALTH } });
    try {
      const res = await request(`${proxy.url}/`);
      assert.equal(res.status, 504);
      assert.equal(res.json().error, 'upstream_timeout');
    } finally {
      await closeAll(proxy, ups);
    }
  });

  test('garbage from an upstream is a 502 (or a retry elsewhere for a GET)', async () => {
    const ups = await startFaultUpstreams('a', 'b');
    ups[0]!.mode = 'garbage';
    ups[1]!.mode = 'garbage';
    const proxy = await startProxy(ups, { load_balancing: { health_check: NO_HEALTH } });
    try {
      assert.equal((await request(`${proxy.url}/`)).status, 502);
      ups[1]!.mode = 'ok';
      for (let i = 0; i < 4; i++) assert.equal((await request(`${proxy.url}/`)).status, 200);
    } finally {
      await closeAll(proxy, ups);
    }
  });
  test('a retried request carries each header once when the route edits the client\'s headers', async () => {
    // One backend resets every request before answering; the other answers with the header lines it got.
    const resetting = await startBackend('resetting', (req) => req.socket.destroy());
    const echoing = await startBackend('echoing', (req, res) => res.end(JSON.stringify(req.rawHeaders)));
    const proxy = await startProxy([resetting, echoing], {
      load_balancing: { health_check: NO_HEALTH, retries: { budget_percent: 100 } },
      routes: [{ name: 'edited', match: { path_prefix: '/' }, service: 'default', request_headers: { set: { 'X-Env': 'prod' }, remove: ['X-Debug', 'X-Drop'] } }],
    });
    try {
      for (let i = 0; i < 6; i++) {
        const reply = await request(`${proxy.url}/r${i}`, { headers: { 'x-debug': '1', 'x-keep': 'k', 'x-drop': '2' } });
        assert.equal(reply.status, 200);
        const raw = JSON.parse(reply.body) as string[];
        const names = raw.filter((_, j) => j % 2 === 0).map((n) => n.toLowerCase());
        const counts = new Map<string, number>();
        for (const n of names) counts.set(n, (counts.get(n) ?? 0) + 1);
        assert.deepEqual([...counts].filter(([, n]) => n > 1), [], `header lines sent twice: ${raw.join(' | ')}`);
        for (const name of ['host', 'x-forwarded-for', 'x-request-id', 'x-keep', 'x-env']) assert.equal(counts.get(name), 1, name);
        assert.equal(counts.get('x-debug'), undefined);
        assert.equal(counts.get('x-drop'), undefined);
      }
      assert.ok(resetting.hits >= 1, 'some requests were retried after a reset');
    } finally {
      await proxy.close();
      await resetting.close();
      await echoing.close();
    }
  });
});
