/**
 * The numbers the dashboard shows, as one JSON document: `/api/status` answers it and `/api/events` sends
 * it once a second. Built on demand from the metrics, the rolling windows, the balancer's live state and
 * the topology (services and routes) serving now; nothing here runs per proxied request. Upstreams are
 * matched to their counts by service and name, never by position, so the document stays right across a
 * config reload.
 */
import type { Backend } from '../balancing/backend.js';
import { routesOf, servicesOf } from '../config/resolve.js';
import type { Config } from '../config/schema.js';
import { SHARED_STORES, STORE_ERROR_KINDS, type SharedStore, type StoreErrorKind, type StoreStatus } from '../limits/store.js';
import { storeErrorSlot, upstreamKey, type ProxyMetrics, type Totals } from '../observability/metrics.js';
import { STATUS_CLASSES, type Series, type WindowSummary } from '../observability/stats.js';
import type { Clock } from '../util/clock.js';

/** Seconds of history in `series` and in the `recent` figures. */
export const RECENT_SECONDS = 60;
/** Seconds over which `current` latency quantiles are taken. */
export const CURRENT_SECONDS = 10;

type ByClass = Record<(typeof STATUS_CLASSES)[number], number>;

export interface UpstreamStatus {
  /** The service (upstream group) it belongs to. */
  service: string;
  name: string;
  /** host:port; shown here (the admin listener) and never on the public /health. */
  address: string;
  /** `up`, `ejected` (passive health, for now) or `down` (active checks). */
  state: 'up' | 'ejected' | 'down';
  healthy: boolean;
  ejected: boolean;
  inflight: number;
  weight: number;
  /** Finished requests answered by (or failed at) this upstream since start. */
  requests: number;
  /** The same over the last RECENT_SECONDS. */
  recent_requests: number;
  /** Its share of the recent requests that went to an upstream (0-1), or null when there were none. */
  share: number | null;
}

/** The services and routes serving now, as the composition root (or a cluster primary) describes them. */
export interface Topology {
  services: { name: string; strategy: string; upstreams: string[] }[];
  /** `service` for a route that forwards, `redirect` (the target) for one that redirects. */
  routes: { name: string; service: string | null; redirect: string | null }[];
}

export interface ServiceStatus {
  name: string;
  strategy: string;
  /** Its upstreams' names, in config order. */
  upstreams: string[];
  /** Finished requests answered by (or failed at) its upstreams since start. */
  requests: number;
}

export interface RouteStatus {
  name: string;
  service: string | null;
  redirect: string | null;
  /** Finished requests that matched it since start (as the `route` label). */
  requests: number;
}

export interface Status {
  version: string;
  /** When this was built, epoch milliseconds. */
  time: number;
  uptime_s: number;
  draining: boolean;
  /** Whether per-request metrics are recorded (metrics.enabled). */
  metrics: boolean;
  connections: { open: number; refused_total: number };
  totals: { requests: number; status: ByClass; unauthorized: number; rate_limited: number; retries: number };
  /** Requests in the last complete second, and latency quantiles over the last CURRENT_SECONDS. */
  current: { rps: number; p50_ms: number | null; p99_ms: number | null };
  recent: { window_s: number; requests: number; status: ByClass; unauthorized: number; rate_limited: number };
  /** One point per complete second, oldest first; `t` in epoch seconds. */
  series: { t: number[]; rps: number[]; p50_ms: (number | null)[]; p99_ms: (number | null)[]; status: Record<string, number[]> };
  upstreams: UpstreamStatus[];
  services: ServiceStatus[];
  routes: RouteStatus[];
  rate_limit: RateLimitStatus;
  /** Cluster mode only: the primary's view of its workers. */
  cluster?: ClusterStatus;
  /** The configuration in force: its generation, when and from what file it was loaded, the last reload. */
  config?: ConfigStatus;
}

/** The rate-limit stores in use and the checks they could not make. */
export interface RateLimitStatus {
  /** One per store in use (a store per rate-limit policy), in the order of the routes that first use them. */
  stores: StoreStatus[];
  /** Checks that failed since start (each request followed `on_error`), by store and kind, as the metric counts them. */
  errors: Record<SharedStore, Record<StoreErrorKind, number>>;
}

