import type { Logger } from 'pino';
import type { RequestContext } from '../proxy/context.js';
import type { Phases } from '../proxy/phases.js';

/**
 * The completion line: one per request, at `info` (at `warn` when the request failed with a 5xx of
 * Tollgate's own, so upstream faults stand out with their request id). Not installed at all when the
 * level is above `info`.
 */
export function createAccessLog(logger: Logger): Phases | undefined {
  if (!logger.isLevelEnabled('info')) return undefined;
  return {
    name: 'access-log',
    logging: function logCompletion(ctx: RequestContext) {
      const req = ctx.req;
      const error = ctx.error;
      const line = {
        request_id: ctx.requestId,
        trace_id: ctx.traceId === '' ? undefined : ctx.traceId,
        client: ctx.clientAddress,
        method: req.method,
        path: ctx.path,
        upstream: ctx.backend?.name ?? null,
        upstream_addr: ctx.backend?.address ?? null,
        status: ctx.status,
        bytes: ctx.bytesSent,
        duration_ms: Math.round((performance.now() - ctx.startedAt) * 100) / 100,
        user_agent: req.headers['user-agent'] ?? null,
        retries: ctx.retries,
        error: error === undefined ? undefined : error.code,
        cause: error?.cause === undefined ? undefined : describeCause(error.cause),
      };
      if (error !== undefined && error.status >= 500) logger.warn(line, 'Request Completed');
      else logger.info(line, 'Request Completed');
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
