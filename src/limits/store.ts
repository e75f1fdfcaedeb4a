import type { RateDecision } from './token-bucket.js';

/**
 * Where buckets live. The memory store answers synchronously; the shared stores (the cluster primary over
 * IPC, Redis) answer with a promise, which rejects when the check cannot be made (the middleware then
 * applies `on_error`). The rate-limit middleware handles both.
 */
export interface RateLimitStore {
  take(key: string): RateDecision | Promise<RateDecision>;
  /** Resolves when the store can answer, or has waited long enough; never rejects. Awaited before listening. */
  ready?(): Promise<void>;
  /** Stops timers and releases connections; called on shutdown. */
  close(): void;
  /** The store's state now, for the status document; read when one is built, never per request. */
  health?(): StoreHealth;
}

/**
 * The stores whose checks can fail, as the `store` label of `tollgate_ratelimit_store_errors_total` names
 * them: `redis`, and `ipc` (a cluster worker asking the primary, which holds the memory store's buckets).
 */
export const SHARED_STORES = ['redis', 'ipc'] as const;
export type SharedStore = (typeof SHARED_STORES)[number];

/**
 * Why a check failed (the `kind` label): `timeout`, no answer within `timeout_ms`; `unavailable`, no
 * connection to ask on (Redis down or being reconnected to, the primary out of reach); `error`, the store
 * answered with an error (a Redis error reply, a policy the primary cannot read).
 */
export const STORE_ERROR_KINDS = ['timeout', 'unavailable', 'error'] as const;
export type StoreErrorKind = (typeof STORE_ERROR_KINDS)[number];

/** Told by a shared store, when they fail, how many checks failed together and why. */
export type StoreErrorListener = (kind: StoreErrorKind, count: number) => void;

/**
 * `ready`: checks are answered (the memory store always is). `connecting`: Redis not connected yet, and no
 * attempt has failed. `down`: no connection (Redis refused or lost it and is being reconnected to; the
 * primary out of reach). `failing`: connected, but the last check failed (timed out or answered an error);
 * the next check that works makes it `ready` again.
 */
export type StoreState = 'ready' | 'connecting' | 'down' | 'failing';

/** Worst first: how a cluster primary picks one state for a store its workers see differently. */
export const STORE_STATES: readonly StoreState[] = ['down', 'failing', 'connecting', 'ready'];

export interface StoreError {
  kind: StoreErrorKind;
  message: string;
  /** Epoch milliseconds. */
  at: number;
}

/** A store's state as the status document shows it (field names as in the JSON). */
export interface StoreHealth {
  store: 'memory' | SharedStore;
  /** Where it asks: Redis (without credentials), `primary`; null for the memory store. */
  target: string | null;
  state: StoreState;
  /** The last failed check or connection error (kept once the store recovers); null before any. */
  last_error: StoreError | null;
}

/** A store in use with the routes that use it: a row of the status document's `rate_limit.stores`. */
export interface StoreStatus extends StoreHealth {
  routes: string[];
}
