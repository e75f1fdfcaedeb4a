import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import type { Proxy } from '../../../src/app.js';
import type { MetricsSnapshot } from '../../../src/observability/metrics.js';
import { connectionShare, resolveWorkers, restartDelayMs } from '../../../src/cluster/primary.js';
import { answerReload, answerSnapshot } from '../../../src/cluster/worker.js';
import { parseConfig } from '../../../src/config/load.js';
import type { Config } from '../../../src/config/schema.js';

describe('a worker\'s share of the caps', () => {
  test('max_connections and the WebSocket caps (instance and per route) are split, at least 1 each', async () => {
    const config = parseConfig(
      [
        'server: { max_connections: 10 }',
        'load_balancing: { upstreams: [{ name: a, address: 127.0.0.1, port: 3000 }] }',
        'websocket: { max_connections: 5 }',
        'routes:',
        '  - { name: chat, service: default, match: { path: /chat }, websocket: { max_connections: 3 } }',
        '  - { name: tiny, service: default, match: { path: /tiny }, websocket: { max_connections: 1 } }',
        '  - { name: plain, service: default, match: { path: /plain } }',
      ].join('\n'),
      'proxy.yaml',
      {},
    );
    const seen: Config[] = [];
    const proxy = { reload: async (c: Config) => (seen.push(c), { result: 'ok' as const, generation: 2, at: 0, restart_needed: [], errors: [] }) };
    for (const slot of [0, 1]) await answerReload(proxy, { type: 'tollgate:reload', id: 1, config, hash: '', generation: 2 }, 2, slot);
    const caps = seen.map((c) => [c.server.max_connections, c.websocket.max_connections, ...(c.routes ?? []).map((r) => (typeof r.websocket === 'object' ? r.websocket.max_connections : r.websocket))]);
    assert.deepEqual(caps, [
      [5, 3, 2, 1, undefined],
      [5, 2, 1, 1, undefined],
    ]);
  });
});

describe('cluster arithmetic', () => {
  test('resolveWorkers: auto is one per CPU; a number is itself', () => {
    assert.equal(resolveWorkers('auto', 8), 8);
    assert.equal(resolveWorkers('auto', 0), 1);
    assert.equal(resolveWorkers(3, 8), 3);
  });

  test('connectionShare: shares differ by at most one and add up to max_connections', () => {
    for (const [max, workers] of [
      [1000, 3],
      [3, 2],
      [7, 7],
      [10, 4],
      [1, 1],
    ] as const) {
      const shares = Array.from({ length: workers }, (_, slot) => connectionShare(max, workers, slot));
      assert.equal(
        shares.reduce((a, b) => a + b, 0),
        max,
        `${max} over ${workers}`,
      );
      assert.ok(Math.max(...shares) - Math.min(...shares) <= 1);
      assert.ok(Math.min(...shares) >= 1);
    }
    assert.deepEqual([0, 1].map((s) => connectionShare(3, 2, s)), [2, 1]);
  });

  test('restartDelayMs doubles from 100 ms and stops at 10 s', () => {
    assert.deepEqual([0, 1, 2, 3, 6, 7, 20].map(restartDelayMs), [100, 200, 400, 800, 6400, 10_000, 10_000]);
  });
});

describe("a worker answering the primary's snapshot request", () => {
  const logger = pino({ level: 'silent' });

  test('answers with its snapshot, asking for exactly the parts requested', async () => {
    const asked: unknown[] = [];
    const snapshot = { connectionsOpen: 1 } as MetricsSnapshot;
    const proxy = { metrics: { snapshot: async (parts: unknown) => (asked.push(parts), snapshot) } } as unknown as Pick<Proxy, 'metrics'>;
    const reply = await answerSnapshot(proxy, { type: 'tollgate:snapshot', id: 7, stats: true, process: false }, logger);
    assert.deepEqual(reply, { type: 'tollgate:snapshot-reply', id: 7, snapshot });
    assert.deepEqual(asked, [{ stats: true, process: false }]);
  });

  test('a failure becomes an error reply (the primary leaves the worker out), never a rejection', async () => {
    const proxy = { metrics: { snapshot: () => Promise.reject(new Error('no /proc')) } } as unknown as Pick<Proxy, 'metrics'>;
    assert.deepEqual(await answerSnapshot(proxy, { type: 'tollgate:snapshot', id: 8, stats: false, process: true }, logger), { type: 'tollgate:snapshot-reply', id: 8, error: 'no /proc' });
  });
});
