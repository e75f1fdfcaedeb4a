/**
 * Schema of the WebSocket keys: the top-level `websocket` block (defaults for every route and the instance's
 * cap) and a route's own `websocket` (false, true, or keys that replace the top-level ones for that route).
 * Kept apart from schema.ts, as the monitoring keys are; types come from the schema.
 */
import { z } from 'zod';
import { MAX_TIMER_MS } from './constants.js';

/** An idle timeout: at least a second (a WebSocket idle for less is normal between two messages). */
const idleTimeoutMs = z
  .number({ error: 'must be a whole number of milliseconds' })
  .int('must be a whole number of milliseconds')
  .min(1_000, 'must be at least 1000 milliseconds')
  .max(MAX_TIMER_MS, `must be at most ${MAX_TIMER_MS} milliseconds (about 24 days)`);

const maxConnections = z
  .number({ error: 'must be a whole number of at least 1' })
  .int('must be a whole number of at least 1')
  .min(1, 'must be a whole number of at least 1')
  .max(Number.MAX_SAFE_INTEGER, 'must be a whole number of at least 1');

/** The default idle timeout of a WebSocket (5 minutes). */
export const WEBSOCKET_IDLE_TIMEOUT_MS = 300_000;

export const websocketSchema = z.strictObject({
  /** Proxy `Upgrade: websocket` requests on every route that does not say otherwise. */
  enabled: z.boolean({ error: 'must be true or false' }).default(true),
  /** A WebSocket with no byte in either direction for this long is closed. */
  idle_timeout_ms: idleTimeoutMs.default(WEBSOCKET_IDLE_TIMEOUT_MS),
  /** WebSockets open at once on the whole instance (each cluster worker gets a share); more get 503. */
  max_connections: maxConnections.default(10_000),
});

/** A route's `websocket`: false turns WebSockets off for it, true turns them on (top-level idle timeout). */
export const routeWebsocketSchema = z.union(
  [
    z.boolean(),
    z.strictObject({
      enabled: z.boolean({ error: 'must be true or false' }).optional(),
      idle_timeout_ms: idleTimeoutMs.optional(),
      /** WebSockets open at once on this route (each cluster worker gets a share); absent: only the instance's cap. */
      max_connections: maxConnections.optional(),
    }),
  ],
  { error: 'must be true, false or { enabled, idle_timeout_ms, max_connections }' },
);

export type WebsocketConfig = z.infer<typeof websocketSchema>;
export type RouteWebsocketConfig = z.infer<typeof routeWebsocketSchema>;
