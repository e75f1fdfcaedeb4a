import { isTakeReply, type TakeReply, type TakeRequest } from '../cluster/messages.js';
import type { RateLimitStore } from './store.js';
import type { RateDecision } from './token-bucket.js';

/** The part of a worker's `process` the store uses: send to the primary, hear its replies. */
export interface IpcChannel {
  send?(message: TakeRequest, sendHandle: undefined, options: undefined, callback: (err: Error | null) => void): boolean;
  on(event: 'message', listener: (message: unknown) => void): unknown;
  off(event: 'message', listener: (message: unknown) => void): unknown;
}

/** The primary's side: answers one batch from its own (synchronous) store. */
export function answerTakes(store: RateLimitStore, request: TakeRequest): TakeReply {
  const decisions: number[] = [];
  for (const key of request.keys) {
    const d = store.take(key) as RateDecision;
    decisions.push(d.allowed ? 1 : 0, d.remaining, d.retryAfterMs, d.resetMs);
  }
  return { type: 'tollgate:taken', ids: request.ids, decisions };
}

type Resolver = (decision: RateDecision) => void;

/**
 * A cluster worker's bucket store: the buckets live in the primary (one MemoryStore for the whole
 * instance), so a client's budget is shared by every worker instead of multiplied by them. Takes made in
 * one turn of the event loop go in one message (flushed by setImmediate, after the poll phase has handed
 * over every request that arrived), and the primary answers the batch in one message; ids pair the answers
 * with the requests. The measured cost is in docs/benchmarks.md.
 *
 * If the primary cannot be reached (it is gone: the worker is about to exit), takes reject and the
 * middleware lets the request through, as `on_error: allow`.
 */
export class IpcStore implements RateLimitStore {
  readonly #channel: IpcChannel;
  readonly #pending = new Map<number, Resolver>();
  readonly #failures = new Map<number, (err: Error) => void>();
  #nextId = 1;
  #ids: number[] = [];
  #keys: string[] = [];
  #scheduled = false;
  readonly #onMessage = (message: unknown): void => {
    if (isTakeReply(message)) this.#settle(message);
  };
  readonly #flush = (): void => this.#send();

  constructor(channel: IpcChannel) {
    this.#channel = channel;
    channel.on('message', this.#onMessage);
  }

  take(key: string): Promise<RateDecision> {
    const id = this.#nextId++;
    this.#ids.push(id);
    this.#keys.push(key);
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(this.#flush);
    }
    return new Promise<RateDecision>((resolve, reject) => {
      this.#pending.set(id, resolve);
      this.#failures.set(id, reject);
    });
  }

  /** Takes waiting for an answer (tests, diagnostics). */
  get pending(): number {
    return this.#pending.size;
  }

  close(): void {
    this.#channel.off('message', this.#onMessage);
    this.#failAll(new Error('rate-limit store closed'));
  }

  #send(): void {
    this.#scheduled = false;
    const message: TakeRequest = { type: 'tollgate:take', ids: this.#ids, keys: this.#keys };
    this.#ids = [];
    this.#keys = [];
    const failed = (err: Error | null): void => {
      if (err !== null) for (const id of message.ids) this.#reject(id, err);
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
