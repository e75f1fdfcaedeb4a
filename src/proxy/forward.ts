import type { Dispatcher } from 'undici';
import type { RequestContext } from './context.js';
import type { Http2ServerResponse } from 'node:http2';
import type { Socket } from 'node:net';
import { fromUpstreamError, markRequest, type ProxyError } from './errors.js';
import { downstreamTrailers, grpcStatusIn, type UpstreamTrailers } from './grpc.js';
import { connectionTokens, hopByHop } from './headers.js';
import { BodyLimiter, pipeBody } from './request-body.js';
import { bodyBytesPassed } from './scavenge.js';

/** What the forward handler needs from the pipeline; implemented by Pipeline. */
export interface ForwardHost {
  /** Writes the response head: adds Tollgate's headers and runs the response filters. */
  writeHead(ctx: RequestContext, status: number, headers: string[]): void;
  /** Writes a gRPC trailers-only response (headers with grpc-status, and the end of the stream). */
  writeTrailersOnly(ctx: RequestContext, headers: string[]): void;
  /** The upstream request failed (before or after the response head); undefined: the client left first. */
  upstreamFailed(ctx: RequestContext, error: ProxyError | undefined): void;
}

/** The reason given to undici when the client has left: not an upstream failure, nothing to answer. */
export const CLIENT_GONE = new Error('client closed the connection');

/**
 * Streams one upstream response to the client. undici calls it (its low-level handler API, with raw
 * header buffers, so no header object is built); state lives here, one instance per request.
 * Backpressure: when the client socket is full, onData returns false and undici pauses the upstream
 * socket until the client drains. What escapes a callback is rethrown marked with the request id (see
 * Pipeline#start).
 */
export class ForwardHandler implements Dispatcher.DispatchHandler {
  readonly #ctx: RequestContext;
  readonly #host: ForwardHost;
  #resume: (() => void) | undefined = undefined;
  #waitingForDrain = false;
  #settled = false;
  /** The status the upstream answered with (0 before its head). */
  #status = 0;
  /** The upstream's answer was a gRPC trailers-only response, already sent whole: its (empty) end is ignored. */
  #trailersOnly = false;
  /** Where body chunks after the first go: the client's socket (see directSocket), null for the response, undefined before the first. */
  #direct: Socket | null | undefined = undefined;

  constructor(ctx: RequestContext, host: ForwardHost) {
    this.#ctx = ctx;
    this.#host = host;
  }

  onConnect(abort: (err?: Error) => void): void {
    const ctx = this.#ctx;
    try {
      if (ctx.res.destroyed || ctx.res.headersSent) {
        // The client left, or was answered (a gRPC deadline), while the request waited for a connection: never send it.
        abort(CLIENT_GONE);
        return;
      }
      ctx.abortUpstream = abort;
      if (ctx.body instanceof BodyLimiter) pipeBody(ctx.req, ctx.body);
    } catch (err) {
      throw markRequest(err, ctx.requestId);
    }
  }

  onHeaders(status: number, raw: Buffer[], resume: () => void): boolean {
    if (status < 200) return true; // 1xx from the upstream: Node answers Expect itself; others are dropped
    const ctx = this.#ctx;
    this.#resume = resume;
    this.#status = status;
    ctx.upstreamLatency = performance.now() - ctx.dispatchedAt;
    ctx.error = undefined; // an earlier attempt's failure, now recovered by a retry
    const headers = upstreamResponseHeaders(raw);
    try {
      if (ctx.grpc && ctx.protocol === 'h2' && (ctx.grpcStatus = grpcStatusIn(headers)) !== -1) {
        // grpc-status in the response headers: a trailers-only response (PROTOCOL-HTTP2.md), passed on in
        // its own form, with END_STREAM on the HEADERS frame.
        this.#trailersOnly = true;
        this.#host.writeTrailersOnly(ctx, headers);
        return true;
      }
      this.#host.writeHead(ctx, status, headers);
      // An event stream's head goes out now, not with its first event: an EventSource is open from the head,
      // and the first event may be minutes away. Other responses keep the head and first chunk in one write.
      if (isEventStream(headers)) ctx.res.flushHeaders();
    } catch (err) {
      // Node refused a header (invalid characters from the upstream): treat as a bad upstream response.
      try {
        ctx.abortUpstream?.(err as Error);
      } catch (failed) {
        throw markRequest(failed, ctx.requestId);
      }
      return false;
    }
    return true;
  }

  onData(chunk: Buffer): boolean {
    if (this.#trailersOnly) return true; // nothing may follow a trailers-only response
    const ctx = this.#ctx;
    ctx.bytesSent += chunk.length;
    bodyBytesPassed(chunk.length);
    const direct = this.#direct;
    if (direct) return direct.write(chunk) || this.#waitForDrain(direct);
    const res = ctx.res;
    let written: boolean;
    try {
      written = res.write(chunk);
    } catch (err) {
      throw markRequest(err, ctx.requestId);
    }
    if (direct === undefined) this.#direct = directSocket(ctx);
    return written || this.#waitForDrain(res);
  }

  /** The client's side is full: undici pauses the upstream until it drains. Returns false, for onData. */
  #waitForDrain(out: NodeJS.EventEmitter): false {
    if (!this.#waitingForDrain) {
      this.#waitingForDrain = true;
      out.once('drain', () => {
        this.#waitingForDrain = false;
        this.#resume?.();
      });
    }
    return false;
  }

