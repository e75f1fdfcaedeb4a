/**
 * The token bucket, as pure arithmetic: no timers, no clock of its own. A bucket holds up to `capacity`
 * tokens and gains `refillPerMs` tokens every millisecond, continuously; a request takes one token.
 */
export interface TokenBucketPolicy {
  readonly capacity: number;
  readonly refillPerMs: number;
}

/** One client's bucket. `tokens` may be fractional. */
export interface BucketState {
  tokens: number;
  updatedAt: number;
}

export interface RateDecision {
  allowed: boolean;
  /** Whole tokens left after this request. */
  remaining: number;
  /** Milliseconds until at least one token is available (0 when one is). */
  retryAfterMs: number;
  /** Milliseconds until the bucket is full again. */
  resetMs: number;
}

export function policyFromRate(requestsPerMinute: number, burst: number): TokenBucketPolicy {
  return { capacity: burst, refillPerMs: requestsPerMinute / 60_000 };
}

export function newBucket(policy: TokenBucketPolicy, now: number): BucketState {
  return { tokens: policy.capacity, updatedAt: now };
}

/** Refills the bucket up to `now`, then takes one token if there is one. Mutates `state`. */
export function takeToken(state: BucketState, policy: TokenBucketPolicy, now: number): RateDecision {
  const elapsed = now - state.updatedAt;
  if (elapsed > 0) {
    state.tokens = Math.min(policy.capacity, state.tokens + elapsed * policy.refillPerMs);
    state.updatedAt = now;
  }
  const allowed = state.tokens >= 1;
  if (allowed) state.tokens -= 1;
  return decisionFor(allowed, state.tokens, policy);
}

/**
 * The decision for a bucket left with `tokens` after a take. Every store (memory, IPC, Redis) ends here, so
 * their headers agree to the token.
 */
export function decisionFor(allowed: boolean, tokens: number, policy: TokenBucketPolicy): RateDecision {
  const missingForOne = 1 - tokens;
  return {
    allowed,
    remaining: Math.floor(tokens),
    retryAfterMs: missingForOne > 0 ? missingForOne / policy.refillPerMs : 0,
    resetMs: (policy.capacity - tokens) / policy.refillPerMs,
  };
}

/** Milliseconds after which an untouched bucket is full again, i.e. indistinguishable from a new one. */
export function idleAfterMs(policy: TokenBucketPolicy): number {
  return policy.capacity / policy.refillPerMs;
}
