/**
 * Rolling per-second windows for the dashboard and /api/status: request counts by status class and by
 * upstream, 401 and 429 counts, and a latency sketch per second for p50/p99. Pure: every call takes the
 * time (milliseconds of a monotonic clock), so tests move time by hand. Recording is a few typed-array
 * increments and one Math.log; nothing is allocated per request.
 *
 * Upstreams are slots (0: none), numbered by whoever records (ProxyMetrics gives each upstream a slot the
 * first time it sees it); the number of slots grows when upstreams are added by a config reload.
 */

/** Status classes in the order of every per-class array: index 0 is 2xx (and anything below 300). */
export const STATUS_CLASSES = ['2xx', '3xx', '4xx', '5xx'] as const;
export type StatusClass = (typeof STATUS_CLASSES)[number];

/** Index into STATUS_CLASSES. Final responses are 2xx at least; anything from 600 up counts as 5xx. */
export function statusClassIndex(status: number): number {
  if (status < 300) return 0;
  if (status < 400) return 1;
  if (status < 500) return 2;
  return 3;
}

/** What else a finished request was, for the dashboard's "recent 401 / 429" figures. */
export const RefusalKind = { none: 0, unauthorized: 1, rateLimited: 2 } as const;
export type RefusalKind = (typeof RefusalKind)[keyof typeof RefusalKind];

// Latency sketch: log-spaced buckets from 10 µs to 120 s, each 8% wider than the one before, so a
// quantile read from them is within 4% of the true value. 214 buckets per second of history.
const SKETCH_MIN_MS = 0.01;
const SKETCH_GROWTH = 1.08;
const LN_GROWTH = Math.log(SKETCH_GROWTH);
export const SKETCH_BUCKETS = Math.ceil(Math.log(120_000 / SKETCH_MIN_MS) / LN_GROWTH) + 1;

/** The sketch bucket of a duration: bucket i holds (MIN·G^(i-1), MIN·G^i]; bucket 0 everything up to MIN. */
export function sketchIndex(ms: number): number {
  if (!(ms > SKETCH_MIN_MS)) return 0; // also NaN
  const i = Math.ceil(Math.log(ms / SKETCH_MIN_MS) / LN_GROWTH);
  return i < SKETCH_BUCKETS ? i : SKETCH_BUCKETS - 1;
}

/** A value that represents bucket i (its geometric middle). */
export function sketchValue(i: number): number {
  return i === 0 ? SKETCH_MIN_MS : SKETCH_MIN_MS * SKETCH_GROWTH ** (i - 0.5);
}

/** The q-quantile (0..1) of the counts in `buckets[from, from + SKETCH_BUCKETS)`; null when empty. */
export function sketchQuantile(buckets: ArrayLike<number>, q: number, from = 0, total?: number): number | null {
  let count = total;
  if (count === undefined) {
    count = 0;
    for (let i = 0; i < SKETCH_BUCKETS; i++) count += buckets[from + i] as number;
  }
  if (count === 0) return null;
  const rank = Math.max(1, Math.ceil(q * count));
  let seen = 0;
  for (let i = 0; i < SKETCH_BUCKETS; i++) {
    seen += buckets[from + i] as number;
    if (seen >= rank) return sketchValue(i);
  }
  return sketchValue(SKETCH_BUCKETS - 1);
}

export interface WindowSummary {
  /** Complete seconds summed. */
  seconds: number;
  requests: number;
  /** Per status class (STATUS_CLASSES order). */
  byClass: number[];
  unauthorized: number;
  rateLimited: number;
  /** Per upstream slot: index 0 is "none" (answered by Tollgate), then the recorder's slots. */
  byUpstream: number[];
  p50Ms: number | null;
  p99Ms: number | null;
}

export interface Series {
  /** The monotonic second (floor(ms / 1000)) of each point, oldest first. */
  seconds: number[];
  requests: number[];
  /** One array per status class. */
  byClass: number[][];
  /** Latency quantiles of the requests that finished in that second; null for a second without any. */
  p50Ms: (number | null)[];
  p99Ms: (number | null)[];
}

