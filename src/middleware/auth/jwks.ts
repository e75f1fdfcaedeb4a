import { createPublicKey, type JsonWebKeyInput, type KeyObject } from 'node:crypto';
import type { Logger } from 'pino';

/** One signing key of a JWKS: its `kid` and `alg` when the set names them. */
export interface JwksKey {
  readonly kid: string | undefined;
  readonly alg: string | undefined;
  readonly key: KeyObject;
}

export interface JwksOptions {
  /** Longest wait for the endpoint's answer. */
  timeoutMs: number;
  logger?: Logger | undefined;
  /** Milliseconds on a monotonic clock (tests inject one). */
  now?: () => number;
  /** The fetch to use (tests inject one that counts). */
  fetch?: typeof fetch;
  /** Called on every failed fetch (the metrics count them). */
  onFailure?: (() => void) | undefined;
}

/** A token naming an unknown `kid` refreshes the set at most this often (a flood of made-up kids costs one fetch per 10 s). */
export const UNKNOWN_KID_REFRESH_MS = 10_000;
/** Cache lifetime when the endpoint's answer has no usable `Cache-Control: max-age`. */
export const DEFAULT_JWKS_MAX_AGE_MS = 300_000;
/** The answer's own max-age is kept within these bounds: a set is neither re-fetched every second nor kept for days. */
const MIN_MAX_AGE_MS = 30_000;
const MAX_MAX_AGE_MS = 86_400_000;
/** After a failed fetch, the next is tried no sooner than this (the cached keys keep working meanwhile). */
const RETRY_AFTER_FAILURE_MS = 5_000;
/** Largest JWKS document read; an identity provider's set is a few KiB. */
const MAX_JWKS_BYTES = 1024 * 1024;

/**
 * The signing keys of one JWKS URL, fetched when the generation starts and kept: refreshed in the
 * background once the endpoint's cache lifetime has passed, and at once (at most every 10 s) when a token
 * names a `kid` the set does not hold. A failed fetch keeps the keys already held, is logged and counted;
 * with no key held, tokens are refused (never let through). Symmetric (`oct`) keys and encryption keys
 * are dropped when the set is read: a JWKS is public, so an HMAC key from it would let anyone sign.
 *
 * Holds no timer: a refresh is started by a request that finds the set stale. `close()` aborts a fetch
 * under way, so a retired generation leaves nothing running.
 */
export class JwksCache {
  readonly url: string;
  /** Fetches that failed since this cache was made. */
  failures = 0;
  /** Fetches made (tests read it to see the refresh bound hold). */
  fetches = 0;
  /** Goes up each time a fetch replaces the keys (a token verified with the keys before is verified again). */
  version = 0;
  readonly #options: JwksOptions;
  readonly #now: () => number;
  readonly #fetch: typeof fetch;
  #keys: readonly JwksKey[] = [];
  /** When the keys held go stale (now() milliseconds); 0: never fetched. */
  #staleAt = 0;
  #nextTryAt = 0;
  #lastUnknownKidRefresh = Number.NEGATIVE_INFINITY;
  #inflight: Promise<boolean> | undefined;
  readonly #abort = new AbortController();
  #closed = false;

  /** `previous`: the cache of the generation before, whose keys (and lifetime) this one starts with. */
  constructor(url: string, options: JwksOptions, previous?: JwksCache) {
    this.url = url;
    this.#options = options;
    this.#now = options.now ?? (() => performance.now());
    this.#fetch = options.fetch ?? fetch;
    if (previous !== undefined) {
      this.#keys = previous.#keys;
      this.#staleAt = previous.#staleAt;
    }
  }

  /** The keys held now. */
  get keys(): readonly JwksKey[] {
    return this.#keys;
  }

