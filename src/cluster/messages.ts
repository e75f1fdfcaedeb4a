/**
 * Every IPC message between the cluster primary and its workers, with the guards that recognise them.
 * The table of who sends what, and when, is in docs/architecture.md ("Processes").
 */
import type { AddressInfo } from 'node:net';
import type { Config } from '../config/schema.js';
import type { MetricsSnapshot } from '../observability/metrics.js';
import type { ListenerName } from '../server/listen-error.js';

/**
 * Worker → primary: ready for its start message. (The primary cannot send it on 'online': that comes
 * before the worker's modules have loaded and its listener exists, and a message nobody listens to is lost.)
 */
export interface HelloMessage {
  readonly type: 'tollgate:hello';
}

/** Primary → worker: the validated config and this worker's place; the answer to its hello. */
export interface StartMessage {
  readonly type: 'tollgate:start';
  readonly config: Config;
  /** 0 … workers-1; a restarted worker takes the slot of the one it replaces. */
  readonly slot: number;
  readonly workers: number;
  readonly logFormat: 'json' | 'pretty' | undefined;
  /** The primary's generation number of this config, and the SHA-256 of its file. */
  readonly generation: number;
  readonly hash: string;
}

/** Primary → worker: put this config (validated by the primary) in force as generation `generation`. */
export interface ReloadMessage {
  readonly type: 'tollgate:reload';
  readonly id: number;
  readonly config: Config;
  readonly hash: string;
  readonly generation: number;
}

/** Worker → primary: the answer to a reload, by id. */
export interface ReloadedMessage {
  readonly type: 'tollgate:reloaded';
  readonly id: number;
  readonly result: 'ok' | 'error';
  /** The generation the worker serves now. */
  readonly generation: number;
  readonly errors: string[];
}

/** Primary → worker: drain and exit (graceful shutdown). */
export interface ShutdownMessage {
  readonly type: 'tollgate:shutdown';
}

/** Worker → primary: listening (the address the workers share). */
export interface ListeningMessage {
  readonly type: 'tollgate:listening';
  readonly address: AddressInfo;
}

/**
 * Worker → primary: the proxy port cannot be bound (taken, not an address of this host, ...). The primary
 * says so once for the instance and stops: a restarted worker would not bind it either.
 */
export interface ListenFailedMessage {
  readonly type: 'tollgate:listen-failed';
  readonly listener: ListenerName;
  readonly address: string;
  readonly port: number;
  /** The system's code (`EADDRINUSE`), when it gave one. */
  readonly errno: string | undefined;
  /** The listen error's own message. */
  readonly detail: string;
}

/**
 * Primary → worker: send a snapshot of your numbers (the admin listener is being scraped, or builds its
 * status document). `stats`: with the per-second history; `process`: with the process metrics.
 */
export interface SnapshotRequest {
  readonly type: 'tollgate:snapshot';
  readonly id: number;
  readonly stats: boolean;
  readonly process: boolean;
}

/** Worker → primary: the snapshot asked for by `id`, or the error that prevented it. */
export interface SnapshotReply {
  readonly type: 'tollgate:snapshot-reply';
  readonly id: number;
  readonly snapshot?: MetricsSnapshot;
  readonly error?: string;
}

/**
 * Worker → primary: a batch of rate-limit takes (memory store, limits/ipc-store.ts), grouped by policy:
 * routes can have their own rate and burst, and the primary keeps one bucket store per policy.
 */
export interface TakeRequest {
  readonly type: 'tollgate:take';
  readonly groups: TakeGroup[];
}

/** The takes of one batch made under one policy. */
export interface TakeGroup {
  /** `requests_per_minute/burst_size/max_keys`, as `policyKey` (limits/ipc-store.ts) writes it. */
  readonly policy: string;
  /** Correlation ids, one per key. */
  readonly ids: number[];
  readonly keys: string[];
}

/** Primary → worker: the decisions for a batch of takes, by id. */
export interface TakeReply {
  readonly type: 'tollgate:taken';
  readonly ids: number[];
  /** Four numbers per id: allowed (1 or 0), remaining, retryAfterMs, resetMs. */
  readonly decisions: number[];
  /** Ids the primary could not answer (a policy it cannot read): those takes fail. */
  readonly failed?: number[];
}

export type PrimaryMessage = StartMessage | ShutdownMessage | TakeReply | SnapshotRequest | ReloadMessage;
export type WorkerMessage = HelloMessage | ListeningMessage | ListenFailedMessage | TakeRequest | SnapshotReply | ReloadedMessage;

/** Whether an IPC message (anything a peer sent) has the `type` of T. Checks the type field only. */
export function isMessage<T extends { type: string }>(message: unknown, type: T['type']): message is T {
  return typeof message === 'object' && message !== null && (message as { type?: unknown }).type === type;
}

export function isTakeRequest(message: unknown): message is TakeRequest {
  return isMessage<TakeRequest>(message, 'tollgate:take');
}

export function isTakeReply(message: unknown): message is TakeReply {
  return isMessage<TakeReply>(message, 'tollgate:taken');
}