/**
 * The seconds of a RollingStats that had requests, as plain arrays: what a cluster worker sends its primary,
 * which adds every worker's into one ring (`absorb`). Per-second arrays are flattened.
 */
export interface StatsExport {
  /** The seconds, oldest first, in the timeline the receiver uses (epoch seconds between processes). */
  seconds: number[];
  requests: number[];
  /** STATUS_CLASSES.length numbers per second. */
  byClass: number[];
  unauthorized: number[];
  rateLimited: number[];
  /** Upstream slots per second in `byUpstream` (slot 0: none); the sender's numbering. */
  upstreamSlots: number;
  /** `upstreamSlots` numbers per second. */
  byUpstream: number[];
  /** Per second, the non-zero latency sketch buckets as [index, count, index, count, ...]. */
  latency: number[][];
}

/**
 * A ring of `windowSeconds` one-second slots. The slot of the current second fills as requests finish;
 * summaries and series read only complete seconds, so a figure never drops because its second has just
 * begun.
 */
export class RollingStats {
  readonly windowSeconds: number;
  #upstreamSlots: number;
  readonly #count: Uint32Array;
  readonly #byClass: Uint32Array;
  readonly #unauthorized: Uint32Array;
  readonly #rateLimited: Uint32Array;
  /** [second slot][upstream slot]; replaced by a wider one when upstream slots are added. */
  #byUpstream: Uint32Array;
  readonly #latency: Uint32Array;
  /** The second the newest slot belongs to; slots of older seconds are cleared as time moves on. */
  #second = -1;

  /** `upstreams`: how many upstreams to start with (one more slot is kept for "none"). */
  constructor(upstreams: number, windowSeconds = 61) {
    if (windowSeconds < 2) throw new RangeError('windowSeconds must be at least 2');
    this.windowSeconds = windowSeconds;
    this.#upstreamSlots = upstreams + 1;
    this.#count = new Uint32Array(windowSeconds);
    this.#byClass = new Uint32Array(windowSeconds * STATUS_CLASSES.length);
    this.#unauthorized = new Uint32Array(windowSeconds);
    this.#rateLimited = new Uint32Array(windowSeconds);
    this.#byUpstream = new Uint32Array(windowSeconds * this.#upstreamSlots);
    this.#latency = new Uint32Array(windowSeconds * SKETCH_BUCKETS);
  }

  /** Upstream slots per second, "none" included. */
  get upstreamSlots(): number {
    return this.#upstreamSlots;
  }