  onComplete(trailers?: UpstreamTrailers): void {
    try {
      if (!this.#settle(undefined) || this.#trailersOnly) return;
      const ctx = this.#ctx;
      // Trailers reach HTTP/2 clients (gRPC's status is in them); node:http would need them declared
      // before a chunked body, so HTTP/1.1 clients get none, as before.
      if (ctx.protocol === 'h2') {
        const fields = downstreamTrailers(ctx, trailers);
        if (fields !== undefined) (ctx.res as unknown as Http2ServerResponse).addTrailers(fields);
      }
      ctx.res.end();
    } catch (err) {
      throw markRequest(err, this.#ctx.requestId);
    }
  }

  onError(err: Error): void {
    if (this.#settled) return;
    // The client leaving first is not the upstream's fault: nothing to count, nothing to answer.
    const error = err === CLIENT_GONE ? undefined : fromUpstreamError(err);
    try {
      this.#settle(error?.source === 'upstream' ? error : undefined);
      this.#host.upstreamFailed(this.#ctx, error);
    } catch (failed) {
      throw markRequest(failed, this.#ctx.requestId);
    }
  }

  /**
   * Marks the upstream side finished exactly once (false if it already was) and reports the attempt's
   * outcome to its balancer: the one place the forwarding path touches balancer state.
   */
  #settle(failure: ProxyError | undefined): boolean {
    if (this.#settled) return false;
    this.#settled = true;
    const ctx = this.#ctx;
    ctx.abortUpstream = undefined;
    const backend = ctx.backend;
    if (backend !== undefined) ctx.service?.release(backend, failure, this.#status, this.#status === 0 ? -1 : ctx.upstreamLatency);
    return true;
  }
}

/** The parts of node:http's ServerResponse state that say whether its body may bypass it (see directSocket). */
interface ResponseState {
  readonly socket: Socket | null;
  readonly chunkedEncoding?: boolean;
  readonly _headerSent?: boolean;
  readonly _hasBody?: boolean;
  readonly outputData?: readonly unknown[];
}

/**
 * The client's socket, when the rest of an HTTP/1.1 response body can be written to it directly, else null.
 * ServerResponse#write does more per chunk than the socket's own write (it corks the socket and schedules
 * the uncork on the next tick, every time); writing to the socket took 1 MiB downloads from 538 to 728 MiB
 * per CPU-second on Node 24 (docs/benchmarks.md, "The large-body path"). Once the head is on the socket
 * and the body needs no framing of the response's (a Content-Length, not chunked), the socket carries the
 * same bytes, in order, and the response's end() still finishes it (keep-alive, the next pipelined
 * response). Any field this reads that a Node release no longer has, or a response that is chunked, not yet
 * on its socket, queued behind another or without a body (HEAD, 204, 304): null, and every chunk goes
 * through the response.
 */
function directSocket(ctx: RequestContext): Socket | null {
  if (ctx.protocol !== 'http/1.1') return null;
  const res = ctx.res as unknown as ResponseState;
  const socket = res.socket;
  if (socket === null || res.chunkedEncoding !== false || res._headerSent !== true || res._hasBody !== true) return null;
  return res.outputData?.length === 0 ? socket : null;
}

/** Whether a flat header list says `Content-Type: text/event-stream` (Server-Sent Events). */
function isEventStream(headers: string[]): boolean {
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i] as string;
    if (name.length === 12 && name.toLowerCase() === 'content-type') return (headers[i + 1] as string).trimStart().toLowerCase().startsWith('text/event-stream');
  }
  return false;
}

/** Response headers from undici's raw buffers, minus hop-by-hop ones, as a flat name/value list. */
export function upstreamResponseHeaders(raw: Buffer[]): string[] {
  const out: string[] = [];
  let connection: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = (raw[i] as Buffer).toString('latin1');
    const lower = hopByHop(name);
    if (lower !== undefined) {
      if (lower === 'connection') {
        const value = (raw[i + 1] as Buffer).toString('latin1');
        connection = connection === undefined ? value : `${connection},${value}`;
      }
      continue;
    }
    out.push(name, (raw[i + 1] as Buffer).toString('latin1'));
  }
  const listed = connectionTokens(connection);
  if (listed === undefined) return out;
  const kept: string[] = [];
  for (let i = 0; i < out.length; i += 2) {
    if (!listed.has((out[i] as string).toLowerCase())) kept.push(out[i] as string, out[i + 1] as string);
  }
  return kept;
}
