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
 * - Everything is merged by name, never by position: each snapshot names its upstreams (service and name)
 *   and routes, since workers meet them in their own order and may briefly run different generations
 *   during a config reload. The monitor keeps every name it has seen (the config's to begin with), so the
 *   series of an upstream or route that a reload removed stay.
 * - Counters (requests, duration histogram, selections, retries, 401s, 429s, ejections, refused
 *   connections) are summed over the workers. They never go backwards: each worker's newest answer is kept,
 *   a worker that does not answer in time counts with its last answer, and when a worker exits its last
 *   answer is added to a running total of exited workers. (What a worker counted after its last answer is
 *   lost with it; the dashboard asks every second while it is open.)
 * - Gauges come from the workers that answered this time, for the upstreams they use now: in-flight
 *   requests and open connections are summed; an upstream is healthy for the instance only if every worker
 *   that uses it and answered says so (min), and ejected if any of them has ejected it (max), so a
 *   disagreement shows as the worse state; the effective weight is the smallest. When no worker answers,
 *   the status document lists the upstreams of the last answers (the config's before any).
 * - The rate-limit stores: one row per store (its kind, target and routes) over the workers that answered,
 *   in the state of the worst of them (down, then failing, then connecting, then ready) and with the newest
 *   last error, so one worker that cannot reach Redis shows. When no worker answers, the rows of the last
 *   answers. (Their failed checks are counters, summed as above.)
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
import { allUpstreams, routesOf } from '../config/resolve.js';
import type { Config } from '../config/schema.js';
import { STORE_STATES, type StoreStatus } from '../limits/store.js';
import {
  addCounters,
  emptyCounters,
  registerProxyMetrics,
  totalsOf,
  upstreamKey,
  type CounterSnapshot,
  type LiveUpstream,
  type MetricFamily,
  type MetricsReader,
  type MetricsSnapshot,
} from '../observability/metrics.js';
import { RollingStats } from '../observability/stats.js';
import { CURRENT_SECONDS, RECENT_SECONDS, statusDocument, topologyOf, type Status, type UpstreamState } from './status.js';

/** How long a scrape waits for a worker's snapshot before leaving that worker out. */
export const SNAPSHOT_TIMEOUT_MS = 500;

/** The primary's view (its workers, restarts, draining) and what the monitor needs besides. */
export interface ClusterMonitorOptions extends Pick<PrimaryView, 'workers' | 'restarts' | 'draining'> {
  /** The config the primary started with (the first names of every merge). */
  config: Config;
  /** The config in force now (after reloads), for the services and routes of the status document. */
  currentConfig?: () => Config;
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
  upstreams: LiveUpstream[];
  connectionsOpen: number;
  websocketsOpen: number;
  running: number;
  answered: number;
  restarts: number;
}

const isName = (u: unknown): boolean =>
  typeof u === 'object' && u !== null && typeof (u as { service?: unknown }).service === 'string' && typeof (u as { name?: unknown }).name === 'string';

/** The shape the merge relies on (a worker is the same program, so this guards against bugs, not peers). */
function isSnapshot(value: unknown): value is MetricsSnapshot {
  if (typeof value !== 'object' || value === null) return false;
  const { counters, upstreams } = value as Partial<MetricsSnapshot>;
  return (
    typeof counters === 'object' &&
    counters !== null &&
    Array.isArray(counters.upstreams) &&
    counters.upstreams.every(isName) &&
    Array.isArray(counters.routes) &&
    counters.routes.every((r) => typeof r === 'string') &&
    Array.isArray(counters.series) &&
    Array.isArray(counters.requests) &&
    Array.isArray(counters.durationBuckets) &&
    Array.isArray(counters.durationSum) &&
    Array.isArray(counters.selections) &&
    Array.isArray(counters.ejections) &&
    Array.isArray(counters.authFailures) &&
    Array.isArray(counters.storeErrors) &&
    Array.isArray(counters.websocketClosed) &&
    Array.isArray(upstreams) &&
    upstreams.every(isName) &&
    Array.isArray((value as Partial<MetricsSnapshot>).stores)
  );
}

/**
 * The upstreams the answering workers use now, merged by name (in the order the workers list them): in
 * flight summed, healthy the minimum, ejected the maximum, weight the smallest.
 */
export function mergeLive(snapshots: readonly Pick<MetricsSnapshot, 'upstreams'>[]): LiveUpstream[] {
  const merged = new Map<string, { -readonly [K in keyof LiveUpstream]: LiveUpstream[K] }>();
  for (const snapshot of snapshots) {
    for (const u of snapshot.upstreams) {
      const key = upstreamKey(u);
      const into = merged.get(key);
      if (into === undefined) {
        merged.set(key, { service: u.service, name: u.name, address: u.address, inflight: u.inflight, healthy: u.healthy, ejected: u.ejected, weight: u.weight });
        continue;
      }
      into.inflight += u.inflight;
      into.healthy = Math.min(into.healthy, u.healthy);
      into.ejected = Math.max(into.ejected, u.ejected);
      into.weight = Math.min(into.weight, u.weight);
    }
  }
  return [...merged.values()];
}

/**
 * The rate-limit stores the answering workers use now, merged by kind, target and routes (in the order the
 * workers list them): the worst state, the newest last error.
 */
export function mergeStores(snapshots: readonly Pick<MetricsSnapshot, 'stores'>[]): StoreStatus[] {
  const merged = new Map<string, StoreStatus>();
  for (const snapshot of snapshots) {
    for (const row of snapshot.stores) {
      const key = JSON.stringify([row.store, row.target, row.routes]);
      const into = merged.get(key);
      if (into === undefined) {
        merged.set(key, { ...row, routes: [...row.routes] });
        continue;
      }
      if (STORE_STATES.indexOf(row.state) < STORE_STATES.indexOf(into.state)) into.state = row.state;
      if (row.last_error !== null && (into.last_error === null || row.last_error.at > into.last_error.at)) into.last_error = row.last_error;
    }
  }
  return [...merged.values()];
}

/** The instance's numbers, merged from the workers' snapshots (see the file comment). */
export class ClusterMonitor {
  readonly #options: ClusterMonitorOptions;
  readonly #logger: Logger;
  readonly #timeoutMs: number;
  /** The config's upstream and route names, with no counts: the first slots of every merge. */
  readonly #seed: CounterSnapshot;
  /** The upstreams in use as of the last answers (the config's before any): the status rows when none answers. */
  #known: UpstreamState[];
  /** The rate-limit stores as of the last answers: the status rows when none answers. */
  #knownStores: StoreStatus[] = [];
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
    this.#known = upstreams.map((u) => ({ service: u.service, name: u.name, address: upstreamAddress(u), healthy: true, ejected: false, inflight: 0, weight: u.weight }));
    this.#seed = emptyCounters(upstreams, routesOf(options.config).map((r) => r.config.name));
    this.#retired = emptyCounters();
    this.#merged = { counters: this.#counters(), upstreams: [], connectionsOpen: 0, websocketsOpen: 0, running: 0, answered: 0, restarts: 0 };
    collectDefaultMetrics({ register: this.#processRegistry });
    const reader: MetricsReader = {
      counters: () => this.#merged.counters,
      upstreams: () => this.#merged.upstreams,
      connectionsOpen: () => Promise.resolve(this.#merged.connectionsOpen),
      websocketsOpen: () => this.#merged.websocketsOpen,
    };
    registerProxyMetrics(this.#registry, reader, { recording: options.config.metrics.enabled, version: options.version });
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

  /** A worker exited: its requests are answered with nothing, its last counters join the exited workers' (by name). */
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
      upstreams: this.#live(answered),
      connectionsOpen: answered.reduce((n, a) => n + (a.snapshot as MetricsSnapshot).connectionsOpen, 0),
      websocketsOpen: answered.reduce((n, a) => n + ((a.snapshot as MetricsSnapshot).websocketsOpen ?? 0), 0),
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
    const live = this.#live(answered);
    const wall = Date.now();
    const recording = this.#options.config.metrics.enabled;
    let stats: RollingStats | undefined;
    if (recording) {
      // In the merged counters' upstream slots, which name every upstream a worker's history can mention.
      const slotOf = new Map(counters.upstreams.map((u, i) => [upstreamKey(u), i]));
      stats = new RollingStats(counters.upstreams.length - 1);
      for (const a of answered) {
        const snapshot = a.snapshot as MetricsSnapshot;
        if (snapshot.stats !== undefined) stats.absorb(snapshot.stats, wall, snapshot.counters.upstreams.map((u) => slotOf.get(upstreamKey(u)) ?? -1));
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
      upstreams:
        answered.length === 0
          ? this.#known
          : live.map((u) => ({ service: u.service, name: u.name, address: u.address, healthy: u.healthy === 1, ejected: u.ejected === 1, inflight: u.inflight, weight: u.weight })),
      topology: topologyOf(this.#options.currentConfig?.() ?? this.#options.config),
      stores: answered.length === 0 ? this.#knownStores : (this.#knownStores = mergeStores(answered.map((a) => a.snapshot as MetricsSnapshot))),
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

  /** The config's names, the exited workers' counters and the newest answer of each running worker, by name. */
  #counters(): CounterSnapshot {
    const sum = emptyCounters();
    addCounters(sum, this.#seed);
    addCounters(sum, this.#retired);
    for (const { counters } of this.#last.values()) addCounters(sum, counters);
    return sum;
  }

  /**
   * The upstreams the workers that answered use now, merged (see the file comment for the rules); they
   * become the status rows shown while no worker answers. Empty when none answered.
   */
  #live(answered: Answer[]): LiveUpstream[] {
    if (answered.length === 0) return [];
    const live = mergeLive(answered.map((a) => a.snapshot as MetricsSnapshot));
    this.#known = live.map((u) => ({ service: u.service, name: u.name, address: u.address, healthy: true, ejected: false, inflight: 0, weight: u.weight }));
    return live;
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
