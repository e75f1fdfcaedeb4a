/** Tollgate as a library: build a proxy from a config object, or load one from a file. */
export { createProxy, type Proxy, type ProxyOptions } from './app.js';
export { ConfigError, loadConfigFile, parseConfig } from './config/load.js';
export { configSchema, type Config } from './config/schema.js';
export { createLogger } from './observability/logger.js';
export type { RequestContext } from './proxy/context.js';
export { ERROR_CATALOGUE, ProxyError, type ErrorCode } from './proxy/errors.js';
export type { FilterResult, PeerChoice, Phases } from './proxy/phases.js';
export type { ReloadOutcome } from './gateway/gateway.js';
export { ListenError, type ListenerName } from './server/listen-error.js';
