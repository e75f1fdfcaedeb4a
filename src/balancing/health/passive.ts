import type { LoadBalancingConfig } from '../../config/schema.js';
import type { Backend } from '../backend.js';

type PassiveConfig = LoadBalancingConfig['health_check']['passive'];

/**
 * Passive health (outlier ejection, as Envoy's): a backend that fails `consecutive_failures` requests in a
 * row is ejected for `base_ejection_ms`, doubled on each repeat up to `max_ejection_ms`, but never when that
 * would eject more than `max_ejection_percent` of the group. Pure: the caller passes the time.
 */
export class OutlierDetector {
  readonly #config: PassiveConfig;
  readonly #group: readonly Backend[];

  constructor(config: PassiveConfig, group: readonly Backend[]) {
    this.#config = config;
    this.#group = group;
  }

  success(backend: Backend): void {
    backend.consecutiveFailures = 0;
  }

  /** Records a failed request; returns the ejection time when this failure ejects the backend, else 0. */
  failure(backend: Backend, now: number): number {
    // Requests still in flight when the backend was ejected do not count towards its next ejection.
    if (now < backend.ejectedUntil) return 0;
    backend.consecutiveFailures++;
    if (backend.consecutiveFailures < this.#config.consecutive_failures) return 0;
    let ejected = 1;
    for (const b of this.#group) if (b !== backend && now < b.ejectedUntil) ejected++;
    if ((ejected / this.#group.length) * 100 > this.#config.max_ejection_percent) return 0;
    // A backend that stayed in for the longest ejection time since its last one starts again from the base.
    if (now - backend.ejectedUntil > this.#config.max_ejection_ms) backend.ejections = 0;
    const duration = Math.min(this.#config.base_ejection_ms * 2 ** backend.ejections, this.#config.max_ejection_ms);
    backend.ejections++;
    backend.ejectionsTotal++;
    backend.ejectedUntil = now + duration;
    backend.rampStart = backend.ejectedUntil;
    backend.consecutiveFailures = 0;
    backend.returnPending = true;
    return duration;
  }
}
