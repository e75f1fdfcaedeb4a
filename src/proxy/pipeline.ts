/**
 * The one file that knows the phase order. For each request:
 *
 *   request id → [draining? 503] → [health path? answer] → normalize the target, read the headers
 *   → request_filter hooks (auth, rate limit, ...) → upstream_peer (the load balancer)
 *   → upstream_request_filter hooks → dispatch to the upstream
 *   → [failed: fail_to_connect / fail_to_proxy, back to upstream_peer when a retry is safe and allowed]
 *   → response_filter hooks (on the upstream's head, or on a generated response) → stream the body
 *   → logging hooks (when the client connection is done with the response)
 *
 * Errors from any step go to `fail`, which answers with the JSON error body when nothing was sent yet and
 * cuts the connection otherwise. Everything that can be decided from the config is decided in the
 * constructor; the per-request path only runs the hook lists that are not empty.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { BlockList, isIP } from 'node:net';
import type { Logger } from 'pino';
import type { Backend } from '../balancing/backend.js';
import type { LoadBalancer } from '../balancing/load-balancer.js';
import type { Config } from '../config/schema.js';
import { resolveRequestId } from '../middleware/request-id/request-id.js';
import { monotonicClock, type Clock } from '../util/clock.js';
import { RequestContext } from './context.js';
import { ProxyError, errorBody, fromUpstreamError } from './errors.js';
import { CLIENT_GONE, ForwardHandler, type ForwardHost } from './forward.js';
import { HOP_BY_HOP, connectionTokens, formatMs } from './headers.js';
import { normalizeTarget } from './path.js';
import { BodyLimiter } from './request-body.js';
import type { FilterResult, HeaderFilter, LoggingHook, Phases, RequestFilter } from './phases.js';

export interface PipelineOptions {
  config: Config;
  balancer: LoadBalancer;
  logger: Logger;
  /** Middleware in the order their hooks run. */
  phases: readonly Phases[];
  /** When the proxy started (Date.now()), for /health uptime. */
  startedAt?: number;
  clock?: Clock;
}

/** Request headers Tollgate always sets itself, so the client's are never passed on as they are. */
const SET_BY_PROXY = ['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-request-id', 'expect'];

const NOT_IMPLEMENTED = new ProxyError('not_implemented');
const NO_UPSTREAM = new ProxyError('no_upstream');
/** Methods RFC 9110 defines as idempotent: safe to replay after a reset. */
const IDEMPOTENT: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);
const UNDERSCORE = new ProxyError('bad_request', { message: 'Header names with underscores are not accepted.' });
const HOST_COUNT = new ProxyError('bad_request', { message: 'An HTTP/1.1 request needs exactly one Host header.' });

export class Pipeline implements ForwardHost {
  /** Set when shutdown begins: new requests get 503 and every response closes its connection. */
  draining = false;

  readonly #balancer: LoadBalancer;
  readonly #logger: Logger;
  readonly #requestFilters: readonly RequestFilter[];
  readonly #upstreamRequestFilters: readonly HeaderFilter[];
  readonly #responseFilters: readonly HeaderFilter[];
  readonly #loggingHooks: readonly LoggingHook[];
  /** Lower-case names of request headers never forwarded as received. */
  readonly #dropRequestHeaders: ReadonlySet<string>;
  readonly #trusted: BlockList | undefined;
  readonly #healthPath: string;
  readonly #healthQueryPrefix: string;
  readonly #proxyName: string;
  readonly #preserveHost: boolean;
  readonly #maxHeaderCount: number;
  readonly #maxUriBytes: number;
  readonly #maxBodyBytes: number;
  readonly #bodyTimeoutMs: number;
  readonly #rejectUnderscores: boolean;
  readonly #rejectEncodedSlashes: boolean;
  readonly #maxRetries: number;
  readonly #totalTimeoutMs: number;
  readonly #fiveXxIsFailure: boolean;
  readonly #observeLatency: boolean;
  readonly #clock: Clock;
  readonly #debug: boolean;
  readonly #startedAt: number;

