/**
 * The long-lived gateway: it holds the generation serving now (routes, services, their pipeline) and
 * swaps in the next one in one assignment when the config is reloaded. The listener hands every request to
 * `handle`, which reads the current generation once; a request then finishes on the generation it started
 * on, whatever reloads happen meanwhile. What outlives generations is here: the draining flag, the
 * rate-limit stores (one per policy, so a bucket keeps its tokens while its policy is unchanged) and the
 * record of the last reload.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import type { Logger } from 'pino';
import { routesOf } from '../config/resolve.js';
import type { Config, RateLimitConfig } from '../config/schema.js';
import type { RateLimitStore, StoreStatus } from '../limits/store.js';
import type { PipelineShared } from '../proxy/pipeline.js';
import { WebSocketRegistry } from '../proxy/websocket.js';
import type { RequestHandler } from '../server/proxy-server.js';
import { Generation, type GenerationDeps, type RoutePhases } from './generation.js';
import { applicableConfig } from './reload.js';

export interface GatewayOptions extends Omit<GenerationDeps, 'shared' | 'stores' | 'routePhases'> {
  /** The first generation's public-API phases by route (a reload is given its own). */
  routePhases?: RoutePhases | undefined;
  /** Builds the store for one rate-limit policy (called once per policy while it is in use). */
  makeStore: (config: RateLimitConfig) => RateLimitStore;
  /** SHA-256 of the file the config came from, '' when it was given as an object. */
  hash?: string;
  /** The first generation's number (a cluster worker takes the primary's; default 1). */
  generation?: number;
}

/** What a reload did: the status document and `POST /api/reload` show it. */
export interface ReloadOutcome {
  result: 'ok' | 'error';
  /** The generation serving after the reload (the old one when it failed). */
  generation: number;
  /** When the reload was tried, epoch milliseconds. */
  at: number;
  /** Keys that changed in the file but keep their running value until a restart. */
  restart_needed: string[];
  /** One line per problem (file:line:col key.path: message) when it failed. */
  errors: string[];
}

/** Where the configuration in force came from. */
export interface GenerationInfo {
  generation: number;
  /** Epoch milliseconds. */
  loaded_at: number;
  hash: string;
  last_reload: ReloadOutcome | undefined;
}

/** The identity of a rate-limit policy: routes with equal keys share a store and its buckets. */
export function policyKey(rateLimit: RateLimitConfig): string {
  return JSON.stringify([rateLimit.requests_per_minute, rateLimit.burst_size, rateLimit.max_keys, rateLimit.store]);
}

export class Gateway implements RequestHandler {
  readonly shared: PipelineShared = { draining: false, cutOff: false, websockets: new WebSocketRegistry() };
  readonly #options: GatewayOptions;
  readonly #logger: Logger;
  readonly #stores = new Map<string, RateLimitStore>();
  readonly #swapListeners: ((generation: Generation) => void)[] = [];
  /** Old generations still finishing their requests, and the promise that ends when each is done. */
  readonly #retiring = new Map<Generation, Promise<void>>();
  #current: Generation;
  #lastReload: ReloadOutcome | undefined;
  /** Reloads run one after another. */
  #queue: Promise<unknown> = Promise.resolve();
  #started = false;

  constructor(config: Config, options: GatewayOptions) {
    this.#options = options;
    this.#logger = options.logger;
    this.#current = this.#build(config, options.generation ?? 1, options.hash ?? '', undefined, options.routePhases);
  }

  /** The generation serving new requests now. */
  get current(): Generation {
    return this.#current;
  }

  /** The config in force (the keys that need a restart at their running values). */
  get config(): Config {
    return this.#current.config;
  }

