import type { LoadBalancingConfig } from '../../../src/config/schema.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Backend } from '../../../src/balancing/backend.js';
import { createP2cEwma, decayedLatency, EWMA_DECAY_MS, p2cCost, peakEwma, PROBE_AFTER_MS } from '../../../src/balancing/selection/p2c-ewma.js';
import type { Peer } from '../../../src/balancing/selection/index.js';
import { configSchema } from '../../../src/config/schema.js';
import type { Clock, Random } from '../../../src/util/clock.js';
import { manualClock, seededRandom } from '../../helpers/servers.js';

interface TestPeer extends Peer {
  name: string;
  weight: number;
  inflight: number;
  latencyMs: number;
  latencyAt: number;
}

/** A peer measured at time 0 (the fixed clock of most tests below, so no decay). */
function peer(name: string, latencyMs: number, inflight = 0, weight = 1): TestPeer {
  return { name, address: `${name}:80`, weight, inflight, latencyMs, latencyAt: 0 };
}

const all = (): boolean => true;
/** Time stands still at 0: estimates do not decay and no peer is due for a probe. */
const still: Clock = () => 0;

/** A random that fails the test when called: selection must not need one. */
const noRandom: Random = () => {
  throw new Error('random was called');
};

function close(actual: number, expected: number, what: string): void {
  assert.ok(Math.abs(actual - expected) < 1e-9, `${what}: ${actual}, expected ${expected}`);
}

function shares(picks: readonly (TestPeer | undefined)[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const p of picks) {
    const name = p === undefined ? '-' : p.name;
    counts.set(name, (counts.get(name) ?? 0) + 1);
  }
  return counts;
}

describe('peakEwma', () => {
  test('decays over 10 s', () => {
    assert.equal(EWMA_DECAY_MS, 10_000);
  });

  test('the first observation (no average yet) is taken as is', () => {
    assert.equal(peakEwma(0, 0, 42, 5_000), 42);
    assert.equal(peakEwma(0, 1_000, 7.5, 1_000), 7.5);
  });

  test('a higher observation replaces the average at once, however little time passed', () => {
    assert.equal(peakEwma(10, 1_000, 50, 1_000), 50);
    assert.equal(peakEwma(10, 1_000, 50, 1_001), 50);
    assert.equal(peakEwma(10, 1_000, 50, 1_000_000), 50);
  });

  test('an equal observation keeps the average', () => {
    assert.equal(peakEwma(30, 0, 30, 0), 30);
    assert.equal(peakEwma(30, 0, 30, 5_000), 30);
  });

  test('an observation above the decayed average replaces it: 100 decays to 60.7 in 5 s, so 70 is taken as is', () => {
    assert.equal(peakEwma(100, 5_000, 70, 10_000), 70);
  });

  test('an observation below the decayed average after 5 s gives decayed·e^-0.5 + obs·(1 - e^-0.5)', () => {
    const w = Math.exp(-0.5);
    const expected = 100 * w * w + 20 * (1 - w);
    close(peakEwma(100, 5_000, 20, 10_000), expected, 'peakEwma(100, 5000, 20, 10000)');
    assert.ok(Math.abs(expected - 44.66) < 0.01, `sanity: ${expected}`);
  });

  test('an estimate 10 s old or more no longer counts: the observation replaces it', () => {
    assert.equal(peakEwma(100, 5_000, 20, 15_000), 20);
    assert.equal(peakEwma(100, 5_000, 20, 60_000), 20);
    assert.ok(peakEwma(100, 5_000, 20, 14_999) > 20);
  });

  test('a lower observation decays with exp(-dt/10000) for other gaps too, and never rises above the decayed average', () => {
    for (const dt of [1, 2_500, 5_000, 9_000]) {
      const w = Math.exp(-dt / 10_000);
      const result = peakEwma(80, 0, 10, dt);
      close(result, 80 * w * w + 10 * (1 - w), `dt=${dt}`);
      assert.ok(result <= decayedLatency(80, 0, dt) && result >= 10, `dt=${dt}: ${result}`);
    }
  });

  test('a lower observation at the same instant does not move the average', () => {
    assert.equal(peakEwma(100, 2_000, 20, 2_000), 100);
  });

  test('a clock that went backwards counts as no time passed', () => {
    assert.equal(peakEwma(100, 2_000, 20, 1_000), 100);
  });

  test('the average stays between the observation and the previous value, and moves further the longer the gap', () => {
    const short = peakEwma(100, 0, 20, 1_000);
    const long = peakEwma(100, 0, 20, 9_000);
    assert.ok(short < 100 && short > 20, `short gap: ${short}`);
    assert.ok(long < short && long >= 20, `long gap: ${long}`);
  });
});

