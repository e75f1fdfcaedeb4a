/**
 * The phases a library user or a plugin writes, after Pingora's `ProxyHttp`: each hook gets the request's
 * `Session` (a façade over Tollgate's own per-request state) and the phase's own context `ctx`, made by
 * `newContext()`. These types are the public API; the core adapts each phase once, when a route is built
 * (src/api/adapt.ts).
 */
import type { ErrorCode, ProxyError } from '../proxy/errors.js';

/**
 * A request or response header list, edited in place: names are matched case-insensitively, values kept as
 * given. Which list it is depends on the phase (see `Session.upstreamHeaders`, `Session.responseHeaders`).
 */
export interface HeaderEditor {
  /** The first value of `name`, or undefined. */
  get(name: string): string | undefined;
  /** Every value of `name`, in order. */
  getAll(name: string): string[];
  has(name: string): boolean;
  /** Replaces every value of `name` with this one. */
  set(name: string, value: string): void;
  /** Adds a value, keeping those there. */
  append(name: string, value: string): void;
  /** Removes every value of `name`. */
  delete(name: string): void;
  /** `[name, value]` pairs in order (a copy). */
  entries(): [string, string][];
}

/** The route a request matched. */
export interface RouteInfo {
  readonly name: string;
  /** The service it forwards to; undefined for a redirect route. */
  readonly service: string | undefined;
}

/** The backend of the current upstream attempt. */
export interface UpstreamInfo {
  readonly service: string;
  readonly name: string;
  readonly address: string;
  readonly port: number;
}

/** What upstreamPeer returns: a service of the config, and optionally one of its upstreams by name. */
export interface PeerChoice {
  readonly service: string;
  readonly upstream?: string;
}

/**
 * What requestFilter returns: nothing or `false` to go on; a `ProxyError` (e.g. `session.refuse('forbidden')`)
 * to answer with that error; `true` once it has answered itself (`session.json`, `session.text`, `session.respond`).
 */
export type RequestFilterResult = boolean | ProxyError | undefined | void;

/**
 * One request as the phases see it. Read-only views of what Tollgate knows, header editors whose target
 * depends on the phase, and the helpers that answer a request.
 */
export interface Session {
  readonly requestId: string;
  readonly method: string;
  /** The request target in origin form (`/path?query`), normalized: what routes and auth see. */
  readonly path: string;
  /** `http/1.1` or `h2`. */
  readonly protocol: 'http/1.1' | 'h2';
  /** The client as far as `server.trusted_proxies` let Tollgate see it; the TCP peer otherwise. */
  readonly clientAddress: string;
  readonly route: RouteInfo;
  /**
   * Who the credentials identify when the route's auth accepted them (`cred:` and a digest of a token,
   * `user:alice`); undefined without auth or before it ran.
   */
  readonly identity: string | undefined;
  /** A header the client sent (lower or any case), repeated values joined with `, `; undefined when absent. */
  requestHeader(name: string): string | undefined;
  /** A cookie the client sent, by name; undefined when absent. */
  cookie(name: string): string | undefined;
  /**
   * The request headers sent upstream. From requestFilter on, the client's headers less hop-by-hop ones and
   * credentials that auth consumed; in upstreamRequestFilter also those Tollgate sets itself (Host unless
   * `preserve_host`, X-Forwarded-*, X-Request-ID), which are only there to change from that phase on.
   */
  readonly upstreamHeaders: HeaderEditor;
  /**
   * In responseFilter: the headers of the response being written. Before it (requestFilter, upstreamPeer,
   * upstreamRequestFilter, failToProxy): headers added to whatever response this request gets.
   */
  readonly responseHeaders: HeaderEditor;
  /** The response status: set in responseFilter and logging; 0 before. */
  readonly status: number;
  /** The backend of the current attempt, from upstreamRequestFilter on; undefined before and for generated answers. */
  readonly upstream: UpstreamInfo | undefined;
  /** Milliseconds from dispatch to the upstream's response head; -1 before it (and for generated answers). */
  readonly upstreamLatencyMs: number;
  /** Milliseconds since the request arrived. */
  elapsedMs(): number;
  /** What failed (in failToProxy and logging); undefined while all is well. */
  readonly error: ProxyError | undefined;
  /** An error of the catalogue (docs/errors.md) to return from requestFilter or failToProxy. */
  refuse(code: ErrorCode, message?: string): ProxyError;
  /** Answers with this JSON body (only in requestFilter); returns `true`, to be returned. */
  json(status: number, body: unknown, headers?: Readonly<Record<string, string>>): true;
  /** Answers with this text (`text/plain; charset=utf-8`; only in requestFilter); returns `true`. */
  text(status: number, body: string, headers?: Readonly<Record<string, string>>): true;
  /** Answers with this body and content type (only in requestFilter); returns `true`. */
  respond(status: number, body: string | Uint8Array, contentType: string, headers?: Readonly<Record<string, string>>): true;
  /** The choice for upstreamPeer to return: a service by name, and optionally one of its upstreams. */
  choose(service: string, upstream?: string): PeerChoice;
}

