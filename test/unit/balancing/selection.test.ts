import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createSelector, type Peer } from '../../../src/balancing/selection/index.js';
import { createLeastConn } from '../../../src/balancing/selection/least-conn.js';
import { createRandom } from '../../../src/balancing/selection/random.js';
import { createRoundRobin } from '../../../src/balancing/selection/round-robin.js';
import type { Random } from '../../../src/util/clock.js';
import { seededRandom } from '../../helpers/servers.js';

interface TestPeer extends Peer {
  name: string;
  weight: number;
  inflight: number;
}

function peer(name: string, weight = 1, inflight = 0): TestPeer {
  return { name, address: `${name}.test:80`, weight, inflight, latencyMs: 0, latencyAt: 0 };
}

const all = (): boolean => true;

/** A random that returns the given values in turn, and fails the test if asked for more. */
function stubRandom(...values: number[]): Random & { calls: number } {
  const fn = (() => {
    const value = values[fn.calls];
    fn.calls++;
    if (value === undefined) throw new Error(`stub random called ${fn.calls} times, only ${values.length} values given`);
    return value;
  }) as Random & { calls: number };
  fn.calls = 0;
  return fn;
}

function names(picks: (Peer | undefined)[]): string {
  return picks.map((p) => (p === undefined ? '-' : p.name)).join(' ');
}

describe('round robin (smooth weighted)', () => {
  test('three equal peers are picked in order A B C A B C A B C', () => {
    const rr = createRoundRobin([peer('A'), peer('B'), peer('C')]);
    const picks = Array.from({ length: 9 }, () => rr.select(all, ''));
    assert.equal(names(picks), 'A B C A B C A B C');
  });

  test('weights 3:1 give A A B A, interleaved, repeating', () => {
    const rr = createRoundRobin([peer('A', 3), peer('B', 1)]);
    const picks = Array.from({ length: 12 }, () => rr.select(all, ''));
    assert.equal(names(picks), 'A A B A A A B A A A B A');
  });

  test('weights 3:1 never give three As in a row within one cycle (not A A A B)', () => {
    const rr = createRoundRobin([peer('A', 3), peer('B', 1)]);
    const first4 = names(Array.from({ length: 4 }, () => rr.select(all, '')));
    assert.notEqual(first4, 'A A A B');
    assert.equal(first4, 'A A B A');
  });

  test('weights 5:1:1 give the nginx sequence a a b a c a a, repeating', () => {
    const rr = createRoundRobin([peer('a', 5), peer('b', 1), peer('c', 1)]);
    const picks = Array.from({ length: 14 }, () => rr.select(all, ''));
    assert.equal(names(picks), 'a a b a c a a a a b a c a a');
  });

  test('skips peers that accept rejects', () => {
    const b = peer('B');
    const rr = createRoundRobin([peer('A'), b, peer('C')]);
    const picks = Array.from({ length: 6 }, () => rr.select((p) => p !== b, ''));
    assert.equal(names(picks), 'A C A C A C');
  });

  test('a peer rejected for one pick is not returned and the others keep their turns', () => {
    const peers = [peer('A'), peer('B'), peer('C')];
    const rr = createRoundRobin(peers);
    assert.equal(rr.select(all, '')?.name, 'A');
    assert.equal(rr.select((p) => p.name !== 'B', '')?.name, 'C');
    // Scores are now A=-1, B=1, C=0: B is owed its turn.
    assert.equal(names([rr.select(all, ''), rr.select(all, ''), rr.select(all, '')]), 'B C A');
  });

  test('returns undefined when no peer is acceptable', () => {
    const rr = createRoundRobin([peer('A'), peer('B')]);
    assert.equal(rr.select(() => false, ''), undefined);
    // and still works afterwards, starting from A
    assert.equal(rr.select(all, '')?.name, 'A');
  });

  test('returns undefined for an empty peer list', () => {
    assert.equal(createRoundRobin<TestPeer>([]).select(all, ''), undefined);
  });

  test('passes each peer to accept and returns the same object', () => {
    const peers = [peer('A'), peer('B')];
    const seen: string[] = [];
    const rr = createRoundRobin(peers);
    const picked = rr.select((p) => {
      seen.push(p.name);
      return true;
    }, '');
    assert.deepEqual(seen, ['A', 'B']);
    assert.equal(picked, peers[0]);
  });
});