  constructor(options: PipelineOptions) {
    const { config, phases } = options;
    this.#balancer = options.balancer;
    this.#logger = options.logger;
    this.#startedAt = options.startedAt ?? Date.now();
    this.#requestFilters = collect(phases, 'requestFilter');
    this.#upstreamRequestFilters = collect(phases, 'upstreamRequestFilter');
    this.#responseFilters = collect(phases, 'responseFilter');
    this.#loggingHooks = collect(phases, 'logging');
    const drop = new Set<string>([...HOP_BY_HOP, ...SET_BY_PROXY]);
    for (const p of phases) for (const h of p.consumesRequestHeaders ?? []) drop.add(h.toLowerCase());
    if (!config.load_balancing.preserve_host) drop.add('host');
    this.#dropRequestHeaders = drop;
    this.#trusted = buildBlockList(config.server.trusted_proxies);
    this.#healthPath = config.server.health_path;
    this.#healthQueryPrefix = `${config.server.health_path}?`;
    this.#proxyName = config.server.proxy_name;
    this.#preserveHost = config.load_balancing.preserve_host;
    this.#maxHeaderCount = config.server.max_header_count;
    this.#maxUriBytes = config.server.max_uri_bytes;
    this.#maxBodyBytes = config.server.max_body_bytes;
    this.#bodyTimeoutMs = config.server.body_timeout_ms;
    this.#rejectUnderscores = config.server.underscores_in_headers === 'reject';
    this.#rejectEncodedSlashes = config.server.encoded_slashes === 'reject';
    this.#maxRetries = config.load_balancing.retries.max_retries;
    this.#totalTimeoutMs = config.load_balancing.total_timeout_ms;
    const passive = config.load_balancing.health_check.passive;
    this.#fiveXxIsFailure = passive.enabled && passive.include_5xx;
    this.#observeLatency = config.load_balancing.strategy === 'p2c_ewma';
    this.#clock = options.clock ?? monotonicClock;
    this.#debug = this.#logger.isLevelEnabled('debug');
  }

  /** The `request` listener of the HTTP server. */
  readonly handle = (req: IncomingMessage, res: ServerResponse): void => {
    this.#start(req, res, false);
  };

  /**
   * The `checkContinue` listener: a request with `Expect: 100-continue`. Node then sends no 100 by itself;
   * the pipeline sends it only once the request filters have let the request through.
   */
  readonly handleExpectContinue = (req: IncomingMessage, res: ServerResponse): void => {
    this.#start(req, res, true);
  };

