import assert from 'node:assert/strict';
import { describe, test, type TestContext } from 'node:test';
import { MemoryStore, type MemoryStoreOptions } from '../../../src/limits/memory-store.js';
import { policyFromRate } from '../../../src/limits/token-bucket.js';
import { manualClock } from '../../helpers/servers.js';

const POLICY = policyFromRate(100, 10); // 10 at once, one back every 600 ms, full 6000 ms after empty
const START = 1_000_000;

/** A store on a manual clock, closed when the test ends so no interval outlives it. */
function makeStore(t: TestContext, options: Partial<MemoryStoreOptions> = {}): { store: MemoryStore; clock: ReturnType<typeof manualClock> } {
  const clock = manualClock(START);
  const store = new MemoryStore({ policy: POLICY, maxKeys: 1000, clock, ...options });
  t.after(() => store.close());
  return { store, clock };
}

function takeN(store: MemoryStore, key: string, n: number): boolean[] {
  const out: boolean[] = [];
  for (let i = 0; i < n; i++) {
    const d = store.take(key);
    assert.ok(!(d instanceof Promise));
    out.push(d.allowed);
  }
  return out;
}

function remaining(store: MemoryStore, key: string): number {
  const d = store.take(key);
  assert.ok(!(d instanceof Promise));
  return d.remaining;
}