describe('weighted random', () => {
  test('weights 3:1 over 40,000 seeded picks split 0.73-0.77', () => {
    const a = peer('A', 3);
    const sel = createRandom([a, peer('B', 1)], seededRandom(7));
    let countA = 0;
    const n = 40_000;
    for (let i = 0; i < n; i++) if (sel.select(all, '') === a) countA++;
    const share = countA / n;
    assert.ok(share >= 0.73 && share <= 0.77, `share of A was ${share}`);
  });

  test('equal weights over 30,000 seeded picks are near a third each', () => {
    const peers = [peer('A'), peer('B'), peer('C')];
    const sel = createRandom(peers, seededRandom(11));
    const counts = new Map<string, number>();
    for (let i = 0; i < 30_000; i++) {
      const p = sel.select(all, '');
      assert.ok(p !== undefined);
      counts.set(p.name, (counts.get(p.name) ?? 0) + 1);
    }
    for (const name of ['A', 'B', 'C']) {
      const share = (counts.get(name) ?? 0) / 30_000;
      assert.ok(share >= 0.32 && share <= 0.347, `share of ${name} was ${share}`);
    }
  });

  test('exact boundaries with weights 3:1: [0, 0.75) is the first peer, [0.75, 1) the second', () => {
    const peers = [peer('A', 3), peer('B', 1)];
    const cases: [number, string][] = [
      [0, 'A'],
      [0.5, 'A'],
      [0.74, 'A'],
      [0.7499, 'A'],
      [0.75, 'B'],
      [0.76, 'B'],
      [0.9999999, 'B'],
    ];
    for (const [value, expected] of cases) {
      const sel = createRandom(peers, stubRandom(value));
      assert.equal(sel.select(all, '')?.name, expected, `random() = ${value}`);
    }
  });

  test('rejected peers take no share: the range is split over acceptable weights only', () => {
    const peers = [peer('A', 3), peer('B', 1), peer('C', 1)];
    const notA = (p: TestPeer): boolean => p.name !== 'A';
    // Acceptable: B (1) and C (1), so [0, 0.5) is B, [0.5, 1) is C.
    assert.equal(createRandom(peers, stubRandom(0)).select(notA, '')?.name, 'B');
    assert.equal(createRandom(peers, stubRandom(0.49)).select(notA, '')?.name, 'B');
    assert.equal(createRandom(peers, stubRandom(0.5)).select(notA, '')?.name, 'C');
    assert.equal(createRandom(peers, stubRandom(0.99)).select(notA, '')?.name, 'C');
  });

  test('returns undefined when no peer is acceptable, without consuming randomness', () => {
    const random = stubRandom();
    const sel = createRandom([peer('A'), peer('B')], random);
    assert.equal(sel.select(() => false, ''), undefined);
    assert.equal(random.calls, 0);
  });

  test('calls random exactly once per pick', () => {
    const random = stubRandom(0.1, 0.9);
    const sel = createRandom([peer('A'), peer('B')], random);
    assert.equal(names([sel.select(all, ''), sel.select(all, '')]), 'A B');
    assert.equal(random.calls, 2);
  });
});

