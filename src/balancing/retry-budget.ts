import type { Clock } from '../util/clock.js';

/**
 * Caps retries at a share of requests over a sliding window, so that when a group is failing, retries
 * cannot multiply its load. The window is two fixed halves blended linearly. Two floors keep retries
 * possible when traffic is low: a number per window, and a number in flight at once (as Envoy's
 * min_retry_concurrency): one request at a time never has more than one retry in flight, so a dead
 * backend among live ones costs it no error whatever the share.
 */
export class RetryBudget {
  readonly #share: number;
  readonly #floor: number;
  readonly #minConcurrent: number;
  readonly #windowMs: number;
  readonly #clock: Clock;
  #start: number;
  #requests = 0;
  #retries = 0;
  #prevRequests = 0;
  #prevRetries = 0;
  /** Retries granted whose request has not finished (`retryDone` not yet called). */
  #inFlight = 0;

  constructor(percent: number, minPerWindow: number, minConcurrent: number, clock: Clock, windowMs = 10_000) {
    this.#share = percent / 100;
    this.#floor = minPerWindow;
    this.#minConcurrent = minConcurrent;
    this.#windowMs = windowMs;
    this.#clock = clock;
    this.#start = clock();
  }

  recordRequest(): void {
    this.#roll();
    this.#requests++;
  }

  /** Takes one retry from the budget if there is one; each retry granted is given back with `retryDone`. */
  tryRetry(): boolean {
    const carry = this.#roll();
    if (this.#inFlight >= this.#minConcurrent) {
      const requests = this.#prevRequests * carry + this.#requests;
      const retries = this.#prevRetries * carry + this.#retries;
      // The small allowance absorbs floating-point error in the blended counts (20% of 10 must allow 2).
      if (retries + 1 > Math.max(this.#floor, this.#share * requests) + 1e-9) return false;
    }
    this.#retries++;
    this.#inFlight++;
    return true;
  }

  /** A granted retry is over (its request finished): it no longer counts as in flight. */
  retryDone(): void {
    if (this.#inFlight > 0) this.#inFlight--;
  }

  /** Retries granted and not yet done. */
  get inFlight(): number {
    return this.#inFlight;
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
