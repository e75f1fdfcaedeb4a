/**
 * The one file that knows the phase order. For each request:
 *
 *   request id → [draining? 503] → [health path? answer] → normalize the target → match a route
 *   [none? 404 no_route] → read the headers → the route's request_filter hooks (auth, rate limit, ...)
 *   → [redirect route? answer] → upstream_peer (a phase's choice, else the route's service balancer)
 *   → upstream_request_filter hooks → dispatch to the upstream
 *   → [failed: back to upstream_peer when a retry is safe and allowed, else fail_to_proxy]
 *   → response_filter hooks (on the upstream's head, or on a generated response) → stream the body
 *   → logging hooks (when the client connection is done with the response)
 *
 * Errors from any step go to `fail`, which answers with the JSON error body when nothing was sent yet and
 * cuts the connection otherwise. One Pipeline serves one generation (its routes and services); everything
 * that can be decided from the config is decided when it is built, and the per-request path only runs the
 * hook lists of the matched route that are not empty.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import { BlockList, isIP, type Socket } from 'node:net';
import type { Logger } from 'pino';
import type { Dispatcher } from 'undici';
import type { Backend } from '../balancing/backend.js';
import type { RequestTrailers } from '../balancing/h2c-session.js';
import type { LoadBalancer } from '../balancing/load-balancer.js';
import type { ServerConfig } from '../config/schema.js';
import { resolveRequestId } from '../middleware/request-id/request-id.js';
import type { Router } from '../routing/matcher.js';
import type { Route } from '../routing/route.js';
import { CLIENT_CERT_HEADERS, clientCertificate } from './client-cert.js';
import { RequestContext, type DownstreamProtocol } from './context.js';
import { ProxyError, errorBody, markRequest } from './errors.js';
import { CLIENT_GONE, ForwardHandler } from './forward.js';
import { endWithStatus, grpcErrorHeaders, isGrpcContentType, readGrpcHead, responseEnded, sendTrailersOnly } from './grpc.js';
import { connectionTokens, formatMs } from './headers.js';
import { readH2Head } from './h2-request.js';
import { normalizeTarget } from './path.js';
import { BodyLimiter, bodyTooLarge, REPLAY_MAX_BYTES } from './request-body.js';
import { TlsHint } from './tls-hint.js';
import { WebSocketForwardHandler, WebSocketSession, type WebSocketHost, type WebSocketRegistry } from './websocket.js';
import type { FilterResult, RequestFilter } from './phases.js';

/** What every generation's pipeline shares with the long-lived gateway. */
export interface PipelineShared {
  /** Set when shutdown begins: new requests get 503 and every response closes its connection. */
  draining: boolean;
  /** Set when shutdown closes the connections still open: requests ending unfinished are cut off. */
  cutOff: boolean;
  /** Open WebSockets and the places they hold under the caps (process-wide). */
  websockets: WebSocketRegistry;
}

export interface PipelineOptions {
  server: ServerConfig;
  router: Router<Route>;
  /** Every service by name (what an upstreamPeer phase may choose). */
  services: ReadonlyMap<string, LoadBalancer>;
  /** The phases of answers no route gave: /health, 404 no_route, 503 while draining. */
  noRoute: Route;
  logger: Logger;
  shared: PipelineShared;
  /** When the proxy started (Date.now()), for /health uptime. */
  startedAt?: number;
  /** Called when a pipeline that `retire()` was called on has no request left. */
  onIdle?: () => void;
  /** WebSockets open at once on this process (`websocket.max_connections`, or a cluster worker's share). */
  maxWebSockets?: number;
}

/** Request headers Tollgate always sets itself, so the client's are never passed on as they are. */
export const SET_BY_PROXY = ['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-request-id', 'expect', ...CLIENT_CERT_HEADERS];

const NOT_IMPLEMENTED = new ProxyError('not_implemented');
const NO_UPSTREAM = new ProxyError('no_upstream');
const NO_ROUTE = new ProxyError('no_route');
const CUT_OFF = new ProxyError('cut_off');
/** A gRPC client's deadline passed: the upstream call is cancelled as if the client had (not the upstream's failure). */
const DEADLINE = new ProxyError('upstream_timeout', { message: 'The deadline the client set (grpc-timeout) passed.' });
const TOO_MANY_WEBSOCKETS = new ProxyError('too_many_websockets');
const UPGRADE_OVER_H2 = new ProxyError('bad_gateway', {
  message: 'This upstream is reached over HTTP/2 (protocol: h2 or h2c): WebSockets are proxied to HTTP/1.1 upstreams only.',
  retryable: false,
});
/**
 * Undici takes `servername` per request (its types leave it out): the backend's fixed TLS name, so a
 * client's Host (with preserve_host) neither becomes the upstream's SNI nor makes undici reconnect.
 */
