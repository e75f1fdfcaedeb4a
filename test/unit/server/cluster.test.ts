import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { connectionShare, resolveWorkers, restartDelayMs } from '../../../src/server/cluster.js';

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