describe('least connections', () => {
  test('the peer with the fewest in-flight requests wins', () => {
    const sel = createLeastConn([peer('A', 1, 5), peer('B', 1, 2), peer('C', 1, 7)], stubRandom());
    assert.equal(sel.select(all, '')?.name, 'B');
  });

  test('the winner follows in-flight counts as they change', () => {
    const a = peer('A', 1, 0);
    const b = peer('B', 1, 1);
    const sel = createLeastConn([a, b], stubRandom());
    assert.equal(sel.select(all, ''), a);
    a.inflight = 3;
    assert.equal(sel.select(all, ''), b);
  });

  test('in-flight is relative to weight: inflight 2 weight 2 beats inflight 2 weight 1', () => {
    const sel = createLeastConn([peer('light', 1, 2), peer('heavy', 2, 2)], stubRandom());
    assert.equal(sel.select(all, '')?.name, 'heavy');
  });

  test('compares inflight/weight: 5/3 (1.67) beats 2/1 (2), 3/1 (3) loses to 5/2 (2.5)', () => {
    assert.equal(createLeastConn([peer('A', 1, 2), peer('B', 3, 5)], stubRandom()).select(all, '')?.name, 'B');
    assert.equal(createLeastConn([peer('A', 1, 3), peer('B', 2, 5)], stubRandom()).select(all, '')?.name, 'B');
    assert.equal(createLeastConn([peer('A', 2, 5), peer('B', 1, 3)], stubRandom()).select(all, '')?.name, 'A');
  });

  test('equal ratios with different weights tie (2/1 and 4/2), drawn by weight', () => {
    // A tie draws from random: B (weight 2 of 3) is taken when random * 3 < 2.
    assert.equal(createLeastConn([peer('A', 1, 2), peer('B', 2, 4)], stubRandom(0.6)).select(all, '')?.name, 'B');
    assert.equal(createLeastConn([peer('A', 1, 2), peer('B', 2, 4)], stubRandom(0.7)).select(all, '')?.name, 'A');
  });

  test('at low load (nothing in flight) the weights set the shares: 3:1:1 gives about 60/20/20%', () => {
    const sel = createLeastConn([peer('A', 3, 0), peer('B', 1, 0), peer('C', 1, 0)], seededRandom(7));
    const counts = new Map<string, number>();
    for (let i = 0; i < 10_000; i++) {
      const name = sel.select(all, '')?.name ?? '-';
      counts.set(name, (counts.get(name) ?? 0) + 1);
    }
    const share = (n: string): number => (counts.get(n) ?? 0) / 10_000;
    assert.ok(Math.abs(share('A') - 0.6) < 0.03 && Math.abs(share('B') - 0.2) < 0.03 && Math.abs(share('C') - 0.2) < 0.03, JSON.stringify([...counts]));
  });

  test('ties are broken by the injected random: either tied peer can be chosen, a non-tied one never', () => {
    const peers = [peer('A', 1, 1), peer('busy', 1, 9), peer('B', 1, 1)];
    assert.equal(createLeastConn(peers, stubRandom(0.6)).select(all, '')?.name, 'A');
    assert.equal(createLeastConn(peers, stubRandom(0.4)).select(all, '')?.name, 'B');
    const seeded = createLeastConn(peers, seededRandom(3));
    const counts = new Map<string, number>();
    for (let i = 0; i < 1000; i++) {
      const name = seeded.select(all, '')?.name ?? '-';
      counts.set(name, (counts.get(name) ?? 0) + 1);
    }
    assert.equal(counts.get('busy'), undefined);
    assert.equal(counts.get('-'), undefined);
    assert.ok((counts.get('A') ?? 0) > 400 && (counts.get('B') ?? 0) > 400, JSON.stringify([...counts]));
  });

  test('three-way tie is uniform: reservoir sampling draws once per extra tied peer', () => {
    const peers = [peer('A'), peer('B'), peer('C')];
    // draws: for B (ties=2) and for C (ties=3)
    assert.equal(createLeastConn(peers, stubRandom(0.9, 0.9)).select(all, '')?.name, 'A'); // 1.8, 2.7: keep A
    assert.equal(createLeastConn(peers, stubRandom(0.4, 0.9)).select(all, '')?.name, 'B'); // 0.8 takes B, 2.7 keeps it
    assert.equal(createLeastConn(peers, stubRandom(0.9, 0.3)).select(all, '')?.name, 'C'); // 1.8 keeps A, 0.9 takes C
  });

  test('random is not consumed when there is no tie', () => {
    const random = stubRandom();
    const sel = createLeastConn([peer('A', 1, 3), peer('B', 1, 2), peer('C', 1, 1)], random);
    assert.equal(sel.select(all, '')?.name, 'C');
    assert.equal(random.calls, 0);
  });

  test('a better peer after a tie resets the tie count', () => {
    // A and B tie at 2 (one draw), then C at 1 wins outright; D ties with C and draws with ties = 2.
    const random = stubRandom(0.9, 0.4);
    const sel = createLeastConn([peer('A', 1, 2), peer('B', 1, 2), peer('C', 1, 1), peer('D', 1, 1)], random);
    assert.equal(sel.select(all, '')?.name, 'D');
    assert.equal(random.calls, 2);
  });

  test('rejects unacceptable peers even when they have the fewest in flight', () => {
    const idle = peer('idle', 1, 0);
    const sel = createLeastConn([idle, peer('B', 1, 4), peer('C', 1, 3)], stubRandom());
    assert.equal(sel.select((p) => p !== idle, '')?.name, 'C');
  });

  test('returns undefined when no peer is acceptable', () => {
    const sel = createLeastConn([peer('A'), peer('B')], stubRandom());
    assert.equal(sel.select(() => false, ''), undefined);
  });
});

describe('createSelector', () => {
  test('builds the selector each strategy names', () => {
    const peers = [peer('A', 3, 4), peer('B', 1, 0)];
    const rr = createSelector('round_robin', peers, stubRandom(), () => 0);
    assert.equal(names([rr.select(all, ''), rr.select(all, ''), rr.select(all, ''), rr.select(all, '')]), 'A A B A');
    assert.equal(createSelector('random', peers, stubRandom(0.76), () => 0).select(all, '')?.name, 'B');
    assert.equal(createSelector('random', peers, stubRandom(0.74), () => 0).select(all, '')?.name, 'A');
    assert.equal(createSelector('least_conn', peers, stubRandom(), () => 0).select(all, '')?.name, 'B');
    // p2c_ewma: neither measured yet; A has requests in flight, so idle B is cheaper.
    assert.equal(createSelector('p2c_ewma', peers, stubRandom(0, 0), () => 0).select(all, '')?.name, 'B');
  });
});