  #start(req: IncomingMessage, res: ServerResponse, expectsContinue: boolean): void {
    const ctx = new RequestContext(req, res, performance.now());
    ctx.requestId = resolveRequestId(req.headers['x-request-id']);
    if (ctx.peerAddress.startsWith('::ffff:') && isIP(ctx.peerAddress.slice(7)) === 4) {
      ctx.peerAddress = ctx.peerAddress.slice(7);
      ctx.clientAddress = ctx.peerAddress;
    }
    if (this.#trusted !== undefined) this.#resolveClient(ctx, this.#trusted);
    res.on('close', () => this.#finish(ctx)); // 'close' fires once; on() skips once()'s wrapper
    if (this.#debug) this.#logger.debug(`Request Start: ${ctx.requestId} ${ctx.path}`);

    if (this.draining) return this.fail(ctx, new ProxyError('shutting_down'));
    // The health endpoint is the exact, un-normalized path (query allowed); every other spelling of it
    // (`//health`, `/health/`, `/HEALTH`, `/x/../health`) is an ordinary request and needs credentials.
    const url = ctx.path;
    if (url === this.#healthPath || url.startsWith(this.#healthQueryPrefix)) return this.#health(ctx);
    if (url.length > this.#maxUriBytes) return this.fail(ctx, new ProxyError('uri_too_long'));
    const target = normalizeTarget(url, this.#rejectEncodedSlashes);
    if (target instanceof ProxyError) return this.fail(ctx, target);
    ctx.path = target;
    ctx.expectsContinue = expectsContinue;
    const refused = this.#readHeaders(ctx);
    if (refused !== undefined) return this.fail(ctx, refused);
    this.#runRequestFilters(ctx, 0);
  }

  /**
   * One pass over the raw request headers: enforces the header rules and collects the headers to forward
   * (minus hop-by-hop ones, those Tollgate sets itself, and framing, which the upstream client redoes).
   */
  #readHeaders(ctx: RequestContext): ProxyError | undefined {
    const req = ctx.req;
    const raw = req.rawHeaders;
    if (raw.length > this.#maxHeaderCount * 2) return new ProxyError('headers_too_large', { message: 'The request has too many header lines.' });
    const drop = this.#dropRequestHeaders;
    const listed = connectionTokens(req.headers.connection);
    const out: string[] = [];
    let hosts = 0;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i] as string;
      const lower = name.toLowerCase();
      if (lower === 'host') hosts++;
      else if (lower === 'transfer-encoding') {
        // Node has already refused Transfer-Encoding with Content-Length, repeated, or not ending in chunked.
        if ((raw[i + 1] as string).trim().toLowerCase() !== 'chunked') return NOT_IMPLEMENTED;
        ctx.bodyChunked = true;
        continue;
      } else if (lower === 'content-length') continue;
      if (name.includes('_')) {
        if (this.#rejectUnderscores) return UNDERSCORE;
        continue; // as nginx: a name like X_User could be smuggled past a rule written for X-User
      }
      if (drop.has(lower) || listed?.has(lower) === true) continue;
      out.push(name, raw[i + 1] as string);
    }
    if (hosts > 1 || (hosts === 0 && req.httpVersionMajor === 1 && req.httpVersionMinor === 1)) return HOST_COUNT;
    const length = req.headers['content-length'];
    if (length !== undefined) {
      ctx.bodyLength = Number(length);
      if (ctx.bodyLength > this.#maxBodyBytes) return new ProxyError('payload_too_large');
    }
    ctx.forwardHeaders = out;
    ctx.forwardHeaderCount = out.length;
    return undefined;
  }

  #runRequestFilters(ctx: RequestContext, from: number): void {
    const filters = this.#requestFilters;
    for (let i = from; i < filters.length; i++) {
      let result: FilterResult | Promise<FilterResult>;
      try {
        result = (filters[i] as RequestFilter)(ctx);
      } catch (err) {
        return this.fail(ctx, err);
      }
      if (result === false) continue;
      if (result === true) return;
      if (result instanceof ProxyError) return this.fail(ctx, result);
      result.then(
        (settled) => {
          if (settled === false) this.#runRequestFilters(ctx, i + 1);
          else if (settled instanceof ProxyError) this.fail(ctx, settled);
        },
        (err: unknown) => this.fail(ctx, err),
      );
      return;
    }
    this.#proxy(ctx);
  }

  #proxy(ctx: RequestContext): void {
    if (ctx.res.destroyed) return; // the client left while an async filter ran
    const balancer = this.#balancer;
    const first = ctx.retries === 0;
    if (first) balancer.budget.recordRequest();
    const backend = balancer.select(ctx, ctx.tried);
    if (backend === undefined) return this.fail(ctx, ctx.error ?? NO_UPSTREAM);
    ctx.backend = backend;
    if (this.#debug) this.#logger.debug(`Select Upstream: ${ctx.requestId} -> ${backend.address}`);

    const req = ctx.req;
    const headers = this.#upstreamHeaders(ctx, backend);
    for (const filter of this.#upstreamRequestFilters) filter(ctx, headers);
    if (ctx.bodyChunked || ctx.bodyLength > 0) {
      if (first) {
        // Only now, with auth and limits passed, is the client told to send its body.
        if (ctx.expectsContinue) ctx.res.writeContinue();
        if (this.#bodyTimeoutMs > 0) this.#watchBody(ctx);
      }
      // A fresh limiter per attempt: undici destroys the one of a failed attempt.
      ctx.body = new BodyLimiter(this.#maxBodyBytes);
    }
    if (first && this.#totalTimeoutMs > 0) this.#limitTotal(ctx);

    backend.inflight++;
    ctx.dispatchedAt = performance.now();
    const handler = new ForwardHandler(ctx, this);
    try {
      backend.pool.dispatch({ path: ctx.path, method: req.method ?? 'GET', headers, body: ctx.body }, handler);
    } catch (err) {
      handler.onError(err as Error);
    }
  }

  /** total_timeout_ms: the whole upstream exchange, retries included. */
  #limitTotal(ctx: RequestContext): void {
    ctx.totalTimer = setTimeout(() => {
      const timeout = new ProxyError('upstream_timeout', { message: 'The upstream exchange took longer than total_timeout_ms.' });
      if (ctx.abortUpstream !== undefined) ctx.abortUpstream(timeout);
      else this.fail(ctx, timeout);
    }, this.#totalTimeoutMs);
    ctx.totalTimer.unref();
  }

  upstreamResponded(ctx: RequestContext, status: number): void {
    const backend = ctx.backend as Backend;
    ctx.error = undefined; // an earlier attempt's failure, now recovered by a retry
    if (status >= 500 && this.#fiveXxIsFailure) this.#balancer.reportFailure(backend);
    else this.#balancer.reportSuccess(backend);
    if (this.#observeLatency) backend.observeLatency(performance.now() - ctx.dispatchedAt, this.#clock());
  }

  /** Fails the request with 408 when the client pauses its body longer than body_timeout_ms. */
  #watchBody(ctx: RequestContext): void {
    const req = ctx.req;
    req.setTimeout(this.#bodyTimeoutMs, () => {
      const timeout = new ProxyError('request_timeout', { message: 'The request body stalled.' });
      if (ctx.abortUpstream !== undefined) ctx.abortUpstream(timeout);
      else this.fail(ctx, timeout);
    });
    req.once('end', () => req.setTimeout(0));
  }

  /** The request headers for the upstream, as a flat name/value list (keeps order and repeats). */
  #upstreamHeaders(ctx: RequestContext, backend: Backend): string[] {
    const req = ctx.req;
    const out = ctx.forwardHeaders;
    out.length = ctx.forwardHeaderCount; // a retry rebuilds what the last attempt appended
    // Framing is rewritten, never copied: the length as the number Node validated, or chunked by undici.
    if (ctx.bodyLength > 0) out.push('content-length', String(ctx.bodyLength));
    if (!this.#preserveHost) out.push('host', backend.address);
    const trusted = ctx.fromTrustedProxy;
    const xff = req.headers['x-forwarded-for'];
    out.push('x-forwarded-for', trusted && xff !== undefined ? `${xff}, ${ctx.peerAddress}` : ctx.peerAddress);
    const proto = req.headers['x-forwarded-proto'];
    out.push('x-forwarded-proto', trusted && typeof proto === 'string' ? proto : 'http');
    const fwdHost = req.headers['x-forwarded-host'];
    const host = trusted && typeof fwdHost === 'string' ? fwdHost : req.headers.host;
    if (host !== undefined) out.push('x-forwarded-host', host);
    out.push('x-request-id', ctx.requestId);
    return out;
  }

  writeHead(ctx: RequestContext, status: number, headers: string[]): void {
    ctx.responseTime = performance.now() - ctx.startedAt;
    headers.push('X-Proxy-By', this.#proxyName, 'X-Request-ID', ctx.requestId, 'X-Response-Time', formatMs(ctx.responseTime));
    const extra = ctx.responseHeaders;
    for (let i = 0; i < extra.length; i++) headers.push(extra[i] as string);
    if (this.draining || ctx.closeConnection) headers.push('Connection', 'close');
    for (const filter of this.#responseFilters) filter(ctx, headers);
    ctx.status = status;
    ctx.res.writeHead(status, headers);
  }

  upstreamFailed(ctx: RequestContext, err: unknown): void {
    if (err === CLIENT_GONE) return; // the client left first: not the upstream's fault, nothing to answer
    const error = fromUpstreamError(err);
    const backend = ctx.backend;
    if (backend !== undefined && error.source === 'upstream') this.#balancer.reportFailure(backend);
    if (backend !== undefined && !ctx.res.headersSent && !ctx.res.destroyed && this.#shouldRetry(ctx, error)) {
      (ctx.tried ??= []).push(backend);
      ctx.retries++;
      ctx.error = error; // answered with this if no other backend is left
      if (this.#debug) this.#logger.debug({ request_id: ctx.requestId, upstream: backend.name, error: error.code }, 'retrying on another upstream');
      this.#proxy(ctx);
      return;
    }
    this.fail(ctx, error);
  }

  /**
   * A failed attempt is retried on another backend when retries and the budget allow and replaying is safe:
   * always when nothing reached the upstream (connect refused or timed out, so the body was never read),
   * otherwise only for an idempotent request without a body that failed with a reset or a bad response.
   */
  #shouldRetry(ctx: RequestContext, error: ProxyError): boolean {
    if (ctx.retries >= this.#maxRetries) return false;
    const safe =
      error.retryable ||
      (error.code === 'bad_gateway' && !ctx.bodyChunked && ctx.bodyLength === 0 && IDEMPOTENT.has(ctx.req.method ?? ''));
    return safe && this.#balancer.budget.tryRetry();
  }

  /** Answers a request with a JSON error, or cuts the connection when the response has begun. */
  fail(ctx: RequestContext, err: unknown): void {
    const error = err instanceof ProxyError ? err : new ProxyError('internal_error', { cause: err });
    ctx.error = error;
    const res = ctx.res;
    if (res.headersSent) {
      // Part of a response is out: the only honest signal left is to cut the connection.
      res.destroy();
      return;
    }
    if (res.destroyed) return;
    // A body the upstream did not take is left unread: close rather than read it only to discard it.
    if ((ctx.bodyChunked || ctx.bodyLength > 0) && !ctx.req.complete) ctx.closeConnection = true;
    if (error.status === 400 || error.status === 501) ctx.closeConnection = true;
    const headers: string[] = [];
    if (error.code === 'no_upstream') headers.push('Retry-After', '1');
    if (error.code === 'shutting_down') headers.push('Retry-After', '1');
    this.respondJson(ctx, error.status, errorBody(error.code, error.message, ctx.requestId), headers);
  }

  /** Sends a response Tollgate generates itself (errors, /health), with the usual headers. */
  respondJson(ctx: RequestContext, status: number, body: object, headers: string[] = []): void {
    const text = JSON.stringify(body);
    const length = Buffer.byteLength(text);
    headers.push('Content-Type', 'application/json; charset=utf-8', 'Content-Length', String(length), 'Cache-Control', 'no-store');
    this.writeHead(ctx, status, headers);
    ctx.bytesSent = ctx.req.method === 'HEAD' ? 0 : length;
    ctx.res.end(text);
  }

  #health(ctx: RequestContext): void {
    const available = this.#balancer.available;
    this.respondJson(ctx, available ? 200 : 503, {
      status: available ? 'ok' : 'unavailable',
      uptime_s: Math.round((Date.now() - this.#startedAt) / 1000),
      upstreams: this.#balancer.backends.map((b) => ({ name: b.name, healthy: b.healthy, inflight: b.inflight })),
    });
  }

  /** Runs when the client connection is done with this response (finished, or closed early). */
  #finish(ctx: RequestContext): void {
    const abort = ctx.abortUpstream;
    if (abort !== undefined) {
      // The client left before the upstream response was complete: cancel the upstream request.
      ctx.abortUpstream = undefined;
      abort(CLIENT_GONE);
    }
    if (ctx.totalTimer !== undefined) clearTimeout(ctx.totalTimer);
    if (!ctx.res.headersSent) ctx.status = 499; // as nginx: the client closed before any response
    for (const hook of this.#loggingHooks) {
      try {
        hook(ctx);
      } catch (err) {
        this.#logger.error({ err, request_id: ctx.requestId }, 'logging hook failed');
      }
    }
  }

  /** With trusted proxies, the client is the right-most X-Forwarded-For entry that is not one of them. */
  #resolveClient(ctx: RequestContext, trusted: BlockList): void {
    if (!checkAddress(trusted, ctx.peerAddress)) return;
    ctx.fromTrustedProxy = true;
    const xff = ctx.req.headers['x-forwarded-for'];
    if (xff === undefined) return;
    const hops = String(xff).split(',');
    for (let i = hops.length - 1; i >= 0; i--) {
      const hop = (hops[i] as string).trim();
      if (isIP(hop) === 0) break;
      ctx.clientAddress = hop;
      if (!checkAddress(trusted, hop)) break;
    }
  }
}

function collect<K extends 'requestFilter' | 'upstreamRequestFilter' | 'responseFilter' | 'logging'>(
  phases: readonly Phases[],
  key: K,
): NonNullable<Phases[K]>[] {
  const hooks: NonNullable<Phases[K]>[] = [];
  for (const p of phases) {
    const hook = p[key];
    if (hook !== undefined) hooks.push(hook.bind(p) as NonNullable<Phases[K]>);
  }
  return hooks;
}

function buildBlockList(cidrs: readonly string[]): BlockList | undefined {
  if (cidrs.length === 0) return undefined;
  const list = new BlockList();
  for (const cidr of cidrs) {
    const [ip = '', bits] = cidr.split('/');
    const type = isIP(ip) === 6 ? 'ipv6' : 'ipv4';
    if (bits === undefined) list.addAddress(ip, type);
    else list.addSubnet(ip, Number(bits), type);
  }
  return list;
}

function checkAddress(list: BlockList, address: string): boolean {
  const family = isIP(address);
  if (family === 0) return false;
  return list.check(address, family === 6 ? 'ipv6' : 'ipv4');
}
