import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { Backend } from '../balancing/backend.js';
import type { LoadBalancer } from '../balancing/load-balancer.js';
import { RequestContext } from '../proxy/context.js';
import { ProxyError } from '../proxy/errors.js';
import type { Phases } from '../proxy/phases.js';
import { WebSocketRegistry, WebSocketSession } from '../proxy/websocket.js';
import { Route } from '../routing/route.js';
import { hundredths } from '../util/format.js';
import type { DirectLog } from './logger.js';

/** The completion line's phase. */
export interface AccessLog extends Phases {
  /** Writes out lines still waiting for the end of the event-loop turn (before the process exits). */
  flush(): void;
  /** How lines are written: `direct` (built from a template, see createAccessLog) or `pino` (its API). */
  readonly path: 'direct' | 'pino';
}

export interface AccessLogOptions {
  /** The logger's parts (from `createLogger`); without them lines go through pino's API. */
  direct?: DirectLog | undefined;
  /** performance.now() by default; for `duration_ms`. */
  now?: () => number;
}

const MESSAGE = 'Request Completed';

/**
 * The completion line: one per request, at `info` (at `warn` when the request failed with a 5xx of
 * Tollgate's own, so upstream faults and requests cut off at shutdown stand out with their request id).
 * At level `warn` only those lines are written; above it, the phase is not installed at all.
 *
 * With the logger's DirectLog (a logger made by `createLogger`), each line is built from one template and
 * the lines of one event-loop turn are handed to the destination together: pino's API (`logger.info(fields,
 * msg)`) took 16.4 µs a line against 5.0 µs for this (Node 20, 200,000 lines a round to an async destination,
 * interleaved, median of 5 rounds): 11 µs more per request is about 14% of the CPU a proxied request costs
 * (about 80 µs: docs/deployment.md, sizing). The
 * template must write exactly the line pino would, so it is checked at start: probe lines go both ways to a
 * scratch destination, and if they differ at all (a pino release that writes its lines differently), every
 * line goes through pino's API instead, with a warning. Any other logger is written to through pino's API.
 */
export function createAccessLog(logger: Logger, options: AccessLogOptions = {}): AccessLog | undefined {
  if (!logger.isLevelEnabled('warn')) return undefined;
  const now = options.now ?? performanceNow;
  const direct = options.direct;
  const accessLog = direct === undefined ? viaPino(logger, now) : checked(logger, direct, now);
  return logger.isLevelEnabled('info') ? accessLog : warningsOnly(accessLog);
}

function checked(logger: Logger, direct: DirectLog, now: () => number): AccessLog {
  const mismatch = checkTemplate(direct);
  if (mismatch === undefined) return viaDirect(direct, now);
  logger.warn({ template: mismatch.template, pino: mismatch.pino }, 'access log: the line template does not match what pino writes; writing completion lines through pino (slower)');
  return viaPino(logger, now);
}

/** Level `warn`: only the lines written at `warn`. */
function warningsOnly(accessLog: AccessLog): AccessLog {
  const log = accessLog.logging as (ctx: RequestContext) => void;
  return {
    ...accessLog,
    logging: function logFailure(ctx: RequestContext) {
      if (warns(ctx)) log(ctx);
    },
  };
}

function performanceNow(): number {
  return performance.now();
}

function warns(ctx: RequestContext): boolean {
  return ctx.error !== undefined && ctx.error.status >= 500;
}

function viaPino(logger: Logger, now: () => number): AccessLog {
  return {
    name: 'access-log',
    path: 'pino',
    flush() {
      // Every line was handed to pino when it was logged.
    },
    logging: function logCompletion(ctx: RequestContext) {
      const fields = fieldsOf(ctx, hundredths(now() - ctx.startedAt));
      if (warns(ctx)) logger.warn(fields, MESSAGE);
      else logger.info(fields, MESSAGE);
    },
  };
}

