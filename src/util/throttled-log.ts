/**
 * Logging for events that can repeat once per request (a rate-limit store that is down): the first event
 * is logged at once, later ones are counted and summed up in at most one line per interval, so an outage
 * under load writes a handful of lines, not one per request. Reads the clock only when an event happens.
 */
export class ThrottledLog {
  readonly #intervalMs: number;
  readonly #now: () => number;
  #lastLogged = -Infinity;
  #suppressed = 0;

  constructor(intervalMs: number, now: () => number = Date.now) {
    this.#intervalMs = intervalMs;
    this.#now = now;
  }

  /**
   * Records `count` events (default one). Calls `write` with the number of events since the last line
   * (these included) when a line is due; returns whether it did.
   */
  event(write: (count: number) => void, count = 1): boolean {
    this.#suppressed += count;
    const now = this.#now();
    if (now - this.#lastLogged < this.#intervalMs) return false;
    this.#lastLogged = now;
    const total = this.#suppressed;
    this.#suppressed = 0;
    write(total);
    return true;
  }

  /** Events counted but not yet written, and starts afresh (the next event is logged at once). */
  reset(): number {
    const count = this.#suppressed;
    this.#suppressed = 0;
    this.#lastLogged = -Infinity;
    return count;
  }
}
