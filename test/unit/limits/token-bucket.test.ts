import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { idleAfterMs, newBucket, policyFromRate, takeToken, type RateDecision } from '../../../src/limits/token-bucket.js';

/** Equal to within floating-point noise (1e-9 ms): the arithmetic is continuous, not integer. */
function near(actual: number, expected: number, what: string): void {
  assert.ok(Math.abs(actual - expected) < 1e-9, `${what}: expected ${expected}, got ${actual}`);
}

function assertDecision(actual: RateDecision, expected: RateDecision): void {
  assert.equal(actual.allowed, expected.allowed, 'allowed');
  assert.equal(actual.remaining, expected.remaining, 'remaining');
  near(actual.retryAfterMs, expected.retryAfterMs, 'retryAfterMs');
  near(actual.resetMs, expected.resetMs, 'resetMs');
}

describe('policyFromRate', () => {
  test('capacity is the burst, refill is requests per minute spread over 60,000 ms', () => {
    const policy = policyFromRate(100, 10);
    assert.equal(policy.capacity, 10);
    assert.equal(policy.refillPerMs, 100 / 60_000);
    assert.deepEqual(policyFromRate(60, 1), { capacity: 1, refillPerMs: 0.001 });
  });
});

describe('newBucket', () => {
  test('starts full at the given time', () => {
    assert.deepEqual(newBucket(policyFromRate(100, 10), 1234), { tokens: 10, updatedAt: 1234 });
  });
});

