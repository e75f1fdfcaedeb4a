import { randomUUID } from 'node:crypto';

const PLAUSIBLE_ID = /^[A-Za-z0-9._-]{1,128}$/;

/**
 * The request id: the client's X-Request-ID when it is a plausible id (1-128 characters of
 * `[A-Za-z0-9._-]`, so it is safe in logs and headers), else a new UUID v4. Runs first for every request.
 */
export function resolveRequestId(incoming: string | string[] | undefined): string {
  if (typeof incoming === 'string' && PLAUSIBLE_ID.test(incoming)) return incoming;
  return randomUUID();
}
