/**
 * Prometheus metrics (prom-client) and the numbers behind the dashboard, built once from the config.
 *
 * Per request, the logging phase adds to plain typed arrays indexed by upstream, method and status class
 * (a handful of increments; no label lookup, no allocation). prom-client reads those arrays only when
 * /metrics is scraped, in each metric's `collect()`. A prom-client `labels(...).inc()` per request hashes
 * the label set every time; keeping it off the request path is what makes metrics nearly free.
 *
 * The metric definitions (`registerProxyMetrics`) read through a `MetricsReader`, so the same families with
 * the same names, labels and help come out of one process (reading ProxyMetrics' own arrays) and out of a
 * cluster primary (reading the sums of its workers' snapshots, src/admin/cluster.ts).
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { Backend } from '../balancing/backend.js';
import type { RequestContext } from '../proxy/context.js';
import type { Phases } from '../proxy/phases.js';
import type { Clock } from '../util/clock.js';
import { RefusalKind, RollingStats, STATUS_CLASSES, statusClassIndex, type StatsExport } from './stats.js';

/** The `method` label's values: the common methods, and `other` for the rest, so the label set is bounded. */
export const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'other'] as const;

/** Index into METHODS. */
export function methodIndex(method: string | undefined): number {
  switch (method) {
    case 'GET':
      return 0;
    case 'HEAD':
      return 1;
    case 'POST':
      return 2;
    case 'PUT':
      return 3;
    case 'DELETE':
      return 4;
    case 'PATCH':
      return 5;
    case 'OPTIONS':
      return 6;
    default:
      return 7;
  }
}

/** Upper bounds (seconds) of `tollgate_request_duration_seconds`: 1 ms to 30 s, roughly 1-2.5-5 steps. */
export const DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30] as const;

/** Values of the `reason` label of `tollgate_auth_failures_total` (what the auth filter records). */
export const AUTH_FAILURE_REASONS = ['missing', 'malformed', 'invalid'] as const;

/** The `upstream` label of requests that no upstream answered (401, 429, 503 and the like). */
export const NO_UPSTREAM = 'none';

export interface MetricsSources {
  /** The upstreams, in config order (their gauges are read at scrape time). */
  backends: readonly Backend[];
  /** Client connections open now. */
  connectionsOpen(): Promise<number>;
  /** Connections refused since start (max_connections). */
  connectionsRefused(): number;
  /** The balancer's clock, for "ejected now". */
  clock: Clock;
  version: string;
}

export interface MetricsOptions {
  /** Per-request recording; false registers only the gauges read at scrape time. */
  recording: boolean;
  /** Seconds of per-second history for the dashboard (default 61: a minute of complete seconds). */
  windowSeconds?: number;
}

/** Cumulative counts since start (what the dashboard's totals show). */
export interface Totals {
  requests: number;
  byClass: number[];
  unauthorized: number;
  rateLimited: number;
  retries: number;
  /** Per upstream slot (0: none). */
  byUpstream: number[];
}

const CLASSES = STATUS_CLASSES.length;
const METHOD_COUNT = METHODS.length;
const BUCKETS_PER_SLOT = DURATION_BUCKETS.length + 1;

/**
 * Cumulative counters, laid out as ProxyMetrics keeps them. Slot 0 is "none", slot i + 1 the i-th upstream.
 */
export interface Counters {
  /** [slot][method][class] */
  readonly requests: ArrayLike<number>;
  /** [slot][bucket], the last bucket being +Inf; per bucket, not cumulative. */
  readonly durationBuckets: ArrayLike<number>;
  /** [slot]: seconds. */
  readonly durationSum: ArrayLike<number>;
  /** [slot]: attempts sent to each upstream (retries included). */
  readonly selections: ArrayLike<number>;
  /** AUTH_FAILURE_REASONS order. */
  readonly authFailures: ArrayLike<number>;
  readonly rateLimited: number;
  readonly retries: number;
  readonly connectionsRefused: number;
  /** Per upstream, config order (no "none" slot): passive-health ejections. */
  readonly ejections: ArrayLike<number>;
}

