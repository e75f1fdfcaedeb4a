import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { RetryBudget } from '../../../src/balancing/retry-budget.js';
import { manualClock } from '../../helpers/servers.js';

/** Takes retries until the budget refuses; returns how many were granted (stops at 10,000). */
function drain(budget: RetryBudget): number {
  let granted = 0;
  while (granted < 10_000 && budget.tryRetry()) granted++;
  return granted;
}

function requests(budget: RetryBudget, n: number): void {
  for (let i = 0; i < n; i++) budget.recordRequest();
}

describe('retry budget: share and floor', () => {
  test('with no requests the floor of 3 retries per window is allowed, and the 4th is refused', () => {
    const budget = new RetryBudget(20, 3, 0, manualClock());
    assert.equal(budget.tryRetry(), true);
    assert.equal(budget.tryRetry(), true);
    assert.equal(budget.tryRetry(), true);
    assert.equal(budget.tryRetry(), false);
    assert.equal(budget.tryRetry(), false);
  });

  test('a floor of 0 allows no retry without requests', () => {
    assert.equal(drain(new RetryBudget(20, 0, 0, manualClock())), 0);
  });

  test('20% of 100 requests allows exactly 20 retries, then refuses', () => {
    const budget = new RetryBudget(20, 3, 0, manualClock());
    requests(budget, 100);
    assert.equal(drain(budget), 20);
    assert.equal(budget.tryRetry(), false);
  });

  test('new requests reopen the budget: 5 more requests allow 1 more retry', () => {
    const budget = new RetryBudget(20, 3, 0, manualClock());
    requests(budget, 100);
    assert.equal(drain(budget), 20);
    requests(budget, 5);
    assert.equal(drain(budget), 1);
  });

  test('when 20% is below the floor the floor applies: 10 requests allow 3 retries, not 2', () => {
    const budget = new RetryBudget(20, 3, 0, manualClock());
    requests(budget, 10);
    assert.equal(drain(budget), 3);
  });

  test('the share is the configured percent: 50% of 40 requests allows 20', () => {
    const budget = new RetryBudget(50, 3, 0, manualClock());
    requests(budget, 40);
    assert.equal(drain(budget), 20);
  });

  test('a refused retry does not use up the budget', () => {
    const budget = new RetryBudget(20, 0, 0, manualClock());
    requests(budget, 10);
    assert.equal(drain(budget), 2);
    for (let i = 0; i < 5; i++) assert.equal(budget.tryRetry(), false);
    requests(budget, 5);
    assert.equal(drain(budget), 1);
  });
});

