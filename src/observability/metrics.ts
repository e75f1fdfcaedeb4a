/**
 * Prometheus metrics (prom-client) and the numbers behind the dashboard.
 *
 * Per request, the logging phase adds to plain typed arrays indexed by series (a route and an upstream),
 * method and status class (a handful of increments; no label lookup, no allocation). prom-client reads
 * those arrays only when /metrics is scraped, in each metric's `collect()`. A prom-client
 * `labels(...).inc()` per request hashes the label set every time; keeping it off the request path is what
 * makes metrics nearly free.
 *
 * Upstreams and routes are known by name, not by their place in a config: an upstream is its service and
 * its name, a route its name. Each gets a slot the first time the metrics meet it (the slot is then cached
 * per Backend and Route object, so a request finds its slots with two WeakMap lookups), and slots are never
 * freed: a config reload adds slots for new upstreams and routes, and those it removes keep their counts,
 * as Prometheus counters must never go backwards. The gauges read the backends in use now, which the
 * gateway names with `useBackends` at start and on every generation swap. Every set of counters carries the
 * names of its slots, so a cluster primary adds up workers by name (`addCounters`), whatever order each met
 * them in and whichever generation each runs.
 *
 * Rate-limit checks that a shared store (Redis, the cluster primary) could not make are counted the same
 * way, by store and kind, when they fail (`recordStoreErrors`, called by the stores): the stores themselves
 * are closed and made again by reloads, and the counts must outlive them.
 *
 * The metric definitions (`registerProxyMetrics`) read through a `MetricsReader`, so the same families with
 * the same names, labels and help come out of one process (reading ProxyMetrics' own arrays) and out of a
 * cluster primary (reading the sums of its workers' snapshots, src/admin/cluster.ts).
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { Backend } from '../balancing/backend.js';
import { SHARED_STORES, STORE_ERROR_KINDS, type SharedStore, type StoreErrorKind, type StoreStatus } from '../limits/store.js';
import type { RequestContext } from '../proxy/context.js';
import type { Phases } from '../proxy/phases.js';
import { WEBSOCKET_CLOSE_CAUSES, closeCauseIndex } from '../proxy/websocket.js';
import type { Route } from '../routing/route.js';
import type { Clock } from '../util/clock.js';
import { RefusalKind, RollingStats, STATUS_CLASSES, statusClassIndex, type StatsExport } from './stats.js';

/** The `method` label's values: the common methods, and `other` for the rest, so the label set is bounded. */
export const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'other'] as const;

/** The `protocol` label's values, in the order of their slots (RequestContext.protocol). */
export const PROTOCOLS = ['http/1.1', 'h2'] as const;

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
export const AUTH_FAILURE_REASONS = [
  'missing',
  'malformed',
  'invalid',
  'expired',
  'not_yet_valid',
  'bad_signature',
  'wrong_issuer',
  'wrong_audience',
  'wrong_algorithm',
  'unknown_key',
  'insufficient_scope',
  'busy',
  'forward_denied',
  'forward_unavailable',
] as const;
const INVALID_REASON = AUTH_FAILURE_REASONS.indexOf('invalid');

/** Slots of the store error counts: one per (store, kind), SHARED_STORES by STORE_ERROR_KINDS. */
const STORE_ERROR_SLOTS = SHARED_STORES.length * STORE_ERROR_KINDS.length;

/** The slot of a (store, kind) pair in the store error counts. */
export function storeErrorSlot(store: SharedStore, kind: StoreErrorKind): number {
  return SHARED_STORES.indexOf(store) * STORE_ERROR_KINDS.length + STORE_ERROR_KINDS.indexOf(kind);
}

/** The `upstream` and `service` labels of requests that no upstream answered (401, 429, 503 and the like). */
export const NO_UPSTREAM = 'none';

/** The `route` label of requests that no route matched (404 no_route, /health, requests Node refused). */
export const NO_ROUTE = 'none';

/** An upstream as the metrics know it: its service and its name (the `service` and `upstream` labels). */
export interface UpstreamId {
  readonly service: string;
  readonly name: string;
}

/** Slot 0 of every upstream table: the requests Tollgate answered itself. */
export const NONE_UPSTREAM: UpstreamId = Object.freeze({ service: NO_UPSTREAM, name: NO_UPSTREAM });

/** `service/name`: one string per upstream (neither name can contain a `/`). */
export function upstreamKey(id: UpstreamId): string {
  return `${id.service}/${id.name}`;
}

