import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { RefusalKind, RollingStats, SKETCH_BUCKETS, sketchIndex, sketchQuantile, sketchValue, statusClassIndex } from '../../../src/observability/stats.js';

describe('status classes', () => {
  test('2xx to 5xx by the hundreds; below 300 is 2xx, 600 and up is 5xx', () => {
    assert.deepEqual([200, 204, 299, 301, 304, 399, 400, 401, 429, 499, 500, 502, 504, 599, 600, 999].map(statusClassIndex), [0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3]);
  });
});

describe('latency sketch', () => {
  test('each bucket is 8% wider than the last, so a value read back is within 4% of what went in', () => {
    for (const ms of [0.05, 0.3, 1, 1.7, 12.5, 99, 480, 3000, 59_000]) {
      const back = sketchValue(sketchIndex(ms));
      assert.ok(Math.abs(back - ms) / ms < 0.04, `${ms} ms came back as ${back}`);
    }
  });

  test('tiny, huge and NaN durations land in the end buckets instead of outside the array', () => {
    assert.equal(sketchIndex(0), 0);
    assert.equal(sketchIndex(-3), 0);
    assert.equal(sketchIndex(Number.NaN), 0);
    assert.equal(sketchIndex(1e9), SKETCH_BUCKETS - 1);
  });

  test('quantiles by rank: p50 and p99 of 1..100 ms', () => {
    const buckets = new Uint32Array(SKETCH_BUCKETS);
    for (let ms = 1; ms <= 100; ms++) (buckets[sketchIndex(ms)] as number)++;
    const p50 = sketchQuantile(buckets, 0.5) as number;
    const p99 = sketchQuantile(buckets, 0.99) as number;
    assert.ok(Math.abs(p50 - 50) / 50 < 0.04, `p50 ${p50}`);
    assert.ok(Math.abs(p99 - 99) / 99 < 0.04, `p99 ${p99}`);
    assert.equal(sketchQuantile(new Uint32Array(SKETCH_BUCKETS), 0.5), null);
  });
});

describe('RollingStats', () => {
  test('summaries read complete seconds only: the current second shows up once it is over', () => {
    const stats = new RollingStats(2, 11);
    stats.record(5_000, 1, 0, 2, RefusalKind.none);
    stats.record(5_500, 2, 0, 4, RefusalKind.none);
    stats.record(5_900, 0, 2, 0.3, RefusalKind.unauthorized);
    assert.equal(stats.summary(5_999, 10).requests, 0, 'second 5 is not over yet');
    const s = stats.summary(6_000, 10);
    assert.equal(s.requests, 3);
    assert.deepEqual(s.byClass, [2, 0, 1, 0]);
    assert.deepEqual(s.byUpstream, [1, 1, 1]);
    assert.equal(s.unauthorized, 1);
    assert.equal(s.rateLimited, 0);
    assert.ok(s.p50Ms !== null && Math.abs(s.p50Ms - 2) / 2 < 0.04);
  });

  test('old seconds fall out of the window and their slots are cleared before reuse', () => {
    const stats = new RollingStats(1, 5);
    stats.record(1_000, 1, 0, 1, RefusalKind.none);
    stats.record(2_100, 1, 3, 1, RefusalKind.rateLimited);
    assert.equal(stats.summary(3_000, 4).requests, 2);
    assert.equal(stats.summary(3_000, 4).rateLimited, 1);
    // Second 6 reuses the slot of second 1 (6 % 5): what second 1 held must be gone.
    stats.record(6_200, 1, 0, 1, RefusalKind.none);
    const later = stats.summary(7_000, 4);
    assert.equal(later.requests, 1, 'seconds 3-6: only the request of second 6');
    assert.equal(later.rateLimited, 0);
    assert.equal(stats.summary(60_000, 4).requests, 0, 'a long quiet spell clears everything');
  });

  test('series: one point per complete second, oldest first, null latency for empty seconds', () => {
    const stats = new RollingStats(1, 4);
    stats.record(10_100, 1, 0, 5, RefusalKind.none);
    stats.record(10_200, 1, 0, 7, RefusalKind.none);
    stats.record(12_300, 1, 3, 50, RefusalKind.none);
    const s = stats.series(13_000);
    assert.deepEqual(s.seconds, [10, 11, 12]);
    assert.deepEqual(s.requests, [2, 0, 1]);
    assert.deepEqual(s.byClass[0], [2, 0, 0]);
    assert.deepEqual(s.byClass[3], [0, 0, 1]);
    assert.equal(s.p50Ms[1], null);
    assert.ok(Math.abs((s.p99Ms[2] as number) - 50) / 50 < 0.04);
  });

  test('a window needs at least two slots (one complete second besides the current one)', () => {
    assert.throws(() => new RollingStats(1, 1), RangeError);
  });
});