describe('MemoryStore', () => {
  test('10 of 15 immediate takes are allowed, the first 10', (t) => {
    const { store } = makeStore(t);
    assert.deepEqual(takeN(store, 'client', 15), [...Array<boolean>(10).fill(true), ...Array<boolean>(5).fill(false)]);
    assert.equal(store.size, 1);
  });

  test('answers synchronously with the token-bucket decision', (t) => {
    const { store } = makeStore(t);
    assert.deepEqual(store.take('k'), { allowed: true, remaining: 9, retryAfterMs: 0, resetMs: 600 });
  });

  test('separate keys have separate buckets', (t) => {
    const { store } = makeStore(t);
    assert.equal(takeN(store, 'a', 10).every(Boolean), true);
    assert.equal(takeN(store, 'a', 1)[0], false);
    assert.deepEqual(takeN(store, 'b', 11), [...Array<boolean>(10).fill(true), false]);
    assert.equal(store.size, 2);
  });

  test('uses the injected clock to refill', (t) => {
    const { store, clock } = makeStore(t);
    takeN(store, 'a', 10);
    clock.advance(599);
    assert.deepEqual(takeN(store, 'a', 1), [false]);
    clock.advance(1);
    assert.deepEqual(takeN(store, 'a', 2), [true, false]);
  });

  test('sweep() drops only buckets idle long enough to be full, and returns how many', (t) => {
    const { store, clock } = makeStore(t);
    takeN(store, 'old', 10); // empty at START
    clock.advance(3000);
    takeN(store, 'young', 1); // touched at START + 3000
    clock.advance(2999); // START + 5999
    assert.equal(store.sweep(), 0);
    assert.equal(store.size, 2);
    clock.advance(1); // START + 6000: 'old' is full again
    assert.equal(store.sweep(), 1);
    assert.equal(store.size, 1);
    clock.advance(2999); // START + 8999
    assert.equal(store.sweep(), 0);
    clock.advance(1); // START + 9000
    assert.equal(store.sweep(), 1);
    assert.equal(store.size, 0);
    assert.equal(store.sweep(), 0);
  });

  test('sweep(now) uses the time given', (t) => {
    const { store } = makeStore(t);
    takeN(store, 'a', 1);
    takeN(store, 'b', 1);
    assert.equal(store.sweep(START + 5999), 0);
    assert.equal(store.sweep(START + 6000), 2);
    assert.equal(store.size, 0);
  });

  test('a bucket dropped by the sweep behaves like the full bucket it replaced', (t) => {
    const { store, clock } = makeStore(t);
    takeN(store, 'a', 10);
    clock.advance(6000);
    assert.equal(store.sweep(), 1);
    assert.deepEqual(takeN(store, 'a', 11), [...Array<boolean>(10).fill(true), false]);
  });

  test('a bucket in use is not swept', (t) => {
    const { store, clock } = makeStore(t);
    for (let i = 0; i < 20; i++) {
      takeN(store, 'busy', 1);
      clock.advance(1000);
      assert.equal(store.sweep(), 0);
    }
    assert.equal(store.size, 1);
  });

  test('maxKeys caps the number of buckets: size never exceeds it', (t) => {
    const { store, clock } = makeStore(t, { maxKeys: 3 });
    for (let i = 0; i < 50; i++) {
      takeN(store, `client-${i}`, 1);
      assert.ok(store.size <= 3, `size ${store.size} after ${i + 1} keys`);
      if (i % 7 === 0) clock.advance(1500); // sometimes past the once-a-second sweep limit
    }
    assert.equal(store.size, 3);
  });

  test('at the cap, the bucket created longest ago is evicted', (t) => {
    const { store } = makeStore(t, { maxKeys: 3 });
    assert.equal(remaining(store, 'k0'), 9);
    assert.equal(remaining(store, 'k1'), 9);
    assert.equal(remaining(store, 'k2'), 9);
    assert.equal(remaining(store, 'k3'), 9); // evicts k0
    assert.equal(store.size, 3);
    assert.equal(remaining(store, 'k1'), 8); // kept
    assert.equal(remaining(store, 'k2'), 8); // kept
    assert.equal(remaining(store, 'k3'), 8); // kept
    assert.equal(remaining(store, 'k0'), 9); // new bucket: it had been evicted; evicts k1
    assert.equal(remaining(store, 'k2'), 7);
    assert.equal(remaining(store, 'k1'), 9); // evicted above; now evicts k2
    assert.equal(remaining(store, 'k3'), 7);
    assert.equal(store.size, 3);
  });

  test('at the cap, idle buckets are swept first instead of evicting one in use', (t) => {
    const { store, clock } = makeStore(t, { maxKeys: 3 });
    takeN(store, 'first', 1); // created first, kept in use below
    takeN(store, 'idle', 1);
    clock.advance(5000);
    takeN(store, 'first', 10); // drained at START + 5000
    takeN(store, 'third', 10); // drained at START + 5000
    clock.advance(1000); // 'idle' untouched for 6000 ms: full again, so the sweep drops it
    assert.equal(remaining(store, 'new'), 9);
    assert.equal(store.size, 3);
    // The drained buckets survived: 1000 ms gave back 1.67 tokens, this take leaves 0.67, i.e. 0 whole
    // (an evicted bucket would have come back full, with 9 remaining).
    assert.equal(remaining(store, 'first'), 0);
    assert.equal(remaining(store, 'third'), 0);
    assert.equal(store.size, 3);
  });

  test('the periodic sweep runs every idleAfterMs by default (mocked timers)', (t) => {
    t.mock.timers.enable({ apis: ['setInterval'] });
    const { store, clock } = makeStore(t);
    takeN(store, 'a', 1);
    clock.advance(6000);
    t.mock.timers.tick(5999);
    assert.equal(store.size, 1);
    t.mock.timers.tick(1);
    assert.equal(store.size, 0);
  });

  test('sweepIntervalMs sets how often the sweep runs', (t) => {
    t.mock.timers.enable({ apis: ['setInterval'] });
    const { store, clock } = makeStore(t, { sweepIntervalMs: 250 });
    takeN(store, 'a', 1);
    clock.advance(6000);
    t.mock.timers.tick(249);
    assert.equal(store.size, 1);
    t.mock.timers.tick(1);
    assert.equal(store.size, 0);
  });

  test('close() empties the store and stops the periodic sweep', (t) => {
    t.mock.timers.enable({ apis: ['setInterval'] });
    let calls = 0;
    const base = manualClock(START);
    const clock = (): number => {
      calls++;
      return base();
    };
    const store = new MemoryStore({ policy: POLICY, maxKeys: 10, clock });
    t.after(() => store.close());
    takeN(store, 'a', 1);
    t.mock.timers.tick(6000);
    assert.equal(calls, 2); // one take, one sweep
    store.close();
    assert.equal(store.size, 0);
    t.mock.timers.tick(600_000);
    assert.equal(calls, 2); // no sweep ran after close
  });
});
