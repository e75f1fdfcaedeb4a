/**
 * A generation: the immutable set of services and routes built from one validated config, with the
 * pipeline that serves them and the listener's certificates. The gateway holds one current generation and
 * swaps in the next in one assignment; a request finishes on the generation it started on. Backends (and their health, ejection,
 * in-flight count, latency, slow start and pool) carry over from the previous generation when the next
 * has the same service, name, address and port; rate-limit stores carry over while their policy is the same.
 */
import type { Logger } from 'pino';
import { adaptPhases, type UserPhase, type UserPhaseDeps } from '../api/adapt.js';
import type { Responder } from '../api/session.js';
import type { Backend } from '../balancing/backend.js';
import { LoadBalancer } from '../balancing/load-balancer.js';
import { matchOf, routesOf, servicesOf, type ResolvedRoute } from '../config/resolve.js';
import type { AuthSchemeConfig, Config, RateLimitConfig } from '../config/schema.js';
import type { RateLimitStore } from '../limits/store.js';
import { createAuth, type AuthDeps, type AuthPhases } from '../middleware/auth/auth.js';
import { JwksCache } from '../middleware/auth/jwks.js';
import { createRateLimit } from '../middleware/rate-limit/rate-limit.js';
import { HOP_BY_HOP } from '../proxy/headers.js';
import type { Phases } from '../proxy/phases.js';
import { Pipeline, SET_BY_PROXY, type PipelineShared } from '../proxy/pipeline.js';
import { compileRoutes, type RouteEntry } from '../routing/matcher.js';
import { headerEditsPhase, Route } from '../routing/route.js';
import { TlsContexts } from '../server/tls-contexts.js';
import type { Clock, Random } from '../util/clock.js';

/** Rate-limit stores by policy, kept by the gateway across generations. */
export interface StoreRegistry {
  /** The store for this policy (made on first use). */
  get(config: RateLimitConfig): RateLimitStore;
}

export interface GenerationDeps {
  logger: Logger;
  clock: Clock;
  random: Random;
  shared: PipelineShared;
  stores: StoreRegistry;
  /** Phases run first on every route (trace context). */
  head: readonly Phases[];
  /** Library phases, after the route's request filters. */
  user: readonly Phases[];
  /** Phases run last on every route and on Tollgate's own answers (server timing, metrics, access log). */
  tail: readonly Phases[];
  startedAt: number;
  /** Public-API phases by route name (createGateway's, then the route's plugins), run after `user`. */
  routePhases?: RoutePhases | undefined;
  /** What adapted public-API phases log and count through; required with `routePhases`. */
  userDeps?: UserPhaseDeps | undefined;
  /** Called on each failed JWKS fetch (counted by the metrics). */
  onJwksFailure?: (() => void) | undefined;
}

/** Public-API phases of one generation, by route name, in the order they run. */
export type RoutePhases = ReadonlyMap<string, readonly UserPhase[]>;

export interface GenerationMeta {
  id: number;
  /** Epoch milliseconds. */
  loadedAt: number;
  /** SHA-256 of the file it came from (hex), or '' for a config given as an object. */
  hash: string;
}

export class Generation {
  readonly meta: GenerationMeta;
  readonly config: Config;
  readonly services: ReadonlyMap<string, LoadBalancer>;
  readonly routes: readonly Route[];
  readonly pipeline: Pipeline;
  /** The listener's certificates, read from their files when this generation was built; undefined without `server.tls`. */
  readonly tls: TlsContexts | undefined;
  #onIdle: (() => void) | undefined;
  /** JWKS caches by URL: one per URL, started with the generation, closed when it is retired. */
  readonly #jwks = new Map<string, JwksCache>();
  readonly #auth: AuthPhases[] = [];