describe('retry budget: sliding window (10 s)', () => {
  /** A budget (20%, given floor) that saw 100 requests at t0, with the clock it runs on. */
  function afterHundred(floor: number): { budget: RetryBudget; clock: ReturnType<typeof manualClock> } {
    const clock = manualClock();
    const budget = new RetryBudget(20, floor, 0, clock);
    requests(budget, 100);
    return { budget, clock };
  }

  test('within the same window nothing decays: 20 retries at t0 + 9.999 s', () => {
    const { budget, clock } = afterHundred(0);
    clock.advance(9_999);
    assert.equal(drain(budget), 20);
  });

  for (const [advance, expected] of [
    [10_000, 20], // the previous window still weighs 1
    [12_500, 15], // weight 0.75: 75 requests
    [15_000, 10], // weight 0.5: 50 requests
    [17_500, 5], // weight 0.25: 25 requests
    [20_000, 0], // forgotten
    [35_000, 0],
  ] as const) {
    test(`100 requests at t0 allow exactly ${expected} retries at t0 + ${advance / 1000} s (floor 0)`, () => {
      const { budget, clock } = afterHundred(0);
      clock.advance(advance);
      assert.equal(drain(budget), expected);
    });
  }

  // Fails with the current src: the carried weight 1 - elapsed/window is inexact in floating point (1 - 0.9 =
  // 0.09999999999999998), so 20% of 10 weighted requests comes out as 1.9999999999999996 and the 2nd retry is refused.
  test('weighted counts are not cut short by rounding: exactly 9 at 15.5 s, 4 at 18 s, 2 at 19 s (floor 0)', () => {
    const got = [15_500, 18_000, 19_000].map((advance) => {
      const { budget, clock } = afterHundred(0);
      clock.advance(advance);
      return `${advance / 1000} s: ${drain(budget)}`;
    });
    assert.deepEqual(got, ['15.5 s: 9', '18 s: 4', '19 s: 2']);
  });

  test('with the floor of 3, after 17.5 s the share (5) applies, after 20 s only the floor (3)', () => {
    const first = afterHundred(3);
    first.clock.advance(17_500);
    assert.equal(drain(first.budget), 5);
    const second = afterHundred(3);
    second.clock.advance(20_000);
    assert.equal(drain(second.budget), 3);
  });

  test('the weight of the previous window falls as time passes within the next one', () => {
    // One budget, checked at 12.5 s, 15 s and 17.5 s; retries taken earlier count against later checks.
    const { budget, clock } = afterHundred(0);
    clock.advance(12_500);
    assert.equal(drain(budget), 15); // 0.75 × 100 × 20%; these 15 are in the current window
    clock.advance(2_500);
    assert.equal(drain(budget), 0); // budget 10, already 15 retries in this window
    requests(budget, 50);
    assert.equal(drain(budget), 5); // (0.5 × 100 + 50) × 20% = 20, 15 used
  });

  test('retries of the previous window count against the budget at the same decreasing weight', () => {
    const { budget, clock } = afterHundred(0);
    assert.equal(drain(budget), 20);
    clock.advance(15_000);
    // Previous window at weight 0.5: 50 requests, 10 retries: nothing left.
    assert.equal(drain(budget), 0);
    // 50 new requests: (50 + 50) × 20% = 20, minus 10 carried retries.
    requests(budget, 50);
    assert.equal(drain(budget), 10);
  });

  test('after 20 s the first window is fully forgotten, also when the clock was read at 10 s', () => {
    const { budget, clock } = afterHundred(0);
    assert.equal(drain(budget), 20);
    clock.advance(10_000);
    assert.equal(budget.tryRetry(), false); // window rolls here: previous at weight 1, 20 retries used
    clock.advance(10_000);
    assert.equal(drain(budget), 0);
    requests(budget, 10);
    assert.equal(drain(budget), 2);
  });

  test('requests made at t0 + 21 s count fully at t0 + 30 s and at weight 0.5 at t0 + 35 s', () => {
    const { budget, clock } = afterHundred(0);
    clock.advance(21_000);
    requests(budget, 100); // window [20 s, 30 s)
    clock.advance(9_000); // t0 + 30 s: [20, 30) becomes the previous window at weight 1
    assert.equal(drain(budget), 20);
    clock.advance(5_000); // t0 + 35 s: weight 0.5, 20 retries in [30, 40)
    requests(budget, 100);
    // (0.5 × 100 + 100) × 20% = 30, 20 used
    assert.equal(drain(budget), 10);
  });
});

describe('retry budget: retries in flight (min_concurrent_retries)', () => {
  test('with share and window floor at 0, 3 retries may be in flight at once; a 4th waits until one is done', () => {
    const budget = new RetryBudget(0, 0, 3, manualClock());
    assert.equal(drain(budget), 3);
    assert.equal(budget.inFlight, 3);
    budget.retryDone();
    assert.equal(budget.inFlight, 2);
    assert.equal(budget.tryRetry(), true);
    assert.equal(budget.tryRetry(), false);
  });

  test('one request at a time, each retried once: every retry is granted, far beyond 20% of requests', () => {
    const budget = new RetryBudget(20, 3, 3, manualClock());
    let granted = 0;
    for (let i = 0; i < 1_000; i++) {
      budget.recordRequest();
      if (budget.tryRetry()) granted++;
      budget.retryDone();
    }
    assert.equal(granted, 1_000);
  });

  test('without the floor (0) the same traffic gets only its share', () => {
    const budget = new RetryBudget(20, 3, 0, manualClock());
    let granted = 0;
    for (let i = 0; i < 1_000; i++) {
      budget.recordRequest();
      if (budget.tryRetry()) granted++;
      budget.retryDone();
    }
    assert.equal(granted, 200);
  });

  test('beyond the floor the share still caps: 100 requests, none done, allow 20 retries (3 of them the floor)', () => {
    const budget = new RetryBudget(20, 3, 3, manualClock());
    requests(budget, 100);
    // The first 3 go through the in-flight floor and count towards the share too.
    assert.equal(drain(budget), 20);
  });

  test('retryDone without a retry in flight does nothing', () => {
    const budget = new RetryBudget(0, 0, 1, manualClock());
    budget.retryDone();
    assert.equal(budget.inFlight, 0);
    assert.equal(drain(budget), 1);
  });
});