/** Counters as plain numbers and arrays: what a cluster worker sends over IPC, and what a primary adds up. */
export interface CounterSnapshot {
  requests: number[];
  durationBuckets: number[];
  durationSum: number[];
  selections: number[];
  authFailures: number[];
  rateLimited: number;
  retries: number;
  connectionsRefused: number;
  ejections: number[];
}

/** The upstream gauges, per upstream in config order; an upstream without a value has no sample. */
export interface UpstreamGauges {
  readonly inflight: ArrayLike<number>;
  /** 1 while active health checks say up, else 0. */
  readonly healthy: ArrayLike<number>;
  /** 1 while passive health has the upstream ejected, else 0. */
  readonly ejected: ArrayLike<number>;
}

/** What the Prometheus metrics read when scraped (see the file comment). */
export interface MetricsReader {
  counters(): Counters;
  upstreams(): UpstreamGauges;
  connectionsOpen(): Promise<number>;
}

/** A metric family as prom-client's `getMetricsAsJSON()` gives it (process metrics sent by a worker). */
export interface MetricFamily {
  name: string;
  help: string;
  type: string;
  aggregator?: string;
  values: { labels: Record<string, string | number>; value: number; metricName?: string }[];
}

/** One process's numbers for a cluster primary: answered by a worker when the primary asks (IPC). */
export interface MetricsSnapshot {
  counters: CounterSnapshot;
  /** Per upstream, config order; `weight` is the effective weight (slow start). */
  upstreams: { inflight: number[]; healthy: number[]; ejected: number[]; weight: number[] };
  connectionsOpen: number;
  /** The per-second history, in epoch seconds (asked for by the status document only). */
  stats?: StatsExport;
  /** prom-client's process_* and nodejs_* families (asked for by /metrics only). */
  process?: MetricFamily[];
}

/** All-zero counters for `upstreams` upstreams. */
export function emptyCounters(upstreams: number): CounterSnapshot {
  const slots = upstreams + 1;
  return {
    requests: new Array<number>(slots * METHOD_COUNT * CLASSES).fill(0),
    durationBuckets: new Array<number>(slots * BUCKETS_PER_SLOT).fill(0),
    durationSum: new Array<number>(slots).fill(0),
    selections: new Array<number>(slots).fill(0),
    authFailures: new Array<number>(AUTH_FAILURE_REASONS.length).fill(0),
    rateLimited: 0,
    retries: 0,
    connectionsRefused: 0,
    ejections: new Array<number>(upstreams).fill(0),
  };
}

function addInto(into: number[], from: ArrayLike<number>): void {
  const n = Math.min(into.length, from.length);
  for (let i = 0; i < n; i++) (into[i] as number) += from[i] as number;
}

/** Adds `from` into `into`, element by element (arrays of another length add what they share). */
export function addCounters(into: CounterSnapshot, from: Counters): void {
  addInto(into.requests, from.requests);
  addInto(into.durationBuckets, from.durationBuckets);
  addInto(into.durationSum, from.durationSum);
  addInto(into.selections, from.selections);
  addInto(into.authFailures, from.authFailures);
  addInto(into.ejections, from.ejections);
  into.rateLimited += from.rateLimited;
  into.retries += from.retries;
  into.connectionsRefused += from.connectionsRefused;
}

