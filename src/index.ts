/**
 * Tollgate's public API (`import { ... } from 'tollgate'`): build a gateway from a config with phases
 * written in TypeScript, and the types those phases use. Nothing else of the package is public.
 */
export { createGateway, type ConfigInput, type Gateway, type GatewayAddress, type GatewayOptions, type ReloadOutcome } from './api/create-gateway.js';
export {
  definePhases,
  definePlugin,
  type AnyPhases,
  type HeaderEditor,
  type PeerChoice,
  type Phases,
  type PluginApi,
  type PluginFactory,
  type PluginLogger,
  type RequestFilterResult,
  type RouteInfo,
  type Session,
  type UpstreamInfo,
} from './api/phases.js';
export type { PluginRegistry } from './api/plugins.js';
export { ConfigError, type ConfigProblem } from './config/errors.js';
export type { Config } from './config/schema.js';
export { ERROR_CATALOGUE, ProxyError, type ErrorCode, type ErrorSource } from './proxy/errors.js';
export { ListenError, type ListenerName } from './server/listen-error.js';