  /** Every rate-limit store in use now (by policy). */
  get stores(): RateLimitStore[] {
    return [...this.#stores.values()];
  }

  /**
   * The stores the current generation uses, each with its state and the routes that use it, in route order
   * (built for a status document). A store that cannot tell its state (a library's own) is left out.
   */
  storeStatus(): StoreStatus[] {
    const rows = new Map<string, StoreStatus | undefined>();
    for (const route of routesOf(this.#current.config)) {
      if (!route.rateLimit.enabled) continue;
      const key = policyKey(route.rateLimit);
      let row = rows.get(key);
      if (!rows.has(key)) {
        const health = this.#stores.get(key)?.health?.();
        row = health === undefined ? undefined : { ...health, routes: [] };
        rows.set(key, row);
      }
      row?.routes.push(route.config.name);
    }
    return [...rows.values()].filter((row) => row !== undefined);
  }

  info(): GenerationInfo {
    const meta = this.#current.meta;
    return { generation: meta.id, loaded_at: meta.loadedAt, hash: meta.hash, last_reload: this.#lastReload };
  }

  /** Called with each generation that starts serving (after a reload's swap). */
  onSwap(listener: (generation: Generation) => void): void {
    this.#swapListeners.push(listener);
  }

  readonly handle = (req: IncomingMessage, res: ServerResponse): void => {
    this.#current.pipeline.handle(req, res);
  };

  readonly handleExpectContinue = (req: IncomingMessage, res: ServerResponse): void => {
    this.#current.pipeline.handleExpectContinue(req, res);
  };

  readonly handleH2 = (req: Http2ServerRequest, res: Http2ServerResponse, expectsContinue: boolean): void => {
    this.#current.pipeline.handleH2(req, res, expectsContinue);
  };

  readonly handleWebSocket = (req: IncomingMessage, res: ServerResponse, head: Buffer): void => {
    this.#current.pipeline.handleWebSocket(req, res, head);
  };

  get webSocketsOpen(): number {
    return this.shared.websockets.open;
  }

  closeWebSockets(): number {
    return this.shared.websockets.closeAll();
  }

  startDraining(): void {
    this.shared.draining = true;
  }

  cutOff(): number {
    this.shared.cutOff = true;
    let inFlight = this.#current.pipeline.active;
    for (const old of this.#retiring.keys()) inFlight += old.pipeline.active;
    return inFlight;
  }

  /** Waits for the stores to be ready (Redis connected) and starts the health checks. */
  async start(): Promise<void> {
    this.#started = true;
    for (const store of this.#stores.values()) await store.ready?.();
    this.#current.start();
  }

  /**
   * Puts `next` (already validated) in force: builds the next generation on the current one (backends,
   * pools, health and buckets carry over where unchanged), swaps it in, and retires the old one once its
   * requests have finished. A config that cannot be built (a route tie in a config given as an object)
   * changes nothing and is reported as an error. `id` numbers the new generation (default: the next).
   */
  reload(next: Config, hash = '', id?: number, routePhases?: RoutePhases): Promise<ReloadOutcome> {
    const run = this.#queue.then(() => this.#reload(next, hash, id ?? this.#current.meta.id + 1, routePhases));
    this.#queue = run.catch(() => undefined);
    return run;
  }

  /** Records a reload that failed before it reached the gateway (the file did not validate). */
  reloadFailed(errors: string[]): ReloadOutcome {
    const outcome: ReloadOutcome = { result: 'error', generation: this.#current.meta.id, at: Date.now(), restart_needed: [], errors };
    this.#lastReload = outcome;
    return outcome;
  }

  async #reload(next: Config, hash: string, id: number, routePhases: RoutePhases | undefined): Promise<ReloadOutcome> {
    // Shutting down: a new generation would start health checks and pools that nothing closes.
    if (this.shared.draining) return this.reloadFailed(['shutting down: the reload was not applied']);
    const previous = this.#current;
    const { config, restartNeeded } = applicableConfig(previous.config, next);
    let generation: Generation;
    try {
      generation = this.#build(config, id, hash, previous, routePhases);
    } catch (err) {
      return this.reloadFailed([(err as Error).message]);
    }
    if (this.#started) {
      for (const store of this.#stores.values()) {
        await store.ready?.().catch((err: unknown) => this.#logger.warn({ err }, 'reload: a rate-limit store is not ready yet (its on_error policy applies)'));
      }
      generation.start();
    }
    this.#current = generation;
    for (const listener of this.#swapListeners) listener(generation);
    this.#retire(previous, generation);
    const outcome: ReloadOutcome = { result: 'ok', generation: generation.meta.id, at: Date.now(), restart_needed: restartNeeded, errors: [] };
    this.#lastReload = outcome;
    return outcome;
  }

  #build(config: Config, id: number, hash: string, previous: Generation | undefined, routePhases: RoutePhases | undefined): Generation {
    const stores = this.#stores;
    const made: string[] = [];
    const get = (rateLimit: RateLimitConfig): RateLimitStore => {
      const key = policyKey(rateLimit);
      let store = stores.get(key);
      if (store === undefined) {
        store = this.#options.makeStore(rateLimit);
        stores.set(key, store);
        made.push(key);
      }
      return store;
    };
    try {
      return new Generation(config, { ...this.#options, shared: this.shared, stores: { get }, routePhases }, { id, loadedAt: Date.now(), hash }, previous);
    } catch (err) {
      // Nothing was swapped: the stores made for this attempt are not used by anyone.
      for (const key of made) {
        stores.get(key)?.close();
        stores.delete(key);
      }
      throw err;
    }
  }

  /**
   * The old generation stops its health checks now and closes the pools of the backends the new one did
   * not keep once its last request has finished; then the stores no policy uses any more are closed.
   */
  #retire(old: Generation, next: Generation): void {
    const retiring = old.retire(next).then(
      () => {
        this.#retiring.delete(old);
        this.#closeUnusedStores();
      },
      (err: unknown) => {
        this.#retiring.delete(old);
        this.#logger.error({ err }, 'reload: retiring the previous generation failed');
      },
    );
    this.#retiring.set(old, retiring);
  }

  /** Closes the stores of policies that neither the current generation nor a retiring one uses. */
  #closeUnusedStores(): void {
    const inUse = new Set<string>();
    for (const generation of [this.#current, ...this.#retiring.keys()]) {
      for (const route of routesOf(generation.config)) if (route.rateLimit.enabled) inUse.add(policyKey(route.rateLimit));
    }
    for (const [key, store] of this.#stores) {
      if (inUse.has(key)) continue;
      store.close();
      this.#stores.delete(key);
    }
  }

  /** After the listener has drained: retires the last generation, closes every pool and store. */
  async close(): Promise<void> {
    await Promise.all(this.#retiring.values());
    const last = this.#current;
    await last.retire(undefined);
    await Promise.all(last.backends.map((b) => b.pool.destroy()));
    for (const store of this.#stores.values()) store.close();
  }
}
