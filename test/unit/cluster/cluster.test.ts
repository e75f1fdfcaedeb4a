import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import type { Proxy } from '../../../src/app.js';
import type { MetricsSnapshot } from '../../../src/observability/metrics.js';
import { connectionShare, resolveWorkers, restartDelayMs } from '../../../src/cluster/primary.js';
import { answerSnapshot } from '../../../src/cluster/worker.js';

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