describe('decayedLatency and p2cCost', () => {
  test('the estimate falls to 1/e every 10 s without news, from the time it was set', () => {
    assert.equal(decayedLatency(100, 5_000, 5_000), 100);
    close(decayedLatency(100, 5_000, 15_000), 100 * Math.exp(-1), 'after 10 s');
    close(decayedLatency(100, 5_000, 25_000), 100 * Math.exp(-2), 'after 20 s');
    assert.equal(decayedLatency(100, 5_000, 4_000), 100, 'a clock that went backwards');
  });

  test('cost = decayed latency × (in flight + 1) / weight', () => {
    const p = { ...peer('p', 40, 3, 2), latencyAt: 1_000 };
    close(p2cCost(p, 1_000, 1_000), (40 * 4) / 2, 'no time passed');
    close(p2cCost(p, 6_000, 6_000), (40 * Math.exp(-0.5) * 4) / 2, 'after 5 s');
  });

  test('an idle peer not picked for PROBE_AFTER_MS costs 0, whatever its old latency; a busy one keeps its cost', () => {
    assert.equal(PROBE_AFTER_MS, EWMA_DECAY_MS);
    const slow = peer('slow', 500);
    assert.ok(p2cCost(slow, PROBE_AFTER_MS - 1, 0) > 100);
    assert.equal(p2cCost(slow, PROBE_AFTER_MS, 0), 0);
    const busy = peer('busy', 500, 1);
    close(p2cCost(busy, PROBE_AFTER_MS, 0), 500 * Math.exp(-1) * 2, 'busy after 10 s');
  });

  test('a never-measured peer costs 0 while idle and more than any measured peer while busy', () => {
    assert.equal(p2cCost(peer('new', 0), 0, 0), 0);
    const newBusy = p2cCost(peer('new', 0, 1), 0, 0);
    assert.ok(newBusy > p2cCost(peer('slow', 60_000, 100), 0, 0));
    assert.ok(p2cCost(peer('new', 0, 2), 0, 0) > newBusy, 'more in flight costs more');
  });
});

describe('Backend.observeLatency', () => {
  test('feeds peakEwma with the time of the previous observation', async () => {
    const lb = configSchema.parse({ load_balancing: { upstreams: [{ name: 'a', address: '127.0.0.1', port: 1 }] } }).load_balancing as LoadBalancingConfig;
    const backend = new Backend(lb.upstreams[0] as (typeof lb.upstreams)[number], lb);
    try {
      assert.equal(backend.latencyMs, 0);
      backend.observeLatency(50, 1_000);
      assert.equal(backend.latencyMs, 50);
      backend.observeLatency(20, 3_000);
      const w = Math.exp(-0.2);
      close(backend.latencyMs, 50 * w * w + 20 * (1 - w), 'after 2 s');
      assert.equal(backend.latencyAt, 3_000);
      backend.observeLatency(500, 3_001);
      assert.equal(backend.latencyMs, 500);
    } finally {
      await backend.pool.destroy();
    }
  });
});