export interface MetricsSources {
  /** Client connections open now. */
  connectionsOpen(): Promise<number>;
  /** Connections refused since start (max_connections). */
  connectionsRefused(): number;
  /** The balancer's clock, for "ejected now". */
  clock: Clock;
  version: string;
  /** The rate-limit stores in use now, with their state (sent to a cluster primary in each snapshot). */
  stores?(): StoreStatus[];
  /** WebSockets open now. */
  websocketsOpen?(): number;
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
  /** The upstream of each slot of `byUpstream` (0: none). */
  upstreams: readonly UpstreamId[];
  /** Per upstream slot. */
  byUpstream: number[];
  /** The route name of each slot of `byRoute` (0: none). */
  routes: readonly string[];
  /** Per route slot. */
  byRoute: number[];
  /** Rate-limit checks a shared store could not make: [SHARED_STORES][STORE_ERROR_KINDS]. */
  storeErrors: number[];
}

const CLASSES = STATUS_CLASSES.length;
const METHOD_COUNT = METHODS.length;
/** One series' request counters: [protocol][method][status class]. */
const PER_PROTOCOL = METHOD_COUNT * CLASSES;
const PER_SERIES = PROTOCOLS.length * PER_PROTOCOL;
const BUCKETS_PER_SLOT = DURATION_BUCKETS.length + 1;

/**
 * Cumulative counters with the names of their slots. Upstream slot 0 is none, route slot 0 is none; a series
 * is one (route, upstream) pair that has had a request. Arrays may be longer than their slots (room to
 * grow): read `upstreams.length` upstream slots and `series.length / 2` series.
 */
export interface Counters {
  /** The upstream of each upstream slot. */
  readonly upstreams: readonly UpstreamId[];
  /** The route name of each route slot. */
  readonly routes: readonly string[];
  /** [series]: route slot, then upstream slot. */
  readonly series: ArrayLike<number>;
  /** [series][method][class] */
  readonly requests: ArrayLike<number>;
  /** [series][bucket], the last bucket being +Inf; per bucket, not cumulative. */
  readonly durationBuckets: ArrayLike<number>;
  /** [series]: seconds. */
  readonly durationSum: ArrayLike<number>;
  /** [upstream slot]: attempts sent to each upstream (retries included). */
  readonly selections: ArrayLike<number>;
  /** [upstream slot]: passive-health ejections. */
  readonly ejections: ArrayLike<number>;
  /** AUTH_FAILURE_REASONS order. */
  readonly authFailures: ArrayLike<number>;
  /** [SHARED_STORES][STORE_ERROR_KINDS]: rate-limit checks that failed. */
  readonly storeErrors: ArrayLike<number>;
  /** WEBSOCKET_CLOSE_CAUSES order: WebSockets closed, by why. */
  readonly websocketClosed: ArrayLike<number>;
  /** JWKS fetches that failed (the cached keys stayed in use). */
  readonly jwksFailures: number;
  readonly rateLimited: number;
  readonly retries: number;
  readonly connectionsRefused: number;
}

/**
 * Counters as plain numbers and arrays, each exactly as long as its slots: what a cluster worker sends over
 * IPC, and what a primary adds up.
 */
export interface CounterSnapshot {
  upstreams: UpstreamId[];
  routes: string[];
  series: number[];
  requests: number[];
  durationBuckets: number[];
  durationSum: number[];
  selections: number[];
  ejections: number[];
  authFailures: number[];
  storeErrors: number[];
  websocketClosed: number[];
  jwksFailures: number;
  rateLimited: number;
  retries: number;
  connectionsRefused: number;
}

/** One upstream's gauges; an upstream not in use now has none. */
export interface UpstreamGauge extends UpstreamId {
  readonly inflight: number;
  /** 1 while active health checks say up, else 0. */
  readonly healthy: number;
  /** 1 while passive health has the upstream ejected, else 0. */
  readonly ejected: number;
}

/** An upstream in use now, as a worker reports it to its primary (and the status document shows it). */
export interface LiveUpstream extends UpstreamGauge {
  /** `host:port`. */
  readonly address: string;
  /** The effective weight (slow start). */
  readonly weight: number;
}

/** What the Prometheus metrics read when scraped (see the file comment). */
export interface MetricsReader {
  counters(): Counters;
  /** The upstreams in use now. */
  upstreams(): readonly UpstreamGauge[];
  connectionsOpen(): Promise<number>;
  /** WebSockets open now. */
  websocketsOpen(): number;
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
  /** The upstreams this process uses now (its current generation's), with their live state. */
  upstreams: LiveUpstream[];
  connectionsOpen: number;
  websocketsOpen: number;
  /** The rate-limit stores this process uses now, with their state. */
  stores: StoreStatus[];
  /** The per-second history, in epoch seconds, upstreams in the slots of `counters.upstreams` (asked for by the status document only). */
  stats?: StatsExport;
  /** prom-client's process_* and nodejs_* families (asked for by /metrics only). */
  process?: MetricFamily[];
}

/**
 * Slot lookups into a CounterSnapshot, by name; adds the slots it does not have yet. Built per merge, so a
 * snapshot stays plain data.
 */
class SnapshotSlots {
  readonly #into: CounterSnapshot;
  readonly #upstreams = new Map<string, number>();
  readonly #routes = new Map<string, number>();
  readonly #series = new Map<number, number>();

