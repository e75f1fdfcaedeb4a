/**
 * The numbers the dashboard shows, as one JSON document: `/api/status` answers it and `/api/events` sends
 * it once a second. Built on demand from the metrics, the rolling windows and the balancer's live state;
 * nothing here runs per proxied request.
 */
import type { Backend } from '../balancing/backend.js';
import type { ProxyMetrics, Totals } from '../observability/metrics.js';
import { STATUS_CLASSES, type Series, type WindowSummary } from '../observability/stats.js';
import type { Clock } from '../util/clock.js';

/** Seconds of history in `series` and in the `recent` figures. */
export const RECENT_SECONDS = 60;
/** Seconds over which `current` latency quantiles are taken. */
export const CURRENT_SECONDS = 10;

type ByClass = Record<(typeof STATUS_CLASSES)[number], number>;

export interface UpstreamStatus {
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
  /** Cluster mode only: the primary's view of its workers. */
  cluster?: ClusterStatus;
  /** The configuration in force: its generation, when and from what file it was loaded, the last reload. */
  config?: ConfigStatus;
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
  totals: Totals;
  /** Over RECENT_SECONDS and CURRENT_SECONDS, and the per-second series; undefined without recording. */
  recent: WindowSummary | undefined;
  current: WindowSummary | undefined;
  series: Series | undefined;
  /** Epoch second of a second of `series`. */
  epochSecond: (second: number) => number;
  upstreams: readonly UpstreamState[];
  cluster?: ClusterStatus;
}

export interface StatusSources {
  metrics: ProxyMetrics;
  backends: readonly Backend[];
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

const round = (ms: number | null): number | null => (ms === null ? null : Math.round(ms * 1000) / 1000);

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
    upstreams: src.backends.map((b) => ({ name: b.name, address: b.address, healthy: b.healthy, ejected: now < b.ejectedUntil, inflight: b.inflight, weight: b.weight })),
  });
}

/** The status document from its parts. */
export function statusDocument(input: StatusInput): Status {
  const { totals, recent, current, series } = input;
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
    upstreams: input.upstreams.map((u, i) => {
      const recentRequests = recent?.byUpstream[i + 1] ?? 0;
      return {
        name: u.name,
        address: u.address,
        state: !u.healthy ? 'down' : u.ejected ? 'ejected' : 'up',
        healthy: u.healthy,
        ejected: u.ejected,
        inflight: u.inflight,
        weight: u.weight,
        requests: totals.byUpstream[i + 1] ?? 0,
        recent_requests: recentRequests,
        share: routed === 0 ? null : Math.round((recentRequests / routed) * 1000) / 1000,
      };
    }),
  };
  if (input.cluster !== undefined) status.cluster = input.cluster;
  return status;
}
