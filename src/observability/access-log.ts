import { pino, type Logger } from 'pino';
import type { Backend } from '../balancing/backend.js';
import type { RequestContext } from '../proxy/context.js';
import type { Phases } from '../proxy/phases.js';
import { hundredths } from '../util/format.js';

const { streamSym, chindingsSym, timeSym, lsCacheSym } = pino.symbols;


/**
 * The completion line: one per request, at `info` (at `warn` when the request failed with a 5xx of
 * Tollgate's own, so upstream faults stand out with their request id). Not installed at all when the
 * level is above `info`.
 *
 * The line is the same JSON pino writes (its level prefix, time and bindings come from the logger), but
 * built with one template per request and written to the logger's destination directly: pino's generic
 * object walk cost 40,000 instructions per request (15% of the whole request, measured with callgrind),
 * this costs a fraction of that. Only values a client controls go through JSON.stringify; the rest are
 * numbers, checked ids and config names made safe once.
 */
export function createAccessLog(logger: Logger): (Phases & { flush(): void }) | undefined {
  if (!logger.isLevelEnabled('info')) return undefined;
  // pino.symbols is pino's documented way in to a logger's destination, bindings, time and level prefixes.
  const internals = logger as unknown as Record<symbol, unknown>;
  const stream = internals[streamSym] as { write(line: string): unknown };
  const bindings = internals[chindingsSym] as string;
  const time = (internals[timeSym] as () => string).bind(logger);
  const levels = internals[lsCacheSym] as Record<number, string>;
  const info = levels[30] as string;
  const warn = levels[40] as string;
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
  // Lines of one event-loop turn go to the destination as one write: sonic-boom measures the byte length of
  // its whole pending buffer on every write, so line-by-line writes cost 15,000 instructions per request
  // (callgrind); one write per turn makes that cost per batch.
  let pending = '';
  const flush = (): void => {
    if (pending === '') return;
    const batch = pending;
    pending = '';
    stream.write(batch);
  };
  return {
    name: 'access-log',
    /** Writes out lines still waiting for the end of the event-loop turn (before the process exits). */
    flush,
    logging: function logCompletion(ctx: RequestContext) {
      const req = ctx.req;
      const error = ctx.error;
      const ua = req.headers['user-agent'];
      let failure = '';
      if (error !== undefined) {
        failure = `,"error":"${error.code}"`;
        if (error.cause !== undefined) failure += `,"cause":${JSON.stringify(describeCause(error.cause))}`;
      }
      // request_id matches [A-Za-z0-9._-] and the client address is an IP: both are JSON-safe as they are.
      const line =
        `${error !== undefined && error.status >= 500 ? warn : info}${time()}${bindings}` +
        `,"request_id":"${ctx.requestId}"${ctx.traceId === '' ? '' : `,"trace_id":"${ctx.traceId}"`},"client":"${ctx.clientAddress}","method":${JSON.stringify(req.method)}` +
        `,"path":${JSON.stringify(ctx.path)},${ctx.route === undefined ? '"route":null,"service":null' : ctx.route.logFields},${upstreamOf(ctx.backend)}` +
        `,"status":${ctx.status},"bytes":${ctx.bytesSent}` +
        `,"duration_ms":${hundredths(performance.now() - ctx.startedAt)}` +
        `,"user_agent":${ua === undefined ? 'null' : JSON.stringify(ua)},"retries":${ctx.retries}${failure}` +
        `,"msg":"Request Completed"}\n`;
      if (pending === '') setImmediate(flush);
      pending += line;
    },
  };
}

function describeCause(cause: unknown): string {
  if (cause instanceof Error) {
    const code = (cause as { code?: unknown }).code;
    return typeof code === 'string' ? `${code}: ${cause.message}` : cause.message;
  }
  return String(cause);
}
