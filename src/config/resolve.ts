/**
 * The config as services and routes, whichever way it was written: the single-service form (top-level
 * `load_balancing` and `middleware`, no `services` or `routes`) is one service `default` and one route
 * `default` that matches every request. Everything downstream of the loader works on this view only.
 */
import type { RouteMatch } from '../routing/matcher.js';
import { routeWebsocket, type RouteWebsocket } from './websocket-schema.js';
import { DEFAULT_NAME, type AuthConfig, type Config, type LoadBalancingConfig, type RateLimitConfig, type RouteConfig, type RouteMatchConfig } from './schema.js';

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
