/**
 * The parts of undici Tollgate uses, loaded from their own modules.
 *
 * undici's main module loads all of undici: fetch, WebSocket, EventSource, the cache, the mocks and the
 * other dispatchers. In a Node 24 process that is about 3.5 MiB of live heap and 14 MiB of resident memory
 * more than the pool, the agent, the request API and the TLS connector below, and the proxy keeps it for its
 * whole life (docs/deployment.md#memory). These are the same classes and functions the main module exports
 * (test/unit/util/undici.test.ts checks that, so an undici release that moves a file fails the tests rather
 * than the proxy). Types come from the main module.
 */
import { createRequire } from 'node:module';
import type * as Undici from 'undici';

const load = createRequire(import.meta.url);

export const Pool = load('undici/lib/dispatcher/pool.js') as typeof Undici.Pool;
export type Pool = Undici.Pool;
export const Agent = load('undici/lib/dispatcher/agent.js') as typeof Undici.Agent;
export type Agent = Undici.Agent;
export const buildConnector = load('undici/lib/core/connect.js') as typeof Undici.buildConnector;

const requestOn = load('undici/lib/api/api-request.js') as (this: Undici.Dispatcher, options: Undici.Dispatcher.RequestOptions) => Promise<Undici.Dispatcher.ResponseData>;

/** What undici's `request(url, options)` does, with the dispatcher always given; the method is GET unless given. */
export function request(
  url: string | URL,
  options: Omit<Undici.Dispatcher.RequestOptions, 'origin' | 'path' | 'method'> & { dispatcher: Undici.Dispatcher; method?: Undici.Dispatcher.HttpMethod },
): Promise<Undici.Dispatcher.ResponseData> {
  const { dispatcher, method = 'GET', ...rest } = options;
  const target = new URL(url);
  return requestOn.call(dispatcher, { ...rest, method, origin: target.origin, path: `${target.pathname}${target.search}` });
}
