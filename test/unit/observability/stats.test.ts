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

describe('RollingStats export and absorb (a cluster primary adds up its workers)', () => {
  test('two rings absorbed into a third give the sums per second and quantiles of all the requests together', () => {
    const w0 = new RollingStats(2, 11);
    const w1 = new RollingStats(2, 11);
    // Worker 0: two 10 ms requests to upstream 1 in second 5, a 401 in second 6.
    w0.record(5_100, 1, 0, 10, RefusalKind.none);
    w0.record(5_900, 1, 0, 10, RefusalKind.none);
    w0.record(6_500, 0, 2, 0.5, RefusalKind.unauthorized);
    // Worker 1: one 100 ms request to upstream 2 in second 5, a 429 in second 7 (not complete at 7.5 s).
    w1.record(5_200, 2, 0, 100, RefusalKind.none);
    w1.record(7_100, 0, 2, 0.5, RefusalKind.rateLimited);
    const exported = [w0.export(7_500), w1.export(7_500)];
    assert.deepEqual(exported[0]?.seconds, [5, 6]);
    assert.deepEqual(exported[0]?.requests, [2, 1]);
    assert.deepEqual(exported[0]?.byClass, [2, 0, 0, 0, 0, 0, 1, 0]);
    assert.deepEqual(exported[0]?.byUpstream, [0, 2, 0, 1, 0, 0]);
    assert.deepEqual(exported[0]?.latency[0], [sketchIndex(10), 2]);
    assert.deepEqual(exported[1]?.seconds, [5], 'only complete seconds');

    const merged = new RollingStats(2, 11);
    for (const e of exported) merged.absorb(JSON.parse(JSON.stringify(e)) as typeof e, 7_500);
    const summary = merged.summary(7_500, 10);
    assert.equal(summary.requests, 4);
    assert.deepEqual(summary.byClass, [3, 0, 1, 0]);
    assert.deepEqual(summary.byUpstream, [1, 2, 1]);
    assert.equal(summary.unauthorized, 1);
    assert.equal(summary.rateLimited, 0);
    assert.ok(Math.abs((summary.p50Ms as number) - 10) / 10 < 0.04, `p50 ${summary.p50Ms}`);
    assert.ok(Math.abs((summary.p99Ms as number) - 100) / 100 < 0.04, `p99 ${summary.p99Ms}`);
    const series = merged.series(7_500);
    assert.deepEqual(series.requests.slice(-3), [0, 3, 1]);
    assert.ok(Math.abs((series.p99Ms.at(-2) as number) - 100) / 100 < 0.04);
  });

  test('seconds are mapped onto the receiver timeline; those outside its window or not yet begun are left out', () => {
    const w = new RollingStats(1, 11);
    w.record(3_500, 1, 0, 1, RefusalKind.none);
    w.record(4_500, 1, 0, 1, RefusalKind.none);
    const e = w.export(5_000, (s) => s + 1000);
    assert.deepEqual(e.seconds, [1003, 1004]);
    const receiver = new RollingStats(1, 11);
    receiver.absorb(e, 1_003_900);
    assert.equal(receiver.summary(1_004_100, 5).requests, 1, 'second 1004 had not begun when absorbed');
    const late = new RollingStats(1, 11);
    late.absorb(e, 1_020_000);
    assert.equal(late.summary(1_020_000, 10).requests, 0, 'out of the window');
  });

  test('malformed exports add what is well-formed and nothing else', () => {
    const r = new RollingStats(1, 11);
    r.absorb({ seconds: [5, 5.5, -1], requests: [2], byClass: [2, 0, 0, 0], unauthorized: [], rateLimited: [], upstreamSlots: 2, byUpstream: [0, 2], latency: [[sketchIndex(4), 2, -3, 9, SKETCH_BUCKETS, 1, 7]] }, 6_000);
    const s = r.summary(6_000, 5);
    assert.equal(s.requests, 2);
    assert.deepEqual(s.byUpstream, [0, 2]);
    assert.ok(Math.abs((s.p50Ms as number) - 4) / 4 < 0.04);
    const noSlots = new RollingStats(1, 11);
    noSlots.absorb({ seconds: [5], requests: [1], byClass: [1, 0, 0, 0], unauthorized: [0], rateLimited: [0], upstreamSlots: -1, byUpstream: [1, 1], latency: [[]] }, 6_000);
    assert.deepEqual(noSlots.summary(6_000, 5).byUpstream, [0, 0], 'no valid slot count: the upstream part is left out');
    assert.equal(noSlots.summary(6_000, 5).requests, 1);
  });

  test('absorb maps the sender slots onto the receiver ones; unmapped and out-of-range slots are left out', () => {
    // The sender met upstream x first, then y; the receiver numbers them y = 1, x = 2, z = 3.
    const sender = new RollingStats(2, 11);
    sender.record(5_100, 1, 0, 1, RefusalKind.none); // x
    sender.record(5_200, 2, 0, 1, RefusalKind.none); // y
    sender.record(5_300, 2, 0, 1, RefusalKind.none); // y
    sender.record(5_400, 0, 2, 1, RefusalKind.none); // none
    const exported = sender.export(6_000);
    assert.equal(exported.upstreamSlots, 3);
    const receiver = new RollingStats(3, 11);
    receiver.absorb(exported, 6_000, [0, 2, 1]);
    assert.deepEqual(receiver.summary(6_000, 5).byUpstream, [1, 2, 1, 0]);
    const partial = new RollingStats(1, 11);
    partial.absorb(exported, 6_000, [0, 5]);
    assert.deepEqual(partial.summary(6_000, 5).byUpstream, [1, 0], 'x maps outside the ring and y is not mapped');
    assert.equal(partial.summary(6_000, 5).requests, 4, 'the other figures count whole');
  });
});

describe('RollingStats upstream slots grow (a config reload adds upstreams)', () => {
  test('growUpstreams keeps what every second holds and makes room for the new slots', () => {
    const stats = new RollingStats(1, 5);
    stats.record(1_100, 1, 0, 1, RefusalKind.none);
    stats.record(2_100, 0, 2, 1, RefusalKind.none);
    stats.record(2_200, 1, 0, 1, RefusalKind.none);
    stats.growUpstreams(4);
    assert.equal(stats.upstreamSlots, 4);
    stats.record(2_300, 3, 0, 1, RefusalKind.none);
    stats.record(3_300, 2, 0, 1, RefusalKind.none);
    assert.deepEqual(stats.summary(4_000, 4).byUpstream, [1, 2, 1, 1]);
    const exported = stats.export(4_000);
    assert.equal(exported.upstreamSlots, 4);
    assert.deepEqual(exported.byUpstream, [0, 1, 0, 0, 1, 1, 0, 1, 0, 0, 1, 0]);
    stats.growUpstreams(2);
    assert.equal(stats.upstreamSlots, 4, 'never shrinks');
    // The slots of old seconds are cleared over their whole (new) width before reuse.
    stats.record(7_100, 3, 0, 1, RefusalKind.none);
    assert.deepEqual(stats.summary(8_000, 4).byUpstream, [0, 0, 0, 1]);
  });
});
