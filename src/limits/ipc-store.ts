import { isTakeReply, type TakeGroup, type TakeReply, type TakeRequest } from '../cluster/messages.js';
import type { Logger } from 'pino';
import type { RateLimitConfig } from '../config/schema.js';
import type { Clock } from '../util/clock.js';
import { ThrottledLog } from '../util/throttled-log.js';
import { MemoryStore } from './memory-store.js';
import type { RateLimitStore, StoreError, StoreErrorKind, StoreErrorListener, StoreHealth } from './store.js';
import { policyFromRate, type RateDecision } from './token-bucket.js';

/** The part of a worker's `process` the store uses: send to the primary, hear its replies. */
export interface IpcChannel {
  send?(message: TakeRequest, sendHandle: undefined, options: undefined, callback: (err: Error | null) => void): boolean;
  on(event: 'message', listener: (message: unknown) => void): unknown;
  off(event: 'message', listener: (message: unknown) => void): unknown;
}

/** What makes two rate limits need different buckets in the primary. */
export type BucketPolicy = Pick<RateLimitConfig, 'requests_per_minute' | 'burst_size' | 'max_keys'>;

/** A policy as a take carries it: `requests_per_minute/burst_size/max_keys`, e.g. `100/10/100000`. */
export function policyKey(policy: BucketPolicy): string {
  return `${policy.requests_per_minute}/${policy.burst_size}/${policy.max_keys}`;
}

const POLICY_KEY = /^([1-9]\d{0,15})\/([1-9]\d{0,15})\/([1-9]\d{0,15})$/;

/** The policy a `policyKey` stands for; undefined for anything else (three whole numbers of at least 1). */
export function parsePolicyKey(key: string): BucketPolicy | undefined {
  const m = POLICY_KEY.exec(key);
  if (m === null) return undefined;
  const [requests_per_minute, burst_size, max_keys] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (!Number.isSafeInteger(requests_per_minute) || !Number.isSafeInteger(burst_size) || !Number.isSafeInteger(max_keys)) return undefined;
  return { requests_per_minute, burst_size, max_keys };
}

/**
 * The primary's buckets: one MemoryStore per policy, made when a worker first takes under it, so every
 * route keeps the rate and burst it was configured with (routes with one policy share a store; the route
 * name in the bucket key keeps their clients apart, as in a single process).
 */
export class PolicyStores {
  readonly #stores = new Map<string, MemoryStore>();
  readonly #clock: Clock;

  constructor(clock: Clock) {
    this.#clock = clock;
  }

