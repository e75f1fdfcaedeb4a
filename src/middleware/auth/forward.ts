import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { Agent, request } from '../../util/undici.js';
import type { AuthSchemeConfig } from '../../config/schema.js';
import type { RequestContext } from '../../proxy/context.js';
import { ProxyError } from '../../proxy/errors.js';
import { HOP_BY_HOP } from '../../proxy/headers.js';
import type { FilterResult, Phases } from '../../proxy/phases.js';
import type { AuthPhases } from './auth.js';
import { addAuthHeaders } from './phase-parts.js';

/** Largest refusal body relayed to the client; a larger one is treated as a failure of the service (503). */
const MAX_RELAYED_BODY = 64 * 1024;
/** Most positive answers kept with `cache_ms`; the oldest go first. */
const MAX_CACHED = 10_000;
/** Response headers never relayed: the framing is Tollgate's, and these describe one hop. */
const NOT_RELAYED: ReadonlySet<string> = new Set([...HOP_BY_HOP, 'content-length', 'transfer-encoding', 'x-request-id']);

const UNAVAILABLE = new ProxyError('auth_unavailable');

interface Cached {
  expires: number;
  principal: string | undefined;
  headers: string[] | undefined;
}

/**
 * `auth_type: forward`: asks an auth service about each request, as nginx's auth_request and Traefik's
 * ForwardAuth do. The service gets the request's method, no body, the headers listed in
 * `copy_request_headers`, and `X-Forwarded-Method`, `-Uri` (the normalized path and query), `-Host`,
 * `-Proto`, `-For` and `X-Request-ID`. A 2xx lets the request through with `copy_response_headers` of the
 * answer added upstream; any other answer is sent to the client as it is (status, headers, body); a
 * timeout, an unreachable service or an answer that cannot be relayed is 503 `auth_unavailable`. Nothing
 * fails open. With `cache_ms`, 2xx answers are kept per credential (a digest of the copied request
 * headers), method, scheme, host and path.
 */
