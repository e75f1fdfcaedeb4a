import type { RequestContext } from '../../proxy/context.js';

/**
 * The upstream_request_filter of the schemes that add headers for the upstream (JWT claims, forward auth's
 * copied headers): what `authenticate` put in `ctx.authHeaders`, appended to the forwarded list.
 */
export function addAuthHeaders(ctx: RequestContext, headers: string[]): void {
  const add = ctx.authHeaders;
  if (add !== undefined) for (let i = 0; i < add.length; i++) headers.push(add[i] as string);
}
