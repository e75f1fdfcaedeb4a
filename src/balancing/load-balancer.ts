import type { Logger } from 'pino';
import { upstreamProtocol } from '../config/resolve.js';
import type { LoadBalancingConfig } from '../config/schema.js';
import type { RequestContext } from '../proxy/context.js';
import type { Clock, Random } from '../util/clock.js';
import { Backend, backendKey, backendTls, poolKeyOf } from './backend.js';
import { ActiveHealthChecker } from './health/active.js';
import { describeFailure } from './health/failure-reason.js';
import { OutlierDetector } from './health/passive.js';
import { RetryBudget } from './retry-budget.js';
import { createSelector, type Selector } from './selection/index.js';

/** Slow start never sends less than this share of a backend's weight, so a returning backend is tried. */
const RAMP_FLOOR = 0.05;

/**
 * The upstream group: backends, the selection strategy, health (active checks and passive ejection),
 * slow start and the retry budget, joined in one place (as Pingora's `LoadBalancer::select_with`, which
 * walks candidates and asks whether each is acceptable). Built when the config is loaded.
 */
export class LoadBalancer {
  /** The service name (`default` for a top-level `load_balancing`). */
  readonly name: string;
  readonly backends: readonly Backend[];
  /** Send the client's Host upstream (else the backend's address). */
  readonly preserveHost: boolean;
  /** Further attempts after a failed one. */
  readonly maxRetries: number;
  /** Whole upstream exchange, retries included; 0 for none. */
  readonly totalTimeoutMs: number;
  /** Whether an upstream 5xx counts as a failure for passive health. */
  readonly #fiveXxIsFailure: boolean;
  /** p2c_ewma reads latencies: only then are they recorded. */
  readonly #observeLatency: boolean;
  readonly budget: RetryBudget;
  readonly outliers: OutlierDetector | undefined;
  readonly #checker: ActiveHealthChecker | undefined;
  readonly #selector: Selector<Backend>;
  readonly #clock: Clock;
  readonly #logger: Logger;
  readonly #slowStartMs: number;
  readonly #hashKey: ((ctx: RequestContext) => string) | undefined;
  /** While a backend warms up, weights are recomputed at each selection. */
  #ramping = false;
  // State of the current selection, read by #accept (kept here so selecting allocates no closure).
  #now = 0;
  #exclude: readonly Backend[] | undefined;
  readonly #accept = (backend: Backend): boolean =>
    backend.usable(this.#now) && (this.#exclude === undefined || !this.#exclude.includes(backend));

  constructor(config: LoadBalancingConfig, options: { random: Random; clock: Clock; logger: Logger; name?: string; previous?: LoadBalancer | undefined }) {
    this.name = options.name ?? 'default';
    const previous = options.previous;
    const kept = new Map<string, Backend>();
    if (previous !== undefined) for (const b of previous.backends) kept.set(b.key, b);
    // A backend in both generations (same service, name, address, port, TLS and pool settings) is the same
    // object: its health, ejection, in-flight count, latency, slow start and connections carry over.
    const poolKey = poolKeyOf(config);
    this.backends = config.upstreams.map((u) => {
      const tls = backendTls(u, config, this.name);
      const old = kept.get(backendKey(this.name, u, tls));
      if (old !== undefined && old.poolKey === poolKey && old.configuredWeight === u.weight && old.protocol === upstreamProtocol(config, u)) return old;
      const fresh = new Backend(u, config, this.name, tls);
      if (old !== undefined) fresh.adoptState(old);
      else if (tls !== undefined && !tls.verify) {
        // Once per backend (a backend carried into the next generation was told about when it was made).
        options.logger.warn(
          { service: this.name, upstream: u.name, upstream_addr: fresh.address },
          'upstream TLS certificate is not verified (tls.verify: false): anyone on the path can pose as this upstream',
        );
      }
      return fresh;
    });
    this.preserveHost = config.preserve_host;
    this.maxRetries = config.retries.max_retries;
    this.totalTimeoutMs = config.total_timeout_ms;
    this.#fiveXxIsFailure = config.health_check.passive.enabled && config.health_check.passive.include_5xx;
    this.#observeLatency = config.strategy === 'p2c_ewma';
    this.#selector = createSelector(config.strategy, this.backends, options.random, options.clock);
    this.#clock = options.clock;
    this.#logger = options.logger;
    this.#slowStartMs = config.slow_start_ms;
    this.#hashKey = config.strategy === 'consistent_hash' ? hashKeyOf(config.hash_key) : undefined;
    const { active, passive } = config.health_check;
    this.outliers = passive.enabled ? new OutlierDetector(passive, this.backends) : undefined;
    this.#checker = active.enabled ? new ActiveHealthChecker(active, this.backends, options.logger, options.clock, () => this.noteReturn()) : undefined;
    const sameBudget = previous !== undefined && previous.#budgetKey === budgetKey(config);
    this.budget = sameBudget ? previous.budget : new RetryBudget(config.retries.budget_percent, config.retries.min_retries_per_window, config.retries.min_concurrent_retries, options.clock);
    this.#budgetKey = budgetKey(config);
    if (this.#slowStartMs > 0) this.#ramping = true; // carried-over backends may be mid-ramp
  }

  readonly #budgetKey: string;

  /** Backends of this balancer that `next` does not carry over (closed once nothing uses them). */
  retiredBy(next: LoadBalancer | undefined): Backend[] {
    if (next === undefined) return [...this.backends];
    const kept = new Set(next.backends);
    return this.backends.filter((b) => !kept.has(b));
  }

  /**
   * Chooses a backend for one attempt and counts it in flight; every backend acquired is given back once
   * with `release`. `exclude` lists backends already tried.
   */
  acquire(ctx: RequestContext, exclude?: readonly Backend[]): Backend | undefined {
    const backend = this.select(ctx, exclude);
    if (backend !== undefined) backend.inflight++;
    return backend;
  }

  /**
   * The backend named `name`, counted in flight like `acquire`'s (an upstreamPeer phase chose it): undefined
   * when the service has none of that name. Health is not consulted: the phase asked for this one.
   */
  acquireNamed(name: string): Backend | undefined {
    const backend = this.backends.find((b) => b.name === name);
    if (backend !== undefined) backend.inflight++;
    return backend;
  }

  /**
   * The outcome of one attempt, reported once from the forwarding path: `failure` when the upstream side
   * failed (connect error, reset, timeout), else undefined; `status` is what it answered with (0 before a
   * response head), `latencyMs` the time to that head (negative when there was none).
   */
  release(backend: Backend, failure: Error | undefined, status: number, latencyMs: number): void {
    backend.inflight--;
    if (status > 0) backend.answered = true;
    if (failure !== undefined) this.reportFailure(backend, failure);
    else if (status >= 500 && this.#fiveXxIsFailure) this.reportFailure(backend, status);
    else this.reportSuccess(backend);
    if (this.#observeLatency && latencyMs >= 0) backend.observeLatency(latencyMs, this.#clock());
  }

  /** Starts active health checks (not started for a proxy that never listens). */
  start(): void {
    this.#checker?.start();
  }

  /** Stops the active health checks (a generation that was replaced); the pools stay open. */
  async stop(): Promise<void> {
    await this.#checker?.stop();
  }

  /**
   * The backend for this request, or undefined when none is usable. `exclude` lists backends already
   * tried (retries). Runs once per attempt.
   */
  select(ctx: RequestContext, exclude?: readonly Backend[]): Backend | undefined {
    this.#now = this.#clock();
    this.#exclude = exclude;
    if (this.#ramping) this.#updateWeights(this.#now);
    return this.#selector.select(this.#accept, this.#hashKey === undefined ? '' : this.#hashKey(ctx));
  }

  /**
   * A request to `backend` failed on the upstream side: `why` is the error (connect error, reset, timeout)
   * or the 5xx status when those count. An ejection is logged with the reason.
   */
  reportFailure(backend: Backend, why?: Error | number): void {
    if (this.outliers === undefined) return;
    const failures = backend.consecutiveFailures + 1;
    const ejectedFor = this.outliers.failure(backend, this.#clock());
    if (ejectedFor > 0) {
      if (this.#slowStartMs > 0) this.#ramping = true;
      const last = why === undefined ? 'unknown' : typeof why === 'number' ? `answered ${why}` : describeFailure(why);
      const reason = `${failures} request${failures === 1 ? '' : 's'} in a row failed, the last: ${last}`;
      this.#logger.warn(
        { upstream: backend.name, upstream_addr: backend.address, ejected_ms: ejectedFor, ejections: backend.ejections, failures, reason },
        'upstream ejected after consecutive failures',
      );
    }
  }

  /** A request to `backend` succeeded; the first success after an ejection is logged as its return. */
  reportSuccess(backend: Backend): void {
    if (this.outliers === undefined) return;
    this.outliers.success(backend);
    // A request sent before the ejection may succeed during it: that is no return yet.
    if (backend.returnPending && this.#clock() >= backend.ejectedUntil) {
      backend.returnPending = false;
      this.#logger.info(
        { upstream: backend.name, upstream_addr: backend.address, ejections: backend.ejections, reason: 'the ejection time was over and a request succeeded' },
        'upstream back after ejection: taking requests',
      );
    }
  }

  /** Whether at least one backend can take requests (what `/health` reports). */
  get available(): boolean {
    const now = this.#clock();
    return this.backends.some((b) => b.usable(now));
  }

  /** Sets a backend's active health by hand (tests, admin); starts its slow start when it comes back. */
  setHealthy(backend: Backend, up: boolean): void {
    backend.setHealthy(up, this.#clock());
    if (up && this.#slowStartMs > 0) this.#ramping = true;
  }

  /** Sets each backend's effective weight for slow start; stops ramping once all are done. */
  #updateWeights(now: number): void {
    let ramping = false;
    for (const b of this.backends) {
      const elapsed = now - b.rampStart;
      if (elapsed >= 0 && elapsed < this.#slowStartMs) {
        b.weight = b.configuredWeight * Math.max(RAMP_FLOOR, elapsed / this.#slowStartMs);
        ramping = true;
      } else {
        b.weight = b.configuredWeight;
        if (elapsed < 0) ramping = true; // ejected now, ramps when it returns
      }
    }
    this.#ramping = ramping;
  }

  /** Marks that some backend may be warming up (the active checker calls this when one comes back). */
  noteReturn(): void {
    if (this.#slowStartMs > 0) this.#ramping = true;
  }

  async close(): Promise<void> {
    await this.#checker?.stop();
    await Promise.all(this.backends.map((b) => b.pool.destroy()));
  }
}

function budgetKey(config: LoadBalancingConfig): string {
  return `${config.retries.budget_percent}/${config.retries.min_retries_per_window}/${config.retries.min_concurrent_retries}`;
}

/** Builds, once, the function that reads a request's consistent-hash key. */
function hashKeyOf(key: LoadBalancingConfig['hash_key']): (ctx: RequestContext) => string {
  switch (key.source) {
    case 'client_address':
      return (ctx) => ctx.clientAddress;
    case 'path':
      return (ctx) => {
        const q = ctx.path.indexOf('?');
        return q === -1 ? ctx.path : ctx.path.slice(0, q);
      };
    // A request without the header or cookie is keyed by its client address, not by '' (which would send
    // every such request to one backend).
    case 'header': {
      const name = (key.name as string).toLowerCase();
      return (ctx) => {
        const value = ctx.req.headers[name];
        return typeof value === 'string' ? value : (value?.join(',') ?? ctx.clientAddress);
      };
    }
    case 'cookie': {
      const prefix = `${key.name as string}=`;
      return (ctx) => {
        const cookie = ctx.req.headers.cookie;
        if (cookie === undefined) return ctx.clientAddress;
        for (const part of cookie.split(';')) {
          const p = part.trim();
          if (p.startsWith(prefix)) return p.slice(prefix.length);
        }
        return ctx.clientAddress;
      };
    }
  }
}
