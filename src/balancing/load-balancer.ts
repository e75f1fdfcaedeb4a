import type { LoadBalancingConfig } from '../config/schema.js';
import type { Random } from '../util/clock.js';
import { Backend } from './backend.js';
import { createSelector, type Selector } from './selection/index.js';

function isUsable(backend: Backend): boolean {
  return backend.healthy;
}

/**
 * The upstream group: backends plus the selection strategy, joined in one place (as Pingora's
 * `LoadBalancer::select_with`). Built when the config is loaded.
 */
export class LoadBalancer {
  readonly backends: readonly Backend[];
  readonly #selector: Selector<Backend>;

  constructor(config: LoadBalancingConfig, random: Random) {
    this.backends = config.upstreams.map((u) => new Backend(u, config));
    this.#selector = createSelector(config.strategy, this.backends, random);
  }

  /** The backend for the next request, or undefined when none is usable. Runs once per request. */
  select(accept: (backend: Backend) => boolean = isUsable): Backend | undefined {
    return this.#selector.select(accept);
  }

  /** Whether at least one backend can take requests (what `/health` reports). */
  get available(): boolean {
    return this.backends.some(isUsable);
  }

  async close(): Promise<void> {
    await Promise.all(this.backends.map((b) => b.pool.destroy()));
  }
}