/** `config` of the status document (see gateway/gateway.ts). */
export interface ConfigStatus {
  generation: number;
  /** Epoch milliseconds. */
  loaded_at: number;
  /** SHA-256 of the config file, hex ('' when the config was not read from a file). */
  hash: string;
  last_reload: { result: 'ok' | 'error'; generation: number; at: number; restart_needed: string[]; errors: string[] } | undefined;
  /** Cluster mode: the generation each worker runs, by slot. */
  workers?: { slot: number; generation: number | null }[];
}

export interface ClusterStatus {
  /** `server.workers`. */
  workers: number;
  /** Worker processes running now. */
  running: number;
  /** Workers whose numbers are in this document (the others did not answer in time). */
  answered: number;
  /** Workers restarted since start. */
  restarts: number;
  processes: { slot: number; pid: number; uptime_s: number; answered: boolean }[];
}

/** An upstream's live state, as the status document needs it. */
export interface UpstreamState {
  service: string;
  name: string;
  address: string;
  healthy: boolean;
  ejected: boolean;
  inflight: number;
  weight: number;
}

/** Everything the status document is made of, gathered (one process) or merged (a cluster primary). */
export interface StatusInput {
  version: string;
  /** Epoch milliseconds now, and when the proxy (or the primary) was built. */
  wall: number;
  startedAt: number;
  draining: boolean;
  recording: boolean;
  connectionsOpen: number;
  connectionsRefused: number;
  /** Since start; its upstream slots are those of `recent` and `current`. */
  totals: Totals;
  /** Over RECENT_SECONDS and CURRENT_SECONDS, and the per-second series; undefined without recording. */
  recent: WindowSummary | undefined;
  current: WindowSummary | undefined;
  series: Series | undefined;
  /** Epoch second of a second of `series`. */
  epochSecond: (second: number) => number;
  /** The upstreams in use now. */
  upstreams: readonly UpstreamState[];
  topology: Topology;
  /** The rate-limit stores in use now. */
  stores: readonly StoreStatus[];
  cluster?: ClusterStatus;
}

export interface StatusSources {
  metrics: ProxyMetrics;
  /** The backends in use now (every service's). */
  backends: readonly Backend[];
  /** The services and routes serving now. */
  topology(): Topology;
  /** The rate-limit stores in use now, with their state. */
  stores(): StoreStatus[];
  /** The balancer's clock (ejections are in its time). */
  clock: Clock;
  connectionsOpen(): Promise<number>;
  connectionsRefused(): number;
  draining(): boolean;
  /** Epoch milliseconds when the proxy was built. */
  startedAt: number;
  version: string;
}

function byClass(counts: readonly number[]): ByClass {
  return { '2xx': counts[0] ?? 0, '3xx': counts[1] ?? 0, '4xx': counts[2] ?? 0, '5xx': counts[3] ?? 0 };
}

/** The flat store error counts as `{ redis: { timeout, unavailable, error }, ipc: {...} }`. */
function storeErrors(counts: readonly number[]): RateLimitStatus['errors'] {
  const byStore = (store: SharedStore): Record<StoreErrorKind, number> =>
    Object.fromEntries(STORE_ERROR_KINDS.map((kind) => [kind, counts[storeErrorSlot(store, kind)] ?? 0])) as Record<StoreErrorKind, number>;
  return Object.fromEntries(SHARED_STORES.map((store) => [store, byStore(store)])) as RateLimitStatus['errors'];
}

const round = (ms: number | null): number | null => (ms === null ? null : Math.round(ms * 1000) / 1000);

/** The topology of a validated config (every way of writing one: see config/resolve.ts). */
export function topologyOf(config: Config): Topology {
  return {
    services: [...servicesOf(config)].map(([name, lb]) => ({ name, strategy: lb.strategy, upstreams: lb.upstreams.map((u) => u.name) })),
    routes: routesOf(config).map(({ config: r }) => ({ name: r.name, service: r.service ?? null, redirect: r.redirect?.to ?? null })),
  };
}