describe('takeToken', () => {
  test('a new bucket allows exactly capacity requests at once, then denies', () => {
    const policy = policyFromRate(100, 10);
    const bucket = newBucket(policy, 0);
    const allowed: boolean[] = [];
    const remaining: number[] = [];
    for (let i = 0; i < 15; i++) {
      const d = takeToken(bucket, policy, 0);
      allowed.push(d.allowed);
      remaining.push(d.remaining);
    }
    assert.deepEqual(allowed, [...Array<boolean>(10).fill(true), ...Array<boolean>(5).fill(false)]);
    assert.deepEqual(remaining, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0, 0, 0, 0]);
  });

  test('retryAfterMs is 0 while a token is left; resetMs is the time to refill what was taken', () => {
    const policy = policyFromRate(100, 10); // one token every 600 ms
    const bucket = newBucket(policy, 0);
    assertDecision(takeToken(bucket, policy, 0), { allowed: true, remaining: 9, retryAfterMs: 0, resetMs: 600 });
    assertDecision(takeToken(bucket, policy, 0), { allowed: true, remaining: 8, retryAfterMs: 0, resetMs: 1200 });
    assertDecision(takeToken(bucket, policy, 0), { allowed: true, remaining: 7, retryAfterMs: 0, resetMs: 1800 });
  });

  test('the last token: allowed, remaining 0, retryAfterMs 600, resetMs 6000', () => {
    const policy = policyFromRate(100, 10);
    const bucket = newBucket(policy, 0);
    for (let i = 0; i < 9; i++) takeToken(bucket, policy, 0);
    assertDecision(takeToken(bucket, policy, 0), { allowed: true, remaining: 0, retryAfterMs: 600, resetMs: 6000 });
  });

  test('denied when empty: retryAfterMs 600, resetMs 6000, and the denial takes nothing', () => {
    const policy = policyFromRate(100, 10);
    const bucket = newBucket(policy, 0);
    for (let i = 0; i < 10; i++) takeToken(bucket, policy, 0);
    assertDecision(takeToken(bucket, policy, 0), { allowed: false, remaining: 0, retryAfterMs: 600, resetMs: 6000 });
    assertDecision(takeToken(bucket, policy, 0), { allowed: false, remaining: 0, retryAfterMs: 600, resetMs: 6000 });
    assert.deepEqual(bucket, { tokens: 0, updatedAt: 0 });
  });

  test('refill is continuous: after emptying, one token is back after exactly 600 ms, not at 599', () => {
    const policy = policyFromRate(100, 10);
    const early = newBucket(policy, 0);
    for (let i = 0; i < 10; i++) takeToken(early, policy, 0);
    const at599 = takeToken(early, policy, 599);
    assert.equal(at599.allowed, false);
    assert.equal(at599.remaining, 0);
    near(at599.retryAfterMs, 1, 'retryAfterMs at 599 ms');
    near(at599.resetMs, 5401, 'resetMs at 599 ms');

    const onTime = newBucket(policy, 0);
    for (let i = 0; i < 10; i++) takeToken(onTime, policy, 0);
    assertDecision(takeToken(onTime, policy, 600), { allowed: true, remaining: 0, retryAfterMs: 600, resetMs: 6000 });
  });

  test('the token is back at 600 ms even when the bucket was also asked at 599 ms', () => {
    const policy = policyFromRate(100, 10);
    const bucket = newBucket(policy, 0);
    for (let i = 0; i < 10; i++) takeToken(bucket, policy, 0);
    assert.equal(takeToken(bucket, policy, 599).allowed, false);
    assert.equal(takeToken(bucket, policy, 600).allowed, true);
    assert.equal(takeToken(bucket, policy, 600).allowed, false);
  });

  test('asked every millisecond, the first token comes back at 600 ms, not before', () => {
    const policy = policyFromRate(100, 10);
    const bucket = newBucket(policy, 0);
    for (let i = 0; i < 10; i++) takeToken(bucket, policy, 0);
    let firstAllowed = -1;
    for (let t = 1; t <= 700 && firstAllowed === -1; t++) if (takeToken(bucket, policy, t).allowed) firstAllowed = t;
    assert.equal(firstAllowed, 600);
  });

  test('partial refill: remaining counts whole tokens only', () => {
    const policy = policyFromRate(100, 10);
    const bucket = newBucket(policy, 0);
    for (let i = 0; i < 10; i++) takeToken(bucket, policy, 0);
    // 1500 ms later: 2.5 tokens; one is taken, 1.5 left, reported as 1.
    const d = takeToken(bucket, policy, 1500);
    assertDecision(d, { allowed: true, remaining: 1, retryAfterMs: 0, resetMs: 8.5 * 600 });
    near(bucket.tokens, 1.5, 'tokens');
    assert.equal(bucket.updatedAt, 1500);
    // 0.5 left after the next: denied next time until 300 ms later.
    assertDecision(takeToken(bucket, policy, 1500), { allowed: true, remaining: 0, retryAfterMs: 300, resetMs: 9.5 * 600 });
    assertDecision(takeToken(bucket, policy, 1500), { allowed: false, remaining: 0, retryAfterMs: 300, resetMs: 9.5 * 600 });
  });

  test('never above capacity after a long idle', () => {
    const policy = policyFromRate(100, 10);
    const bucket = newBucket(policy, 0);
    takeToken(bucket, policy, 0);
    assertDecision(takeToken(bucket, policy, 24 * 3600 * 1000), { allowed: true, remaining: 9, retryAfterMs: 0, resetMs: 600 });
    assert.equal(bucket.tokens, 9);
    // and it still allows only the capacity at once
    let allowed = 1;
    while (takeToken(bucket, policy, 24 * 3600 * 1000).allowed) allowed++;
    assert.equal(allowed, 10);
  });

  test('a clock that goes backwards neither refills nor moves updatedAt back', () => {
    const policy = policyFromRate(100, 10);
    const bucket = newBucket(policy, 1000);
    takeToken(bucket, policy, 1000);
    const d = takeToken(bucket, policy, 400);
    assert.equal(d.remaining, 8);
    assert.deepEqual(bucket, { tokens: 8, updatedAt: 1000 });
  });

  test('burst 1 at 60 per minute: one request per second', () => {
    const policy = policyFromRate(60, 1);
    const bucket = newBucket(policy, 0);
    assertDecision(takeToken(bucket, policy, 0), { allowed: true, remaining: 0, retryAfterMs: 1000, resetMs: 1000 });
    assertDecision(takeToken(bucket, policy, 999), { allowed: false, remaining: 0, retryAfterMs: 1, resetMs: 1 });
    assertDecision(takeToken(bucket, policy, 1000), { allowed: true, remaining: 0, retryAfterMs: 1000, resetMs: 1000 });
  });
});

describe('idleAfterMs', () => {
  test('is the time an empty bucket takes to fill: capacity / refill', () => {
    assert.equal(idleAfterMs(policyFromRate(100, 10)), 6000);
    assert.equal(idleAfterMs(policyFromRate(60, 1)), 1000);
    assert.equal(idleAfterMs(policyFromRate(600, 5)), 500);
  });

  test('an emptied bucket left idle for idleAfterMs is exactly full again', () => {
    const policy = policyFromRate(100, 10);
    const bucket = newBucket(policy, 0);
    for (let i = 0; i < 10; i++) takeToken(bucket, policy, 0);
    const d = takeToken(bucket, policy, idleAfterMs(policy));
    assertDecision(d, { allowed: true, remaining: 9, retryAfterMs: 0, resetMs: 600 });
  });
});
