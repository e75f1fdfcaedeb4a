import type { Logger } from 'pino';
import type { Config, LoadBalancingConfig } from '../config/schema.js';
import type { RequestContext } from '../proxy/context.js';
import type { Clock, Random } from '../util/clock.js';
import { Backend } from './backend.js';
import { ActiveHealthChecker } from './health/active.js';
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
  readonly backends: readonly Backend[];
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

  constructor(config: LoadBalancingConfig, options: { random: Random; clock: Clock; logger: Logger }) {
    this.backends = config.upstreams.map((u) => new Backend(u, config));
    this.#selector = createSelector(config.strategy, this.backends, options.random);
    this.#clock = options.clock;
    this.#logger = options.logger;
    this.#slowStartMs = config.slow_start_ms;
    this.#hashKey = config.strategy === 'consistent_hash' ? hashKeyOf(config.hash_key) : undefined;
    const { active, passive } = config.health_check;
    this.outliers = passive.enabled ? new OutlierDetector(passive, this.backends) : undefined;
    this.#checker = active.enabled ? new ActiveHealthChecker(active, this.backends, options.logger, options.clock, () => this.noteReturn()) : undefined;
    this.budget = new RetryBudget(config.retries.budget_percent, config.retries.min_retries_per_window, options.clock);
  }

  /** Starts active health checks (not started for a proxy that never listens). */
  start(): void {
    this.#checker?.start();
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

  /** A request to `backend` failed on the upstream side (connect error, reset, timeout, 5xx if counted). */
  reportFailure(backend: Backend): void {
    if (this.outliers === undefined) return;
    const ejectedFor = this.outliers.failure(backend, this.#clock());
    if (ejectedFor > 0) {
      if (this.#slowStartMs > 0) this.#ramping = true;
      this.#logger.warn({ upstream: backend.name, upstream_addr: backend.address, ejected_ms: ejectedFor, ejections: backend.ejections }, 'upstream ejected after consecutive failures');
    }
  }

  reportSuccess(backend: Backend): void {
    this.outliers?.success(backend);
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

/** Builds, once, the function that reads a request's consistent-hash key. */
function hashKeyOf(key: Config['load_balancing']['hash_key']): (ctx: RequestContext) => string {
  switch (key.source) {
    case 'client_address':
      return (ctx) => ctx.clientAddress;
    case 'path':
      return (ctx) => {
        const q = ctx.path.indexOf('?');
        return q === -1 ? ctx.path : ctx.path.slice(0, q);
      };
    case 'header': {
      const name = (key.name as string).toLowerCase();
      return (ctx) => {
        const value = ctx.req.headers[name];
        return typeof value === 'string' ? value : (value?.join(',') ?? '');
      };
    }
    case 'cookie': {
      const prefix = `${key.name as string}=`;
      return (ctx) => {
        const cookie = ctx.req.headers.cookie;
        if (cookie === undefined) return '';
        for (const part of cookie.split(';')) {
          const p = part.trim();
          if (p.startsWith(prefix)) return p.slice(prefix.length);
        }
        return '';
      };
    }
  }
}
