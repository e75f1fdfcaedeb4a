/**
 * Values both the schema and the running proxy read. Kept out of schema.ts, which loads zod: the running
 * proxy does not (config/errors.ts says why).
 */

/** setTimeout's longest delay (2^31 - 1 ms, about 24.8 days): Node runs a longer one after 1 ms. */
export const MAX_TIMER_MS = 2_147_483_647;

/** The service and route names of a config written without `services` / `routes`. */
export const DEFAULT_NAME = 'default';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
