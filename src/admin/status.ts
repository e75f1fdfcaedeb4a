/**
 * The numbers the dashboard shows, as one JSON document: `/api/status` answers it and `/api/events` sends
 * it once a second. Built on demand from the metrics, the rolling windows and the balancer's live state;
 * nothing here runs per proxied request.
 */
import type { Backend } from '../balancing/backend.js';
import type { ProxyMetrics } from '../observability/metrics.js';
import { STATUS_CLASSES } from '../observability/stats.js';
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
  const totals = src.metrics.totals();
  const stats = src.metrics.stats;
  const recent = stats?.summary(mono, RECENT_SECONDS);
  const current = stats?.summary(mono, CURRENT_SECONDS);
  const series = stats?.series(mono);
  const lastSecond = series === undefined ? 0 : (series.requests[series.requests.length - 1] ?? 0);
  let routed = 0;
  if (recent !== undefined) for (let i = 1; i < recent.byUpstream.length; i++) routed += recent.byUpstream[i] as number;
  const now = src.clock();
  // Monotonic second s began at wall time s * 1000 + (wall - mono).
  const offset = wall - mono;
  return {
    version: src.version,
    time: wall,
    uptime_s: Math.round((wall - src.startedAt) / 1000),
    draining: src.draining(),
    metrics: src.metrics.recording,
    connections: { open: await src.connectionsOpen(), refused_total: src.connectionsRefused() },
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
      t: series?.seconds.map((s) => Math.round((s * 1000 + offset) / 1000)) ?? [],
      rps: series?.requests ?? [],
      p50_ms: series?.p50Ms.map(round) ?? [],
      p99_ms: series?.p99Ms.map(round) ?? [],
      status: Object.fromEntries(STATUS_CLASSES.map((c, i) => [c, series?.byClass[i] ?? []])),
    },
    upstreams: src.backends.map((b, i) => {
      const ejected = now < b.ejectedUntil;
      const recentRequests = recent?.byUpstream[i + 1] ?? 0;
      return {
        name: b.name,
        address: b.address,
        state: !b.healthy ? 'down' : ejected ? 'ejected' : 'up',
        healthy: b.healthy,
        ejected,
        inflight: b.inflight,
        weight: b.weight,
        requests: totals.byUpstream[i + 1] ?? 0,
        recent_requests: recentRequests,
        share: routed === 0 ? null : Math.round((recentRequests / routed) * 1000) / 1000,
      };
    }),
  };
}
