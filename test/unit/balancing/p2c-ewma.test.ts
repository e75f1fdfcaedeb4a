import type { LoadBalancingConfig } from '../../../src/config/schema.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Backend } from '../../../src/balancing/backend.js';
import { createP2cEwma, EWMA_DECAY_MS, peakEwma } from '../../../src/balancing/selection/p2c-ewma.js';
import type { Peer } from '../../../src/balancing/selection/index.js';
import { configSchema } from '../../../src/config/schema.js';
import type { Random } from '../../../src/util/clock.js';
import { seededRandom } from '../../helpers/servers.js';

interface TestPeer extends Peer {
  name: string;
  weight: number;
  inflight: number;
  latencyMs: number;
}

function peer(name: string, latencyMs: number, inflight = 0, weight = 1): TestPeer {
  return { name, address: `${name}:80`, weight, inflight, latencyMs };
}

const all = (): boolean => true;

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
    assert.equal(peakEwma(30, 0, 30, 10_000), 30);
  });

  test('a lower observation after 10 s gives prev·e^-1 + obs·(1 - e^-1)', () => {
    const expected = 100 * Math.exp(-1) + 20 * (1 - Math.exp(-1));
    close(peakEwma(100, 5_000, 20, 15_000), expected, 'peakEwma(100, 5000, 20, 15000)');
    assert.ok(Math.abs(expected - 49.43) < 0.01, `sanity: ${expected}`);
  });

  test('a lower observation decays with exp(-dt/10000) for other gaps too', () => {
    for (const dt of [1, 2_500, 5_000, 20_000, 100_000]) {
      const w = Math.exp(-dt / 10_000);
      close(peakEwma(80, 0, 10, dt), 80 * w + 10 * (1 - w), `dt=${dt}`);
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
    const long = peakEwma(100, 0, 20, 30_000);
    assert.ok(short < 100 && short > 20, `short gap: ${short}`);
    assert.ok(long < short && long > 20, `long gap: ${long}`);
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
      backend.observeLatency(20, 11_000);
      close(backend.latencyMs, 50 * Math.exp(-1) + 20 * (1 - Math.exp(-1)), 'after 10 s');
      backend.observeLatency(500, 11_001);
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
        const p2c = createP2cEwma(order, seededRandom(1));
        const picks = Array.from({ length: 1_000 }, () => p2c.select(all, ''));
        assert.equal(picks.filter((p) => p === slow).length, 0, `inflight ${inflight}, order ${order.map((p) => p.name).join(',')}`);
        assert.equal(picks.filter((p) => p === fast).length, 1_000);
      }
    }
  });

  test('two distinct peers are always compared: with a random stuck at 0 the slow first peer still loses', () => {
    const slow = peer('slow', 100);
    const fast = peer('fast', 10);
    const p2c = createP2cEwma([slow, fast], () => 0);
    assert.equal(p2c.select(all, ''), fast);
    const stuckHigh = createP2cEwma([fast, slow], () => 0.999_999);
    assert.equal(stuckHigh.select(all, ''), fast);
  });

  test('with 5 peers over 10,000 picks the 10× slower peer gets under 10%, never-measured peers are still picked', () => {
    const unmeasured = peer('new', 0);
    const normal = [peer('a', 10), peer('b', 10), peer('c', 10)];
    const slow = peer('slow', 100);
    const p2c = createP2cEwma([unmeasured, ...normal, slow], seededRandom(7));
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
    const p2c = createP2cEwma([busy, idle], seededRandom(3));
    const picks = Array.from({ length: 200 }, () => p2c.select(all, ''));
    assert.ok(picks.every((p) => p === idle));
  });

  test('weight divides the cost', () => {
    // Weight 1 each: the lower latency wins.
    const heavyLatency = peer('heavy', 20, 0, 1);
    const other = peer('other', 10, 0, 1);
    const unweighted = createP2cEwma([heavyLatency, other], seededRandom(5));
    assert.ok(Array.from({ length: 200 }, () => unweighted.select(all, '')).every((p) => p === other));
    // Weight 4: cost 20/4 = 5 beats 10/1.
    const weighted = peer('heavy', 20, 0, 4);
    const p2c = createP2cEwma([weighted, other], seededRandom(5));
    assert.ok(Array.from({ length: 200 }, () => p2c.select(all, '')).every((p) => p === weighted));
  });

  test('the only acceptable peer is returned without drawing, however slow', () => {
    const slow = peer('slow', 1_000, 50);
    const p2c = createP2cEwma([peer('a', 1), slow, peer('b', 1)], noRandom);
    assert.equal(
      p2c.select((p) => p === slow, ''),
      slow,
    );
    assert.equal(createP2cEwma([slow], noRandom).select(all, ''), slow);
  });

  test('undefined when no peer is acceptable (and for an empty group)', () => {
    const p2c = createP2cEwma([peer('a', 1), peer('b', 2)], noRandom);
    assert.equal(
      p2c.select(() => false, ''),
      undefined,
    );
    assert.equal(createP2cEwma<TestPeer>([], noRandom).select(all, ''), undefined);
  });

  test('unacceptable peers are never picked, even when cheapest', () => {
    const cheapest = peer('cheap', 0);
    const p2c = createP2cEwma([cheapest, peer('a', 10), peer('b', 20), peer('c', 30)], seededRandom(11));
    const picks = Array.from({ length: 1_000 }, () => p2c.select((p) => p !== cheapest, ''));
    assert.equal(picks.filter((p) => p === cheapest || p === undefined).length, 0);
    // The worst acceptable peer (c) never wins; a and b both do.
    const counts = shares(picks);
    assert.equal(counts.get('c'), undefined);
    assert.ok((counts.get('a') ?? 0) > 0 && (counts.get('b') ?? 0) > 0);
  });
});