  /** Fetches the set unless keys carried over from the previous generation are still fresh. */
  start(): void {
    if (this.#keys.length === 0 || this.#now() >= this.#staleAt) void this.refresh();
  }

  /**
   * The keys that may verify a token with this header, or none: those whose `kid` is the token's (any key
   * when the token names none) and whose `alg`, when the set gives one, is the token's.
   */
  async candidates(alg: string, kid: string | undefined): Promise<JwksKey[]> {
    const now = this.#now();
    if (this.#keys.length === 0) {
      // Nothing held yet: wait for the fetch under way (or start one, if the last failure is old enough).
      if (this.#inflight === undefined && now >= this.#nextTryAt) void this.refresh();
      if (this.#inflight !== undefined) await this.#inflight;
    } else if (now >= this.#staleAt && now >= this.#nextTryAt && this.#inflight === undefined) {
      void this.refresh();
    }
    let found = match(this.#keys, alg, kid);
    if (found.length === 0 && kid !== undefined && this.#now() - this.#lastUnknownKidRefresh >= UNKNOWN_KID_REFRESH_MS) {
      this.#lastUnknownKidRefresh = this.#now();
      await (this.#inflight ?? this.refresh());
      found = match(this.#keys, alg, kid);
    }
    return found;
  }

  /** Fetches the set now (joining a fetch under way); resolves true when it was read. */
  refresh(): Promise<boolean> {
    if (this.#closed) return Promise.resolve(false);
    this.#inflight ??= this.#load().finally(() => {
      this.#inflight = undefined;
    });
    return this.#inflight;
  }

  /** Stops: a fetch under way is aborted and no other is started. */
  close(): void {
    this.#closed = true;
    this.#abort.abort();
  }

  async #load(): Promise<boolean> {
    this.fetches++;
    try {
      const res = await this.#fetch(this.url, {
        headers: { accept: 'application/json' },
        redirect: 'error',
        signal: AbortSignal.any([this.#abort.signal, AbortSignal.timeout(this.#options.timeoutMs)]),
      });
      if (res.status !== 200) {
        await res.body?.cancel();
        throw new Error(`status ${res.status}`);
      }
      const length = Number(res.headers.get('content-length') ?? '0');
      if (length > MAX_JWKS_BYTES) throw new Error(`the document is larger than ${MAX_JWKS_BYTES} bytes`);
      const text = await res.text();
      if (text.length > MAX_JWKS_BYTES) throw new Error(`the document is larger than ${MAX_JWKS_BYTES} bytes`);
      const keys = parseJwks(JSON.parse(text) as unknown);
      if (keys.length === 0) throw new Error('the set holds no usable signing key');
      this.#keys = keys;
      this.version++;
      this.#staleAt = this.#now() + maxAge(res.headers.get('cache-control'));
      return true;
    } catch (err) {
      if (this.#closed) return false;
      this.failures++;
      this.#nextTryAt = this.#now() + RETRY_AFTER_FAILURE_MS;
      this.#options.onFailure?.();
      this.#options.logger?.warn({ url: this.url, err: (err as Error).message, keys_held: this.#keys.length }, 'JWKS fetch failed; the keys already held stay in use');
      return false;
    }
  }
}

function match(keys: readonly JwksKey[], alg: string, kid: string | undefined): JwksKey[] {
  const out: JwksKey[] = [];
  for (const k of keys) {
    if (kid !== undefined && k.kid !== kid) continue;
    if (k.alg !== undefined && k.alg !== alg) continue;
    out.push(k);
  }
  return out;
}

/** The max-age of a Cache-Control header, within bounds; the default without one. */
export function maxAge(header: string | null): number {
  const m = header === null ? null : /(?:^|,)\s*max-age\s*=\s*"?(\d+)"?/i.exec(header);
  if (m === null) return DEFAULT_JWKS_MAX_AGE_MS;
  return Math.min(MAX_MAX_AGE_MS, Math.max(MIN_MAX_AGE_MS, Number(m[1]) * 1000));
}

const SIGNING_KTY = new Set(['RSA', 'EC', 'OKP']);

/**
 * The public signing keys of a JWKS document (RFC 7517): RSA, EC and OKP keys not marked for encryption.
 * `oct` keys are never taken; a key Node cannot read is skipped (one bad entry does not lose the set).
 */
export function parseJwks(doc: unknown): JwksKey[] {
  if (typeof doc !== 'object' || doc === null || !Array.isArray((doc as { keys?: unknown }).keys)) throw new Error('not a JWKS document (no "keys" list)');
  const out: JwksKey[] = [];
  for (const jwk of (doc as { keys: unknown[] }).keys) {
    if (typeof jwk !== 'object' || jwk === null) continue;
    const { kty, use, kid, alg } = jwk as Record<string, unknown>;
    if (typeof kty !== 'string' || !SIGNING_KTY.has(kty)) continue;
    if (use !== undefined && use !== 'sig') continue;
    try {
      const key = createPublicKey({ key: jwk as JsonWebKeyInput['key'], format: 'jwk' });
      out.push({ kid: typeof kid === 'string' ? kid : undefined, alg: typeof alg === 'string' ? alg : undefined, key });
    } catch {
      // Not a key Node can read: skipped.
    }
  }
  return out;
}
