/**
 * An auth phase that checks API keys against a database-like store, with a cache in front: a key seen in
 * the last `ttlMs` (found or not) costs no lookup. The key never reaches the upstream; the user it belongs
 * to does, as `X-User`. An unknown key is a 401 from the error catalogue; a store that fails is a 503.
 *
 * Run it: npm run build && node --import tsx examples/auth-lookup.ts (a backend on 127.0.0.1:3000).
 */
import { pathToFileURL } from 'node:url';
import { createGateway, definePhases, type Gateway } from 'tollgate';

/** What the phase needs from the database: the user a key belongs to, or undefined. */
export interface KeyStore {
  findUser(apiKey: string): Promise<string | undefined>;
}

/** A stand-in for a database: a table in memory, answered asynchronously, counting its lookups. */
export class MemoryKeyStore implements KeyStore {
  lookups = 0;
  down = false;
  readonly #keys: Map<string, string>;
  constructor(keys: Record<string, string>) {
    this.#keys = new Map(Object.entries(keys));
  }
  async findUser(apiKey: string): Promise<string | undefined> {
    this.lookups++;
    await new Promise((resolve) => setImmediate(resolve));
    if (this.down) throw new Error('the key database is unreachable');
    return this.#keys.get(apiKey);
  }
}

/** A small TTL cache; `now` is injected so that tests need not wait. */
export class TtlCache<V> {
  readonly #entries = new Map<string, { value: V; expires: number }>();
  constructor(
    readonly ttlMs: number,
    readonly maxEntries: number,
    readonly now: () => number = () => performance.now(),
  ) {}
  get(key: string): { value: V } | undefined {
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    if (entry.expires <= this.now()) {
      this.#entries.delete(key);
      return undefined;
    }
    return { value: entry.value };
  }
  set(key: string, value: V): void {
    // Oldest first: a Map keeps insertion order.
    if (this.#entries.size >= this.maxEntries) this.#entries.delete(this.#entries.keys().next().value as string);
    this.#entries.set(key, { value, expires: this.now() + this.ttlMs });
  }
}

export function apiKeyAuth(store: KeyStore, cache: TtlCache<string | undefined>) {
  return definePhases({
    name: 'api-key-lookup',
    newContext: () => ({ user: undefined as string | undefined }),
    async requestFilter(session, ctx) {
      const key = session.requestHeader('x-api-key');
      if (key === undefined || key === '') return session.refuse('unauthorized', 'An X-Api-Key header is required.');
      let found = cache.get(key);
      if (found === undefined) {
        let user: string | undefined;
        try {
          user = await store.findUser(key);
        } catch {
          return session.refuse('no_upstream', 'Credentials cannot be checked right now.');
        }
        cache.set(key, user);
        found = { value: user };
      }
      if (found.value === undefined) return session.refuse('unauthorized', 'Unknown API key.');
      ctx.user = found.value;
      session.upstreamHeaders.delete('x-api-key');
      session.upstreamHeaders.set('X-User', found.value);
      return undefined;
    },
    logging(session, ctx) {
      if (ctx.user !== undefined && session.status >= 500) console.warn(`request ${session.requestId} of ${ctx.user} failed with ${session.status}`);
    },
  });
}

export interface AuthOptions {
  /** Default info: a JSON line per request on stdout. */
  logLevel?: 'info' | 'warn' | 'silent';
  port: number;
  backendPort: number;
  store: KeyStore;
  cache: TtlCache<string | undefined>;
}

export async function start(options: AuthOptions): Promise<Gateway> {
  const gateway = await createGateway({
    config: {
      server: { listen_port: options.port, listen_address: '127.0.0.1' },
      admin: { enabled: false },
      logging: { level: options.logLevel ?? 'info' },
      load_balancing: { upstreams: [{ name: 'app-1', address: '127.0.0.1', port: options.backendPort }] },
    },
    phases: [apiKeyAuth(options.store, options.cache)],
  });
  await gateway.listen();
  return gateway;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const store = new MemoryKeyStore({ 'key-alice-123': 'alice', 'key-bob-456': 'bob' });
  const gateway = await start({ port: 8080, backendPort: 3000, store, cache: new TtlCache(30_000, 10_000) });
  process.once('SIGINT', () => void gateway.close());
}