  constructor(config: Config, deps: GenerationDeps, meta: GenerationMeta, previous?: Generation) {
    this.meta = meta;
    this.config = config;
    // First: a certificate that cannot be used fails the build before any pool or health check exists.
    this.tls = config.server.tls === undefined ? undefined : new TlsContexts(config.server.tls);
    const services = new Map<string, LoadBalancer>();
    for (const [name, lb] of servicesOf(config)) {
      services.set(name, new LoadBalancer(lb, { random: deps.random, clock: deps.clock, logger: deps.logger, name, previous: previous?.services.get(name) }));
    }
    this.services = services;
    const resolved = routesOf(config);
    const keyed = config.routes !== undefined;
    // User phases answer through the pipeline, which is built after the routes.
    const host: { pipeline?: Pipeline } = {};
    const responder: Responder = { writeHead: (ctx, status, headers) => (host.pipeline as Pipeline).writeHead(ctx, status, headers) };
    const authDeps: AuthDeps = {
      logger: deps.logger,
      jwks: (url, timeoutMs) => {
        let cache = this.#jwks.get(url);
        if (cache === undefined) {
          // Keys carry over from the generation before, so a reload does not wait for the identity provider.
          cache = new JwksCache(url, { timeoutMs, logger: deps.logger, onFailure: deps.onJwksFailure }, previous === undefined ? undefined : previous.#jwks.get(url));
          this.#jwks.set(url, cache);
        }
        return cache;
      },
    };
    // Routes that inherit the top-level auth block (or share one object) share its phases: one token set, one
    // JWT cache, one forward-auth pool for all of them, however many routes there are.
    const authByConfig = new Map<ResolvedRoute['auth'], AuthPhases>();
    const authFor = (auth: ResolvedRoute['auth']): AuthPhases => {
      let phases = authByConfig.get(auth);
      if (phases === undefined) {
        phases = createAuth(auth, authDeps);
        authByConfig.set(auth, phases);
        this.#auth.push(phases);
      }
      return phases;
    };
    // Routes that drop the same request headers share one set.
    const dropByNames = new Map<string, ReadonlySet<string>>();
    const dropSets = (names: string[]): ReadonlySet<string> => {
      const set = new Set(names);
      const key = [...set].sort().join(',');
      const known = dropByNames.get(key);
      if (known !== undefined) return known;
      dropByNames.set(key, set);
      return set;
    };
    this.routes = resolved.map((r) => buildRoute(r, services, deps, keyed, authFor, dropSets, responder));
    const entries: RouteEntry<Route>[] = resolved.map((r, i) => ({ value: this.routes[i] as Route, match: matchOf(r.config.match) }));
    const compiled = compileRoutes(entries);
    // The loader reports ties with both routes' lines; a config given as an object gets this.
    if (compiled.router === undefined) {
      const tie = compiled.ties[0] as { a: number; b: number };
      throw new Error(`routes "${(this.routes[tie.a] as Route).name}" and "${(this.routes[tie.b] as Route).name}" match the same requests with equal precedence`);
    }
    const noRoute = new Route({
      name: 'none',
      service: undefined,
      phases: [...deps.head, ...deps.tail],
      dropRequestHeaders: new Set([...HOP_BY_HOP, ...SET_BY_PROXY]),
    });
    this.pipeline = new Pipeline({
      server: config.server,
      router: compiled.router,
      services,
      noRoute,
      logger: deps.logger,
      shared: deps.shared,
      startedAt: deps.startedAt,
      onIdle: () => this.#onIdle?.(),
      maxWebSockets: config.websocket.max_connections,
    });
    host.pipeline = this.pipeline;
  }

  /** Every backend of every service. */
  get backends(): Backend[] {
    const out: Backend[] = [];
    for (const s of this.services.values()) out.push(...s.backends);
    return out;
  }

  /** Starts the active health checks. */
  start(): void {
    for (const s of this.services.values()) s.start();
    for (const cache of this.#jwks.values()) cache.start();
  }

  /**
   * Replaced by `next` (undefined: shutting down): health checks stop now; once the last request that
   * started here has finished, the pools of backends that `next` does not carry are closed.
   */
  async retire(next: Generation | undefined): Promise<void> {
    await Promise.all([...this.services.values()].map((s) => s.stop()));
    const retired: Backend[] = [];
    for (const [name, s] of this.services) retired.push(...s.retiredBy(next?.services.get(name)));
    await new Promise<void>((resolve) => {
      this.#onIdle = resolve;
      this.pipeline.retire();
    });
    await Promise.all(retired.map((b) => b.pool.close()));
    for (const auth of this.#auth) auth.close();
    for (const cache of this.#jwks.values()) cache.close();
  }
}

function buildRoute(resolved: ResolvedRoute, services: ReadonlyMap<string, LoadBalancer>, deps: GenerationDeps, keyed: boolean, authFor: (auth: ResolvedRoute['auth']) => AuthPhases, dropSets: (names: string[]) => ReadonlySet<string>, responder: Responder): Route {
  const { config: route, auth, rateLimit } = resolved;
  const service = route.service === undefined ? undefined : services.get(route.service);
  const phases: Phases[] = [...deps.head];
  const authPhases = auth.enabled ? authFor(auth) : undefined;
  if (authPhases !== undefined) phases.push(authPhases.authenticate);
  if (rateLimit.enabled) {
    // Each route of a config with routes has buckets of its own (the route name is part of the key).
    phases.push(createRateLimit(rateLimit, deps.stores.get(rateLimit), keyed ? `${route.name}:` : ''));
  }
  if (authPhases !== undefined) phases.push(authPhases.enforce);
  phases.push(...deps.user);
  const own = deps.routePhases?.get(route.name);
  if (own !== undefined && own.length > 0 && deps.userDeps !== undefined) phases.push(...adaptPhases(own, deps.userDeps, responder));
  const edits = headerEditsPhase(route.request_headers, route.response_headers);
  phases.push(...deps.tail.filter((p) => p.logging === undefined));
  if (edits !== undefined) phases.push(edits);
  phases.push(...deps.tail.filter((p) => p.logging !== undefined));
  const names = [...HOP_BY_HOP, ...SET_BY_PROXY];
  for (const p of phases) for (const h of p.consumesRequestHeaders ?? []) names.push(h.toLowerCase());
  if (service !== undefined && !service.preserveHost) names.push('host');
  const drop = dropSets(names);
  const prefix = route.match.path_prefix;
  return new Route({
    name: route.name,
    service,
    redirect: route.redirect === undefined ? undefined : { location: route.redirect.to, status: route.redirect.status },
    rewritePrefix: prefix === undefined ? undefined : route.strip_prefix ? '' : route.rewrite_prefix,
    phases,
    dropRequestHeaders: drop,
    // Authorization is counted on every route; only another name needs its own count.
    websocket: resolved.websocket,
    credentialHeader: auth.enabled ? apiKeyHeader(auth.any_of ?? [auth]) : undefined,
  });
}

/** The API-key header a route's auth reads (the first api_key scheme's), unless it is Authorization, which is counted on every route. */
function apiKeyHeader(schemes: readonly AuthSchemeConfig[]): string | undefined {
  const scheme = schemes.find((s) => s.enabled && s.auth_type === 'api_key');
  const name = scheme?.api_key_header.toLowerCase();
  return name === 'authorization' ? undefined : name;
}
