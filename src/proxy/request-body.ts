import type { IncomingMessage } from 'node:http';
import { Transform, type TransformCallback } from 'node:stream';
import { ProxyError } from './errors.js';
import { bodyBytesPassed } from './scavenge.js';

/**
 * Largest request body kept in memory while it is sent, so that an idempotent request (PUT, DELETE...) can
 * be sent again to another upstream after a reset: 64 KiB covers typical API bodies without letting large
 * uploads pile up in memory.
 */
export const REPLAY_MAX_BYTES = 64 * 1024;

/**
 * Stands between the client's request stream and the upstream client. It counts the body and fails as
 * soon as it grows past the limit, so the upstream (whose request is then aborted, without its final
 * chunk) never receives a complete request. It also shields the client's stream: when undici gives up on
 * the body (upstream refused, reset, limit hit) it destroys this stream, not the client socket, so the
 * client can still be answered with a 4xx/5xx. With `keep`, it also keeps the chunks it passes on (up to
 * REPLAY_MAX_BYTES) so that a retry can send the body again.
 */
export class BodyLimiter extends Transform {
  #left: number;
  readonly #maxBytes: number;
  /** The chunks passed on so far, while kept; undefined when not kept or past REPLAY_MAX_BYTES. */
  #kept: Buffer[] | undefined;
  #keptBytes = 0;
  /** The client's body ended and every byte of it went through. */
  #complete = false;

  constructor(maxBytes: number, keep = false) {
    super();
    this.#left = maxBytes;
    this.#maxBytes = maxBytes;
    this.#kept = keep ? [] : undefined;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#left -= chunk.length;
    bodyBytesPassed(chunk.length);
    if (this.#left < 0) {
      callback(bodyTooLarge(this.#maxBytes));
      return;
    }
    if (this.#kept !== undefined) {
      this.#keptBytes += chunk.length;
      if (this.#keptBytes > REPLAY_MAX_BYTES) this.#kept = undefined;
      else this.#kept.push(chunk); // Node hands out a fresh buffer per chunk: no copy needed
    }
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    this.#complete = true;
    callback();
  }

  /**
   * The whole body, to send again on a retry: only when it was kept, fitted in REPLAY_MAX_BYTES and the
   * client had sent all of it (otherwise its rest is still in the client's stream and undefined).
   */
  replayBody(): Buffer | undefined {
    if (!this.#complete || this.#kept === undefined) return undefined;
    return this.#kept.length === 1 ? this.#kept[0] : Buffer.concat(this.#kept, this.#keptBytes);
  }
}

/**
 * Starts the client's body flowing into the limiter. Called only once the upstream connection is ready
 * (undici's onConnect), so a request whose connection failed has consumed nothing and can be retried.
 */
export function pipeBody(req: IncomingMessage, limiter: BodyLimiter): void {
  req.pipe(limiter);
  req.once('aborted', () => limiter.destroy(new Error('client closed the connection mid-body')));
}

/** 413 that says the limit, so a client can tell how much it may send. */
export function bodyTooLarge(maxBytes: number): ProxyError {
  return new ProxyError('payload_too_large', { message: `The request body is larger than the ${maxBytes} bytes the proxy accepts.` });
}