/** Builds the status document. `mono` is performance.now() (the clock the metrics record with). */
export async function buildStatus(src: StatusSources, mono = performance.now(), wall = Date.now()): Promise<Status> {
  const stats = src.metrics.stats;
  const now = src.clock();
  // Monotonic second s began at wall time s * 1000 + (wall - mono).
  const offset = wall - mono;
  return statusDocument({
    version: src.version,
    wall,
    startedAt: src.startedAt,
    draining: src.draining(),
    recording: src.metrics.recording,
    connectionsOpen: await src.connectionsOpen(),
    connectionsRefused: src.connectionsRefused(),
    totals: src.metrics.totals(),
    recent: stats?.summary(mono, RECENT_SECONDS),
    current: stats?.summary(mono, CURRENT_SECONDS),
    series: stats?.series(mono),
    epochSecond: (s) => Math.round((s * 1000 + offset) / 1000),
    upstreams: src.backends.map((b) => ({ service: b.service, name: b.name, address: b.address, healthy: b.healthy, ejected: now < b.ejectedUntil, inflight: b.inflight, weight: b.weight })),
    topology: src.topology(),
    stores: src.stores(),
  });
}

/** The status document from its parts. */
export function statusDocument(input: StatusInput): Status {
  const { totals, recent, current, series } = input;
  const slotOf = new Map(totals.upstreams.map((u, i) => [upstreamKey(u), i]));
  const routeSlotOf = new Map(totals.routes.map((r, i) => [r, i]));
  const lastSecond = series === undefined ? 0 : (series.requests[series.requests.length - 1] ?? 0);
  let routed = 0;
  if (recent !== undefined) for (let i = 1; i < recent.byUpstream.length; i++) routed += recent.byUpstream[i] as number;
  const status: Status = {
    version: input.version,
    time: input.wall,
    uptime_s: Math.round((input.wall - input.startedAt) / 1000),
    draining: input.draining,
    metrics: input.recording,
    connections: { open: input.connectionsOpen, refused_total: input.connectionsRefused },
    totals: {
      requests: totals.requests,
      status: byClass(totals.byClass),
      unauthorized: totals.unauthorized,
      rate_limited: totals.rateLimited,
      retries: totals.retries,
    },
    current: { rps: lastSecond, p50_ms: round(current?.p50Ms ?? null), p99_ms: round(current?.p99Ms ?? null) },
    recent: {
      window_s: recent?.seconds ?? RECENT_SECONDS,
      requests: recent?.requests ?? 0,
      status: byClass(recent?.byClass ?? []),
      unauthorized: recent?.unauthorized ?? 0,
      rate_limited: recent?.rateLimited ?? 0,
    },
    series: {
      t: series?.seconds.map(input.epochSecond) ?? [],
      rps: series?.requests ?? [],
      p50_ms: series?.p50Ms.map(round) ?? [],
      p99_ms: series?.p99Ms.map(round) ?? [],
      status: Object.fromEntries(STATUS_CLASSES.map((c, i) => [c, series?.byClass[i] ?? []])),
    },
    upstreams: input.upstreams.map((u) => {
      const slot = slotOf.get(upstreamKey(u));
      const recentRequests = slot === undefined ? 0 : (recent?.byUpstream[slot] ?? 0);
      return {
        service: u.service,
        name: u.name,
        address: u.address,
        state: !u.healthy ? 'down' : u.ejected ? 'ejected' : 'up',
        healthy: u.healthy,
        ejected: u.ejected,
        inflight: u.inflight,
        weight: u.weight,
        requests: slot === undefined ? 0 : (totals.byUpstream[slot] ?? 0),
        recent_requests: recentRequests,
        share: routed === 0 ? null : Math.round((recentRequests / routed) * 1000) / 1000,
      };
    }),
    services: input.topology.services.map((s) => {
      let requests = 0;
      // Since start: upstreams the service no longer has count too.
      totals.upstreams.forEach((u, slot) => {
        if (slot > 0 && u.service === s.name) requests += totals.byUpstream[slot] ?? 0;
      });
      return { name: s.name, strategy: s.strategy, upstreams: [...s.upstreams], requests };
    }),
    routes: input.topology.routes.map((r) => {
      const slot = routeSlotOf.get(r.name);
      return { name: r.name, service: r.service, redirect: r.redirect, requests: slot === undefined ? 0 : (totals.byRoute[slot] ?? 0) };
    }),
    rate_limit: { stores: [...input.stores], errors: storeErrors(totals.storeErrors) },
  };
  if (input.cluster !== undefined) status.cluster = input.cluster;
  return status;
}
