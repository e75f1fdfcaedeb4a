import type { Clock } from '../util/clock.js';

/**
 * Caps retries at a share of requests over a sliding window (as Envoy's retry budget), so that when a
 * group is failing, retries cannot multiply its load. The window is two fixed halves blended linearly.
 */
export class RetryBudget {
  readonly #share: number;
  readonly #floor: number;
  readonly #windowMs: number;
  readonly #clock: Clock;
  #start: number;
  #requests = 0;
  #retries = 0;
  #prevRequests = 0;
  #prevRetries = 0;

  constructor(percent: number, minPerWindow: number, clock: Clock, windowMs = 10_000) {
    this.#share = percent / 100;
    this.#floor = minPerWindow;
    this.#windowMs = windowMs;
    this.#clock = clock;
    this.#start = clock();
  }

  recordRequest(): void {
    this.#roll();
    this.#requests++;
  }

  /** Takes one retry from the budget if there is one. */
  tryRetry(): boolean {
    const carry = this.#roll();
    const requests = this.#prevRequests * carry + this.#requests;
    const retries = this.#prevRetries * carry + this.#retries;
    // The small allowance absorbs floating-point error in the blended counts (20% of 10 must allow 2).
    if (retries + 1 > Math.max(this.#floor, this.#share * requests) + 1e-9) return false;
    this.#retries++;
    return true;
  }

  /** Moves the window on; returns the weight of the previous window still in view. */
  #roll(): number {
    const now = this.#clock();
    const elapsed = now - this.#start;
    if (elapsed >= this.#windowMs) {
      const whole = elapsed >= 2 * this.#windowMs;
      this.#prevRequests = whole ? 0 : this.#requests;
      this.#prevRetries = whole ? 0 : this.#retries;
      this.#requests = 0;
      this.#retries = 0;
      this.#start = now - (elapsed % this.#windowMs);
    }
    return 1 - (now - this.#start) / this.#windowMs;
  }
}
