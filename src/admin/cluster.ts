/**
 * The admin listener's numbers in cluster mode. The primary serves the one admin listener of the instance
 * (built by admin/cluster-admin.ts and handed to cluster/primary.ts); the requests are counted in the
 * workers. For each scrape of /metrics and each status document (/api/status, and once a second for the
 * dashboard's event stream) this asks every listening worker for a snapshot of its numbers over IPC
 * (`tollgate:snapshot`, answered by `ProxyMetrics.snapshot()`), and adds them up.
 *
 * Why a message of our own rather than prom-client's AggregatorRegistry: AggregatorRegistry asks the
 * workers for their Prometheus metrics only, so the dashboard's per-second history and latency sketches
 * would need a second protocol anyway; it waits for every worker and fails the whole scrape when one has
 * not answered after 5 s (a fixed timeout), where one stuck worker must cost a scrape at most
 * SNAPSHOT_TIMEOUT_MS and leave the others' numbers in it; and it cannot keep the counts of a worker that
 * died. Its aggregation rules (sum, min, max...) are what the merge below does, per metric.
 *
 * The rules:
 * - Counters (requests, duration histogram, selections, retries, 401s, 429s, ejections, refused
 *   connections) are summed over the workers. They never go backwards: each worker's newest answer is kept,
 *   a worker that does not answer in time counts with its last answer, and when a worker exits its last
 *   answer is added to a running total of exited workers. (What a worker counted after its last answer is
 *   lost with it; the dashboard asks every second while it is open.)
 * - Gauges come from the workers that answered this time: in-flight requests and open connections are
 *   summed; an upstream is healthy for the instance only if every worker that answered says so (min), and
 *   ejected if any worker has ejected it (max), so a disagreement shows as the worse state; the effective
 *   weight is the smallest.
 * - The per-second history (requests, status classes, 401/429, latency sketches) is summed second by second
 *   in epoch seconds, so the latency quantiles are those of all the workers' requests together.
 * - Process metrics (process_*, nodejs_*) are not summed: each worker's come with a `worker` label (its
 *   slot), the primary's own with `worker="primary"`.
 */
import type { Logger } from 'pino';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { upstreamAddress } from '../balancing/backend.js';
import type { SnapshotReply, SnapshotRequest } from '../cluster/messages.js';
import type { MonitoredWorker, PrimaryView } from '../cluster/primary.js';
import { allUpstreams } from '../config/resolve.js';
import type { Config } from '../config/schema.js';
import {
  addCounters,
  emptyCounters,
  registerProxyMetrics,
  totalsOf,
  type CounterSnapshot,
  type MetricFamily,
  type MetricsReader,
  type MetricsSnapshot,
  type UpstreamGauges,
} from '../observability/metrics.js';
import { RollingStats } from '../observability/stats.js';
import { CURRENT_SECONDS, RECENT_SECONDS, statusDocument, type Status, type UpstreamState } from './status.js';

/** How long a scrape waits for a worker's snapshot before leaving that worker out. */
export const SNAPSHOT_TIMEOUT_MS = 500;

/** The primary's view (its workers, restarts, draining) and what the monitor needs besides. */
export interface ClusterMonitorOptions extends Pick<PrimaryView, 'workers' | 'restarts' | 'draining'> {
  config: Config;
  logger: Logger;
  version: string;
  /** Epoch milliseconds when the primary started. */
  startedAt: number;
  timeoutMs?: number;
}

interface Answer {
  worker: MonitoredWorker;
  snapshot: MetricsSnapshot | undefined;
}

interface Pending {
  pid: number;
  settle(snapshot: MetricsSnapshot | undefined): void;
}

/** What the last scrape merged, read by the metric families' collect(). */
interface Merged {
  counters: CounterSnapshot;
  upstreams: UpstreamGauges;
  connectionsOpen: number;
  running: number;
  answered: number;
  restarts: number;
}

function isSnapshot(value: unknown): value is MetricsSnapshot {
  if (typeof value !== 'object' || value === null) return false;
  const { counters, upstreams } = value as Partial<MetricsSnapshot>;
  return typeof counters === 'object' && counters !== null && Array.isArray(counters.requests) && typeof upstreams === 'object' && upstreams !== null;
}

/** The instance's numbers, merged from the workers' snapshots (see the file comment). */
export class ClusterMonitor {
  readonly #options: ClusterMonitorOptions;
  readonly #logger: Logger;
  readonly #timeoutMs: number;
  readonly #upstreams: readonly UpstreamState[];
  readonly #pending = new Map<number, Pending>();
  /** The newest answer of each running worker, by pid (with the request id it answered). */
  readonly #last = new Map<number, { id: number; counters: CounterSnapshot }>();
  /** The counters of the workers that have exited, added up. */
  readonly #retired: CounterSnapshot;
  readonly #registry = new Registry();
  /** The primary's own process metrics. */
  readonly #processRegistry = new Registry();
  #merged: Merged;
  #nextId = 1;
  #scrape: Promise<string> | undefined;
  #status: Promise<Status> | undefined;
  #closed = false;