describe('p2c_ewma selection', () => {
  test('of two peers with equal in-flight, the one with 10× the latency is never chosen', () => {
    for (const inflight of [0, 3]) {
      const fast = peer('fast', 10, inflight);
      const slow = peer('slow', 100, inflight);
      for (const order of [
        [fast, slow],
        [slow, fast],
      ]) {
        const p2c = createP2cEwma(order, seededRandom(1), still);
        const picks = Array.from({ length: 1_000 }, () => p2c.select(all, ''));
        assert.equal(picks.filter((p) => p === slow).length, 0, `inflight ${inflight}, order ${order.map((p) => p.name).join(',')}`);
        assert.equal(picks.filter((p) => p === fast).length, 1_000);
      }
    }
  });

  test('two distinct peers are always compared: with a random stuck at 0 the slow first peer still loses', () => {
    const slow = peer('slow', 100);
    const fast = peer('fast', 10);
    const p2c = createP2cEwma([slow, fast], () => 0, still);
    assert.equal(p2c.select(all, ''), fast);
    const stuckHigh = createP2cEwma([fast, slow], () => 0.999_999, still);
    assert.equal(stuckHigh.select(all, ''), fast);
  });

  test('with 5 peers over 10,000 picks the 10× slower peer gets under 10%, never-measured peers are still picked', () => {
    const unmeasured = peer('new', 0);
    const normal = [peer('a', 10), peer('b', 10), peer('c', 10)];
    const slow = peer('slow', 100);
    const p2c = createP2cEwma([unmeasured, ...normal, slow], seededRandom(7), still);
    const counts = shares(Array.from({ length: 10_000 }, () => p2c.select(all, '')));
    const slowShare = (counts.get('slow') ?? 0) / 10_000;
    assert.ok(slowShare < 0.1, `slow peer got ${(slowShare * 100).toFixed(1)}%`);
    // A pair containing the unmeasured peer (cost 0) always goes to it: 4 of the 10 pairs, so about 40%.
    const newShare = (counts.get('new') ?? 0) / 10_000;
    assert.ok(newShare > 0.3 && newShare < 0.5, `never-measured peer got ${(newShare * 100).toFixed(1)}%`);
    for (const p of normal) assert.ok((counts.get(p.name) ?? 0) > 1_000, `${p.name} got ${counts.get(p.name) ?? 0} picks`);
    assert.equal(counts.get('-'), undefined);
  });

  test('in-flight requests raise the cost: a fast peer with 10 in flight loses to a slow idle one', () => {
    const busy = peer('busy', 10, 10); // cost 110
    const idle = peer('idle', 100, 0); // cost 100
    const p2c = createP2cEwma([busy, idle], seededRandom(3), still);
    const picks = Array.from({ length: 200 }, () => p2c.select(all, ''));
    assert.ok(picks.every((p) => p === idle));
  });

  test('weight divides the cost', () => {
    // Weight 1 each: the lower latency wins.
    const heavyLatency = peer('heavy', 20, 0, 1);
    const other = peer('other', 10, 0, 1);
    const unweighted = createP2cEwma([heavyLatency, other], seededRandom(5), still);
    assert.ok(Array.from({ length: 200 }, () => unweighted.select(all, '')).every((p) => p === other));
    // Weight 4: cost 20/4 = 5 beats 10/1.
    const weighted = peer('heavy', 20, 0, 4);
    const p2c = createP2cEwma([weighted, other], seededRandom(5), still);
    assert.ok(Array.from({ length: 200 }, () => p2c.select(all, '')).every((p) => p === weighted));
  });

  test('the only acceptable peer is returned without drawing, however slow', () => {
    const slow = peer('slow', 1_000, 50);
    const p2c = createP2cEwma([peer('a', 1), slow, peer('b', 1)], noRandom, still);
    assert.equal(
      p2c.select((p) => p === slow, ''),
      slow,
    );
    assert.equal(createP2cEwma([slow], noRandom, still).select(all, ''), slow);
  });

  test('undefined when no peer is acceptable (and for an empty group)', () => {
    const p2c = createP2cEwma([peer('a', 1), peer('b', 2)], noRandom, still);
    assert.equal(
      p2c.select(() => false, ''),
      undefined,
    );
    assert.equal(createP2cEwma<TestPeer>([], noRandom, still).select(all, ''), undefined);
  });

  test('unacceptable peers are never picked, even when cheapest', () => {
    const cheapest = peer('cheap', 0);
    const p2c = createP2cEwma([cheapest, peer('a', 10), peer('b', 20), peer('c', 30)], seededRandom(11), still);
    const picks = Array.from({ length: 1_000 }, () => p2c.select((p) => p !== cheapest, ''));
    assert.equal(picks.filter((p) => p === cheapest || p === undefined).length, 0);
    // The worst acceptable peer (c) never wins; a and b both do.
    const counts = shares(picks);
    assert.equal(counts.get('c'), undefined);
    assert.ok((counts.get('a') ?? 0) > 0 && (counts.get('b') ?? 0) > 0);
  });
});

/**
 * Sequential traffic against peers whose answers take `latency(peer, n)` ms (n: the peer's own request
 * count, from 0): one request at a time, each measured like Backend.observeLatency, the clock moving on by
 * the latency plus a gap. Returns the picks in order with the time of each.
 */
function sequential(
  peers: TestPeer[],
  requests: number,
  latency: (p: TestPeer, n: number) => number,
  options: { random: Random; clock: Clock & { advance(ms: number): void }; gapMs: number },
): { peer: TestPeer; at: number }[] {
  const p2c = createP2cEwma(peers, options.random, options.clock);
  const served = new Map<TestPeer, number>();
  const picks: { peer: TestPeer; at: number }[] = [];
  for (let i = 0; i < requests; i++) {
    const p = p2c.select(all, '') as TestPeer;
    picks.push({ peer: p, at: options.clock() });
    const n = served.get(p) ?? 0;
    served.set(p, n + 1);
    const ms = latency(p, n);
    options.clock.advance(ms);
    p.latencyMs = peakEwma(p.latencyMs, p.latencyAt, ms, options.clock());
    p.latencyAt = options.clock();
    options.clock.advance(options.gapMs);
  }
  return picks;
}

