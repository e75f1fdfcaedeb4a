import type { IncomingMessage } from 'node:http';
import { Transform, type TransformCallback } from 'node:stream';
import { ProxyError } from './errors.js';

/**
 * Stands between the client's request stream and the upstream client. It counts the body and fails as
 * soon as it grows past the limit, so the upstream (whose request is then aborted, without its final
 * chunk) never receives a complete request. It also shields the client's stream: when undici gives up on
 * the body (upstream refused, reset, limit hit) it destroys this stream, not the client socket, so the
 * client can still be answered with a 4xx/5xx.
 */
export class BodyLimiter extends Transform {
  #left: number;
  readonly #maxBytes: number;

  constructor(maxBytes: number) {
    super();
    this.#left = maxBytes;
    this.#maxBytes = maxBytes;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#left -= chunk.length;
    if (this.#left < 0) callback(bodyTooLarge(this.#maxBytes));
    else callback(null, chunk);
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