  /** The store of a policy key; undefined when the key is not one `policyKey` writes. */
  get(key: string): MemoryStore | undefined {
    let store = this.#stores.get(key);
    if (store === undefined) {
      const policy = parsePolicyKey(key);
      if (policy === undefined) return undefined;
      store = new MemoryStore({ policy: policyFromRate(policy.requests_per_minute, policy.burst_size), maxKeys: policy.max_keys, clock: this.#clock });
      this.#stores.set(key, store);
    }
    return store;
  }

  /** Policies with a store. */
  get size(): number {
    return this.#stores.size;
  }

  close(): void {
    for (const store of this.#stores.values()) store.close();
    this.#stores.clear();
  }
}

/** The primary's side: answers one batch from the stores of its policies (memory: synchronous). */
export function answerTakes(stores: PolicyStores, request: TakeRequest): TakeReply {
  const ids: number[] = [];
  const decisions: number[] = [];
  let failed: number[] | undefined;
  for (const group of request.groups) {
    const store = stores.get(group.policy);
    if (store === undefined) {
      (failed ??= []).push(...group.ids);
      continue;
    }
    const { keys } = group;
    for (let i = 0; i < keys.length; i++) {
      const d = store.take(keys[i] as string);
      ids.push(group.ids[i] as number);
      decisions.push(d.allowed ? 1 : 0, d.remaining, d.retryAfterMs, d.resetMs);
    }
  }
  return failed === undefined ? { type: 'tollgate:taken', ids, decisions } : { type: 'tollgate:taken', ids, decisions, failed };
}

/** A take waiting for the primary's answer. */
interface Waiter {
  readonly resolve: (decision: RateDecision) => void;
  readonly reject: (err: Error) => void;
}

/** One policy's store on a worker: every take is a question to the primary. */
export interface IpcView extends RateLimitStore {
  take(key: string): Promise<RateDecision>;
  /** The shared channel's state: every view of one IpcStore says the same. */
  health(): StoreHealth;
}

/** One policy's takes waiting for the next message. */
interface Pending {
  readonly policy: string;
  readonly timeoutMs: number;
  ids: number[];
  keys: string[];
}

/** The takes of one message that share a timeout: one timer for all of them. */
interface Flight {
  readonly timeoutMs: number;
  readonly ids: number[];
  /** Takes not yet answered or failed; the timer is cleared when it reaches 0. */
  left: number;
  timer: NodeJS.Timeout | undefined;
}

export interface IpcStoreOptions {
  /** Where failed takes are reported (at most one line per 5 s while they go on). */
  logger?: Logger;
  /** Told of failed takes as they fail, once per take whatever view it came through (the metrics count them). */
  onErrors?: StoreErrorListener;
}

/** The `timeout_ms` of a memory store config made before the key existed (tests, programmatic use). */
const DEFAULT_TIMEOUT_MS = 100;
/** Most one line per this many ms about failed takes. */
const LOG_INTERVAL_MS = 5_000;

/**
 * A cluster worker's way to the buckets, which live in the primary (one MemoryStore per policy for the
 * whole instance), so a client's budget is shared by every worker instead of multiplied by them. `view`
 * gives each policy its RateLimitStore; all of them share this one channel listener and one batch.
 *
 * Takes made in one turn of the event loop go in one message (flushed by setImmediate, after the poll
 * phase has handed over every request that arrived), whatever their policies, and the primary answers the
 * batch in one message; ids pair the answers with the requests. A message names each policy once, with
 * the takes made under it, so the policy costs one short string per message, not one per take. The cost
 * measured in docs/benchmarks.md (one policy, one hot key) was taken before messages named their policy;
 * that string is all they gained.
 *
 * A take waits at most its store's `timeout_ms` for the primary (a primary whose event loop is stalled
 * would otherwise stall every rate-limited request): each message starts one timer per timeout among its
 * policies (one, unless routes set different ones), cleared when the last of its takes is answered; when
 * it fires, the takes still unanswered reject, and an answer that comes later finds no waiter and is
 * dropped. No timer per take: a take costs the two map entries it cost before the timeout (its waiter,
 * and now its flight in place of a second resolver).
 *
 * If the primary cannot be reached (it is gone: the worker is about to exit), takes reject too. Either way
 * the rate-limit middleware applies the store's `on_error`. Failed takes are counted here (`failures`,
 * `timeouts`), passed to `onErrors` and logged at most once per 5 s, as the Redis store does.
 */
export class IpcStore {
  /** Takes that failed since start (each one's request followed `on_error`). */
  failures = 0;
  /** Of `failures`, those the primary did not answer within `timeout_ms`. */
  timeouts = 0;
  readonly #channel: IpcChannel;
  readonly #waiters = new Map<number, Waiter>();
  /** The flight of each take sent and not yet settled (its timer is cleared when the last one settles). */
  readonly #flights = new Map<number, Flight>();
  readonly #views = new Map<string, IpcView>();
  readonly #logger: Logger | undefined;
  readonly #onErrors: StoreErrorListener | undefined;
  readonly #failureLog = new ThrottledLog(LOG_INTERVAL_MS);
  /** Set on the first failed take; cleared (with a log line) by the next answer. */
  #failing = false;
  #failuresInOutage = 0;
  /** Why the last take failed; cleared by the next answer. */
  #failedKind: StoreErrorKind | undefined;
  #lastError: StoreError | null = null;
  #nextId = 1;
  /** The policies with takes in the next message, in the order of their first take. */
  #batch: Pending[] = [];
  #scheduled = false;
  readonly #onMessage = (message: unknown): void => {
    if (isTakeReply(message)) this.#settle(message);
  };
  readonly #flush = (): void => this.#send();

  constructor(channel: IpcChannel, options: IpcStoreOptions = {}) {
    this.#channel = channel;
    this.#logger = options.logger;
    this.#onErrors = options.onErrors;
    channel.on('message', this.#onMessage);
  }

  /**
   * The store of one policy: its takes go to the primary's buckets for that policy and wait at most
   * `timeoutMs` for the answer. The same object for the same policy and timeout; closing it closes nothing
   * (`close` on this object does).
   */
  view(policy: BucketPolicy, timeoutMs = DEFAULT_TIMEOUT_MS): IpcView {
    const key = policyKey(policy);
    const viewKey = `${key} ${timeoutMs}`;
    let view = this.#views.get(viewKey);
    if (view === undefined) {
      const pending: Pending = { policy: key, timeoutMs, ids: [], keys: [] };
      view = {
        take: (k: string) => this.#take(pending, k),
        close: () => {},
        health: () => this.health(),
      };
      this.#views.set(viewKey, view);
    }
    return view;
  }

  /** `ready` while the primary answers; `failing` after a take it did not answer in time; `down` when out of reach. */
  health(): StoreHealth {
    const kind = this.#failedKind;
    return { store: 'ipc', target: 'primary', state: kind === undefined ? 'ready' : kind === 'unavailable' ? 'down' : 'failing', last_error: this.#lastError };
  }

  /** Takes waiting for an answer (tests, diagnostics). */
  get pending(): number {
    return this.#waiters.size;
  }

  close(): void {
    this.#channel.off('message', this.#onMessage);
    const err = new Error('rate-limit store closed');
    for (const id of [...this.#waiters.keys()]) this.#reject(id, err);
  }

  #take(pending: Pending, key: string): Promise<RateDecision> {
    const id = this.#nextId++;
    if (pending.ids.length === 0) this.#batch.push(pending);
    pending.ids.push(id);
    pending.keys.push(key);
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(this.#flush);
    }
    return new Promise<RateDecision>((resolve, reject) => {
      this.#waiters.set(id, { resolve, reject });
    });
  }

  #send(): void {
    this.#scheduled = false;
    const flights: Flight[] = [];
    const groups: TakeGroup[] = this.#batch.map((p) => {
      const group: TakeGroup = { policy: p.policy, ids: p.ids, keys: p.keys };
      let flight = flights.find((f) => f.timeoutMs === p.timeoutMs);
      if (flight === undefined) {
        flight = { timeoutMs: p.timeoutMs, ids: [], left: 0, timer: undefined };
        flights.push(flight);
      }
      for (const id of p.ids) {
        flight.ids.push(id);
        this.#flights.set(id, flight);
      }
      flight.left += p.ids.length;
      p.ids = [];
      p.keys = [];
      return group;
    });
    this.#batch = [];
    for (const flight of flights) {
      const timer = setTimeout(() => this.#expire(flight), flight.timeoutMs);
      // Waiting takes keep nothing alive: a worker that is done exits without waiting for the timer.
      timer.unref();
      flight.timer = timer;
    }
    const message: TakeRequest = { type: 'tollgate:take', groups };
    const failed = (err: Error | null): void => {
      if (err === null) return;
      for (const group of groups) this.#fail(group.ids, err, 'unavailable');
    };
    // With a callback, a closed channel is reported to it instead of as an 'error' event on the process.
    if (this.#channel.send === undefined) failed(new Error('no IPC channel to the primary'));
    else this.#channel.send(message, undefined, undefined, failed);
  }

  #settle(reply: TakeReply): void {
    const { ids, decisions } = reply;
    let answered = false;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i] as number;
      const waiter = this.#waiters.get(id);
      // Not waiting any more: timed out (or failed) before this answer came.
      if (waiter === undefined) continue;
      this.#waiters.delete(id);
      this.#landed(id);
      answered = true;
      const at = i * 4;
      waiter.resolve({
        allowed: decisions[at] === 1,
        remaining: decisions[at + 1] as number,
        retryAfterMs: decisions[at + 2] as number,
        resetMs: decisions[at + 3] as number,
      });
    }
    if (answered) {
      this.#failedKind = undefined;
      if (this.#failing) this.#recovered();
    }
    if (reply.failed !== undefined) this.#fail(reply.failed, new Error('the primary cannot read the rate-limit policy'), 'error');
  }

  /** A flight's timer fired: its takes still waiting give up. */
  #expire(flight: Flight): void {
    flight.timer = undefined;
    if (flight.left === 0) return;
    this.#fail(flight.ids, new Error(`the cluster primary did not answer within ${flight.timeoutMs} ms`), 'timeout');
  }

  /** Rejects the takes among `ids` still waiting; counts and logs them. */
  #fail(ids: readonly number[], err: Error, kind: StoreErrorKind): void {
    let n = 0;
    for (const id of ids) if (this.#reject(id, err)) n++;
    if (n === 0) return;
    this.failures += n;
    if (kind === 'timeout') this.timeouts += n;
    this.#onErrors?.(kind, n);
    this.#failedKind = kind;
    this.#lastError = { kind, message: err.message, at: Date.now() };
    this.#failuresInOutage += n;
    if (!this.#failing) {
      this.#failing = true;
      this.#failureLog.reset();
    }
    const logger = this.#logger;
    if (logger === undefined) return;
    this.#failureLog.event(
      (count) =>
        logger.warn(
          { err: err.message, failed: count, failed_total: this.failures, timeouts_total: this.timeouts },
          'rate-limit store unavailable (the cluster primary): requests follow on_error',
        ),
      n,
    );
  }

  #recovered(): void {
    this.#failing = false;
    this.#failureLog.reset();
    this.#logger?.info({ failed: this.#failuresInOutage, failed_total: this.failures }, 'rate-limit store answering again (the cluster primary)');
    this.#failuresInOutage = 0;
  }

  /** Rejects one take if it is still waiting; whether it was. */
  #reject(id: number, err: Error): boolean {
    const waiter = this.#waiters.get(id);
    if (waiter === undefined) return false;
    this.#waiters.delete(id);
    this.#landed(id);
    waiter.reject(err);
    return true;
  }

  /** A sent take is settled: the last one of its flight clears the flight's timer. */
  #landed(id: number): void {
    const flight = this.#flights.get(id);
    if (flight === undefined) return;
    this.#flights.delete(id);
    if (--flight.left === 0 && flight.timer !== undefined) {
      clearTimeout(flight.timer);
      flight.timer = undefined;
    }
  }
}