export function createForwardAuth(config: AuthSchemeConfig, logger: Logger | undefined): AuthPhases {
  const forward = config.forward;
  if (forward === undefined) throw new Error('forward auth needs a forward block');
  const url = new URL(forward.url);
  const copyRequest = forward.copy_request_headers.map((h) => h.toLowerCase());
  const copyResponse = forward.copy_response_headers.map((h) => h.toLowerCase());
  const timeoutMs = forward.timeout_ms;
  const cacheMs = forward.cache_ms;
  const cache = new Map<string, Cached>();
  // Keep-alive connections to the service, closed with the generation.
  const agent = new Agent({ connections: 64, keepAliveTimeout: 10_000 });

  function credentialDigest(ctx: RequestContext): string | undefined {
    let material = '';
    for (const name of copyRequest) {
      const value = ctx.req.headers[name];
      if (value !== undefined) material += `${name}\u0000${Array.isArray(value) ? value.join('\u0000') : value}\u0000`;
    }
    return material === '' ? undefined : createHash('sha256').update(material).digest('hex');
  }

  function allow(ctx: RequestContext, entry: Cached): FilterResult {
    if (entry.principal !== undefined) ctx.principal = entry.principal;
    if (entry.headers !== undefined) ctx.authHeaders = entry.headers;
    return false;
  }

  function refuse(ctx: RequestContext, failure: string, refusal: ProxyError): FilterResult {
    ctx.authFailure = failure;
    ctx.authRefusal = refusal;
    return false;
  }

  async function ask(ctx: RequestContext, digest: string | undefined, cacheKey: string | undefined): Promise<FilterResult> {
    const req = ctx.req;
    const headers: string[] = [];
    for (const name of copyRequest) {
      const value = req.headers[name];
      if (typeof value === 'string') headers.push(name, value);
      else if (Array.isArray(value)) for (const v of value) headers.push(name, v);
    }
    const method = req.method ?? 'GET';
    headers.push(
      'x-forwarded-method', method,
      'x-forwarded-uri', ctx.path,
      'x-forwarded-proto', forwardedProto(ctx),
      'x-forwarded-for', ctx.clientAddress,
      'x-request-id', ctx.requestId,
    );
    const host = forwardedHost(ctx);
    if (host !== undefined) headers.push('x-forwarded-host', host);
    let answer;
    try {
      answer = await request(url, {
        dispatcher: agent,
        method: method === 'CONNECT' ? 'GET' : (method as 'GET'),
        headers,
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      logger?.warn({ url: forward?.url, err: (err as Error).message, request_id: ctx.requestId }, 'forward auth: the auth service did not answer');
      return refuse(ctx, 'forward_unavailable', UNAVAILABLE);
    }
    try {
      const status = answer.statusCode;
      if (status >= 200 && status < 300) {
        await answer.body.dump();
        let added: string[] | undefined;
        for (const name of copyResponse) {
          const value = answer.headers[name];
          if (value === undefined) continue;
          added ??= [];
          for (const v of Array.isArray(value) ? value : [value]) added.push(name, v);
        }
        const entry: Cached = { expires: performance.now() + cacheMs, principal: digest === undefined ? undefined : `fwd:${digest.slice(0, 16)}`, headers: added };
        if (cacheKey !== undefined) {
          cache.set(cacheKey, entry);
          if (cache.size > MAX_CACHED) cache.delete(cache.keys().next().value as string);
        }
        return allow(ctx, entry);
      }
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of answer.body) {
        size += (chunk as Buffer).length;
        if (size > MAX_RELAYED_BODY) throw new Error(`refusal body over ${MAX_RELAYED_BODY} bytes`);
        chunks.push(chunk as Buffer);
      }
      const relayed: string[] = [];
      for (const [name, value] of Object.entries(answer.headers)) {
        if (value === undefined || NOT_RELAYED.has(name)) continue;
        for (const v of Array.isArray(value) ? value : [value]) relayed.push(name, v);
      }
      return refuse(ctx, 'forward_denied', new ProxyError('unauthorized', { message: 'Refused by the auth service.', response: { status, headers: relayed, body: Buffer.concat(chunks) } }));
    } catch (err) {
      answer.body.destroy();
      logger?.warn({ url: forward?.url, err: (err as Error).message, request_id: ctx.requestId }, 'forward auth: the answer of the auth service could not be read');
      return refuse(ctx, 'forward_unavailable', UNAVAILABLE);
    }
  }

  const authenticate: Phases = {
    name: 'auth',
    // The client's own headers of the names the service sets are removed, so it cannot send them itself.
    consumesRequestHeaders: copyResponse,
    requestFilter: function authenticateForward(ctx): FilterResult | Promise<FilterResult> {
      const digest = credentialDigest(ctx);
      let cacheKey: string | undefined;
      if (cacheMs > 0 && digest !== undefined) {
        // Everything the service is told about the request but the client address and request id: an
        // answer for one host (or one route of many that share this auth block) is never reused for another.
        cacheKey = `${digest} ${ctx.req.method ?? ''} ${forwardedProto(ctx)}://${forwardedHost(ctx) ?? ''}${ctx.path}`;
        const hit = cache.get(cacheKey);
        if (hit !== undefined) {
          if (hit.expires > performance.now()) return allow(ctx, hit);
          cache.delete(cacheKey);
        }
      }
      return ask(ctx, digest, cacheKey);
    },
    upstreamRequestFilter: addAuthHeaders,
  };
  const enforce: Phases = {
    name: 'auth-enforce',
    requestFilter: function enforceForward(ctx): FilterResult {
      if (ctx.authFailure === undefined) return false;
      return ctx.authRefusal ?? UNAVAILABLE;
    },
  };
  return {
    authenticate,
    enforce,
    close: function closeForward(): void {
      void agent.close();
    },
  };
}

/** The request's scheme as the auth service is told it. */
function forwardedProto(ctx: RequestContext): string {
  return (ctx.req.socket as { encrypted?: boolean }).encrypted === true ? 'https' : 'http';
}

/** The request's host as the auth service is told it (Host, or :authority over HTTP/2). */
function forwardedHost(ctx: RequestContext): string | undefined {
  const host = ctx.req.headers.host ?? ctx.req.headers[':authority'];
  return typeof host === 'string' ? host : undefined;
}