  constructor(options: ClusterMonitorOptions) {
    this.#options = options;
    this.#logger = options.logger;
    this.#timeoutMs = options.timeoutMs ?? SNAPSHOT_TIMEOUT_MS;
    const upstreams = allUpstreams(options.config);
    this.#upstreams = upstreams.map((u) => ({ name: u.name, address: upstreamAddress(u), healthy: true, ejected: false, inflight: 0, weight: u.weight }));
    this.#retired = emptyCounters(upstreams.length);
    this.#merged = { counters: emptyCounters(upstreams.length), upstreams: { inflight: [], healthy: [], ejected: [] }, connectionsOpen: 0, running: 0, answered: 0, restarts: 0 };
    collectDefaultMetrics({ register: this.#processRegistry });
    const reader: MetricsReader = {
      counters: () => this.#merged.counters,
      upstreams: () => this.#merged.upstreams,
      connectionsOpen: () => Promise.resolve(this.#merged.connectionsOpen),
    };
    registerProxyMetrics(this.#registry, upstreams.map((u) => u.name), reader, { recording: options.config.metrics.enabled, version: options.version });
    const merged = (): Merged => this.#merged;
    const registers = [this.#registry];
    new Gauge({
      name: 'tollgate_workers',
      help: 'Worker processes running (cluster mode).',
      registers,
      collect() {
        this.set(merged().running);
      },
    });
    new Gauge({
      name: 'tollgate_workers_answered',
      help: 'Workers whose numbers are fresh in this scrape; the others did not answer in time and count with their last answer.',
      registers,
      collect() {
        this.set(merged().answered);
      },
    });
    new Counter({
      name: 'tollgate_worker_restarts_total',
      help: 'Workers that died and were restarted (cluster mode).',
      registers,
      collect() {
        this.reset();
        this.inc(merged().restarts);
      },
    });
  }

  get contentType(): string {
    return this.#registry.contentType;
  }

  /** A worker's answer (the primary passes on every `tollgate:snapshot-reply` with the sender's pid). */
  reply(pid: number, message: SnapshotReply): void {
    const pending = this.#pending.get(message.id);
    if (pending === undefined || pending.pid !== pid) return; // late (timed out) or not ours
    if (!isSnapshot(message.snapshot)) {
      this.#logger.debug({ worker_pid: pid, error: message.error }, 'worker could not answer the snapshot request');
      pending.settle(undefined);
      return;
    }
    const last = this.#last.get(pid);
    if (last === undefined || last.id < message.id) this.#last.set(pid, { id: message.id, counters: message.snapshot.counters });
    pending.settle(message.snapshot);
  }

  /** A worker exited: its requests are answered with nothing, its last counters join the exited workers'. */
  exited(pid: number): void {
    for (const pending of [...this.#pending.values()]) if (pending.pid === pid) pending.settle(undefined);
    const last = this.#last.get(pid);
    if (last !== undefined) addCounters(this.#retired, last.counters);
    this.#last.delete(pid);
  }

  /** The Prometheus exposition for the instance. Concurrent scrapes share one round of asking. */
  scrape(): Promise<string> {
    this.#scrape ??= this.#buildScrape().finally(() => {
      this.#scrape = undefined;
    });
    return this.#scrape;
  }

  /** The status document for the instance. Concurrent callers share one round of asking. */
  status(): Promise<Status> {
    this.#status ??= this.#buildStatus().finally(() => {
      this.#status = undefined;
    });
    return this.#status;
  }

  /** Answers every request still waiting (with nothing) and stops their timers. */
  close(): void {
    this.#closed = true;
    for (const pending of [...this.#pending.values()]) pending.settle(undefined);
  }

  async #buildScrape(): Promise<string> {
    const answers = await this.#ask({ stats: false, process: true });
    const answered = answers.filter((a) => a.snapshot !== undefined);
    this.#merged = {
      counters: this.#counters(),
      upstreams: this.#gauges(answered),
      connectionsOpen: answered.reduce((n, a) => n + (a.snapshot as MetricsSnapshot).connectionsOpen, 0),
      running: this.#options.workers().length,
      answered: answered.length,
      restarts: this.#options.restarts(),
    };
    const processes = await this.#processFamilies(answered);
    return Registry.merge([processes, this.#registry]).metrics();
  }

  async #buildStatus(): Promise<Status> {
    const answers = await this.#ask({ stats: true, process: false });
    const answered = answers.filter((a) => a.snapshot !== undefined);
    const counters = this.#counters();
    const gauges = this.#gauges(answered);
    const wall = Date.now();
    const recording = this.#options.config.metrics.enabled;
    let stats: RollingStats | undefined;
    if (recording) {
      stats = new RollingStats(this.#upstreams.length);
      for (const a of answered) {
        const exported = (a.snapshot as MetricsSnapshot).stats;
        if (exported !== undefined) stats.absorb(exported, wall);
      }
    }
    const workers = this.#options.workers();
    const fresh = new Set(answered.map((a) => a.worker.pid));
    return statusDocument({
      version: this.#options.version,
      wall,
      startedAt: this.#options.startedAt,
      draining: this.#options.draining(),
      recording,
      connectionsOpen: answered.reduce((n, a) => n + (a.snapshot as MetricsSnapshot).connectionsOpen, 0),
      connectionsRefused: counters.connectionsRefused,
      totals: totalsOf(counters),
      recent: stats?.summary(wall, RECENT_SECONDS),
      current: stats?.summary(wall, CURRENT_SECONDS),
      series: stats?.series(wall),
      // The workers' seconds arrive as epoch seconds already.
      epochSecond: (s) => s,
      upstreams: this.#upstreams.map((u, i) => {
        const weights = answered.map((a) => (a.snapshot as MetricsSnapshot).upstreams.weight[i]).filter((w): w is number => typeof w === 'number');
        return {
          ...u,
          healthy: (gauges.healthy[i] ?? 1) === 1,
          ejected: (gauges.ejected[i] ?? 0) === 1,
          inflight: gauges.inflight[i] ?? 0,
          weight: weights.length === 0 ? u.weight : Math.min(...weights),
        };
      }),
      cluster: {
        workers: this.#options.config.server.workers === 'auto' ? workers.length : this.#options.config.server.workers,
        running: workers.length,
        answered: answered.length,
        restarts: this.#options.restarts(),
        processes: workers.map((w) => ({ slot: w.slot, pid: w.pid, uptime_s: Math.round((wall - w.startedAt) / 1000), answered: fresh.has(w.pid) })),
      },
    });
  }

  /** Asks every ready worker; each answer is a snapshot, or undefined after the timeout, an error or an exit. */
  #ask(parts: { stats: boolean; process: boolean }): Promise<Answer[]> {
    if (this.#closed) return Promise.resolve([]);
    return Promise.all(
      this.#options
        .workers()
        .filter((w) => w.ready)
        .map((worker) => this.#askOne(worker, parts)),
    );
  }

  #askOne(worker: MonitoredWorker, parts: { stats: boolean; process: boolean }): Promise<Answer> {
    return new Promise<Answer>((resolve) => {
      const id = this.#nextId++;
      const settle = (snapshot: MetricsSnapshot | undefined): void => {
        if (!this.#pending.delete(id)) return;
        clearTimeout(timer);
        resolve({ worker, snapshot });
      };
      const timer = setTimeout(() => {
        this.#logger.debug({ worker: worker.slot, worker_pid: worker.pid, timeout_ms: this.#timeoutMs }, 'worker did not answer the snapshot request in time: left out of this scrape');
        settle(undefined);
      }, this.#timeoutMs);
      timer.unref();
      this.#pending.set(id, { pid: worker.pid, settle });
      const request: SnapshotRequest = { type: 'tollgate:snapshot', id, stats: parts.stats, process: parts.process };
      try {
        worker.send(request, (err) => {
          if (err !== null && err !== undefined) settle(undefined);
        });
      } catch {
        settle(undefined);
      }
    });
  }

  /** The exited workers' counters plus the newest answer of each running worker. */
  #counters(): CounterSnapshot {
    const sum = emptyCounters(this.#upstreams.length);
    addCounters(sum, this.#retired);
    for (const { counters } of this.#last.values()) addCounters(sum, counters);
    return sum;
  }

  /** The upstream gauges of the workers that answered (see the file comment for the rules). */
  #gauges(answered: Answer[]): UpstreamGauges {
    if (answered.length === 0) return { inflight: [], healthy: [], ejected: [] };
    const n = this.#upstreams.length;
    const inflight = new Array<number>(n).fill(0);
    const healthy = new Array<number>(n).fill(1);
    const ejected = new Array<number>(n).fill(0);
    for (const a of answered) {
      const u = (a.snapshot as MetricsSnapshot).upstreams;
      for (let i = 0; i < n; i++) {
        inflight[i] = (inflight[i] as number) + (u.inflight[i] ?? 0);
        healthy[i] = Math.min(healthy[i] as number, u.healthy[i] ?? 0);
        ejected[i] = Math.max(ejected[i] as number, u.ejected[i] ?? 0);
      }
    }
    return { inflight, healthy, ejected };
  }

  /** The primary's and the answering workers' process metrics, one family per name, labelled by worker. */
  async #processFamilies(answered: Answer[]): Promise<Registry> {
    const families = new Map<string, MetricFamily>();
    const add = (list: readonly MetricFamily[], worker: string): void => {
      for (const family of list) {
        if (typeof family?.name !== 'string' || !Array.isArray(family.values)) continue;
        let into = families.get(family.name);
        if (into === undefined) {
          into = { name: family.name, help: family.help, type: family.type, values: [] };
          families.set(family.name, into);
        }
        for (const v of family.values) into.values.push({ ...v, labels: { ...v.labels, worker } });
      }
    };
    add((await this.#processRegistry.getMetricsAsJSON()) as unknown as MetricFamily[], 'primary');
    for (const a of answered) add((a.snapshot as MetricsSnapshot).process ?? [], String(a.worker.slot));
    const registry = new Registry();
    for (const family of families.values()) registry.registerMetric({ name: family.name, get: () => family } as never);
    return registry;
  }
}
