import { isTakeReply, type TakeGroup, type TakeReply, type TakeRequest } from '../cluster/messages.js';
import type { RateLimitConfig } from '../config/schema.js';
import type { Clock } from '../util/clock.js';
import { MemoryStore } from './memory-store.js';
import type { RateLimitStore } from './store.js';
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

type Resolver = (decision: RateDecision) => void;

/** One policy's store on a worker: every take is a question to the primary. */
export interface IpcView extends RateLimitStore {
  take(key: string): Promise<RateDecision>;
}

/** One policy's takes waiting for the next message. */
interface Pending {
  readonly policy: string;
  ids: number[];
  keys: string[];
}

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
 * If the primary cannot be reached (it is gone: the worker is about to exit), takes reject and the
 * middleware lets the request through, as `on_error: allow`.
 */
export class IpcStore {
  readonly #channel: IpcChannel;
  readonly #pending = new Map<number, Resolver>();
  readonly #failures = new Map<number, (err: Error) => void>();
  readonly #views = new Map<string, IpcView>();
  #nextId = 1;
  /** The policies with takes in the next message, in the order of their first take. */
  #batch: Pending[] = [];
  #scheduled = false;
  readonly #onMessage = (message: unknown): void => {
    if (isTakeReply(message)) this.#settle(message);
  };
  readonly #flush = (): void => this.#send();

  constructor(channel: IpcChannel) {
    this.#channel = channel;
    channel.on('message', this.#onMessage);
  }

  /**
   * The store of one policy: its takes go to the primary's buckets for that policy. The same object for
   * the same policy; closing it closes nothing (`close` on this object does).
   */
  view(policy: BucketPolicy): IpcView {
    const key = policyKey(policy);
    let view = this.#views.get(key);
    if (view === undefined) {
      const pending: Pending = { policy: key, ids: [], keys: [] };
      view = {
        take: (k: string) => this.#take(pending, k),
        close: () => {},
      };
      this.#views.set(key, view);
    }
    return view;
  }

  /** Takes waiting for an answer (tests, diagnostics). */
  get pending(): number {
    return this.#pending.size;
  }

  close(): void {
    this.#channel.off('message', this.#onMessage);
    this.#failAll(new Error('rate-limit store closed'));
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
      this.#pending.set(id, resolve);
      this.#failures.set(id, reject);
    });
  }

  #send(): void {
    this.#scheduled = false;
    const groups: TakeGroup[] = this.#batch.map((p) => {
      const group: TakeGroup = { policy: p.policy, ids: p.ids, keys: p.keys };
      p.ids = [];
      p.keys = [];
      return group;
    });
    this.#batch = [];
    const message: TakeRequest = { type: 'tollgate:take', groups };
    const failed = (err: Error | null): void => {
      if (err !== null) for (const group of groups) for (const id of group.ids) this.#reject(id, err);
    };
    // With a callback, a closed channel is reported to it instead of as an 'error' event on the process.
    if (this.#channel.send === undefined) failed(new Error('no IPC channel to the primary'));
    else this.#channel.send(message, undefined, undefined, failed);
  }

  #settle(reply: TakeReply): void {
    const { ids, decisions } = reply;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i] as number;
      const resolve = this.#pending.get(id);
      if (resolve === undefined) continue;
      this.#pending.delete(id);
      this.#failures.delete(id);
      const at = i * 4;
      resolve({
        allowed: decisions[at] === 1,
        remaining: decisions[at + 1] as number,
        retryAfterMs: decisions[at + 2] as number,
        resetMs: decisions[at + 3] as number,
      });
    }
    if (reply.failed !== undefined) {
      const err = new Error('the primary cannot read the rate-limit policy');
      for (const id of reply.failed) this.#reject(id, err);
    }
  }

  #reject(id: number, err: Error): void {
    const reject = this.#failures.get(id);
    this.#pending.delete(id);
    this.#failures.delete(id);
    reject?.(err);
  }

  #failAll(err: Error): void {
    for (const id of [...this.#failures.keys()]) this.#reject(id, err);
  }
}