/** Cumulative totals (the dashboard's) of a set of counters. */
export function totalsOf(counters: Counters): Totals {
  const slots = counters.selections.length;
  const byClass = new Array<number>(CLASSES).fill(0);
  const byUpstream = new Array<number>(slots).fill(0);
  let requests = 0;
  for (let slot = 0; slot < slots; slot++) {
    for (let m = 0; m < METHOD_COUNT; m++) {
      for (let c = 0; c < CLASSES; c++) {
        const n = counters.requests[(slot * METHOD_COUNT + m) * CLASSES + c] as number;
        requests += n;
        (byClass[c] as number) += n;
        (byUpstream[slot] as number) += n;
      }
    }
  }
  let unauthorized = 0;
  for (let i = 0; i < counters.authFailures.length; i++) unauthorized += counters.authFailures[i] as number;
  return { requests, byClass, unauthorized, rateLimited: counters.rateLimited, retries: counters.retries, byUpstream };
}

/**
 * The proxy's metrics. `phase` is the logging hook that records each finished request (undefined when
 * recording is off); `recordRejected` counts requests Node's parser refused before the pipeline saw them.
 */
export class ProxyMetrics {
  /** Everything /metrics shows: the process metrics, then Tollgate's. */
  readonly registry: Registry;
  /** prom-client's process_* and nodejs_* metrics alone (what a cluster worker sends its primary). */
  readonly processRegistry = new Registry();
  readonly recording: boolean;
  /** Rolling per-second windows for the dashboard; undefined when recording is off. */
  readonly stats: RollingStats | undefined;
  readonly phase: Phases | undefined;
  readonly #sources: MetricsSources;
  readonly #backends: readonly Backend[];
  readonly #slots: number;
  /** Backend → its slot (index + 1); slot 0 is "none". */
  readonly #slotOf = new Map<Backend, number>();
  /** [slot][method][class] */
  readonly #requests: Float64Array;
  /** [slot][bucket], the last bucket being +Inf; per bucket, not cumulative. */
  readonly #durationBuckets: Float64Array;
  readonly #durationSum: Float64Array;
  /** [slot]: attempts sent to each upstream (retries included). */
  readonly #selections: Float64Array;
  readonly #authFailures = new Float64Array(AUTH_FAILURE_REASONS.length);
  #rateLimited = 0;
  #retries = 0;

