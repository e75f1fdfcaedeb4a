import { createHash } from 'node:crypto';
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

  const keyOf = bucketKey(config.key);
  return {
    name: 'rate-limit',
    requestFilter: function rateLimit(ctx): FilterResult | Promise<FilterResult> {
      const key = keyPrefix + keyOf(ctx);
      const decision = store.take(key);
      if (decision instanceof Promise) return decision.then((d) => apply(ctx, d), () => unavailable(ctx));
      return apply(ctx, decision);
    },
  };
}

/**
 * The bucket key of a request for `rate_limit.key`, decided once when the config loads. A request that
 * failed authentication, and one without the header or claim named, is charged to its client address.
 * Header and claim values are put in the key as 16 hex digits of their SHA-256: keys in a shared store
 * hold no client-chosen text and have a bounded length.
 */
export function bucketKey(spec: string): (ctx: RequestContext) => string {
  if (spec === 'client_address') return function byAddress(ctx) {
    return `addr:${ctx.clientAddress}`;
  };
  if (spec === 'credential') return function byCredential(ctx) {
    return ctx.principal ?? `addr:${ctx.clientAddress}`;
  };
  if (spec.startsWith('header:')) {
    const name = spec.slice('header:'.length).toLowerCase();
    return function byHeader(ctx) {
      const value = ctx.req.headers[name];
      if (ctx.authFailure !== undefined || typeof value !== 'string' || value === '') return `addr:${ctx.clientAddress}`;
      return `hdr:${digest(value)}`;
    };
  }
  const claim = spec.slice('claim:'.length);
  return function byClaim(ctx) {
    const value = ctx.authClaims?.[claim];
    if (ctx.authFailure !== undefined || (typeof value !== 'string' && typeof value !== 'number') || value === '') return `addr:${ctx.clientAddress}`;
    return `claim:${digest(String(value))}`;
  };
}

function digest(value: string): string {
  return createHash('sha256').update(value).digest('hex').slice(0, 16);
}