type UpstreamDispatch = Dispatcher.DispatchOptions & { servername: string | undefined; trailersFrom?: RequestTrailers };

/** The request whose body the connection's timeout watches now (the last one on it that began sending a body). */
const BODY_WATCH = new WeakMap<Socket, IncomingMessage>();
/** Methods RFC 9110 defines as idempotent: safe to replay after a reset. */
const IDEMPOTENT: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);
const UNDERSCORE = new ProxyError('bad_request', { message: 'Header names with underscores are not accepted.' });
const HOST_COUNT = new ProxyError('bad_request', { message: 'An HTTP/1.1 request needs exactly one Host header.' });
const HOST_INVALID = new ProxyError('bad_request', { message: 'The Host header is not a host name or address with an optional port.' });
/**
 * RFC 9112 §3.2: Host = uri-host [ ":" port ], and an invalid one is a 400. uri-host is an IP literal in
 * brackets (checked with isIP) or a reg-name (RFC 3986 unreserved, sub-delims, percent escapes), never
 * empty: an http URI with an empty host is invalid (RFC 9110 §4.2.1).
 */
const HOST_VALUE = /^(?:\[([0-9A-Fa-f:.]+)\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(?::[0-9]*)?$/;
/** RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing (a desync vector): 400, closed. */
const TE_IN_HTTP10 = new ProxyError('bad_request', { message: 'An HTTP/1.0 request cannot use Transfer-Encoding.' });
/**
 * Two credentials in one request: Node keeps the first in `req.headers` (or joins the lines of an unknown
 * name), auth checks that, and an upstream reading the last one would act on a credential never checked.
 * Refused as nginx refuses a repeated Authorization, whether auth is on or not.
 */
const NO_VERSION = new ProxyError('bad_request', { message: 'The request line has no HTTP/1.x version.' });
const AUTHORIZATION_COUNT = new ProxyError('bad_request', { message: 'A request may carry only one Authorization header.' });

function validHost(host: string): boolean {
  const match = HOST_VALUE.exec(host);
  return match !== null && (match[1] === undefined || isIP(match[1]) === 6);
}

export class Pipeline implements WebSocketHost {
  readonly #shared: PipelineShared;
  readonly #router: Router<Route>;
  readonly #services: ReadonlyMap<string, LoadBalancer>;
  readonly #noRoute: Route;
  readonly #logger: Logger;
  readonly #trusted: BlockList | undefined;
  readonly #healthPath: string;
  readonly #healthQueryPrefix: string;
  readonly #proxyName: string;
  readonly #maxHeaderCount: number;
  /** The HTTP/2 header list limit (node:http's parser keeps it on HTTP/1.1). */
  readonly #maxHeaderBytes: number;
  /** The 413 for a Content-Length over max_body_bytes, made once. */
  readonly #bodyTooLarge: ProxyError;
  readonly #maxUriBytes: number;
  readonly #maxBodyBytes: number;
  readonly #bodyTimeoutMs: number;
  readonly #rejectUnderscores: boolean;
  readonly #rejectEncodedSlashes: boolean;
  readonly #debug: boolean;
  readonly #startedAt: number;
  readonly #onIdle: (() => void) | undefined;
  readonly #tlsHint: TlsHint;
  /** X-Forwarded-Proto of a request a trusted proxy did not vouch for: the listener's scheme. */
  readonly #proto: string;
  /** Pass the verified client certificate upstream (`server.tls.forward_client_cert`). */
  readonly #forwardClientCert: boolean;
  readonly #maxWebSockets: number;
  /** Requests started on this pipeline and not yet finished. */
  #active = 0;
  #retired = false;

  constructor(options: PipelineOptions) {
    const server = options.server;
    this.#shared = options.shared;
    this.#router = options.router;
    this.#services = options.services;
    this.#noRoute = options.noRoute;
    this.#logger = options.logger;
    this.#startedAt = options.startedAt ?? Date.now();
    this.#onIdle = options.onIdle;
    this.#trusted = buildBlockList(server.trusted_proxies);
    this.#healthPath = server.health_path;
    this.#healthQueryPrefix = `${server.health_path}?`;
    this.#proxyName = server.proxy_name;
    this.#maxHeaderCount = server.max_header_count;
    this.#maxHeaderBytes = server.max_header_bytes;
    this.#maxUriBytes = server.max_uri_bytes;
    this.#maxBodyBytes = server.max_body_bytes;
    this.#bodyTooLarge = bodyTooLarge(server.max_body_bytes);
    this.#bodyTimeoutMs = server.body_timeout_ms;
    this.#rejectUnderscores = server.underscores_in_headers === 'reject';
    this.#rejectEncodedSlashes = server.encoded_slashes === 'reject';
    this.#debug = this.#logger.isLevelEnabled('debug');
    this.#tlsHint = new TlsHint(this.#logger);
    this.#proto = server.tls === undefined ? 'http' : 'https';
    this.#forwardClientCert = server.tls?.forward_client_cert === true;
    this.#maxWebSockets = options.maxWebSockets ?? Number.MAX_SAFE_INTEGER;
  }

  /** Requests in flight on this pipeline. */
  get active(): number {
    return this.#active;
  }

  /** No new requests come here any more (a newer generation took over): `onIdle` runs once the last ends. */
  retire(): void {
    this.#retired = true;
    if (this.#active === 0) this.#onIdle?.();
  }

  /** A request that started here has finished (its logging phase ran). */
  release(): void {
    this.#active--;
    if (this.#active === 0 && this.#retired) this.#onIdle?.();
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

  /**
   * A request on an HTTP/2 stream (server/h2-downstream.ts), with `expectsContinue` as for `checkContinue`.
   * node:http2's compatibility objects stand in for node:http's: the context reads them through the same
   * members, and the few protocol differences are decided by `ctx.protocol`.
   */
  readonly handleH2 = (req: Http2ServerRequest, res: Http2ServerResponse, expectsContinue: boolean): void => {
    this.#start(req as unknown as IncomingMessage, res as unknown as ServerResponse, expectsContinue, 'h2');
  };

  /**
   * An `Upgrade: websocket` request (the server's 'upgrade' event): `res` is a response on the raw
   * connection, which closes after it unless the upstream accepts the WebSocket; `head` is what the client
   * sent after the request head.
   */
  readonly handleWebSocket = (req: IncomingMessage, res: ServerResponse, head: Buffer): void => {
    this.#start(req, res, false, 'http/1.1', head);
  };

  /**
   * Every entry point of a request's handling (the request event, its 'close', timers, the continuation of
   * an async filter, undici's callbacks in ForwardHandler) rethrows what escapes it marked with the request
   * id (markRequest), for the fatal log line: such an error ends the process.
   */
  #start(req: IncomingMessage, res: ServerResponse, expectsContinue: boolean, protocol?: DownstreamProtocol, head?: Buffer): void {
    const ctx = new RequestContext(req, res, performance.now(), protocol);
    ctx.requestId = resolveRequestId(req.headers['x-request-id']);
    if (head !== undefined) ctx.webSocket = new WebSocketSession(head, this.#shared.websockets);
    try {
      this.#begin(ctx, expectsContinue);
    } catch (err) {
      throw markRequest(err, ctx.requestId);
    }
  }

  #begin(ctx: RequestContext, expectsContinue: boolean): void {
    const req = ctx.req;
    const res = ctx.res;
    ctx.route = this.#noRoute;
    // Counted here, released in #finish: a retired pipeline knows when its last request is done.
    this.#active++;
    if (ctx.peerAddress.startsWith('::ffff:') && isIP(ctx.peerAddress.slice(7)) === 4) {
      ctx.peerAddress = ctx.peerAddress.slice(7);
      ctx.clientAddress = ctx.peerAddress;
    }
    if (this.#trusted !== undefined) this.#resolveClient(ctx, this.#trusted);
    res.on('close', () => this.#closed(ctx)); // 'close' fires once; on() skips once()'s wrapper
    if (isGrpcContentType(req.headers['content-type'])) readGrpcHead(ctx);
    if (this.#debug) this.#logger.debug(`Request Start: ${ctx.requestId} ${ctx.path}`);

    if (this.#shared.draining) return this.fail(ctx, new ProxyError('shutting_down'));
    if (ctx.protocol === 'h2') {
      const head = readH2Head(req as unknown as Http2ServerRequest, this.#maxHeaderBytes);
      if (head instanceof ProxyError) return this.fail(ctx, head);
      ctx.rawHeaders = head;
      // DATA frames may follow without a content-length: a body of unknown length, as chunked on HTTP/1.1.
      ctx.bodyChunked = req.headers['content-length'] === undefined && !(req as unknown as Http2ServerRequest).stream.endAfterHeaders;
    }
    // Node's parser takes `GET /x` ended by a bare LF, with no version, as HTTP/0.9 and reads headers after it.
    else if (req.httpVersionMajor !== 1) return this.fail(ctx, NO_VERSION);
    // The health endpoint is the exact, un-normalized path (query allowed); every other spelling of it
    // (`//health`, `/health/`, `/HEALTH`, `/x/../health`) is an ordinary request and needs credentials.
    const url = ctx.path;
    if (url === this.#healthPath || url.startsWith(this.#healthQueryPrefix)) return this.#health(ctx);
    if (url.length > this.#maxUriBytes) return this.fail(ctx, new ProxyError('uri_too_long'));
    const target = normalizeTarget(url, this.#rejectEncodedSlashes);
    if (target instanceof ProxyError) return this.fail(ctx, target);
    ctx.path = target;
    ctx.expectsContinue = expectsContinue;
    const matched = this.#router.match(req.headers.host, target, req.method ?? 'GET', req.headers);
    if (matched === undefined) {
      // Framing rules still apply, so a malformed request gets its 400 rather than a 404.
      const refused = this.#readHeaders(ctx, this.#noRoute);
      return this.fail(ctx, refused ?? NO_ROUTE);
    }
    const route = matched.value;
    ctx.route = route;
    ctx.routePrefix = matched.prefix;
    ctx.upstreamPath = route.upstreamPath(target, matched.prefix);
    const refused = this.#readHeaders(ctx, route);
    if (refused !== undefined) return this.fail(ctx, refused);
    this.#runRequestFilters(ctx, route, 0);
  }

  /**
   * One pass over the raw request headers: enforces the header rules (one Host, one Authorization, one of
   * the route's API-key header) and collects the headers to forward (minus hop-by-hop ones, those Tollgate
   * sets itself, and framing, which the upstream client redoes).
   */
  #readHeaders(ctx: RequestContext, route: Route): ProxyError | undefined {
    const req = ctx.req;
    const raw = ctx.rawHeaders;
    if (raw.length > this.#maxHeaderCount * 2) return new ProxyError('headers_too_large', { message: 'The request has too many header lines.' });
    const drop = route.dropRequestHeaders;
    const listed = connectionTokens(req.headers.connection);
    const credential = route.credentialHeader;
    const out: string[] = [];
    let hosts = 0;
    let authorizations = 0;
    let credentials = 0;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i] as string;
      const lower = name.toLowerCase();
      if (lower === 'host') hosts++;
      else if (lower === 'authorization') authorizations++;
      else if (lower === credential) credentials++;
      else if (lower === 'transfer-encoding') {
        // Node has already refused Transfer-Encoding with Content-Length, repeated, or not ending in chunked.
        if (req.httpVersionMinor === 0) return TE_IN_HTTP10;
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
    if (hosts === 1 && !validHost(req.headers.host as string)) return HOST_INVALID;
    if (authorizations > 1) return AUTHORIZATION_COUNT;
    if (credentials > 1) return new ProxyError('bad_request', { message: `A request may carry only one ${credential as string} header.` });
    const length = req.headers['content-length'];
    if (length !== undefined) {
      ctx.bodyLength = Number(length);
      if (ctx.bodyLength > this.#maxBodyBytes) return this.#bodyTooLarge;
    }
    ctx.forwardHeaders = out;
    ctx.forwardHeaderCount = out.length;
    return undefined;
  }

  #runRequestFilters(ctx: RequestContext, route: Route, from: number): void {
    const filters = route.requestFilters;
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
          try {
            if (settled === false) this.#runRequestFilters(ctx, route, i + 1);
            else if (settled instanceof ProxyError) this.fail(ctx, settled);
          } catch (err) {
            throw markRequest(err, ctx.requestId);
          }
        },
        (err: unknown) => {
          try {
            this.fail(ctx, err);
          } catch (failed) {
            throw markRequest(failed, ctx.requestId);
          }
        },
      );
      return;
    }
    if (route.redirect !== undefined) return this.#redirect(ctx, route.redirect);
    this.#proxy(ctx);
  }

  /** upstream_peer: the service and backend of this attempt, counted in flight; undefined when none. */
  #upstreamPeer(ctx: RequestContext, route: Route): Backend | undefined {
    let service = route.service;
    let upstream: string | undefined;
    for (const hook of route.upstreamPeers) {
      const choice = hook(ctx);
      if (choice === undefined) continue;
      const chosen = this.#services.get(choice.service);
      if (chosen === undefined) throw new ProxyError('internal_error', { message: `A phase chose the service "${choice.service}", which the config does not have.` });
      service = chosen;
      upstream = choice.upstream;
      break;
    }
    if (service === undefined) return undefined;
    ctx.service = service;
    if (upstream === undefined) return service.acquire(ctx, ctx.tried);
    const backend = service.acquireNamed(upstream);
    if (backend === undefined) throw new ProxyError('internal_error', { message: `A phase chose the upstream "${upstream}", which the service "${service.name}" does not have.` });
    return backend;
  }

  #proxy(ctx: RequestContext): void {
    if (ctx.res.destroyed) return; // the client left while an async filter ran
    // A pipelined request queued behind another response (its response has no socket yet) reaches the
    // upstream only at its turn, as with nginx: a response before it may close the connection, after which
    // no further request may be processed (RFC 9112 §9.6), and requests with side effects must not be
    // processed in parallel (§9.3.2). Node hands the response its socket at that turn, and never when the
    // connection closed first: then 'close' ends and logs the request (499) with nothing sent upstream.
    // HTTP/2 streams run side by side and have no turn to wait for.
    const socket = ctx.protocol === 'h2' ? undefined : ctx.res.socket;
    if (socket === null) {
      ctx.res.once('socket', () => {
        try {
          this.#proxy(ctx);
        } catch (err) {
          throw markRequest(err, ctx.requestId);
        }
      });
      return;
    }
    // Node may still hand over a request it parsed after the response before it closed the connection (its
    // write side already ended): nothing can answer it, so it ends here, logged as 499, never forwarded.
    if (socket !== undefined && (socket.writableEnded || socket.destroyed)) {
      ctx.res.destroy();
      return;
    }
    const route = ctx.route as Route;
    const first = ctx.retries === 0;
    let backend: Backend | undefined;
    try {
      backend = this.#upstreamPeer(ctx, route);
    } catch (err) {
      return this.fail(ctx, err);
    }
    const service = ctx.service as LoadBalancer;
    if (first && service !== undefined) service.budget.recordRequest();
    if (backend === undefined) {
      // A retry that found no other backend did not happen: the count (log, metrics) says so.
      if (!first) ctx.retries--;
      return this.fail(ctx, ctx.error ?? NO_UPSTREAM);
    }
    ctx.backend = backend;
    if (this.#debug) this.#logger.debug(`Select Upstream: ${ctx.requestId} -> ${backend.address}`);

    const req = ctx.req;
    let headers: string[];
    try {
      headers = this.#upstreamHeaders(ctx, service, backend);
      for (const filter of route.upstreamRequestFilters) filter(ctx, headers);
    } catch (err) {
      service.release(backend, undefined, 0, -1);
      return this.fail(ctx, err);
    }
    if (ctx.bodyChunked || ctx.bodyLength > 0) {
      if (first) {
        // Only now, with auth and limits passed, is the client told to send its body.
        if (ctx.expectsContinue) sendContinue(ctx.res);
        if (this.#bodyTimeoutMs > 0) this.#watchBody(ctx);
      }
      // A fresh limiter per attempt: undici destroys the one of a failed attempt. A body already sent is
      // sent again from memory; an idempotent request's small body is kept for that while it is sent.
      if (ctx.replayBody !== undefined) ctx.body = ctx.replayBody;
      else ctx.body = new BodyLimiter(this.#maxBodyBytes, service.maxRetries > ctx.retries && IDEMPOTENT.has(req.method ?? '') && ctx.bodyLength <= REPLAY_MAX_BYTES);
    }
    if (first) {
      // A gRPC deadline counts from the request's arrival; total_timeout_ms from here. The sooner one is kept.
      const deadline = ctx.grpcTimeoutMs < 0 ? -1 : Math.max(0, ctx.grpcTimeoutMs - (performance.now() - ctx.startedAt));
      if (deadline >= 0 && (service.totalTimeoutMs === 0 || deadline < service.totalTimeoutMs)) this.#limitDeadline(ctx, deadline);
      else if (service.totalTimeoutMs > 0) this.#limitTotal(ctx, service.totalTimeoutMs);
    }

    ctx.dispatchedAt = performance.now();
    ctx.upstreamLatency = -1;
    if (ctx.webSocket !== undefined && route.websocket !== undefined) return this.#proxyWebSocket(ctx, route, backend, headers);
    const handler = new ForwardHandler(ctx, this);
    try {
      const options: UpstreamDispatch = { path: ctx.upstreamPath, method: req.method ?? 'GET', headers, body: ctx.body, servername: backend.servername };
      // Only the h2c session sends request trailers. Given to undici too, the option cost 55,000 more
      // instructions per request (250,893 against 195,206, bench/instructions.mjs, the standard config).
      if (backend.protocol === 'h2c') options.trailersFrom = req;
      backend.pool.dispatch(options, handler);
    } catch (err) {
      handler.onError(err as Error);
    }
  }

  /**
   * A WebSocket handshake to `backend`: the route's caps first (a place is held from the first attempt until
   * the request ends), then the request with `Upgrade: websocket` on the backend's pool (see websocket.ts).
   */
  #proxyWebSocket(ctx: RequestContext, route: Route, backend: Backend, headers: string[]): void {
    const session = ctx.webSocket as WebSocketSession;
    const settings = route.websocket as NonNullable<Route['websocket']>;
    const service = ctx.service as LoadBalancer;
    if (session.heldOn === undefined) {
      if (!session.registry.reserve(route.name, settings.maxConnections, this.#maxWebSockets)) {
        service.release(backend, undefined, 0, -1);
        return this.fail(ctx, TOO_MANY_WEBSOCKETS);
      }
      session.heldOn = route.name;
    }
    if (backend.allowH2) {
      service.release(backend, undefined, 0, -1);
      return this.fail(ctx, UPGRADE_OVER_H2);
    }
    const handler = new WebSocketForwardHandler(ctx, this);
    try {
      const options: UpstreamDispatch = { path: ctx.upstreamPath, method: 'GET', headers, upgrade: 'websocket', servername: backend.servername };
      backend.pool.dispatch(options, handler);
    } catch (err) {
      handler.onError(err as Error);
    }
  }

  /** The WebSocket of `ctx` has closed (websocket.ts): the request ends now. */
  tunnelClosed(ctx: RequestContext): void {
    this.#closed(ctx);
  }

  #redirect(ctx: RequestContext, redirect: { location: string; status: number }): void {
    const body = JSON.stringify({ location: redirect.location, status: redirect.status, request_id: ctx.requestId });
    const headers = ['Location', redirect.location, 'Content-Type', 'application/json; charset=utf-8', 'Content-Length', String(Buffer.byteLength(body)), 'Cache-Control', 'no-store'];
    this.writeHead(ctx, redirect.status, headers);
    ctx.bytesSent = ctx.req.method === 'HEAD' ? 0 : Buffer.byteLength(body);
    ctx.res.end(body);
  }

  /** total_timeout_ms: the whole upstream exchange, retries included. */
  #limitTotal(ctx: RequestContext, totalTimeoutMs: number): void {
    ctx.totalTimer = setTimeout(() => {
      this.#abortOrFail(ctx, new ProxyError('upstream_timeout', { message: 'The upstream exchange took longer than total_timeout_ms.' }));
    }, totalTimeoutMs);
    ctx.totalTimer.unref();
  }

  /**
   * A gRPC client's deadline (`grpc-timeout`): when it passes, the upstream call is cancelled (RST_STREAM, as
   * when the client leaves; not counted against the upstream's health, which a client's short deadline
   * says nothing about) and the client gets DEADLINE_EXCEEDED, in trailers if the response has begun.
   */
  #limitDeadline(ctx: RequestContext, ms: number): void {
    ctx.totalTimer = setTimeout(() => {
      try {
        const abort = ctx.abortUpstream;
        ctx.abortUpstream = undefined;
        abort?.(CLIENT_GONE);
        this.fail(ctx, DEADLINE);
      } catch (err) {
        throw markRequest(err, ctx.requestId);
      }
    }, ms);
    ctx.totalTimer.unref();
  }

  /**
   * Fails the request with 408 when the client pauses its body longer than body_timeout_ms. The timer is the
   * connection's (req.setTimeout sets the socket's one timeout, which any byte read resets), so with pipelined
   * requests it belongs to the last request that set it: an earlier request's body ending must not clear it,
   * or a later request whose body stalls is never timed out and its connection hangs (found by fuzzing).
   */
  #watchBody(ctx: RequestContext): void {
    const req = ctx.req;
    if (ctx.protocol === 'h2') {
      // A stream's timeout is its own: nothing is shared with the connection's other streams.
      req.setTimeout(this.#bodyTimeoutMs, () => this.#bodyStalled(ctx));
      req.once('end', () => req.setTimeout(0));
      return;
    }
    const socket = req.socket;
    BODY_WATCH.set(socket, req);
    req.setTimeout(this.#bodyTimeoutMs, () => this.#bodyStalled(ctx));
    req.once('end', () => {
      if (BODY_WATCH.get(socket) !== req) return;
      BODY_WATCH.delete(socket);
      req.setTimeout(0);
    });
  }

  #bodyStalled(ctx: RequestContext): void {
    this.#abortOrFail(ctx, new ProxyError('request_timeout', { message: 'The request body stalled.' }));
  }

  /** A timer's verdict: the upstream request, once dispatched, is cancelled with it; before, it is answered. */
  #abortOrFail(ctx: RequestContext, error: ProxyError): void {
    try {
      if (ctx.abortUpstream !== undefined) ctx.abortUpstream(error);
      else this.fail(ctx, error);
    } catch (err) {
      throw markRequest(err, ctx.requestId);
    }
  }

  /** The request headers for the upstream, as a flat name/value list (keeps order and repeats). */
  #upstreamHeaders(ctx: RequestContext, service: LoadBalancer, backend: Backend): string[] {
    const req = ctx.req;
    const out = ctx.forwardHeaders;
    out.length = ctx.forwardHeaderCount; // a retry rebuilds what the last attempt appended
    // Framing is rewritten, never copied: the length as the number Node validated, or chunked by undici.
    if (ctx.bodyLength > 0) out.push('content-length', String(ctx.bodyLength));
    if (!service.preserveHost) out.push('host', backend.address);
    const trusted = ctx.fromTrustedProxy;
    const xff = req.headers['x-forwarded-for'];
    out.push('x-forwarded-for', trusted && xff !== undefined ? `${xff}, ${ctx.peerAddress}` : ctx.peerAddress);
    const proto = req.headers['x-forwarded-proto'];
    out.push('x-forwarded-proto', trusted && typeof proto === 'string' ? proto : this.#proto);
    const fwdHost = req.headers['x-forwarded-host'];
    const host = trusted && typeof fwdHost === 'string' ? fwdHost : req.headers.host;
    if (host !== undefined) out.push('x-forwarded-host', host);
    out.push('x-request-id', ctx.requestId);
    // gRPC servers may insist on it (RFC 9113 §8.2.2 lets `te: trailers` alone through on HTTP/2).
    if (ctx.grpc && backend.allowH2) out.push('te', 'trailers');
    if (this.#forwardClientCert) {
      const cert = clientCertificate(req.socket);
      if (cert !== undefined) out.push(CLIENT_CERT_HEADERS[0], cert.subject, CLIENT_CERT_HEADERS[1], cert.fingerprint);
    }
    return out;
  }

  writeHead(ctx: RequestContext, status: number, headers: string[]): void {
    ctx.status = status; // response filters read it
    this.#completeHead(ctx, headers, status === 101);
    ctx.res.writeHead(status, headers);
  }

  /** Sends a gRPC trailers-only response: `headers` (with grpc-status) and Tollgate's, in one HEADERS frame. */
  writeTrailersOnly(ctx: RequestContext, headers: string[]): void {
    ctx.status = 200; // response filters read it
    this.#completeHead(ctx, headers);
    sendTrailersOnly(ctx, headers);
  }

  /**
   * Adds Tollgate's response headers to `headers` and runs the route's response filters. A 101 (a WebSocket's)
   * never gets `Connection: close`: its connection is the WebSocket's from then on.
   */
  #completeHead(ctx: RequestContext, headers: string[], switching = false): void {
    ctx.responseTime = performance.now() - ctx.startedAt;
    headers.push('X-Proxy-By', this.#proxyName, 'X-Request-ID', ctx.requestId, 'X-Response-Time', formatMs(ctx.responseTime));
    const extra = ctx.responseHeaders;
    for (let i = 0; i < extra.length; i++) headers.push(extra[i] as string);
    // An upstream that answers before it has the whole request body (an early error, a sink) may never
    // take the rest: the connection cannot carry another request until it is read, so it closes after
    // this response instead of waiting for bytes nobody reads. HTTP/2 has no Connection header (node:http2
    // throws on one): there the stream alone ends (RST_STREAM NO_ERROR), and shutdown sends GOAWAY.
    if ((ctx.bodyChunked || ctx.bodyLength > 0) && !ctx.req.complete) ctx.closeConnection = true;
    if ((this.#shared.draining || ctx.closeConnection) && ctx.protocol === 'http/1.1' && !switching) headers.push('Connection', 'close');
    for (const filter of (ctx.route as Route).responseFilters) filter(ctx, headers);
  }

  upstreamFailed(ctx: RequestContext, error: ProxyError | undefined): void {
    if (error === undefined) return; // the client left first: not the upstream's fault, nothing to answer
    const backend = ctx.backend;
    if (backend !== undefined && error.code === 'bad_gateway' && !ctx.res.headersSent) this.#tlsHint.check(backend, error, ctx.requestId);
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
   * otherwise only for an idempotent request that failed with a reset or a bad response and whose body,
   * if any, can be sent again (kept in memory whole: REPLAY_MAX_BYTES).
   */
  #shouldRetry(ctx: RequestContext, error: ProxyError): boolean {
    const service = ctx.service as LoadBalancer;
    if (ctx.retries >= service.maxRetries) return false;
    const safe = error.retryable || (error.code === 'bad_gateway' && IDEMPOTENT.has(ctx.req.method ?? '') && this.#canResend(ctx));
    if (!safe || !service.budget.tryRetry()) return false;
    // A request holds one retry in flight at most: the one it is on now.
    ctx.retryBudget?.retryDone();
    ctx.retryBudget = service.budget;
    return true;
  }

  /** Whether the request's body, if it has one, can be sent again: it was kept whole in memory. */
  #canResend(ctx: RequestContext): boolean {
    if (!ctx.bodyChunked && ctx.bodyLength === 0) return true;
    if (ctx.replayBody === undefined && ctx.body instanceof BodyLimiter) ctx.replayBody = ctx.body.replayBody();
    return ctx.replayBody !== undefined;
  }

  /** Answers a request with a JSON error, or cuts the connection when the response has begun. */
  fail(ctx: RequestContext, err: unknown): void {
    let error = err instanceof ProxyError ? err : new ProxyError('internal_error', { cause: err });
    ctx.error = error;
    const res = ctx.res;
    if (res.headersSent) {
      // A gRPC call whose head is out can still end with a status, in the trailers.
      if (ctx.grpc && ctx.protocol === 'h2') {
        if (!responseEnded(ctx)) endWithStatus(ctx, error);
        return;
      }
      // Part of a response is out: the only honest signal left is to cut the connection.
      res.destroy();
      return;
    }
    if (res.destroyed) return;
    const hooks = (ctx.route as Route).failHooks;
    for (let i = 0; i < hooks.length; i++) {
      try {
        const replaced = (hooks[i] as (typeof hooks)[number])(ctx, error);
        if (replaced instanceof ProxyError) error = replaced;
      } catch (hookError) {
        this.#logger.error({ err: hookError, request_id: ctx.requestId }, 'fail_to_proxy hook failed');
      }
    }
    ctx.error = error;
    if (error.status === 400 || error.status === 501) ctx.closeConnection = true;
    // gRPC clients read the status from the trailers, never the body: HTTP 200 with grpc-status (Envoy's and nginx's form).
    if (ctx.grpc) return this.writeTrailersOnly(ctx, grpcErrorHeaders(ctx, error));
    const headers: string[] = [];
    const relayed = error.response;
    if (relayed !== undefined) {
      for (let i = 0; i < relayed.headers.length; i++) headers.push(relayed.headers[i] as string);
      headers.push('Content-Length', String(relayed.body.length));
      this.writeHead(ctx, relayed.status, headers);
      ctx.bytesSent = ctx.req.method === 'HEAD' ? 0 : relayed.body.length;
      ctx.res.end(relayed.body);
      return;
    }
    if (error.code === 'no_upstream') headers.push('Retry-After', '1');
    if (error.code === 'shutting_down' || error.code === 'too_many_websockets') headers.push('Retry-After', '1');
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

  /**
   * /health: 200 `ok` while every service has a usable backend, 200 `degraded` while only some do, 503
   * `unavailable` when none does (a load balancer in front then takes this instance out).
   */
  #health(ctx: RequestContext): void {
    let up = 0;
    const upstreams: { service: string; name: string; healthy: boolean; inflight: number }[] = [];
    for (const service of this.#services.values()) {
      if (service.available) up++;
      for (const b of service.backends) upstreams.push({ service: service.name, name: b.name, healthy: b.healthy, inflight: b.inflight });
    }
    const status = up === this.#services.size ? 'ok' : up > 0 ? 'degraded' : 'unavailable';
    this.respondJson(ctx, up > 0 ? 200 : 503, { status, uptime_s: Math.round((Date.now() - this.#startedAt) / 1000), upstreams });
  }

  #closed(ctx: RequestContext): void {
    try {
      this.#finish(ctx);
    } catch (err) {
      throw markRequest(err, ctx.requestId);
    }
  }

  /** Runs when the client connection is done with this response (finished, or closed early). */
  #finish(ctx: RequestContext): void {
    // A response queued behind another ends through the listener's 'close' or Node's (which emits one of
    // its own from Node 24 on); either way the request is logged and released once.
    if (ctx.finished) return;
    ctx.finished = true;
    const abort = ctx.abortUpstream;
    if (abort !== undefined) {
      // The client left before the upstream response was complete: cancel the upstream request.
      ctx.abortUpstream = undefined;
      abort(CLIENT_GONE);
    }
    if (ctx.totalTimer !== undefined) clearTimeout(ctx.totalTimer);
    if (ctx.retryBudget !== undefined) ctx.retryBudget.retryDone();
    const webSocket = ctx.webSocket;
    if (webSocket !== undefined) webSocket.end();
    if (webSocket?.tunnel !== undefined) {
      // A WebSocket that was open: its 101 and how it closed are what is logged (closed_by says shutdown).
    } else if (this.#shared.cutOff && !ctx.res.writableFinished) {
      // Shutdown closed the connection before the response was all sent: the proxy's doing, not the client's.
      ctx.error = CUT_OFF;
      if (!ctx.res.headersSent) ctx.status = CUT_OFF.status;
    } else if (!ctx.res.headersSent) ctx.status = 499; // as nginx: the client closed before any response
    for (const hook of (ctx.route as Route).loggingHooks) {
      try {
        hook(ctx);
      } catch (err) {
        this.#logger.error({ err, request_id: ctx.requestId }, 'logging hook failed');
      }
    }
    this.release();
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

/**
 * 100 Continue, in its place. A response queued behind another one (pipelining) has no socket yet, so a 100
 * would be buffered, and Node puts the final response's head in front of buffered data when the body is a
 * Buffer: the client got the head, then the 100, then the body (found by fuzzing). It is sent when the
 * response gets the connection instead, and not at all if the final response has begun by then.
 */
function sendContinue(res: ServerResponse): void {
  if (res.socket !== null) res.writeContinue();
  else
    res.once('socket', () => {
      if (!res.headersSent) res.writeContinue();
    });
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