function viaDirect(direct: DirectLog, now: () => number): AccessLog {
  const line = template(direct);
  // Lines of one event-loop turn go to the destination as one write: sonic-boom measures the byte length of
  // its whole pending buffer on every write, so line-by-line writes cost 15,000 instructions per request
  // (callgrind); one write per turn makes that cost per batch.
  let pending = '';
  const flush = (): void => {
    if (pending === '') return;
    const batch = pending;
    pending = '';
    direct.write(batch);
  };
  return {
    name: 'access-log',
    path: 'direct',
    flush,
    logging: function logCompletion(ctx: RequestContext) {
      if (pending === '') setImmediate(flush);
      pending += line(ctx, hundredths(now() - ctx.startedAt));
    },
  };
}

/**
 * The line pino writes for `logger.info(fieldsOf(ctx, duration), MESSAGE)`, from one template. Only values
 * a client controls go through JSON.stringify; the rest are numbers, checked ids and config names escaped
 * once.
 */
function template(direct: DirectLog): (ctx: RequestContext, duration: string) => string {
  const { info, warn, bindings } = direct;
  const time = direct.time;
  /** `"upstream":…,"upstream_addr":…` per backend, escaped once. */
  const upstreamFields = new Map<Backend, string>();
  const upstreamOf = (backend: Backend | undefined): string => {
    if (backend === undefined) return '"upstream":null,"upstream_addr":null';
    let fields = upstreamFields.get(backend);
    if (fields === undefined) {
      fields = `"upstream":${JSON.stringify(backend.name)},"upstream_addr":${JSON.stringify(backend.address)}`;
      upstreamFields.set(backend, fields);
    }
    return fields;
  };
  return function completionLine(ctx: RequestContext, duration: string): string {
    const req = ctx.req;
    const error = ctx.error;
    const ua = req.headers['user-agent'];
    let failure = '';
    if (error !== undefined) {
      failure = `,"error":"${error.code}"`;
      if (error.cause !== undefined) failure += `,"cause":${JSON.stringify(describeCause(error.cause))}`;
      // The auth middleware's reasons are fixed words (metrics.ts AUTH_FAILURE_REASONS): JSON-safe as they are.
      if (ctx.authFailure !== undefined) failure += `,"auth_failure":"${ctx.authFailure}"`;
    }
    const webSocket = ctx.webSocket;
    // A WebSocket's line is written when it closes: bytes from the client and why it closed (cause names are JSON-safe).
    const closing = webSocket?.closedBy === undefined ? '' : `,"bytes_received":${webSocket.bytesReceived},"closed_by":"${webSocket.closedBy}"`;
    // request_id matches [A-Za-z0-9._-] and the client address is an IP: both are JSON-safe as they are.
    return (
      `${warns(ctx) ? warn : info}${time()}${bindings}` +
      `,"request_id":"${ctx.requestId}"${ctx.traceId === '' ? '' : `,"trace_id":"${ctx.traceId}"`},"client":"${ctx.clientAddress}","method":${JSON.stringify(req.method)},"protocol":"${ctx.protocol}"` +
      `,"path":${JSON.stringify(ctx.path)},${ctx.route === undefined ? '"route":null,"service":null' : ctx.route.logFields},${upstreamOf(ctx.backend)}` +
      `,"status":${ctx.status}${ctx.grpcStatus === -1 ? '' : `,"grpc_status":${ctx.grpcStatus}`},"bytes":${ctx.bytesSent},"duration_ms":${duration}` +
      `,"user_agent":${ua === undefined ? 'null' : JSON.stringify(ua)},"retries":${ctx.retries}${failure}${closing}` +
      `,"msg":"${MESSAGE}"}\n`
    );
  };
}

