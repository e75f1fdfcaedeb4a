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

  constructor(maxBytes: number) {
    super();
    this.#left = maxBytes;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#left -= chunk.length;
    if (this.#left < 0) callback(new ProxyError('payload_too_large'));
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
