import type { RateLimitConfig } from '../../config/schema.js';
import type { RateLimitStore } from '../../limits/store.js';
import type { RateDecision } from '../../limits/token-bucket.js';
import type { RequestContext } from '../../proxy/context.js';
import { ProxyError } from '../../proxy/errors.js';
import type { FilterResult, Phases } from '../../proxy/phases.js';

const RATE_LIMITED = new ProxyError('rate_limited');
const UNAVAILABLE = new ProxyError('rate_limit_unavailable');

/**
 * Rate limiting as a request filter. The client is the authenticated principal when there is one (so a
 * credential has one budget wherever it comes from), else its address; requests that failed authentication
 * are charged to their address. Every response to a limited request carries the IETF RateLimit headers.
 *
 * When a shared store cannot answer (its promise rejects: Redis down, or Redis or the cluster primary
 * slower than `timeout_ms`), the store's `on_error` decides: `allow` lets the request through without
 * RateLimit headers (nothing is known about the bucket), `deny` answers 503 `rate_limit_unavailable` with
 * `Retry-After: 1`. The store counts and logs the failures.
 */
export function createRateLimit(config: RateLimitConfig, store: RateLimitStore, keyPrefix = ''): Phases {
  const policy = `"default";q=${config.requests_per_minute};w=60`;
  // Both stores have on_error: Redis's, and the memory store's for a cluster worker waiting on the primary.
  const deny = config.store.on_error === 'deny';

  function unavailable(ctx: RequestContext): FilterResult {
    if (!deny) return false;
    ctx.responseHeaders.push('Retry-After', '1');
    return UNAVAILABLE;
  }

  function apply(ctx: RequestContext, decision: RateDecision): FilterResult {
    ctx.rateLimit = decision;
    ctx.responseHeaders.push(
      'RateLimit-Policy',
      policy,
      'RateLimit',
      `"default";r=${decision.remaining};t=${Math.ceil(decision.resetMs / 1000)}`,
    );
    if (decision.allowed) return false;
    ctx.responseHeaders.push('Retry-After', String(Math.max(1, Math.ceil(decision.retryAfterMs / 1000))));
    return RATE_LIMITED;
  }

  return {
    name: 'rate-limit',
    requestFilter: function rateLimit(ctx): FilterResult | Promise<FilterResult> {
      const key = keyPrefix + (ctx.principal ?? `addr:${ctx.clientAddress}`);
      const decision = store.take(key);
      if (decision instanceof Promise) return decision.then((d) => apply(ctx, d), () => unavailable(ctx));
      return apply(ctx, decision);
    },
  };
}
