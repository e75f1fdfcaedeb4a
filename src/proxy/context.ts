import type { IncomingMessage, ServerResponse } from 'node:http';
import type { SessionImpl } from '../api/session.js';
import type { Backend } from '../balancing/backend.js';
import type { LoadBalancer } from '../balancing/load-balancer.js';
import type { RetryBudget } from '../balancing/retry-budget.js';
import type { Route } from '../routing/route.js';
import type { RateDecision } from '../limits/token-bucket.js';
import type { ProxyError } from './errors.js';
import type { BodyLimiter } from './request-body.js';
import type { WebSocketSession } from './websocket.js';

/** The downstream protocol of a request, as metrics and the access log name it. */
export type DownstreamProtocol = 'http/1.1' | 'h2';

/**
 * Everything one request carries through the phases: the only state phases share. Every field is declared
 * here, so all contexts have one shape (V8 keeps such objects fast).
 */
export class RequestContext {
  /**
   * The downstream request and response. On HTTP/2 these are node:http2's compatibility objects
   * (Http2ServerRequest, and server/h2-downstream.ts's H2Response), which have every member the phases use;
   * what differs (pseudo-headers, Connection) is handled where `protocol` says so.
   */
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  /** `http/1.1` (HTTP/1.0 included) or `h2`: decided by the listener that accepted the connection. */
  readonly protocol: DownstreamProtocol;
  /**
   * The client's header lines, names and values alternating: `req.rawHeaders` on HTTP/1.1; on HTTP/2
   * without pseudo-headers, with `:authority` as Host (proxy/h2-request.ts).
   */
  rawHeaders: string[];
  /** performance.now() when the request arrived. */
  readonly startedAt: number;
  requestId = '';
  /** W3C trace id, and the traceparent / tracestate sent upstream; set by the trace-context phase. */
  traceId = '';
  traceParent = '';
  traceState: string | undefined = undefined;
  /** The TCP peer. */
  peerAddress: string;
  /** The client as far as trusted proxies let us see it; the peer otherwise. */
  clientAddress: string;
  /** Whether the peer is a configured trusted proxy (its X-Forwarded-* headers are believed). */
  fromTrustedProxy = false;
  /** Request target in origin form (`/path?query`), normalized: what routes, auth and logs see. */
  path: string;
  /** The path sent upstream (the route's prefix rewrite applied). */
  upstreamPath = '';
  /** The route that matched; undefined until matched, and for requests no route matched. */
  route: Route | undefined = undefined;
  /** The route's path_prefix that matched, if it matched by prefix. */
  routePrefix: string | undefined = undefined;
  /** The service (balancer) of the current attempt: the route's, or the one an upstreamPeer phase chose. */
  service: LoadBalancer | undefined = undefined;
  /** Who the credentials identify (`cred:` + a digest of a token, `user:alice`); undefined when not authenticated. */
  principal: string | undefined = undefined;
  /** Why authentication failed; set by the auth filter, acted on after the rate limit counted it. */
  authFailure: string | undefined = undefined;
  /** WWW-Authenticate value to send with the 401. */
  authChallenge = '';
  /** The verified claims of a JWT (rate_limit.key `claim:NAME` reads them); undefined for other schemes. */
  authClaims: Readonly<Record<string, unknown>> | undefined = undefined;
  /** Headers (name, value, ...) that auth adds to the upstream request (claims_to_headers, forward auth). */
  authHeaders: string[] | undefined = undefined;
  /** The refusal to answer with when it is more than a 401 challenge (forward auth's relayed answer, its 503). */
  authRefusal: ProxyError | undefined = undefined;
  rateLimit: RateDecision | undefined = undefined;
  /** Headers to forward, collected when the request is read (before filters run). */
  forwardHeaders: string[] = [];
  /** How many entries of forwardHeaders came from the client (the rest is appended per attempt). */
  forwardHeaderCount = 0;
  /** Request body length from Content-Length; 0 when there is none. */
  bodyLength = 0;
  /** Whether the request body is chunked (no length known in advance). */
  bodyChunked = false;
  /** The client sent `Expect: 100-continue` and waits for a 100 before its body. */
  expectsContinue = false;
  /** Close the client connection after this response (unread body, framing error, shutdown). */
  closeConnection = false;
  backend: Backend | undefined = undefined;
  /** Backends that already failed this request (retries go elsewhere). */
  tried: Backend[] | undefined = undefined;
  /** Upstream attempts made after the first. */
  retries = 0;
  /** The retry budget that granted this request's latest retry, given back when the request finishes. */
  retryBudget: RetryBudget | undefined = undefined;
  /**
   * The request body on its way upstream: a counting limiter, piped from the client once connected; or,
   * on a retry after the body was sent, the whole body kept in memory (`replayBody`).
   */
  body: BodyLimiter | Buffer | null = null;
  /** An idempotent request's body, kept from the first attempt so a retry can send it again. */
  replayBody: Buffer | undefined = undefined;
  /** performance.now() when the current upstream attempt was dispatched. */
  dispatchedAt = 0;
  /** Milliseconds from dispatch to the current attempt's response head; -1 before it. */
  upstreamLatency = -1;
  /** Limits the whole upstream exchange (total_timeout_ms). */
  totalTimer: NodeJS.Timeout | undefined = undefined;
  /** Extra response headers (flat name/value list) that filters add; sent on every response to this request. */
  responseHeaders: string[] = [];
  status = 0;
  /** A gRPC request (`content-type: application/grpc*`): Tollgate's own answers take the gRPC form. */
  grpc = false;
  /** The client's gRPC deadline (`grpc-timeout`) in milliseconds from arrival; -1 when it set none. */
  grpcTimeoutMs = -1;
  /** The gRPC status the client was sent (Tollgate's, or the upstream's from its headers or trailers); -1 when none. */
  grpcStatus = -1;
  bytesSent = 0;
  /** Milliseconds from arrival until the response headers were written. */
  responseTime = -1;
  error: ProxyError | undefined = undefined;
  /** The logging phase has run and the request was released (set once, whatever reports the end first). */
  finished = false;
  /** An `Upgrade: websocket` request (server/proxy-server.ts decides which are): its handshake and tunnel. */
  webSocket: WebSocketSession | undefined = undefined;
  /** The Session of user phases (src/api/), made by the first one that runs; routes without them never make one. */
  session: SessionImpl | undefined = undefined;
  /** Cancels the upstream request; set once it is dispatched. */
  abortUpstream: ((err?: Error) => void) | undefined = undefined;

  constructor(req: IncomingMessage, res: ServerResponse, startedAt: number, protocol: DownstreamProtocol = 'http/1.1') {
    this.req = req;
    this.res = res;
    this.protocol = protocol;
    this.rawHeaders = req.rawHeaders;
    this.startedAt = startedAt;
    this.peerAddress = req.socket.remoteAddress ?? '';
    this.clientAddress = this.peerAddress;
    this.path = req.url ?? '/';
  }
}
