import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { ServerResponse } from 'node:http';
import { request } from '../helpers/http.js';
import { echo, seededRandom, startBackend, startProxy, waitFor, type Backend } from '../helpers/servers.js';

async function backendOf(url: string): Promise<string> {
  const res = await request(url);
  assert.equal(res.status, 200);
  return res.json<{ backend: string }>().backend;
}

describe('load balancing over real backends', () => {
  let a: Backend;
  let b: Backend;
  let c: Backend;
  const held: ServerResponse[] = [];

  before(async () => {
    // Each backend holds /slow requests until the test releases them.
    const handler = (req: Parameters<typeof echo>[0], res: ServerResponse, backend: Backend): void => {
      if (req.url === '/slow') held.push(res);
      else echo(req, res, backend);
    };
    [a, b, c] = await Promise.all(['a', 'b', 'c'].map((n) => startBackend(n, handler))) as [Backend, Backend, Backend];
  });
  after(async () => {
    await Promise.all([a, b, c].map((x) => x.close()));
  });

  test('round_robin over three equal backends: 3/3/3 in 9 requests, in turn', async () => {
    const proxy = await startProxy([a, b, c], { load_balancing: { strategy: 'round_robin' } });
    try {
      const seen: string[] = [];
      for (let i = 0; i < 9; i++) seen.push(await backendOf(`${proxy.url}/`));
      assert.deepEqual(seen, ['a', 'b', 'c', 'a', 'b', 'c', 'a', 'b', 'c']);
    } finally {
      await proxy.close();
    }
  });

  test('round_robin with weights 3:1 gives 3:1, interleaved (a a b a)', async () => {
    const proxy = await startProxy([{ ...a, name: 'a', weight: 3 }, { ...b, name: 'b', weight: 1 }], {});
    try {
      const seen: string[] = [];
      for (let i = 0; i < 8; i++) seen.push(await backendOf(`${proxy.url}/`));
      assert.deepEqual(seen, ['a', 'a', 'b', 'a', 'a', 'a', 'b', 'a']);
    } finally {
      await proxy.close();
    }
  });

  test('random spreads by weight', async () => {
    const proxy = await startProxy([{ name: 'a', port: a.port, weight: 3 }, { name: 'b', port: b.port, weight: 1 }], { load_balancing: { strategy: 'random' } }, { random: seededRandom(7) });
    try {
      const counts: Record<string, number> = { a: 0, b: 0 };
      for (let i = 0; i < 200; i++) counts[await backendOf(`${proxy.url}/`)]!++;
      assert.equal(counts.a! + counts.b!, 200);
      assert.ok(counts.a! >= 130 && counts.a! <= 170, `a got ${counts.a} of 200 (expected about 150)`);
    } finally {
      await proxy.close();
    }
  });

  test('least_conn sends new requests away from a backend that holds slow requests', async () => {
    const proxy = await startProxy([a, b], { load_balancing: { strategy: 'least_conn' } });
    try {
      const slow = request(`${proxy.url}/slow`);
      await waitFor(() => held.length === 1, 5000, 'the slow request to arrive');
      const busy = proxy.proxy.balancer.backends.find((x) => x.inflight === 1);
      assert.ok(busy, 'one backend has the slow request in flight');
      const other = busy.name === 'a' ? 'b' : 'a';
      for (let i = 0; i < 6; i++) assert.equal(await backendOf(`${proxy.url}/`), other);
      held.shift()!.end('done');
      assert.equal((await slow).body, 'done');
      await waitFor(() => proxy.proxy.balancer.backends.every((x) => x.inflight === 0), 2000, 'in-flight counts to return to zero');
    } finally {
      await proxy.close();
    }
  });

  test('a backend marked unhealthy is skipped; none usable gives 503 no_upstream with Retry-After and /health 503', async () => {
    const proxy = await startProxy([a, b], {});
    try {
      const [first, second] = proxy.proxy.balancer.backends;
      first!.setHealthy(false);
      for (let i = 0; i < 4; i++) assert.equal(await backendOf(`${proxy.url}/`), 'b');
      second!.setHealthy(false);
      const res = await request(`${proxy.url}/`);
      assert.equal(res.status, 503);
      assert.equal(res.json().error, 'no_upstream');
      assert.equal(res.headers['retry-after'], '1');
      const health = await request(`${proxy.url}/health`);
      assert.equal(health.status, 503);
      assert.equal(health.json().status, 'unavailable');
    } finally {
      await proxy.close();
    }
  });
});