  constructor(into: CounterSnapshot) {
    this.#into = into;
    into.upstreams.forEach((u, i) => this.#upstreams.set(upstreamKey(u), i));
    into.routes.forEach((r, i) => this.#routes.set(r, i));
    for (let p = 0; p * 2 + 1 < into.series.length; p++) this.#series.set(pairKey(into.series[p * 2] as number, into.series[p * 2 + 1] as number), p);
  }

  upstream(id: UpstreamId): number {
    const key = upstreamKey(id);
    let slot = this.#upstreams.get(key);
    if (slot === undefined) {
      const into = this.#into;
      slot = into.upstreams.length;
      into.upstreams.push({ service: id.service, name: id.name });
      into.selections[slot] = 0;
      into.ejections[slot] = 0;
      this.#upstreams.set(key, slot);
    }
    return slot;
  }

  route(name: string): number {
    let slot = this.#routes.get(name);
    if (slot === undefined) {
      slot = this.#into.routes.length;
      this.#into.routes.push(name);
      this.#routes.set(name, slot);
    }
    return slot;
  }

  series(route: number, upstream: number): number {
    const key = pairKey(route, upstream);
    let p = this.#series.get(key);
    if (p === undefined) {
      const into = this.#into;
      p = into.series.length / 2;
      into.series.push(route, upstream);
      for (let i = 0; i < PER_SERIES; i++) into.requests.push(0);
      for (let i = 0; i < BUCKETS_PER_SLOT; i++) into.durationBuckets.push(0);
      into.durationSum.push(0);
      this.#series.set(key, p);
    }
    return p;
  }
}

/** One number per (route slot, upstream slot) pair (slots stay far below 2^21). */
function pairKey(route: number, upstream: number): number {
  return route * 2_097_152 + upstream;
}

/** All-zero counters with slots for `upstreams` and `routes` (after the none slots), and no series yet. */
export function emptyCounters(upstreams: readonly UpstreamId[] = [], routes: readonly string[] = []): CounterSnapshot {
  const empty: CounterSnapshot = {
    upstreams: [NONE_UPSTREAM],
    routes: [NO_ROUTE],
    series: [],
    requests: [],
    durationBuckets: [],
    durationSum: [],
    selections: [0],
    ejections: [0],
    authFailures: new Array<number>(AUTH_FAILURE_REASONS.length).fill(0),
    storeErrors: new Array<number>(STORE_ERROR_SLOTS).fill(0),
    websocketClosed: new Array<number>(WEBSOCKET_CLOSE_CAUSES.length).fill(0),
    jwksFailures: 0,
    rateLimited: 0,
    retries: 0,
    connectionsRefused: 0,
  };
  const slots = new SnapshotSlots(empty);
  for (const u of upstreams) slots.upstream(u);
  for (const r of routes) slots.route(r);
  return empty;
}

const isCount = (n: unknown): n is number => typeof n === 'number' && Number.isFinite(n);

/**
 * Adds `from` into `into` by name: each upstream, route and series of `from` goes to the slot of the same
 * name in `into`, which gains the slots it did not have. Slots of `from` out of range are skipped.
 */
export function addCounters(into: CounterSnapshot, from: Counters): void {
  const slots = new SnapshotSlots(into);
  const upstreams = from.upstreams.map((u) => slots.upstream(u));
  const routes = from.routes.map((r) => slots.route(r));
  for (let s = 0; s < upstreams.length; s++) {
    const to = upstreams[s] as number;
    const selections = from.selections[s];
    const ejections = from.ejections[s];
    if (isCount(selections)) (into.selections[to] as number) += selections;
    if (isCount(ejections)) (into.ejections[to] as number) += ejections;
  }
  const series = Math.floor(from.series.length / 2);
  for (let p = 0; p < series; p++) {
    const route = routes[from.series[p * 2] as number];
    const upstream = upstreams[from.series[p * 2 + 1] as number];
    if (route === undefined || upstream === undefined) continue;
    const to = slots.series(route, upstream);
    for (let i = 0; i < PER_SERIES; i++) {
      const n = from.requests[p * PER_SERIES + i];
      if (isCount(n)) (into.requests[to * PER_SERIES + i] as number) += n;
    }
    for (let b = 0; b < BUCKETS_PER_SLOT; b++) {
      const n = from.durationBuckets[p * BUCKETS_PER_SLOT + b];
      if (isCount(n)) (into.durationBuckets[to * BUCKETS_PER_SLOT + b] as number) += n;
    }
    const sum = from.durationSum[p];
    if (isCount(sum)) (into.durationSum[to] as number) += sum;
  }
  for (let i = 0; i < into.authFailures.length; i++) {
    const n = from.authFailures[i];
    if (isCount(n)) (into.authFailures[i] as number) += n;
  }
  for (let i = 0; i < into.storeErrors.length; i++) {
    const n = from.storeErrors[i];
    if (isCount(n)) (into.storeErrors[i] as number) += n;
  }
  for (let i = 0; i < into.websocketClosed.length; i++) {
    const n = from.websocketClosed[i];
    if (isCount(n)) (into.websocketClosed[i] as number) += n;
  }
  // A worker of an older version sends no count.
  if (isCount(from.jwksFailures)) into.jwksFailures += from.jwksFailures;
  into.rateLimited += from.rateLimited;
  into.retries += from.retries;
  into.connectionsRefused += from.connectionsRefused;
}

/** Cumulative totals (the dashboard's) of a set of counters. */
export function totalsOf(counters: Counters): Totals {
  const byClass = new Array<number>(CLASSES).fill(0);
  const byUpstream = new Array<number>(counters.upstreams.length).fill(0);
  const byRoute = new Array<number>(counters.routes.length).fill(0);
  let requests = 0;
  const series = Math.floor(counters.series.length / 2);
  for (let p = 0; p < series; p++) {
    const route = counters.series[p * 2] as number;
    const upstream = counters.series[p * 2 + 1] as number;
    let n = 0;
    for (let c = 0; c < CLASSES; c++) {
      let inClass = 0;
      for (let m = 0; m < METHOD_COUNT * PROTOCOLS.length; m++) inClass += counters.requests[p * PER_SERIES + m * CLASSES + c] as number;
      (byClass[c] as number) += inClass;
      n += inClass;
    }
    requests += n;
    if (upstream < byUpstream.length) (byUpstream[upstream] as number) += n;
    if (route < byRoute.length) (byRoute[route] as number) += n;
  }
  let unauthorized = 0;
  for (let i = 0; i < counters.authFailures.length; i++) unauthorized += counters.authFailures[i] as number;
  return {
    requests,
    byClass,
    unauthorized,
    rateLimited: counters.rateLimited,
    retries: counters.retries,
    upstreams: counters.upstreams,
    byUpstream,
    routes: counters.routes,
    byRoute,
    storeErrors: Array.from(counters.storeErrors),
  };
}

/** Room for this many series and upstream slots at first; the arrays double when full. */
const INITIAL_SERIES = 16;
const INITIAL_UPSTREAMS = 8;

function grown(array: Float64Array<ArrayBuffer>, length: number): Float64Array<ArrayBuffer> {
  const out = new Float64Array(length);
  out.set(array);
  return out;
}

/**
 * The proxy's metrics. `phase` is the logging hook that records each finished request (undefined when
 * recording is off); `recordRejected` counts requests Node's parser refused before the pipeline saw them;
 * `useBackends` says which backends are in use (at start and on every generation swap).
 */
export class ProxyMetrics {
  /** Everything /metrics shows: the process metrics, then Tollgate's. */
  readonly registry: Registry;
  /** prom-client's process_* and nodejs_* metrics alone (what a cluster worker sends its primary). */
  readonly processRegistry = new Registry();
  readonly recording: boolean;
  /** Rolling per-second windows for the dashboard (upstreams in this object's slots); undefined when recording is off. */
  readonly stats: RollingStats | undefined;
  readonly phase: Phases | undefined;
  readonly #sources: MetricsSources;
  /** The backends in use now: what the gauges read. */
  #backends: readonly Backend[] = [];
  /** Upstream slots (0: none), never freed. */
  readonly #upstreams: UpstreamId[] = [NONE_UPSTREAM];
  /** upstreamKey → slot. */
  readonly #upstreamSlots = new Map<string, number>([[upstreamKey(NONE_UPSTREAM), 0]]);
  /** Backend → its slot, looked up by name once per Backend object. */
  readonly #slotOf = new WeakMap<Backend, number>();
  /** Route slots (0: none), never freed. */
  readonly #routes: string[] = [NO_ROUTE];
  /** Route name → slot. */
  readonly #routeSlots = new Map<string, number>([[NO_ROUTE, 0]]);
  /** Route → its slot, looked up by name once per Route object. */
  readonly #routeSlotOf = new WeakMap<Route, number>();
  /** [series]: route slot, upstream slot. */
  readonly #series: number[] = [];
  /** [route slot][upstream slot] → series; undefined until that pair's first request. */
  readonly #seriesOf: (number | undefined)[][] = [[]];
  /** [series][method][class] */
  #requests = new Float64Array(INITIAL_SERIES * PER_SERIES);
  /** [series][bucket], the last bucket being +Inf; per bucket, not cumulative. */
  #durationBuckets = new Float64Array(INITIAL_SERIES * BUCKETS_PER_SLOT);
  /** [series] */
  #durationSum = new Float64Array(INITIAL_SERIES);
  /** [upstream slot]: attempts sent to each upstream (retries included). */
  #selections = new Float64Array(INITIAL_UPSTREAMS);
  /**
   * [upstream slot]: what to add to the ejection counts of the backends in use (Backend.ejectionsTotal) so
   * that each slot's count carries on across a swap: a removed backend's count stays here.
   */
  #ejectionBase: number[] = [0];
  readonly #authFailures = new Float64Array(AUTH_FAILURE_REASONS.length);
  /** [SHARED_STORES][STORE_ERROR_KINDS], counted as checks fail, so stores made and closed by reloads lose none. */
  readonly #storeErrors = new Float64Array(STORE_ERROR_SLOTS);
  readonly #websocketClosed = new Float64Array(WEBSOCKET_CLOSE_CAUSES.length);
  #rateLimited = 0;
  #jwksFailures = 0;
  #retries = 0;

  constructor(sources: MetricsSources, options: MetricsOptions) {
    this.recording = options.recording;
    this.#sources = sources;
    this.stats = this.recording ? new RollingStats(0, options.windowSeconds) : undefined;
    this.phase = this.recording ? { name: 'metrics', logging: (ctx) => this.recordRequest(ctx, performance.now()) } : undefined;
    // process_* and nodejs_* under their usual names, which ready-made Node.js dashboards expect.
    collectDefaultMetrics({ register: this.processRegistry });
    const own = new Registry();
    const reader: MetricsReader = {
      counters: () => this.#counters(),
      upstreams: () => this.#live(),
      connectionsOpen: () => sources.connectionsOpen(),
      websocketsOpen: () => sources.websocketsOpen?.() ?? 0,
    };
    registerProxyMetrics(own, reader, { recording: this.recording, version: sources.version });
    this.registry = Registry.merge([this.processRegistry, own]);
  }

  /**
   * The backends in use from now on (every service's, of the current generation): the gauges read them.
   * Upstreams met for the first time get a slot; the counts of those no longer in use stay. An ejection
   * counted by a removed backend after this call (a request of the old generation finishing) is not seen.
   */
  useBackends(backends: readonly Backend[]): void {
    const known = this.#upstreams.length;
    for (const b of backends) this.#upstreamSlot(b);
    // An upstream's ejection count carries on from what its slot showed: a backend that took over the
    // state of the one it replaces brings that count with it, one that comes back anew starts from zero.
    const base = this.#ejections();
    this.#backends = [...backends];
    for (const b of this.#backends) {
      const slot = this.#upstreamSlot(b);
      if (slot < known) (base[slot] as number) -= b.ejectionsTotal;
    }
    this.#ejectionBase = base;
  }

  /** The upstream of each slot (0: none), in the order they got their slots. */
  get upstreams(): readonly UpstreamId[] {
    return this.#upstreams;
  }

  /** The route name of each slot (0: none), in the order they got their slots. */
  get routes(): readonly string[] {
    return this.#routes;
  }

  /** Records one finished request (the logging phase). `now` is performance.now(). */
  recordRequest(ctx: RequestContext, now: number): void {
    const backend = ctx.backend;
    const slot = backend === undefined ? 0 : this.#upstreamSlot(backend);
    const route = ctx.route;
    const routeSlot = route === undefined ? 0 : (this.#routeSlotOf.get(route) ?? this.#addRoute(route));
    const series = (this.#seriesOf[routeSlot] as (number | undefined)[])[slot] ?? this.#addSeries(routeSlot, slot);
    // A gRPC call Tollgate refused or failed went out as HTTP 200 with a grpc-status: it counts by its error's
    // HTTP status, as an HTTP client's would.
    const cls = statusClassIndex(ctx.grpc && ctx.error !== undefined && ctx.grpcStatus !== -1 ? ctx.error.status : ctx.status);
    const protocol = ctx.protocol === 'h2' ? PER_PROTOCOL : 0;
    (this.#requests[series * PER_SERIES + protocol + methodIndex(ctx.req.method) * CLASSES + cls] as number)++;
    const webSocket = ctx.webSocket;
    // A WebSocket's request takes as long as its handshake: its lifetime would swamp the latency figures.
    const durationMs = (webSocket === undefined || webSocket.openedAt < 0 ? now : webSocket.openedAt) - ctx.startedAt;
    if (webSocket?.closedBy !== undefined) (this.#websocketClosed[closeCauseIndex(webSocket.closedBy)] as number)++;
    const seconds = durationMs / 1000;
    let b = 0;
    while (b < DURATION_BUCKETS.length && seconds > (DURATION_BUCKETS[b] as number)) b++;
    (this.#durationBuckets[series * BUCKETS_PER_SLOT + b] as number)++;
    (this.#durationSum[series] as number) += seconds;
    if (backend !== undefined) {
      // Every attempt: the failed ones (tried) and the last, unless the last is a failed one that found
      // no other backend to go to.
      const tried = ctx.tried;
      if (tried !== undefined) {
        for (let i = 0; i < tried.length; i++) (this.#selections[this.#upstreamSlot(tried[i] as Backend)] as number)++;
        if (!tried.includes(backend)) (this.#selections[slot] as number)++;
      } else (this.#selections[slot] as number)++;
    }
    this.#retries += ctx.retries;
    let refusal: RefusalKind = RefusalKind.none;
    const code = ctx.error?.code;
    if (code === 'unauthorized' || code === 'forbidden' || code === 'auth_unavailable') {
      // A refused client certificate (403) is an authentication failure like a bad token.
      refusal = RefusalKind.unauthorized;
      const found = (AUTH_FAILURE_REASONS as readonly (string | undefined)[]).indexOf(ctx.authFailure);
      const reason = found === -1 ? INVALID_REASON : found;
      (this.#authFailures[reason] as number)++;
    } else if (code === 'rate_limited') {
      refusal = RefusalKind.rateLimited;
      this.#rateLimited++;
    }
    this.stats?.record(now, slot, cls, durationMs, refusal);
  }

  /**
   * Counts a request that Node's HTTP parser refused (malformed, head too large or too slow): answered by
   * the server with `status` before any phase ran, so it has no method, no route and no upstream. Only
   * HTTP/1.1 has such a parser: HTTP/2 refusals are stream errors, never responses.
   */
  recordRejected(status: number, now: number): void {
    if (!this.recording) return;
    const series = (this.#seriesOf[0] as (number | undefined)[])[0] ?? this.#addSeries(0, 0);
    const cls = statusClassIndex(status);
    (this.#requests[series * PER_SERIES + (METHOD_COUNT - 1) * CLASSES + cls] as number)++;
    (this.#durationBuckets[series * BUCKETS_PER_SLOT] as number)++;
    this.stats?.record(now, 0, cls, 0, RefusalKind.none);
  }

  /**
   * Counts `count` rate-limit checks that `store` could not make, for `kind`: called by the store as they
   * fail (never per request otherwise), whether or not per-request recording is on.
   */
  /** A JWKS fetch failed (called by the JWKS cache, whether or not per-request recording is on). */
  recordJwksFailure(): void {
    this.#jwksFailures++;
  }

  recordStoreErrors(store: SharedStore, kind: StoreErrorKind, count: number): void {
    (this.#storeErrors[storeErrorSlot(store, kind)] as number) += count;
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
    const series = this.#series.length / 2;
    const slots = this.#upstreams.length;
    const snapshot: MetricsSnapshot = {
      counters: {
        upstreams: this.#upstreams.map((u) => ({ service: u.service, name: u.name })),
        routes: [...this.#routes],
        series: [...this.#series],
        requests: Array.from(this.#requests.subarray(0, series * PER_SERIES)),
        durationBuckets: Array.from(this.#durationBuckets.subarray(0, series * BUCKETS_PER_SLOT)),
        durationSum: Array.from(this.#durationSum.subarray(0, series)),
        selections: Array.from(this.#selections.subarray(0, slots)),
        ejections: this.#ejections(),
        authFailures: Array.from(this.#authFailures),
        storeErrors: Array.from(this.#storeErrors),
        websocketClosed: Array.from(this.#websocketClosed),
        jwksFailures: this.#jwksFailures,
        rateLimited: this.#rateLimited,
        retries: this.#retries,
        connectionsRefused: this.#sources.connectionsRefused(),
      },
      upstreams: this.#live(),
      connectionsOpen: 0,
      websocketsOpen: this.#sources.websocketsOpen?.() ?? 0,
      stores: this.#sources.stores?.() ?? [],
    };
    // Taken with the counters, before any await, so its upstream slots are those `counters.upstreams` names.
    if (parts.stats && this.stats !== undefined) {
      const mono = performance.now();
      // Monotonic second s began at wall time s * 1000 + (wall - mono): the primary lines the workers up by it.
      const offset = Date.now() - mono;
      snapshot.stats = this.stats.export(mono, (s) => Math.round((s * 1000 + offset) / 1000));
    }
    snapshot.connectionsOpen = await this.#sources.connectionsOpen();
    if (parts.process) snapshot.process = (await this.processRegistry.getMetricsAsJSON()) as unknown as MetricFamily[];
    return snapshot;
  }

  /** The live counters (typed arrays shared, not copied). */
  #counters(): Counters {
    return {
      upstreams: this.#upstreams,
      routes: this.#routes,
      series: this.#series,
      requests: this.#requests,
      durationBuckets: this.#durationBuckets,
      durationSum: this.#durationSum,
      selections: this.#selections,
      ejections: this.#ejections(),
      authFailures: this.#authFailures,
      storeErrors: this.#storeErrors,
      websocketClosed: this.#websocketClosed,
      jwksFailures: this.#jwksFailures,
      rateLimited: this.#rateLimited,
      retries: this.#retries,
      connectionsRefused: this.#sources.connectionsRefused(),
    };
  }

  /** Ejections per upstream slot: the base plus the counts of the backends in use. */
  #ejections(): number[] {
    const out = this.#ejectionBase.slice();
    for (const b of this.#backends) (out[this.#upstreamSlot(b)] as number) += b.ejectionsTotal;
    return out;
  }

  /** The backends in use, with their live state. */
  #live(): LiveUpstream[] {
    const now = this.#sources.clock();
    return this.#backends.map((b) => ({
      service: b.service,
      name: b.name,
      address: b.address,
      inflight: b.inflight,
      healthy: b.healthy ? 1 : 0,
      ejected: now < b.ejectedUntil ? 1 : 0,
      weight: b.weight,
    }));
  }

  /** A backend's upstream slot: cached per Backend object; the first time, found (or made) by name. */
  #upstreamSlot(backend: Backend): number {
    const cached = this.#slotOf.get(backend);
    if (cached !== undefined) return cached;
    const id: UpstreamId = { service: backend.service, name: backend.name };
    const key = upstreamKey(id);
    let slot = this.#upstreamSlots.get(key);
    if (slot === undefined) {
      slot = this.#upstreams.length;
      this.#upstreams.push(id);
      this.#upstreamSlots.set(key, slot);
      this.#ejectionBase.push(0);
      if (slot >= this.#selections.length) this.#selections = grown(this.#selections, this.#selections.length * 2);
      this.stats?.growUpstreams(this.#upstreams.length);
    }
    this.#slotOf.set(backend, slot);
    return slot;
  }

  /** A route's slot, the first time a Route object is met: found (or made) by its name. */
  #addRoute(route: Route): number {
    let slot = this.#routeSlots.get(route.name);
    if (slot === undefined) {
      slot = this.#routes.length;
      this.#routes.push(route.name);
      this.#routeSlots.set(route.name, slot);
      this.#seriesOf.push([]);
    }
    this.#routeSlotOf.set(route, slot);
    return slot;
  }

  /** The first request of a (route, upstream) pair: a series of its own, the arrays grown if full. */
  #addSeries(route: number, upstream: number): number {
    const series = this.#series.length / 2;
    this.#series.push(route, upstream);
    (this.#seriesOf[route] as (number | undefined)[])[upstream] = series;
    if (series >= this.#durationSum.length) {
      const room = this.#durationSum.length * 2;
      this.#requests = grown(this.#requests, room * PER_SERIES);
      this.#durationBuckets = grown(this.#durationBuckets, room * BUCKETS_PER_SLOT);
      this.#durationSum = grown(this.#durationSum, room);
    }
    return series;
  }
}

/**
 * Registers Tollgate's metric families in `registry`, read through `reader` when scraped; the labels come
 * from the names the counters and gauges carry. Without `recording`, only the families read from live
 * state are registered (build info, upstream gauges, ejections, connections).
 */
export function registerProxyMetrics(registry: Registry, reader: MetricsReader, options: { recording: boolean; version: string }): void {
  const registers = [registry];
  new Gauge({
    name: 'tollgate_build_info',
    help: 'Always 1; the version label says which Tollgate is running.',
    labelNames: ['version'],
    registers,
  }).set({ version: options.version }, 1);
  const upstreamGauge = (name: string, help: string, value: (u: UpstreamGauge) => number): void => {
    new Gauge({
      name,
      help,
      labelNames: ['service', 'upstream'],
      registers,
      collect() {
        this.reset();
        for (const u of reader.upstreams()) this.set({ service: u.service, upstream: u.name }, value(u));
      },
    });
  };
  upstreamGauge('tollgate_upstream_inflight', 'Requests sent to the upstream and not yet finished.', (u) => u.inflight);
  upstreamGauge('tollgate_upstream_healthy', 'Whether active health checks consider the upstream up (1) or down (0).', (u) => u.healthy);
  upstreamGauge('tollgate_upstream_ejected', 'Whether passive health has ejected the upstream for now (1) or not (0).', (u) => u.ejected);
  new Counter({
    name: 'tollgate_upstream_ejections_total',
    help: 'Times passive health (outlier detection) ejected the upstream.',
    labelNames: ['service', 'upstream'],
    registers,
    collect() {
      this.reset();
      const { upstreams, ejections } = reader.counters();
      for (let slot = 1; slot < upstreams.length; slot++) {
        const u = upstreams[slot] as UpstreamId;
        this.inc({ service: u.service, upstream: u.name }, ejections[slot] ?? 0);
      }
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
  new Gauge({
    name: 'tollgate_websocket_connections',
    help: 'WebSockets open through the proxy (past the 101, until either side closes).',
    registers,
    collect() {
      this.set(reader.websocketsOpen());
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
  // Counted as checks fail, not per request: kept with metrics.enabled false, as the alert on an outage
  // that turns rate limiting off (on_error: allow) matters most.
  new Counter({
    name: 'tollgate_ratelimit_store_errors_total',
    help: 'Rate-limit checks a shared store could not make (the request followed on_error), by store (redis; ipc: the cluster primary) and kind (timeout, unavailable, error).',
    labelNames: ['store', 'kind'],
    registers,
    collect() {
      this.reset();
      const { storeErrors } = reader.counters();
      for (const store of SHARED_STORES) {
        for (const kind of STORE_ERROR_KINDS) this.inc({ store, kind }, storeErrors[storeErrorSlot(store, kind)] ?? 0);
      }
    },
  });
  new Counter({
    name: 'tollgate_jwks_fetch_failures_total',
    help: 'JWKS fetches that failed (jwt auth); the keys already held stayed in use.',
    registers,
    collect() {
      this.reset();
      this.inc(reader.counters().jwksFailures);
    },
  });
  if (!options.recording) return;

  new Counter({
    name: 'tollgate_requests_total',
    help: 'Finished requests by status class, method, protocol, route and upstream ("none": no route matched / answered by Tollgate itself).',
    labelNames: ['status_class', 'method', 'protocol', 'route', 'service', 'upstream'],
    registers,
    collect() {
      this.reset();
      const { upstreams, routes, series, requests } = reader.counters();
      for (let p = 0; p * 2 + 1 < series.length; p++) {
        const route = routes[series[p * 2] as number] as string;
        const u = upstreams[series[p * 2 + 1] as number] as UpstreamId;
        for (let v = 0; v < PROTOCOLS.length; v++) {
          const protocol = PROTOCOLS[v] as string;
          for (let m = 0; m < METHOD_COUNT; m++) {
            for (let c = 0; c < CLASSES; c++) {
              const n = requests[p * PER_SERIES + v * PER_PROTOCOL + m * CLASSES + c] as number;
              if (n > 0) this.inc({ status_class: STATUS_CLASSES[c] as string, method: METHODS[m] as string, protocol, route, service: u.service, upstream: u.name }, n);
            }
          }
        }
      }
    },
  });
  registry.registerMetric(new BucketHistogram('tollgate_request_duration_seconds', 'Time from the request arriving to the response finishing, by route and upstream.', reader) as never);
  new Counter({
    name: 'tollgate_upstream_selections_total',
    help: 'Attempts sent to each upstream by the load balancer (retries included).',
    labelNames: ['service', 'upstream'],
    registers,
    collect() {
      this.reset();
      const { upstreams, selections } = reader.counters();
      for (let slot = 1; slot < upstreams.length; slot++) {
        const u = upstreams[slot] as UpstreamId;
        this.inc({ service: u.service, upstream: u.name }, selections[slot] ?? 0);
      }
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
    name: 'tollgate_websocket_closed_total',
    help: 'WebSockets closed, by cause: client_closed, client_reset, upstream_closed, upstream_reset, idle_timeout, shutdown.',
    labelNames: ['cause'],
    registers,
    collect() {
      this.reset();
      const { websocketClosed } = reader.counters();
      WEBSOCKET_CLOSE_CAUSES.forEach((cause, i) => this.inc({ cause }, websocketClosed[i] ?? 0));
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

type HistogramValue = { labels: Record<string, string | number>; value: number; metricName: string };

/**
 * A histogram whose bucket counts are kept in a typed array (ProxyMetrics) or a merged snapshot (a cluster
 * primary) and read only at scrape time, one series per (route, upstream) pair that has had a request.
 * It has the shape prom-client's Registry formats (name, help, type, get()), so it sits beside the
 * library's own metrics in the same exposition.
 */
class BucketHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  readonly name: string;
  readonly help: string;
  readonly #reader: MetricsReader;

  constructor(name: string, help: string, reader: MetricsReader) {
    this.name = name;
    this.help = help;
    this.#reader = reader;
  }

  get(): { name: string; help: string; type: string; aggregator: string; values: HistogramValue[] } {
    const values: HistogramValue[] = [];
    const { upstreams, routes, series, durationBuckets: buckets, durationSum: sums } = this.#reader.counters();
    const width = BUCKETS_PER_SLOT;
    for (let p = 0; p * 2 + 1 < series.length; p++) {
      let cumulative = 0;
      for (let b = 0; b < width; b++) cumulative += buckets[p * width + b] as number;
      if (cumulative === 0) continue;
      const route = routes[series[p * 2] as number] as string;
      const u = upstreams[series[p * 2 + 1] as number] as UpstreamId;
      const labels = { route, service: u.service, upstream: u.name };
      let running = 0;
      for (let b = 0; b < width; b++) {
        running += buckets[p * width + b] as number;
        const le = b < DURATION_BUCKETS.length ? (DURATION_BUCKETS[b] as number) : '+Inf';
        values.push({ labels: { le, ...labels }, value: running, metricName: `${this.name}_bucket` });
      }
      values.push({ labels, value: sums[p] as number, metricName: `${this.name}_sum` });
      values.push({ labels, value: cumulative, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void {
    // The counts belong to whoever the reader reads; a registry-wide reset does not clear them.
  }
}
