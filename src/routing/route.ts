/**
 * One route: where its requests go (a service's balancer, or a redirect), how the upstream path is made,
 * and its own phase lists, each built once when the generation is built. The pipeline runs any route the
 * same way; everything that differs between routes is here, decided at load time.
 */
import type { LoadBalancer } from '../balancing/load-balancer.js';
import type { HeaderEdits } from '../config/schema.js';
import type { RouteWebsocket } from '../config/resolve.js';
import type { RequestContext } from '../proxy/context.js';
import type { FailHook, HeaderFilter, LoggingHook, Phases, RequestFilter, UpstreamPeerHook } from '../proxy/phases.js';

export interface RouteOptions {
  name: string;
  /** The service it forwards to; undefined for a redirect and for Tollgate's own answers. */
  service: LoadBalancer | undefined;
  redirect?: { location: string; status: number } | undefined;
  /** Replaces the matched path prefix in the path sent upstream (`''` strips it). */
  rewritePrefix?: string | undefined;
  /** The phases in the order their hooks run. */
  phases: readonly Phases[];
  /** Lower-case names of request headers never forwarded as received. */
  dropRequestHeaders: ReadonlySet<string>;
  /**
   * Lower-case name of the API-key header when the route's auth reads one (`auth_type: api_key`): a request
   * may carry it once only, as `Authorization`. Undefined otherwise.
   */
  credentialHeader?: string | undefined;
  /** WebSocket settings; undefined: `Upgrade: websocket` requests are forwarded as ordinary requests. */
  websocket?: RouteWebsocket | undefined;
}

export class Route {
  readonly name: string;
  readonly service: LoadBalancer | undefined;
  readonly redirect: { readonly location: string; readonly status: number } | undefined;
  readonly rewritePrefix: string | undefined;
  readonly requestFilters: readonly RequestFilter[];
  readonly upstreamPeers: readonly UpstreamPeerHook[];
  readonly upstreamRequestFilters: readonly HeaderFilter[];
  readonly failHooks: readonly FailHook[];
  readonly responseFilters: readonly HeaderFilter[];
  readonly loggingHooks: readonly LoggingHook[];
  readonly dropRequestHeaders: ReadonlySet<string>;
  readonly credentialHeader: string | undefined;
  readonly websocket: RouteWebsocket | undefined;
  /** `"route":…,"service":…` for the completion line, escaped once. */
  readonly logFields: string;

  constructor(options: RouteOptions) {
    this.name = options.name;
    this.service = options.service;
    this.redirect = options.redirect;
    this.rewritePrefix = options.rewritePrefix;
    const phases = options.phases;
    this.requestFilters = collect(phases, 'requestFilter');
    this.upstreamPeers = collect(phases, 'upstreamPeer');
    this.upstreamRequestFilters = collect(phases, 'upstreamRequestFilter');
    this.failHooks = collect(phases, 'failToProxy');
    this.responseFilters = collect(phases, 'responseFilter');
    this.loggingHooks = collect(phases, 'logging');
    this.dropRequestHeaders = options.dropRequestHeaders;
    this.credentialHeader = options.credentialHeader;
    this.websocket = options.websocket;
    this.logFields = `"route":${JSON.stringify(options.name)},"service":${options.service === undefined ? 'null' : JSON.stringify(options.service.name)}`;
  }

  /** The path sent upstream: the matched prefix replaced (query kept), or the path as it is. */
  upstreamPath(path: string, prefix: string | undefined): string {
    const rewrite = this.rewritePrefix;
    if (rewrite === undefined || prefix === undefined) return path;
    // The prefix matched at a segment boundary, so what follows it is '', '/…' or '?…'.
    const rest = prefix === '/' ? path : path.slice(prefix.length);
    if (rest === '' || rest.charCodeAt(0) === 63 /* ? */) return `${rewrite === '' ? '/' : rewrite}${rest}`;
    if (rewrite === '' || rewrite === '/') return rest;
    return rewrite.endsWith('/') ? `${rewrite}${rest.slice(1)}` : `${rewrite}${rest}`;
  }
}

/**
 * A route's `request_headers` / `response_headers` edits as a phase: run after every other header filter,
 * so they apply on top of Tollgate's own headers. Undefined when the route edits nothing.
 */
export function headerEditsPhase(request: HeaderEdits, response: HeaderEdits): Phases | undefined {
  const upstream = editor(request);
  const downstream = editor(response);
  if (upstream === undefined && downstream === undefined) return undefined;
  return {
    name: 'route-headers',
    ...(upstream === undefined ? {} : { upstreamRequestFilter: (ctx: RequestContext, headers: string[]) => upstream(headers, ctx) }),
    ...(downstream === undefined ? {} : { responseFilter: (_ctx: RequestContext, headers: string[]) => downstream(headers) }),
  };
}

/**
 * A function that applies one side's edits to a flat name/value list in place. On the upstream side the
 * list is the context's `forwardHeaders`: the client's headers up to `forwardHeaderCount`, then what Tollgate
 * appended for this attempt, which a retry cuts off and appends again. A client header removed here moves
 * that boundary back with it, so a retry cuts exactly what this attempt appended (the edits run again on
 * every attempt).
 */
function editor(edits: HeaderEdits): ((headers: string[], ctx?: RequestContext) => void) | undefined {
  const set = Object.entries(edits.set);
  const drop = new Set([...edits.remove, ...set.map(([name]) => name)].map((n) => n.toLowerCase()));
  if (drop.size === 0) return undefined;
  return function editHeaders(headers: string[], ctx?: RequestContext): void {
    const boundary = ctx !== undefined && headers === ctx.forwardHeaders ? ctx.forwardHeaderCount : 0;
    let kept = 0;
    let removedBefore = 0;
    for (let i = 0; i < headers.length; i += 2) {
      if (drop.has((headers[i] as string).toLowerCase())) {
        if (i < boundary) removedBefore += 2;
        continue;
      }
      headers[kept] = headers[i] as string;
      headers[kept + 1] = headers[i + 1] as string;
      kept += 2;
    }
    headers.length = kept;
    if (ctx !== undefined && removedBefore > 0) ctx.forwardHeaderCount = boundary - removedBefore;
    for (const [name, value] of set) headers.push(name, value);
  };
}

type HookName = 'requestFilter' | 'upstreamPeer' | 'upstreamRequestFilter' | 'failToProxy' | 'responseFilter' | 'logging';

/**
 * Each phase's hooks bound to it once, however many routes run the phase: the head and tail phases (and an
 * inherited auth block's) are the same objects on every route.
 */
const bound = new WeakMap<Phases, Partial<Record<HookName, { hook: unknown; fn: unknown }>>>();

function collect<K extends HookName>(phases: readonly Phases[], key: K): NonNullable<Phases[K]>[] {
  const hooks: NonNullable<Phases[K]>[] = [];
  for (const p of phases) {
    const hook = p[key];
    if (hook === undefined) continue;
    let ofPhase = bound.get(p);
    if (ofPhase === undefined) bound.set(p, (ofPhase = {}));
    let entry = ofPhase[key];
    // A phase object whose hook was replaced since gets the new one bound.
    if (entry?.hook !== hook) ofPhase[key] = entry = { hook, fn: hook.bind(p) };
    hooks.push(entry.fn as NonNullable<Phases[K]>);
  }
  return hooks;
}
