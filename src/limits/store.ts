import type { RateDecision } from './token-bucket.js';

/**
 * Where buckets live. The memory store answers synchronously; the shared stores (the cluster primary over
 * IPC, Redis) answer with a promise, which rejects when the check cannot be made (the middleware then
 * applies `on_error`). The rate-limit middleware handles both.
 */
export interface RateLimitStore {
  take(key: string): RateDecision | Promise<RateDecision>;
  /** Resolves when the store can answer, or has waited long enough; never rejects. Awaited before listening. */
  ready?(): Promise<void>;
  /** Stops timers and releases connections; called on shutdown. */
  close(): void;
}
