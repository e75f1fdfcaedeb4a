/**
 * The config as services and routes, whichever way it was written: the single-service form (top-level
 * `load_balancing` and `middleware`, no `services` or `routes`) is one service `default` and one route
 * `default` that matches every request. Everything downstream of the loader works on this view only.
 */
import type { RouteMatch } from '../routing/matcher.js';
import { DEFAULT_NAME } from './constants.js';
import type { AuthConfig, Config, LoadBalancingConfig, PROTOCOLS, RateLimitConfig, RouteConfig, RouteMatchConfig, ServiceTlsConfig, UpstreamTlsConfig } from './schema.js';
import type { RouteWebsocketConfig, WebsocketConfig } from './websocket-schema.js';

/** A route with its effective policies (its own where it gives them, the top-level ones otherwise). */
export interface ResolvedRoute {
  readonly config: RouteConfig;
  /** Position in the config's `routes` list (-1 for the implicit route `default`). */
  readonly index: number;
  readonly auth: AuthConfig;
  readonly rateLimit: RateLimitConfig;
  /** WebSocket settings (the route's keys over the top-level ones); undefined when they are off for it. */
  readonly websocket: RouteWebsocket | undefined;
}

/** Every service by name; `load_balancing` is the service `default`. */
export function servicesOf(config: Config): Map<string, LoadBalancingConfig> {
  const out = new Map<string, LoadBalancingConfig>(Object.entries(config.services ?? {}));
  if (config.load_balancing !== undefined) out.set(DEFAULT_NAME, config.load_balancing);
  return out;
}

/** The implicit route of a config without `routes`: everything to the service `default`. */
const DEFAULT_ROUTE: RouteConfig = {
  name: DEFAULT_NAME,
  match: {},
  service: DEFAULT_NAME,
  strip_prefix: false,
  middleware: {},
  request_headers: { set: {}, remove: [] },
  response_headers: { set: {}, remove: [] },
  plugins: [],
};

export function routesOf(config: Config): ResolvedRoute[] {
  const resolve = (route: RouteConfig, index: number): ResolvedRoute => ({
    config: route,
    index,
    auth: route.middleware.auth ?? config.middleware.auth,
    rateLimit: route.middleware.rate_limit ?? config.middleware.rate_limit,
    websocket: routeWebsocket(config.websocket, route.websocket),
  });
  if (config.routes === undefined) return [resolve(DEFAULT_ROUTE, -1)];
  return config.routes.map(resolve);
}

/** Every upstream of every service (the demo starts one backend for each distinct port). */
export function allUpstreams(config: Config): { service: string; name: string; address: string; port: number; weight: number }[] {
  const out: { service: string; name: string; address: string; port: number; weight: number }[] = [];
  for (const [service, lb] of servicesOf(config)) for (const u of lb.upstreams) out.push({ service, ...u });
  return out;
}

/** A route's `match` as the matcher takes it (absent keys left out). */
export function matchOf(match: RouteMatchConfig): RouteMatch {
  return {
    ...(match.hosts === undefined ? {} : { hosts: match.hosts }),
    ...(match.path === undefined ? {} : { path: match.path }),
    ...(match.path_prefix === undefined ? {} : { pathPrefix: match.path_prefix }),
    ...(match.methods === undefined ? {} : { methods: match.methods }),
    ...(match.headers === undefined ? {} : { headers: match.headers }),
  };
}

/** A route's effective WebSocket settings: undefined when WebSockets are off for it. */
export interface RouteWebsocket {
  readonly idleTimeoutMs: number;
  /** The route's own cap; undefined: only the instance's. */
  readonly maxConnections: number | undefined;
}

/** The route's effective settings from the top-level block and the route's own key (when the config loads). */
export function routeWebsocket(top: WebsocketConfig, own: RouteWebsocketConfig | undefined): RouteWebsocket | undefined {
  if (own === false) return undefined;
  const keys = typeof own === 'object' ? own : {};
  if (!(keys.enabled ?? (own === true ? true : top.enabled))) return undefined;
  return { idleTimeoutMs: keys.idle_timeout_ms ?? top.idle_timeout_ms, maxConnections: keys.max_connections };
}

/** The TLS settings an upstream is reached with: the service's `tls`, each key the upstream gives replacing it. */
export interface UpstreamTls {
  enabled: boolean;
  servername: string | undefined;
  ca_file: string | undefined;
  verify: boolean;
  cert_file: string | undefined;
  key_file: string | undefined;
}

const PLAIN: UpstreamTls = { enabled: false, servername: undefined, ca_file: undefined, verify: true, cert_file: undefined, key_file: undefined };

/** Merges a service's and an upstream's `tls` (when the config is loaded). A `tls` block alone turns TLS on. */
export function upstreamTls(lb: { tls?: ServiceTlsConfig | undefined }, upstream: { tls?: UpstreamTlsConfig | undefined }): UpstreamTls {
  const base = lb.tls ?? PLAIN;
  const own = upstream.tls;
  if (own === undefined) return { ...PLAIN, ...base };
  const client = own.cert_file === undefined ? base : own;
  return {
    enabled: own.enabled ?? (lb.tls === undefined ? true : base.enabled),
    servername: own.servername ?? base.servername,
    ca_file: own.ca_file ?? base.ca_file,
    verify: own.verify ?? base.verify,
    cert_file: client.cert_file,
    key_file: client.key_file,
  };
}

/** The HTTP version an upstream is spoken to in: its own `protocol`, else the service's. */
export function upstreamProtocol(lb: { protocol: (typeof PROTOCOLS)[number] }, upstream: { protocol?: (typeof PROTOCOLS)[number] | undefined }): (typeof PROTOCOLS)[number] {
  return upstream.protocol ?? lb.protocol;
}