  /**
   * Makes room for `slots` upstream slots (none included), keeping what every second holds. Runs when an
   * upstream gets its slot (at start and after a reload), not per request; fewer slots than now is a no-op.
   */
  growUpstreams(slots: number): void {
    const old = this.#upstreamSlots;
    if (slots <= old) return;
    const wider = new Uint32Array(this.windowSeconds * slots);
    for (let s = 0; s < this.windowSeconds; s++) wider.set(this.#byUpstream.subarray(s * old, (s + 1) * old), s * slots);
    this.#byUpstream = wider;
    this.#upstreamSlots = slots;
  }

  /** Counts one finished request. `upstream` is its slot (0 for none); runs from the logging phase. */
  record(nowMs: number, upstream: number, statusClass: number, durationMs: number, refusal: RefusalKind): void {
    const second = Math.floor(nowMs / 1000);
    if (second > this.#second) this.#advance(second);
    const slot = (second < this.#second ? this.#second : second) % this.windowSeconds;
    (this.#count[slot] as number)++;
    (this.#byClass[slot * STATUS_CLASSES.length + statusClass] as number)++;
    (this.#byUpstream[slot * this.#upstreamSlots + upstream] as number)++;
    (this.#latency[slot * SKETCH_BUCKETS + sketchIndex(durationMs)] as number)++;
    if (refusal === RefusalKind.unauthorized) (this.#unauthorized[slot] as number)++;
    else if (refusal === RefusalKind.rateLimited) (this.#rateLimited[slot] as number)++;
  }

  /** Sums the last `seconds` complete seconds (at most windowSeconds - 1). */
  summary(nowMs: number, seconds: number): WindowSummary {
    const current = this.#moveTo(nowMs);
    const n = Math.min(Math.max(1, seconds), this.windowSeconds - 1);
    const out: WindowSummary = {
      seconds: n,
      requests: 0,
      byClass: STATUS_CLASSES.map(() => 0),
      unauthorized: 0,
      rateLimited: 0,
      byUpstream: new Array<number>(this.#upstreamSlots).fill(0),
      p50Ms: null,
      p99Ms: null,
    };
    const merged = new Uint32Array(SKETCH_BUCKETS);
    for (let s = current - n; s < current; s++) {
      if (s < 0) continue;
      const slot = s % this.windowSeconds;
      out.requests += this.#count[slot] as number;
      out.unauthorized += this.#unauthorized[slot] as number;
      out.rateLimited += this.#rateLimited[slot] as number;
      for (let c = 0; c < STATUS_CLASSES.length; c++) (out.byClass[c] as number) += this.#byClass[slot * STATUS_CLASSES.length + c] as number;
      for (let u = 0; u < this.#upstreamSlots; u++) (out.byUpstream[u] as number) += this.#byUpstream[slot * this.#upstreamSlots + u] as number;
      const base = slot * SKETCH_BUCKETS;
      for (let i = 0; i < SKETCH_BUCKETS; i++) (merged[i] as number) += this.#latency[base + i] as number;
    }
    out.p50Ms = sketchQuantile(merged, 0.5, 0, out.requests);
    out.p99Ms = sketchQuantile(merged, 0.99, 0, out.requests);
    return out;
  }

  /** One point per complete second of the window, oldest first (windowSeconds - 1 points). */
  series(nowMs: number): Series {
    const current = this.#moveTo(nowMs);
    const out: Series = { seconds: [], requests: [], byClass: STATUS_CLASSES.map(() => []), p50Ms: [], p99Ms: [] };
    for (let s = current - (this.windowSeconds - 1); s < current; s++) {
      out.seconds.push(s);
      if (s < 0) {
        out.requests.push(0);
        for (const c of out.byClass) c.push(0);
        out.p50Ms.push(null);
        out.p99Ms.push(null);
        continue;
      }
      const slot = s % this.windowSeconds;
      const count = this.#count[slot] as number;
      out.requests.push(count);
      for (let c = 0; c < STATUS_CLASSES.length; c++) (out.byClass[c] as number[]).push(this.#byClass[slot * STATUS_CLASSES.length + c] as number);
      out.p50Ms.push(sketchQuantile(this.#latency, 0.5, slot * SKETCH_BUCKETS, count));
      out.p99Ms.push(sketchQuantile(this.#latency, 0.99, slot * SKETCH_BUCKETS, count));
    }
    return out;
  }

  /**
   * The complete seconds of the window that had requests, for `absorb` elsewhere. `toSecond` maps this
   * ring's seconds onto the receiver's timeline (identity by default).
   */
  export(nowMs: number, toSecond: (second: number) => number = (s) => s): StatsExport {
    const current = this.#moveTo(nowMs);
    const classes = STATUS_CLASSES.length;
    const out: StatsExport = { seconds: [], requests: [], byClass: [], unauthorized: [], rateLimited: [], upstreamSlots: this.#upstreamSlots, byUpstream: [], latency: [] };
    for (let s = Math.max(0, current - (this.windowSeconds - 1)); s < current; s++) {
      const slot = s % this.windowSeconds;
      const count = this.#count[slot] as number;
      if (count === 0) continue;
      out.seconds.push(toSecond(s));
      out.requests.push(count);
      for (let c = 0; c < classes; c++) out.byClass.push(this.#byClass[slot * classes + c] as number);
      out.unauthorized.push(this.#unauthorized[slot] as number);
      out.rateLimited.push(this.#rateLimited[slot] as number);
      for (let u = 0; u < this.#upstreamSlots; u++) out.byUpstream.push(this.#byUpstream[slot * this.#upstreamSlots + u] as number);
      const sketch: number[] = [];
      const base = slot * SKETCH_BUCKETS;
      for (let i = 0; i < SKETCH_BUCKETS; i++) {
        const n = this.#latency[base + i] as number;
        if (n > 0) sketch.push(i, n);
      }
      out.latency.push(sketch);
    }
    return out;
  }

  /**
   * Adds an export (in this ring's timeline) into this ring, after moving it to `nowMs`. `slotMap[u]` is this
   * ring's slot for the export's upstream slot u (the same slot when not given): a cluster primary numbers
   * upstreams by name, each worker by the order it met them. Seconds outside the window, or not yet begun
   * here, are left out; malformed entries and unmapped slots too.
   */
  absorb(data: StatsExport, nowMs: number, slotMap?: ArrayLike<number>): void {
    const current = this.#moveTo(nowMs);
    const classes = STATUS_CLASSES.length;
    const slots = this.#upstreamSlots;
    const from = Number.isInteger(data.upstreamSlots) && data.upstreamSlots > 0 ? data.upstreamSlots : 0;
    for (let k = 0; k < data.seconds.length; k++) {
      const s = data.seconds[k] as number;
      if (!Number.isInteger(s) || s > current || s <= current - this.windowSeconds || s < 0) continue;
      const slot = s % this.windowSeconds;
      (this.#count[slot] as number) += data.requests[k] ?? 0;
      (this.#unauthorized[slot] as number) += data.unauthorized[k] ?? 0;
      (this.#rateLimited[slot] as number) += data.rateLimited[k] ?? 0;
      for (let c = 0; c < classes; c++) (this.#byClass[slot * classes + c] as number) += data.byClass[k * classes + c] ?? 0;
      for (let u = 0; u < from; u++) {
        const to = slotMap === undefined ? u : slotMap[u];
        if (to === undefined || !Number.isInteger(to) || to < 0 || to >= slots) continue;
        (this.#byUpstream[slot * slots + to] as number) += data.byUpstream[k * from + u] ?? 0;
      }
      const sketch = data.latency[k] ?? [];
      for (let j = 0; j + 1 < sketch.length; j += 2) {
        const i = sketch[j] as number;
        if (Number.isInteger(i) && i >= 0 && i < SKETCH_BUCKETS) (this.#latency[slot * SKETCH_BUCKETS + i] as number) += sketch[j + 1] as number;
      }
    }
  }

  /** Moves the ring to the second of `nowMs` (clearing what fell out) and returns that second. */
  #moveTo(nowMs: number): number {
    const second = Math.floor(nowMs / 1000);
    if (second > this.#second) this.#advance(second);
    return Math.max(second, this.#second);
  }

  /** Clears the slots of the seconds after the newest one, up to and including `second`. */
  #advance(second: number): void {
    const from = this.#second < 0 ? second - this.windowSeconds + 1 : this.#second + 1;
    const start = Math.max(from, second - this.windowSeconds + 1);
    for (let s = start; s <= second; s++) {
      if (s < 0) continue;
      const slot = s % this.windowSeconds;
      this.#count[slot] = 0;
      this.#unauthorized[slot] = 0;
      this.#rateLimited[slot] = 0;
      this.#byClass.fill(0, slot * STATUS_CLASSES.length, (slot + 1) * STATUS_CLASSES.length);
      this.#byUpstream.fill(0, slot * this.#upstreamSlots, (slot + 1) * this.#upstreamSlots);
      this.#latency.fill(0, slot * SKETCH_BUCKETS, (slot + 1) * SKETCH_BUCKETS);
    }
    this.#second = second;
  }
}
