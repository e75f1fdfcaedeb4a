import type { RateDecision } from './token-bucket.js';

/**
 * Where buckets live. The memory store answers synchronously; a shared store (Redis) answers with a
 * promise. The rate-limit middleware handles both.
 */
export interface RateLimitStore {
  take(key: string): RateDecision | Promise<RateDecision>;
  /** Stops timers and releases connections; called on shutdown. */
  close(): void;
}