  constructor(sources: MetricsSources, options: MetricsOptions) {
    this.recording = options.recording;
    this.#sources = sources;
    this.#backends = sources.backends;
    this.#slots = sources.backends.length + 1;
    sources.backends.forEach((b, i) => this.#slotOf.set(b, i + 1));
    this.#requests = new Float64Array(this.#slots * METHOD_COUNT * CLASSES);
    this.#durationBuckets = new Float64Array(this.#slots * BUCKETS_PER_SLOT);
    this.#durationSum = new Float64Array(this.#slots);
    this.#selections = new Float64Array(this.#slots);
    this.stats = this.recording ? new RollingStats(sources.backends.length, options.windowSeconds) : undefined;
    this.phase = this.recording ? { name: 'metrics', logging: (ctx) => this.recordRequest(ctx, performance.now()) } : undefined;
    // process_* and nodejs_* under their usual names, which ready-made Node.js dashboards expect.
    collectDefaultMetrics({ register: this.processRegistry });
    const own = new Registry();
    const reader: MetricsReader = {
      counters: () => this.#counters(),
      upstreams: () => this.#upstreamGauges(),
      connectionsOpen: () => sources.connectionsOpen(),
    };
    registerProxyMetrics(own, sources.backends.map((b) => b.name), reader, { recording: this.recording, version: sources.version });
    this.registry = Registry.merge([this.processRegistry, own]);
  }

  /** Upstream names by slot: `none`, then each upstream. */
  get upstreamLabels(): string[] {
    return [NO_UPSTREAM, ...this.#backends.map((b) => b.name)];
  }

  /** Records one finished request (the logging phase). `now` is performance.now(). */
  recordRequest(ctx: RequestContext, now: number): void {
    const backend = ctx.backend;
    const slot = backend === undefined ? 0 : (this.#slotOf.get(backend) ?? 0);
    const cls = statusClassIndex(ctx.status);
    (this.#requests[(slot * METHOD_COUNT + methodIndex(ctx.req.method)) * CLASSES + cls] as number)++;
    const durationMs = now - ctx.startedAt;
    const seconds = durationMs / 1000;
    let b = 0;
    while (b < DURATION_BUCKETS.length && seconds > (DURATION_BUCKETS[b] as number)) b++;
    (this.#durationBuckets[slot * BUCKETS_PER_SLOT + b] as number)++;
    (this.#durationSum[slot] as number) += seconds;
    if (backend !== undefined) {
      // Every attempt: the failed ones (tried) and the last, unless the last is a failed one that found
      // no other backend to go to.
      const tried = ctx.tried;
      if (tried !== undefined) {
        for (let i = 0; i < tried.length; i++) (this.#selections[this.#slotOf.get(tried[i] as Backend) ?? 0] as number)++;
        if (!tried.includes(backend)) (this.#selections[slot] as number)++;
      } else (this.#selections[slot] as number)++;
    }
    this.#retries += ctx.retries;
    let refusal: RefusalKind = RefusalKind.none;
    const code = ctx.error?.code;
    if (code === 'unauthorized') {
      refusal = RefusalKind.unauthorized;
      const reason = ctx.authFailure === 'missing' ? 0 : ctx.authFailure === 'malformed' ? 1 : 2;
      (this.#authFailures[reason] as number)++;
    } else if (code === 'rate_limited') {
      refusal = RefusalKind.rateLimited;
      this.#rateLimited++;
    }
    this.stats?.record(now, slot, cls, durationMs, refusal);
  }

  /**
   * Counts a request that Node's HTTP parser refused (malformed, head too large or too slow): answered by
   * the server with `status` before any phase ran, so it has no method and no upstream.
   */
  recordRejected(status: number, now: number): void {
    if (!this.recording) return;
    const cls = statusClassIndex(status);
    (this.#requests[(METHOD_COUNT - 1) * CLASSES + cls] as number)++;
    (this.#durationBuckets[0] as number)++;
    this.stats?.record(now, 0, cls, 0, RefusalKind.none);
  }

  /** Cumulative counts since start. */
  totals(): Totals {
    return totalsOf(this.#counters());
  }

  /** The Prometheus text exposition. */
  scrape(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /**
   * This process's numbers as plain data, for a cluster primary (IPC). Copies the counters (a few hundred
   * numbers); the per-second history and the process metrics only when asked for, as they cost more.
   */
  async snapshot(parts: { stats: boolean; process: boolean }): Promise<MetricsSnapshot> {
    const counters = this.#counters();
    const upstreams = this.#upstreamGauges();
    const snapshot: MetricsSnapshot = {
      counters: {
        requests: Array.from(counters.requests),
        durationBuckets: Array.from(counters.durationBuckets),
        durationSum: Array.from(counters.durationSum),
        selections: Array.from(counters.selections),
        authFailures: Array.from(counters.authFailures),
        rateLimited: counters.rateLimited,
        retries: counters.retries,
        connectionsRefused: counters.connectionsRefused,
        ejections: Array.from(counters.ejections),
      },
      upstreams: {
        inflight: Array.from(upstreams.inflight),
        healthy: Array.from(upstreams.healthy),
        ejected: Array.from(upstreams.ejected),
        weight: this.#backends.map((b) => b.weight),
      },
      connectionsOpen: await this.#sources.connectionsOpen(),
    };
    if (parts.stats && this.stats !== undefined) {
      const mono = performance.now();
      // Monotonic second s began at wall time s * 1000 + (wall - mono): the primary lines the workers up by it.
      const offset = Date.now() - mono;
      snapshot.stats = this.stats.export(mono, (s) => Math.round((s * 1000 + offset) / 1000));
    }
    if (parts.process) snapshot.process = (await this.processRegistry.getMetricsAsJSON()) as unknown as MetricFamily[];
    return snapshot;
  }

  /** The live counters (typed arrays shared, not copied). */
  #counters(): Counters {
    return {
      requests: this.#requests,
      durationBuckets: this.#durationBuckets,
      durationSum: this.#durationSum,
      selections: this.#selections,
      authFailures: this.#authFailures,
      rateLimited: this.#rateLimited,
      retries: this.#retries,
      connectionsRefused: this.#sources.connectionsRefused(),
      ejections: this.#backends.map((b) => b.ejectionsTotal),
    };
  }

  #upstreamGauges(): UpstreamGauges {
    const now = this.#sources.clock();
    return {
      inflight: this.#backends.map((b) => b.inflight),
      healthy: this.#backends.map((b) => (b.healthy ? 1 : 0)),
      ejected: this.#backends.map((b) => (now < b.ejectedUntil ? 1 : 0)),
    };
  }
}

/**
 * Registers Tollgate's metric families in `registry`, read through `reader` when scraped. `upstreams` are
 * the upstream names in config order. Without `recording`, only the families read from live state are
 * registered (build info, upstream gauges, ejections, connections).
 */
export function registerProxyMetrics(registry: Registry, upstreams: readonly string[], reader: MetricsReader, options: { recording: boolean; version: string }): void {
  const registers = [registry];
  new Gauge({
    name: 'tollgate_build_info',
    help: 'Always 1; the version label says which Tollgate is running.',
    labelNames: ['version'],
    registers,
  }).set({ version: options.version }, 1);
  new Gauge({
    name: 'tollgate_upstream_inflight',
    help: 'Requests sent to the upstream and not yet finished.',
    labelNames: ['upstream'],
    registers,
    collect() {
      this.reset();
      const { inflight } = reader.upstreams();
      upstreams.forEach((upstream, i) => {
        const value = inflight[i];
        if (value !== undefined) this.set({ upstream }, value);
      });
    },
  });
  new Gauge({
    name: 'tollgate_upstream_healthy',
    help: 'Whether active health checks consider the upstream up (1) or down (0).',
    labelNames: ['upstream'],
    registers,
    collect() {
      this.reset();
      const { healthy } = reader.upstreams();
      upstreams.forEach((upstream, i) => {
        const value = healthy[i];
        if (value !== undefined) this.set({ upstream }, value);
      });
    },
  });
  new Gauge({
    name: 'tollgate_upstream_ejected',
    help: 'Whether passive health has ejected the upstream for now (1) or not (0).',
    labelNames: ['upstream'],
    registers,
    collect() {
      this.reset();
      const { ejected } = reader.upstreams();
      upstreams.forEach((upstream, i) => {
        const value = ejected[i];
        if (value !== undefined) this.set({ upstream }, value);
      });
    },
  });
  new Counter({
    name: 'tollgate_upstream_ejections_total',
    help: 'Times passive health (outlier detection) ejected the upstream.',
    labelNames: ['upstream'],
    registers,
    collect() {
      this.reset();
      const { ejections } = reader.counters();
      upstreams.forEach((upstream, i) => this.inc({ upstream }, ejections[i] ?? 0));
    },
  });
  new Gauge({
    name: 'tollgate_connections_open',
    help: 'Client connections open on the proxy listener.',
    registers,
    async collect() {
      this.set(await reader.connectionsOpen());
    },
  });
  new Counter({
    name: 'tollgate_connections_refused_total',
    help: 'Client connections closed right after accept because max_connections was reached.',
    registers,
    collect() {
      this.reset();
      this.inc(reader.counters().connectionsRefused);
    },
  });
  if (!options.recording) return;

  const labels = [NO_UPSTREAM, ...upstreams];
  new Counter({
    name: 'tollgate_requests_total',
    help: 'Finished requests by status class, method and upstream ("none": answered by Tollgate itself).',
    labelNames: ['status_class', 'method', 'upstream'],
    registers,
    collect() {
      this.reset();
      const { requests } = reader.counters();
      for (let slot = 0; slot < labels.length; slot++) {
        for (let m = 0; m < METHOD_COUNT; m++) {
          for (let c = 0; c < CLASSES; c++) {
            const n = requests[(slot * METHOD_COUNT + m) * CLASSES + c] as number;
            if (n > 0) this.inc({ status_class: STATUS_CLASSES[c] as string, method: METHODS[m] as string, upstream: labels[slot] as string }, n);
          }
        }
      }
    },
  });
  registry.registerMetric(new BucketHistogram('tollgate_request_duration_seconds', 'Time from the request arriving to the response finishing, by upstream.', labels, reader) as never);
  new Counter({
    name: 'tollgate_upstream_selections_total',
    help: 'Attempts sent to each upstream by the load balancer (retries included).',
    labelNames: ['upstream'],
    registers,
    collect() {
      this.reset();
      const { selections } = reader.counters();
      for (let slot = 1; slot < labels.length; slot++) this.inc({ upstream: labels[slot] as string }, selections[slot] as number);
    },
  });
  new Counter({
    name: 'tollgate_retries_total',
    help: 'Upstream attempts made after a first attempt failed.',
    registers,
    collect() {
      this.reset();
      this.inc(reader.counters().retries);
    },
  });
  new Counter({
    name: 'tollgate_auth_failures_total',
    help: 'Requests refused with 401, by why the credentials failed.',
    labelNames: ['reason'],
    registers,
    collect() {
      this.reset();
      const { authFailures } = reader.counters();
      AUTH_FAILURE_REASONS.forEach((reason, i) => this.inc({ reason }, authFailures[i] as number));
    },
  });
  new Counter({
    name: 'tollgate_ratelimit_rejections_total',
    help: 'Requests refused with 429 by the rate limit.',
    registers,
    collect() {
      this.reset();
      this.inc(reader.counters().rateLimited);
    },
  });
}

/**
 * A histogram whose bucket counts are kept in a typed array (ProxyMetrics) or a merged snapshot (a cluster
 * primary) and read only at scrape time.
 * It has the shape prom-client's Registry formats (name, help, type, get()), so it sits beside the
 * library's own metrics in the same exposition.
 */
class BucketHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  readonly name: string;
  readonly help: string;
  readonly #labels: readonly string[];
  readonly #reader: MetricsReader;

  constructor(name: string, help: string, labels: readonly string[], reader: MetricsReader) {
    this.name = name;
    this.help = help;
    this.#labels = labels;
    this.#reader = reader;
  }

  get(): { name: string; help: string; type: string; aggregator: string; values: { labels: Record<string, string | number>; value: number; metricName: string }[] } {
    const values: { labels: Record<string, string | number>; value: number; metricName: string }[] = [];
    const { durationBuckets: buckets, durationSum: sums } = this.#reader.counters();
    const width = BUCKETS_PER_SLOT;
    for (let slot = 0; slot < this.#labels.length; slot++) {
      const upstream = this.#labels[slot] as string;
      let cumulative = 0;
      for (let b = 0; b < width; b++) cumulative += buckets[slot * width + b] as number;
      if (cumulative === 0) continue; // upstreams without a finished request yet have no series
      let running = 0;
      for (let b = 0; b < width; b++) {
        running += buckets[slot * width + b] as number;
        const le = b < DURATION_BUCKETS.length ? (DURATION_BUCKETS[b] as number) : '+Inf';
        values.push({ labels: { le, upstream }, value: running, metricName: `${this.name}_bucket` });
      }
      values.push({ labels: { upstream }, value: sums[slot] as number, metricName: `${this.name}_sum` });
      values.push({ labels: { upstream }, value: cumulative, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void {
    // The counts belong to whoever the reader reads; a registry-wide reset does not clear them.
  }
}
