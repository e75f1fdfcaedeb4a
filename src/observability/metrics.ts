/**
 * Prometheus metrics (prom-client) and the numbers behind the dashboard, built once from the config.
 *
 * Per request, the logging phase adds to plain typed arrays indexed by upstream, method and status class
 * (a handful of increments; no label lookup, no allocation). prom-client reads those arrays only when
 * /metrics is scraped, in each metric's `collect()`. A prom-client `labels(...).inc()` per request hashes
 * the label set every time; keeping it off the request path is what makes metrics nearly free.
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { Backend } from '../balancing/backend.js';
import type { RequestContext } from '../proxy/context.js';
import type { Phases } from '../proxy/phases.js';
import type { Clock } from '../util/clock.js';
import { RefusalKind, RollingStats, STATUS_CLASSES, statusClassIndex } from './stats.js';

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

/**
 * The proxy's metrics. `phase` is the logging hook that records each finished request (undefined when
 * recording is off); `recordRejected` counts requests Node's parser refused before the pipeline saw them.
 */
export class ProxyMetrics {
  readonly registry = new Registry();
  readonly recording: boolean;
  /** Rolling per-second windows for the dashboard; undefined when recording is off. */
  readonly stats: RollingStats | undefined;
  readonly phase: Phases | undefined;
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
    this.#backends = sources.backends;
    this.#slots = sources.backends.length + 1;
    sources.backends.forEach((b, i) => this.#slotOf.set(b, i + 1));
    this.#requests = new Float64Array(this.#slots * METHOD_COUNT * CLASSES);
    this.#durationBuckets = new Float64Array(this.#slots * (DURATION_BUCKETS.length + 1));
    this.#durationSum = new Float64Array(this.#slots);
    this.#selections = new Float64Array(this.#slots);
    this.stats = this.recording ? new RollingStats(sources.backends.length, options.windowSeconds) : undefined;
    this.phase = this.recording ? { name: 'metrics', logging: (ctx) => this.recordRequest(ctx, performance.now()) } : undefined;
    // process_* and nodejs_* under their usual names, which ready-made Node.js dashboards expect.
    collectDefaultMetrics({ register: this.registry });
    this.#registerGauges(sources);
    if (this.recording) this.#registerRequestMetrics();
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
    (this.#durationBuckets[slot * (DURATION_BUCKETS.length + 1) + b] as number)++;
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
    const byClass = new Array<number>(CLASSES).fill(0);
    const byUpstream = new Array<number>(this.#slots).fill(0);
    let requests = 0;
    for (let slot = 0; slot < this.#slots; slot++) {
      for (let m = 0; m < METHOD_COUNT; m++) {
        for (let c = 0; c < CLASSES; c++) {
          const n = this.#requests[(slot * METHOD_COUNT + m) * CLASSES + c] as number;
          requests += n;
          (byClass[c] as number) += n;
          (byUpstream[slot] as number) += n;
        }
      }
    }
    let unauthorized = 0;
    for (const n of this.#authFailures) unauthorized += n;
    return { requests, byClass, unauthorized, rateLimited: this.#rateLimited, retries: this.#retries, byUpstream };
  }

  /** The Prometheus text exposition. */
  scrape(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  #registerGauges(sources: MetricsSources): void {
    const registers = [this.registry];
    const backends = sources.backends;
    new Gauge({
      name: 'tollgate_build_info',
      help: 'Always 1; the version label says which Tollgate is running.',
      labelNames: ['version'],
      registers,
    }).set({ version: sources.version }, 1);
    new Gauge({
      name: 'tollgate_upstream_inflight',
      help: 'Requests sent to the upstream and not yet finished.',
      labelNames: ['upstream'],
      registers,
      collect() {
        for (const b of backends) this.set({ upstream: b.name }, b.inflight);
      },
    });
    new Gauge({
      name: 'tollgate_upstream_healthy',
      help: 'Whether active health checks consider the upstream up (1) or down (0).',
      labelNames: ['upstream'],
      registers,
      collect() {
        for (const b of backends) this.set({ upstream: b.name }, b.healthy ? 1 : 0);
      },
    });
    new Gauge({
      name: 'tollgate_upstream_ejected',
      help: 'Whether passive health has ejected the upstream for now (1) or not (0).',
      labelNames: ['upstream'],
      registers,
      collect() {
        const now = sources.clock();
        for (const b of backends) this.set({ upstream: b.name }, now < b.ejectedUntil ? 1 : 0);
      },
    });
    new Counter({
      name: 'tollgate_upstream_ejections_total',
      help: 'Times passive health (outlier detection) ejected the upstream.',
      labelNames: ['upstream'],
      registers,
      collect() {
        this.reset();
        for (const b of backends) this.inc({ upstream: b.name }, b.ejectionsTotal);
      },
    });
    new Gauge({
      name: 'tollgate_connections_open',
      help: 'Client connections open on the proxy listener.',
      registers,
      async collect() {
        this.set(await sources.connectionsOpen());
      },
    });
    new Counter({
      name: 'tollgate_connections_refused_total',
      help: 'Client connections closed right after accept because max_connections was reached.',
      registers,
      collect() {
        this.reset();
        this.inc(sources.connectionsRefused());
      },
    });
  }

  #registerRequestMetrics(): void {
    const registers = [this.registry];
    const labels = this.upstreamLabels;
    const requests = this.#requests;
    const selections = this.#selections;
    const authFailures = this.#authFailures;
    const read = {
      rateLimited: () => this.#rateLimited,
      retries: () => this.#retries,
    };
    new Counter({
      name: 'tollgate_requests_total',
      help: 'Finished requests by status class, method and upstream ("none": answered by Tollgate itself).',
      labelNames: ['status_class', 'method', 'upstream'],
      registers,
      collect() {
        this.reset();
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
    this.registry.registerMetric(
      new BucketHistogram('tollgate_request_duration_seconds', 'Time from the request arriving to the response finishing, by upstream.', labels, this.#durationBuckets, this.#durationSum) as never,
    );
    new Counter({
      name: 'tollgate_upstream_selections_total',
      help: 'Attempts sent to each upstream by the load balancer (retries included).',
      labelNames: ['upstream'],
      registers,
      collect() {
        this.reset();
        for (let slot = 1; slot < labels.length; slot++) this.inc({ upstream: labels[slot] as string }, selections[slot] as number);
      },
    });
    new Counter({
      name: 'tollgate_retries_total',
      help: 'Upstream attempts made after a first attempt failed.',
      registers,
      collect() {
        this.reset();
        this.inc(read.retries());
      },
    });
    new Counter({
      name: 'tollgate_auth_failures_total',
      help: 'Requests refused with 401, by why the credentials failed.',
      labelNames: ['reason'],
      registers,
      collect() {
        this.reset();
        AUTH_FAILURE_REASONS.forEach((reason, i) => this.inc({ reason }, authFailures[i] as number));
      },
    });
    new Counter({
      name: 'tollgate_ratelimit_rejections_total',
      help: 'Requests refused with 429 by the rate limit.',
      registers,
      collect() {
        this.reset();
        this.inc(read.rateLimited());
      },
    });
  }
}

/**
 * A histogram whose bucket counts are kept by ProxyMetrics in a typed array and read only at scrape time.
 * It has the shape prom-client's Registry formats (name, help, type, get()), so it sits beside the
 * library's own metrics in the same exposition.
 */
class BucketHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  readonly name: string;
  readonly help: string;
  readonly #labels: readonly string[];
  readonly #buckets: Float64Array;
  readonly #sums: Float64Array;

  constructor(name: string, help: string, labels: readonly string[], buckets: Float64Array, sums: Float64Array) {
    this.name = name;
    this.help = help;
    this.#labels = labels;
    this.#buckets = buckets;
    this.#sums = sums;
  }

  get(): { name: string; help: string; type: string; aggregator: string; values: { labels: Record<string, string | number>; value: number; metricName: string }[] } {
    const values: { labels: Record<string, string | number>; value: number; metricName: string }[] = [];
    const width = DURATION_BUCKETS.length + 1;
    for (let slot = 0; slot < this.#labels.length; slot++) {
      const upstream = this.#labels[slot] as string;
      let cumulative = 0;
      for (let b = 0; b < width; b++) cumulative += this.#buckets[slot * width + b] as number;
      if (cumulative === 0) continue; // upstreams without a finished request yet have no series
      let running = 0;
      for (let b = 0; b < width; b++) {
        running += this.#buckets[slot * width + b] as number;
        const le = b < DURATION_BUCKETS.length ? (DURATION_BUCKETS[b] as number) : '+Inf';
        values.push({ labels: { le, upstream }, value: running, metricName: `${this.name}_bucket` });
      }
      values.push({ labels: { upstream }, value: this.#sums[slot] as number, metricName: `${this.name}_sum` });
      values.push({ labels: { upstream }, value: cumulative, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void {
    // The counts belong to ProxyMetrics; a registry-wide reset does not clear them.
  }
}
