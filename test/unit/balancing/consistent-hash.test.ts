import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createConsistentHash } from '../../../src/balancing/selection/consistent-hash.js';
import type { Peer } from '../../../src/balancing/selection/index.js';

interface TestPeer extends Peer {
  name: string;
  address: string;
  weight: number;
}

function peer(n: number, weight = 1): TestPeer {
  return { name: `p${n}`, address: `10.0.0.${n}:80`, weight, inflight: 0, latencyMs: 0, latencyAt: 0 };
}

const all = (): boolean => true;
const KEYS = Array.from({ length: 10_000 }, (_, i) => `key-${i}`);
const TEN = Array.from({ length: 10 }, (_, i) => peer(i + 1));

/** The address each key maps to (every peer acceptable). */
function owners(peers: readonly TestPeer[], keys: readonly string[] = KEYS): string[] {
  const ring = createConsistentHash(peers);
  return keys.map((k) => {
    const p = ring.select(all, k);
    assert.ok(p !== undefined, `key ${k} got no peer`);
    return p.address;
  });
}

function countBy(values: readonly string[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  return counts;
}

describe('consistent hash: keys that move when the group changes', () => {
  const before = owners(TEN);

  test('removing any one of 10 peers moves exactly the keys that were on it, and no other key', () => {
    for (const removed of TEN) {
      const after = owners(TEN.filter((p) => p !== removed));
      let moved = 0;
      KEYS.forEach((key, i) => {
        if (before[i] === removed.address) {
          assert.notEqual(after[i], removed.address, `${key} still maps to removed ${removed.address}`);
          moved++;
        } else {
          assert.equal(after[i], before[i], `${key} moved from ${before[i]} to ${after[i]} although ${removed.address} was removed`);
        }
      });
      assert.ok(moved > 0, `no key was on ${removed.address}`);
    }
  });

  // Fails with the current src: CRC-32 of `address-i` is linear, so every peer's 160 points are the same point
  // set XORed with one constant and the ring is lumpy (10.0.0.8 owns ~23% of it, 10.0.0.3 ~5%).
  test('removing any one of 10 peers moves under 15% of 10,000 keys', () => {
    const moves = TEN.map((removed) => {
      const after = owners(TEN.filter((p) => p !== removed));
      return { address: removed.address, moved: after.filter((a, i) => a !== before[i]).length };
    });
    const tooMany = moves.filter((m) => m.moved >= 1_500);
    assert.deepEqual(tooMany, [], `keys moved per removed peer: ${moves.map((m) => `${m.address}=${m.moved}`).join(', ')}`);
  });

  test('adding an 11th peer moves under 15% of keys, and every moved key goes to the new peer', () => {
    const eleventh = peer(11);
    const after = owners([...TEN, eleventh]);
    let moved = 0;
    KEYS.forEach((key, i) => {
      if (after[i] !== before[i]) {
        moved++;
        assert.equal(after[i], eleventh.address, `${key} moved from ${before[i]} to ${after[i]}, not to the new peer`);
      }
    });
    assert.ok(moved > 0, 'the new peer took no keys');
    assert.ok(moved < 1_500, `${moved} of 10,000 keys moved when an 11th peer was added`);
  });

  // Fails with the current src (same cause as above): shares range from ~4.5% to ~23%.
  test('10 equal peers each get 10% ± 5 points of 10,000 keys', () => {
    const counts = countBy(before);
    const shares = TEN.map((p) => ({ address: p.address, keys: counts.get(p.address) ?? 0 }));
    const off = shares.filter((s) => s.keys < 500 || s.keys > 1_500);
    assert.deepEqual(off, [], `keys per peer: ${shares.map((s) => `${s.address}=${s.keys}`).join(', ')}`);
  });
});

describe('consistent hash: stable across restarts', () => {
  test('a ring built again from the same peers maps every key to the same peer', () => {
    assert.deepEqual(owners(TEN.map((p) => ({ ...p }))), owners(TEN));
  });

  test('a ring built from the peers in reverse order maps every key to the same address', () => {
    const forward = owners(TEN);
    const reversed = owners([...TEN].reverse());
    const differ = KEYS.filter((_, i) => forward[i] !== reversed[i]);
    assert.deepEqual(differ, []);
  });

  test('a ring built from the peers in a shuffled order maps every key to the same address', () => {
    const order = [3, 7, 0, 9, 1, 5, 8, 2, 6, 4];
    const shuffled = order.map((i) => TEN[i] as TestPeer);
    const forward = owners(TEN);
    const other = owners(shuffled);
    assert.equal(other.filter((a, i) => a !== forward[i]).length, 0);
  });

  test('the peer name does not matter, only the address', () => {
    const renamed = TEN.map((p) => ({ ...p, name: `renamed-${p.name}` }));
    assert.deepEqual(owners(renamed), owners(TEN));
  });
});

describe('consistent hash: weights', () => {
  for (const [wa, wb] of [
    [2, 1],
    [1, 2],
  ] as const) {
    // [1, 2] fails with the current src: 10.0.0.2 at weight 2 gets ~75% of the keys, not ~67%.
    test(`weights ${wa}:${wb} split 10,000 keys about ${wa}/3 : ${wb}/3 (± 5 points)`, () => {
      const a = peer(1, wa);
      const b = peer(2, wb);
      const counts = countBy(owners([a, b]));
      const shareA = (counts.get(a.address) ?? 0) / KEYS.length;
      assert.equal((counts.get(a.address) ?? 0) + (counts.get(b.address) ?? 0), KEYS.length);
      assert.ok(Math.abs(shareA - wa / 3) <= 0.05, `${a.address} (weight ${wa}) got ${(shareA * 100).toFixed(1)}% of keys`);
    });
  }

  test('a peer of weight 2 takes more keys than the same peer at weight 1', () => {
    const light = countBy(owners([peer(1, 1), peer(2, 1)])).get('10.0.0.1:80') ?? 0;
    const heavy = countBy(owners([peer(1, 2), peer(2, 1)])).get('10.0.0.1:80') ?? 0;
    assert.ok(heavy > light, `weight 2: ${heavy} keys, weight 1: ${light} keys`);
  });
});

describe('consistent hash: acceptability', () => {
  test('an unacceptable owner is skipped to the next acceptable peer on the ring; other keys keep their peer', () => {
    const ring = createConsistentHash(TEN);
    const before = owners(TEN);
    for (const down of [TEN[0] as TestPeer, TEN[7] as TestPeer]) {
      // The ring without `down` is the same ring with its points removed: the next point clockwise.
      const withoutDown = owners(TEN.filter((p) => p !== down));
      const accept = (p: TestPeer): boolean => p !== down;
      let skipped = 0;
      KEYS.forEach((key, i) => {
        const got = ring.select(accept, key);
        assert.ok(got !== undefined);
        assert.notEqual(got, down);
        if (before[i] === down.address) {
          skipped++;
          assert.equal(got.address, withoutDown[i], `${key}: owner ${down.address} down, went to ${got.address}`);
        } else {
          assert.equal(got.address, before[i], `${key}: owner ${before[i]} is up, but went to ${got.address}`);
        }
      });
      assert.ok(skipped > 0, `no key was owned by ${down.address}`);
    }
  });

  test('with all but one peer unacceptable every key goes to that one', () => {
    const ring = createConsistentHash(TEN);
    const only = TEN[4] as TestPeer;
    for (const key of KEYS.slice(0, 500)) assert.equal(ring.select((p) => p === only, key), only);
  });

  test('undefined when no peer is acceptable', () => {
    const ring = createConsistentHash(TEN);
    for (const key of ['a', 'b', '', 'key-1']) assert.equal(ring.select(() => false, key), undefined);
  });

  test('undefined for an empty group', () => {
    assert.equal(createConsistentHash<TestPeer>([]).select(all, 'key'), undefined);
  });

  test('the accept function is asked about the owner first', () => {
    const ring = createConsistentHash(TEN);
    const owner = ring.select(all, 'some-key');
    const asked: TestPeer[] = [];
    ring.select((p) => {
      asked.push(p);
      return true;
    }, 'some-key');
    assert.deepEqual(asked, [owner]);
  });
});
