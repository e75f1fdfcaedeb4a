import type { Clock } from '../util/clock.js';
import type { RateLimitStore, StoreHealth } from './store.js';
import { idleAfterMs, newBucket, takeToken, type BucketState, type RateDecision, type TokenBucketPolicy } from './token-bucket.js';

export interface MemoryStoreOptions {
  policy: TokenBucketPolicy;
  /** Most buckets kept; beyond it the oldest are dropped first. */
  maxKeys: number;
  clock: Clock;
  /** How often idle buckets are swept; default: the time a bucket takes to fill, between 1 s and 60 s. */
  sweepIntervalMs?: number;
}

/**
 * Buckets in a Map, bounded two ways: a bucket untouched long enough to be full again is dropped by a
 * periodic sweep (dropping it changes nothing: a new bucket is full too), and the number of keys is capped.
 */
export class MemoryStore implements RateLimitStore {
  readonly #buckets = new Map<string, BucketState>();
  readonly #policy: TokenBucketPolicy;
  readonly #maxKeys: number;
  readonly #clock: Clock;
  readonly #idleMs: number;
  readonly #timer: NodeJS.Timeout;
  #lastSweep = -Infinity;

  constructor(options: MemoryStoreOptions) {
    this.#policy = options.policy;
    this.#maxKeys = options.maxKeys;
    this.#clock = options.clock;
    this.#idleMs = idleAfterMs(options.policy);
    const interval = options.sweepIntervalMs ?? Math.min(60_000, Math.max(1_000, this.#idleMs));
    this.#timer = setInterval(() => this.sweep(), interval);
    this.#timer.unref();
  }

  take(key: string): RateDecision {
    const now = this.#clock();
    let bucket = this.#buckets.get(key);
    if (bucket === undefined) {
      if (this.#buckets.size >= this.#maxKeys) this.#makeRoom(now);
      bucket = newBucket(this.#policy, now);
      this.#buckets.set(key, bucket);
    }
    return takeToken(bucket, this.#policy, now);
  }

  /** Drops every bucket that has refilled completely. Returns how many were dropped. */
  sweep(now: number = this.#clock()): number {
    this.#lastSweep = now;
    let dropped = 0;
    for (const [key, bucket] of this.#buckets) {
      if (now - bucket.updatedAt >= this.#idleMs) {
        this.#buckets.delete(key);
        dropped++;
      }
    }
    return dropped;
  }

  get size(): number {
    return this.#buckets.size;
  }

  /** Always ready: the buckets are in this process. */
  health(): StoreHealth {
    return { store: 'memory', target: null, state: 'ready', last_error: null };
  }

  close(): void {
    clearInterval(this.#timer);
    this.#buckets.clear();
  }

  #makeRoom(now: number): void {
    // A full sweep is O(keys): at most once a second, so a flood of new keys at the cap stays O(1) each.
    if (now - this.#lastSweep >= 1_000 && this.sweep(now) > 0) return;
    // Every bucket is in use: drop the one created longest ago (Map keeps insertion order).
    const oldest = this.#buckets.keys().next();
    if (oldest.done !== true) this.#buckets.delete(oldest.value);
  }
}
