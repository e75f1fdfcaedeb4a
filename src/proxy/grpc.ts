/**
 * gRPC over HTTP/2 as a proxy sees it (grpc/grpc doc/PROTOCOL-HTTP2.md): a request is recognized by its
 * content type; its deadline is `grpc-timeout`; a call ends with `grpc-status` (and `grpc-message`) in the
 * trailers, or, when there is no message to send, in the only HEADERS frame (a trailers-only response,
 * which must carry END_STREAM: a client that gets the status in headers followed by an empty DATA frame
 * takes it for metadata and reports the call as failed without a status).
 *
 * Everything else of a call (messages, metadata, the upstream's trailers) passes through untouched.
 */
import type { ServerResponse } from 'node:http';
import type { Http2ServerResponse, OutgoingHttpHeaders } from 'node:http2';
import type { RequestContext } from './context.js';
import { grpcMessage, grpcStatusOf, type ProxyError } from './errors.js';

/** `content-type: application/grpc`, `application/grpc+proto`, `application/grpc-web`...: a gRPC call. */
export function isGrpcContentType(value: string | undefined): boolean {
  return value !== undefined && value.startsWith('application/grpc');
}

/** Milliseconds per unit of grpc-timeout: Hours, Minutes, Seconds, millis, micros, nanos. */
const UNIT_MS: Readonly<Record<string, number>> = { H: 3_600_000, M: 60_000, S: 1_000, m: 1, u: 0.001, n: 0.000_001 };
/** TimeoutValue is at most 8 digits. */
const TIMEOUT = /^(\d{1,8})([HMSmun])$/;

/**
 * The deadline `grpc-timeout` sets, in whole milliseconds (a part of one rounds up), or -1 for none. A
 * value gRPC would not send (more than 8 digits, another unit) is no deadline, as Envoy reads it; it is
 * forwarded as it came and the upstream decides.
 */
export function parseGrpcTimeout(value: string | string[] | undefined): number {
  if (typeof value !== 'string') return -1;
  const match = TIMEOUT.exec(value);
  if (match === null) return -1;
  return Math.ceil(Number(match[1]) * (UNIT_MS[match[2] as string] as number));
}

/** Reads a gRPC request's head into the context: called once, when it arrives. */
export function readGrpcHead(ctx: RequestContext): void {
  ctx.grpc = true;
  ctx.grpcTimeoutMs = parseGrpcTimeout(ctx.req.headers['grpc-timeout']);
}

/** The header lines of Tollgate's own answer to a gRPC request: the status and message of `error`. */
export function grpcErrorHeaders(ctx: RequestContext, error: ProxyError): string[] {
  const status = grpcStatusOf(error.code);
  ctx.grpcStatus = status;
  return ['content-type', 'application/grpc', 'grpc-status', String(status), 'grpc-message', grpcMessage(error.message)];
}

/**
 * Sends `headers` as the whole response: on HTTP/2 one HEADERS frame with END_STREAM (node:http2's
 * compatibility API would send the head and then an empty DATA frame to end the stream); on HTTP/1.1
 * (gRPC-Web) a 200 with no body.
 */
export function sendTrailersOnly(ctx: RequestContext, headers: string[]): void {
  if (ctx.protocol !== 'h2') {
    headers.push('content-length', '0');
    ctx.res.writeHead(200, headers);
    ctx.res.end();
    return;
  }
  const stream = (ctx.res as unknown as Http2ServerResponse).stream;
  const head: OutgoingHttpHeaders = { ':status': 200 };
  for (let i = 0; i < headers.length; i += 2) addField(head, (headers[i] as string).toLowerCase(), headers[i + 1] as string);
  stream.respond(head, { endStream: true });
}

function addField(fields: OutgoingHttpHeaders, name: string, value: string): void {
  const had = fields[name];
  if (had === undefined) fields[name] = value;
  else if (Array.isArray(had)) had.push(value);
  else fields[name] = [String(had), value];
}

/** The value of `grpc-status` among header lines (names and values alternating), or -1. */
export function grpcStatusIn(headers: readonly string[]): number {
  for (let i = 0; i < headers.length; i += 2) {
    if ((headers[i] as string).toLowerCase() === 'grpc-status') return statusNumber(headers[i + 1] as string);
  }
  return -1;
}

function statusNumber(value: string): number {
  const n = Number(value);
  return Number.isInteger(n) && n >= 0 ? n : -1;
}

/**
 * Trailers as undici 7 reports them to a handler: raw lines from HTTP/1.1 (buffers, though its types say
 * strings), node:http2's object from HTTP/2, or nothing.
 */
export type UpstreamTrailers = (Buffer | string)[] | Record<string, string | string[] | undefined> | null | undefined;

function text(value: Buffer | string): string {
  return typeof value === 'string' ? value : value.toString('latin1');
}

/**
 * An upstream's trailers as fields to send downstream, pseudo-headers left out; undefined when there are
 * none. Also notes the call's `grpc-status` for the log.
 */
export function downstreamTrailers(ctx: RequestContext, trailers: UpstreamTrailers): OutgoingHttpHeaders | undefined {
  if (trailers === null || trailers === undefined) return undefined;
  let out: OutgoingHttpHeaders | undefined;
  if (Array.isArray(trailers)) {
    for (let i = 0; i + 1 < trailers.length; i += 2) addField((out ??= {}), text(trailers[i] as Buffer | string).toLowerCase(), text(trailers[i + 1] as Buffer | string));
  } else {
    for (const name of Object.keys(trailers)) {
      const value = trailers[name];
      if (value === undefined || name.charCodeAt(0) === 58) continue; // ':'
      (out ??= {})[name] = value;
    }
  }
  const status = out?.['grpc-status'];
  if (typeof status === 'string') ctx.grpcStatus = statusNumber(status);
  return out;
}

/** The response has been ended (or the stream is gone): nothing more can be sent on it. */
export function responseEnded(ctx: RequestContext): boolean {
  if (ctx.protocol !== 'h2') return ctx.res.writableEnded || ctx.res.destroyed;
  // A trailers-only response is sent on the stream itself, which the compatibility object does not see.
  const stream = (ctx.res as unknown as Http2ServerResponse).stream;
  return stream.writableEnded || stream.destroyed;
}

/**
 * Ends a gRPC response whose head is out with Tollgate's status in the trailers (the upstream failed or the
 * deadline passed mid-call): the client gets a status rather than a reset stream. HTTP/2 only.
 */
export function endWithStatus(ctx: RequestContext, error: ProxyError): void {
  const res = ctx.res as unknown as Http2ServerResponse;
  const headers = grpcErrorHeaders(ctx, error);
  const trailers: OutgoingHttpHeaders = { 'x-request-id': ctx.requestId };
  for (let i = 0; i < headers.length; i += 2) if (headers[i] !== 'content-type') trailers[headers[i] as string] = headers[i + 1] as string;
  res.addTrailers(trailers);
  (res as unknown as ServerResponse).end();
}