/** The completion line's fields, in the order the template writes them (for pino's API). */
function fieldsOf(ctx: RequestContext, duration: string): Record<string, unknown> {
  const req = ctx.req;
  const route = ctx.route;
  const backend = ctx.backend;
  const error = ctx.error;
  const fields: Record<string, unknown> = { request_id: ctx.requestId };
  if (ctx.traceId !== '') fields.trace_id = ctx.traceId;
  fields.client = ctx.clientAddress;
  fields.method = req.method;
  fields.protocol = ctx.protocol;
  fields.path = ctx.path;
  fields.route = route === undefined ? null : route.name;
  fields.service = route?.service === undefined ? null : route.service.name;
  fields.upstream = backend === undefined ? null : backend.name;
  fields.upstream_addr = backend === undefined ? null : backend.address;
  fields.status = ctx.status;
  if (ctx.grpcStatus !== -1) fields.grpc_status = ctx.grpcStatus;
  fields.bytes = ctx.bytesSent;
  fields.duration_ms = Number(duration);
  fields.user_agent = req.headers['user-agent'] ?? null;
  fields.retries = ctx.retries;
  if (error !== undefined) {
    fields.error = error.code;
    if (error.cause !== undefined) fields.cause = describeCause(error.cause);
    if (ctx.authFailure !== undefined) fields.auth_failure = ctx.authFailure;
  }
  const webSocket = ctx.webSocket;
  if (webSocket?.closedBy !== undefined) {
    fields.bytes_received = webSocket.bytesReceived;
    fields.closed_by = webSocket.closedBy;
  }
  return fields;
}

/**
 * Writes each probe request's line through the template and through pino's API (a twin of the logger,
 * writing to a string); the first pair that differs, or undefined when all agree.
 */
function checkTemplate(direct: DirectLog): { template: string; pino: string } | undefined {
  let written = '';
  const twin = direct.twin((line) => {
    written += line;
  });
  const line = template(twin.direct);
  for (const ctx of probeRequests()) {
    written = '';
    const duration = '12.34';
    if (warns(ctx)) twin.logger.warn(fieldsOf(ctx, duration), MESSAGE);
    else twin.logger.info(fieldsOf(ctx, duration), MESSAGE);
    const built = line(ctx, duration);
    if (built !== written) return { template: built, pino: written };
  }
  return undefined;
}

/** Requests that use every part of the template, with characters JSON must escape where clients set them. */
export function probeRequests(): RequestContext[] {
  const socket = { remoteAddress: '127.0.0.1' };
  const get = { method: 'GET', url: '/', headers: { 'user-agent': 'probe "agent" \\ \u00e9\u0001\u2028' }, socket } as unknown as IncomingMessage;
  const ok = new RequestContext(get, {} as ServerResponse, 0);
  ok.requestId = 'probe-1';
  ok.traceId = '0af7651916cd43dd8448eb211c80319c';
  ok.path = '/probe?q="x"&b=\\&c=\u00fc\u{1f600}';
  ok.route = new Route({ name: 'probe "route"', service: { name: 'svc' } as LoadBalancer, phases: [], dropRequestHeaders: new Set() });
  ok.backend = { name: 'b"1', address: '127.0.0.1:1' } as Backend;
  ok.status = 200;
  ok.bytesSent = 5;
  const post = { method: 'POST', url: '/', headers: {}, socket } as unknown as IncomingMessage;
  const failed = new RequestContext(post, {} as ServerResponse, 0, 'h2');
  failed.requestId = 'probe-2';
  failed.status = 502;
  failed.retries = 1;
  failed.grpcStatus = 14;
  failed.error = new ProxyError('bad_gateway', { cause: Object.assign(new Error('connect "refused"\n'), { code: 'ECONNREFUSED' }) });
  const ws = new RequestContext(get, {} as ServerResponse, 0);
  ws.requestId = 'probe-3';
  ws.status = 101;
  ws.bytesSent = 12;
  ws.webSocket = new WebSocketSession(Buffer.alloc(0), new WebSocketRegistry());
  ws.webSocket.bytesReceived = 34;
  ws.webSocket.closedBy = 'upstream_reset';
  return [ok, failed, ws];
}

function describeCause(cause: unknown): string {
  if (cause instanceof Error) {
    const code = (cause as { code?: unknown }).code;
    return typeof code === 'string' ? `${code}: ${cause.message}` : cause.message;
  }
  return String(cause);
}