/**
 * The hooks of a phase, each optional, run in this order for a request (docs/library.md draws it):
 *
 *   requestFilter → upstreamPeer → upstreamRequestFilter → [upstream] → responseFilter → logging
 *
 * with failToProxy on the error path. `Ctx` is this phase's own per-request state: `newContext()` makes it
 * before the phase's first hook runs for a request, and every hook of the phase gets the same object. A
 * hook that throws (or a requestFilter whose promise rejects) is logged, counted in
 * `tollgate_phase_errors_total`, and answered with 500 `internal_error` for that request only.
 */
export interface Phases<Ctx = undefined> {
  /** A short name for logs and the error counter. Default: `phase` and its position. */
  readonly name?: string;
  /** Makes this phase's state for one request (default: undefined). Runs once per request, before its first hook. */
  newContext?(): Ctx;
  /**
   * First, once auth and the rate limit have let the request through: may read the request, edit the
   * headers sent upstream or added to the response, refuse (`session.refuse(code)`), or answer
   * (`session.json` ...). Returns nothing or false to go on. The only hook that may be async.
   */
  requestFilter?(session: Session, ctx: NoInfer<Ctx>): RequestFilterResult | Promise<RequestFilterResult>;
  /**
   * Before each upstream attempt (retries included): returns `session.choose(service, upstream?)` to send
   * the request elsewhere than the route's service, or nothing to leave the choice to the route. The first
   * phase that chooses wins; a name the config does not have is a 500.
   */
  upstreamPeer?(session: Session, ctx: NoInfer<Ctx>): PeerChoice | undefined | void;
  /** Just before each attempt is dispatched: may edit `session.upstreamHeaders` (Tollgate's own included). */
  upstreamRequestFilter?(session: Session, ctx: NoInfer<Ctx>): void;
  /**
   * When the response head is written, for upstream responses and Tollgate's own answers alike: may edit
   * `session.responseHeaders`; `session.status` is the status being sent. The status itself cannot change.
   */
  responseFilter?(session: Session, ctx: NoInfer<Ctx>): void;
  /**
   * The request failed and Tollgate is about to answer with `error`: may add response headers, or return
   * another error to answer with. Not called once the response has begun (the connection is then cut).
   */
  failToProxy?(session: Session, ctx: NoInfer<Ctx>, error: ProxyError): ProxyError | undefined | void;
  /** Last, once the response is finished or the client has gone (`session.status` 499); for logs and metrics. */
  logging?(session: Session, ctx: NoInfer<Ctx>): void;
}

/**
 * A phase of any context type, as the lists of `createGateway` take them: the context is the phase's own
 * business, checked where the phase is written (`definePhases`, or a `Phases<Ctx>` annotation).
 */
export type AnyPhases = Phases<unknown>;

/**
 * Returns `phases` as it is, typed: `Ctx` is inferred from `newContext()` and each hook's `ctx` takes it.
 * A hook with another signature does not compile.
 */
export function definePhases<Ctx = undefined>(phases: Phases<Ctx>): Phases<Ctx> {
  return phases;
}

/** What a plugin factory gets besides its options. */
export interface PluginApi {
  /** The route the plugin serves. */
  readonly route: string;
  /** The module as the config names it (resolved path, or the registered name). */
  readonly module: string;
  /** A logger for the plugin (pino's child logger, bound to the route and the module). */
  readonly logger: PluginLogger;
  /** Makes an error of the catalogue (as `session.refuse`), for plugins that do not import Tollgate. */
  error(code: ErrorCode, message?: string): ProxyError;
}

/** The log methods a plugin gets: each takes an object of fields and a message, or a message. */
export interface PluginLogger {
  error(fields: object, message?: string): void;
  warn(fields: object, message?: string): void;
  info(fields: object, message?: string): void;
  debug(fields: object, message?: string): void;
}

/**
 * A plugin module's default export: called once per route that lists it, each time a config generation is
 * built (at start and on every reload), with the route's `options`. Throwing (or rejecting) there makes the
 * config invalid.
 */
export type PluginFactory<Options = Record<string, unknown>> = (options: Options, api: PluginApi) => AnyPhases | Promise<AnyPhases>;

/** Returns `factory` as it is, typed (its options, and the phases it returns). */
export function definePlugin<Options = Record<string, unknown>>(factory: PluginFactory<Options>): PluginFactory<Options> {
  return factory;
}
