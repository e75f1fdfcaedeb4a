import type { RequestContext } from './context.js';
import type { ProxyError } from './errors.js';

/**
 * What a request filter decides: `false` to go on, a ProxyError to refuse the request (the pipeline answers
 * with that error), or `true` when the filter has written a response itself.
 */
export type FilterResult = boolean | ProxyError;

/**
 * The phases of a request, after Pingora's `ProxyHttp`. The pipeline (pipeline.ts) runs them in this order:
 *
 *   [route match] → request_filter → upstream_peer → upstream_request_filter → [upstream]
 *   → response_filter → logging
 *
 * with fail_to_proxy on the error path (a failed attempt goes back to upstream_peer when a retry is safe). A middleware supplies only the hooks it needs;
 * hooks that nobody supplies cost nothing per request (the pipeline keeps only non-empty lists).
 */
export interface Phases {
  /** A short name for logs and errors. */
  readonly name: string;
  /**
   * First, before any upstream is chosen. Returns false to go on, or refuses the request (a 401, a 429);
   * the pipeline then stops. May return a promise (a shared rate-limit store).
   */
  requestFilter?(ctx: RequestContext): FilterResult | Promise<FilterResult>;
  /**
   * Chooses where the request goes instead of the route's service (Pingora's `upstream_peer`): a service
   * by name (its balancer picks the backend), and optionally one of its upstreams by name. Undefined leaves
   * the choice to the route. Runs before each attempt; the first phase that chooses wins.
   */
  upstreamPeer?(ctx: RequestContext): PeerChoice | undefined;
  /** Edits the headers sent upstream (a flat name, value, name, value list) just before dispatch. */
  upstreamRequestFilter?(ctx: RequestContext, headers: string[]): void;
  /** Edits the response headers sent to the client, for proxied and generated responses alike. */
  responseFilter?(ctx: RequestContext, headers: string[]): void;
  /**
   * The request failed and Tollgate is about to answer with `error` (Pingora's `fail_to_proxy`): may add
   * headers (`ctx.responseHeaders`) or return another error to answer with. Not called when the response
   * had already begun (the connection is then cut).
   */
  failToProxy?(ctx: RequestContext, error: ProxyError): ProxyError | undefined;
  /** Last, once the response is finished or the client has gone; `ctx.error` says what failed. */
  logging?(ctx: RequestContext): void;
  /** Request headers (lower-case) that this middleware consumes and that must not reach the upstream. */
  readonly consumesRequestHeaders?: readonly string[];
}

/** What an upstreamPeer hook chooses: a service of the config, and optionally one of its upstreams. */
export interface PeerChoice {
  readonly service: string;
  readonly upstream?: string;
}

export type UpstreamPeerHook = (ctx: RequestContext) => PeerChoice | undefined;
export type FailHook = (ctx: RequestContext, error: ProxyError) => ProxyError | undefined;
export type RequestFilter = (ctx: RequestContext) => FilterResult | Promise<FilterResult>;
export type HeaderFilter = (ctx: RequestContext, headers: string[]) => void;
export type LoggingHook = (ctx: RequestContext) => void;