describe('p2c_ewma over time', () => {
  test('a backend that answered slowly once is picked again PROBE_AFTER_MS later, though it got no request since', () => {
    const clock = manualClock(0);
    const fast = peer('fast', 1);
    const slow = peer('slow', 200);
    const p2c = createP2cEwma([fast, slow], seededRandom(2), clock);
    let firstSlowPick = -1;
    // One request per ms, each answered by `fast` in 1 ms (its estimate stays at 1; slow's 200 decays).
    while (clock() <= 2 * PROBE_AFTER_MS) {
      const p = p2c.select(all, '');
      if (p === slow) {
        firstSlowPick = clock();
        break;
      }
      fast.latencyMs = peakEwma(fast.latencyMs, fast.latencyAt, 1, clock());
      fast.latencyAt = clock();
      clock.advance(1);
    }
    // Decay alone would take 10 s × ln(200) = 53 s to bring 200 ms under 1 ms.
    assert.equal(firstSlowPick, PROBE_AFTER_MS, 'probed as soon as it was 10 s without a pick');
    // Probed and answering fast again, it is judged on the new answer, not on the old spell.
    slow.latencyMs = peakEwma(slow.latencyMs, slow.latencyAt, 1, clock());
    slow.latencyAt = clock();
    assert.equal(slow.latencyMs, 1);
  });

  test('after a long idle spell every backend is tried again, whatever its old figures', () => {
    const clock = manualClock(0);
    const peers = [peer('a', 1), peer('b', 50), peer('c', 400)];
    const p2c = createP2cEwma(peers, seededRandom(4), clock);
    clock.advance(60_000);
    const seen = new Set<string>();
    for (let i = 0; i < 3; i++) {
      const p = p2c.select(all, '') as TestPeer;
      seen.add(p.name);
      p.latencyMs = peakEwma(p.latencyMs, p.latencyAt, 1, clock());
      p.latencyAt = clock();
      clock.advance(1);
    }
    assert.deepEqual([...seen].sort(), ['a', 'b', 'c'], 'three requests reached the three backends');
  });

  test('sequential traffic, weights 3:1:1, about equal latencies with noise and slow answers: every backend gets traffic by weight, none waits long', () => {
    const clock = manualClock(0);
    const noise = seededRandom(99);
    const peers = [peer('a', 0, 0, 3), peer('b', 0, 0, 1), peer('c', 0, 0, 1)];
    // 0.8-1.2 ms per answer; a connection's first answer takes 5 ms (the connect), and b has one 80 ms
    // pause at its 200th request.
    const latency = (p: TestPeer, n: number): number => (n === 0 ? 5 : p.name === 'b' && n === 200 ? 80 : 0.8 + 0.4 * noise());
    const picks = sequential(peers, 60_000, latency, { random: seededRandom(17), clock, gapMs: 0.5 });
    const share = (name: string, of: readonly { peer: TestPeer }[]): number => of.filter((p) => p.peer.name === name).length / of.length;
    // p2c compares pairs: with equal latencies a (cost 1/3) wins both its pairs, b and c share the third.
    const a = share('a', picks);
    assert.ok(a > 0.5 && a < 0.8, `a: ${a}`);
    for (const name of ['b', 'c']) {
      const s = share(name, picks);
      assert.ok(s > 0.1 && s < 0.25, `${name}: ${s}`);
    }
    // No backend goes more than PROBE_AFTER_MS (and a few requests) without a request, up to the end.
    for (const p of peers) {
      const times = [0, ...picks.filter((x) => x.peer === p).map((x) => x.at), clock()];
      let longest = 0;
      for (let i = 1; i < times.length; i++) longest = Math.max(longest, (times[i] as number) - (times[i - 1] as number));
      assert.ok(longest < PROBE_AFTER_MS + 100, `${p.name} waited ${longest} ms`);
    }
    // After b's pause, it is back to its share in the second half.
    assert.ok(share('b', picks.slice(30_000)) > 0.1, `b in the second half: ${share('b', picks.slice(30_000))}`);
  });

  test('two peers that cost the same: the heavier one wins the pair', () => {
    const light = peer('light', 0, 0, 1);
    const heavy = peer('heavy', 0, 0, 3);
    for (const order of [
      [light, heavy],
      [heavy, light],
    ]) {
      const p2c = createP2cEwma(order, seededRandom(8), still);
      assert.ok(Array.from({ length: 50 }, () => p2c.select(all, '')).every((p) => p === heavy));
    }
  });
});
