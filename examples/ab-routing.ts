/**
 * A/B routing by header or cookie. Requests go to the service `stable` unless they ask for the variant `b`
 * (header `X-Variant: b`, or cookie `variant=b`), which goes to `canary`. A client that asks for neither is
 * put in a group once, `canaryPercent` of clients in `b` by a hash of their address, and told with a
 * cookie so it stays there.
 *
 * Run it: npm run build && node --import tsx examples/ab-routing.ts (backends on 127.0.0.1:3000 and 3001).
 */
import { createHash } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { createGateway, definePhases, type Gateway } from 'tollgate';

export interface AbOptions {
  /** Default info: a JSON line per request on stdout. */
  logLevel?: 'info' | 'warn' | 'silent';
  /** Listen port (0: a free one). */
  port: number;
  stablePort: number;
  canaryPort: number;
  /** Share of new clients sent to the canary, 0-100. */
  canaryPercent: number;
}

/** The phase: picks the service, and sets the cookie for a client that had none. */
export function abRouting(canaryPercent: number) {
  return definePhases({
    name: 'ab-routing',
    newContext: () => ({ variant: 'a' as 'a' | 'b', assigned: false }),
    requestFilter(session, ctx) {
      const asked = session.requestHeader('x-variant') ?? session.cookie('variant');
      if (asked === 'a' || asked === 'b') ctx.variant = asked;
      else {
        // The same client lands in the same group: the first byte of a digest of its address, as a percentage.
        const bucket = (createHash('sha256').update(session.clientAddress).digest()[0] as number) % 100;
        ctx.variant = bucket < canaryPercent ? 'b' : 'a';
        ctx.assigned = true;
      }
    },
    upstreamPeer(session, ctx) {
      return ctx.variant === 'b' ? session.choose('canary') : undefined;
    },
    responseFilter(session, ctx) {
      session.responseHeaders.set('X-Variant', ctx.variant);
      if (ctx.assigned) session.responseHeaders.append('Set-Cookie', `variant=${ctx.variant}; Path=/; Max-Age=86400; SameSite=Lax`);
    },
  });
}

export async function start(options: AbOptions): Promise<Gateway> {
  const gateway = await createGateway({
    config: {
      server: { listen_port: options.port, listen_address: '127.0.0.1' },
      admin: { enabled: false },
      logging: { level: options.logLevel ?? 'info' },
      services: {
        stable: { upstreams: [{ name: 'stable-1', address: '127.0.0.1', port: options.stablePort }] },
        canary: { upstreams: [{ name: 'canary-1', address: '127.0.0.1', port: options.canaryPort }] },
      },
      routes: [{ name: 'app', match: { path_prefix: '/' }, service: 'stable' }],
    },
    routes: { app: [abRouting(options.canaryPercent)] },
  });
  await gateway.listen();
  return gateway;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const gateway = await start({ port: 8080, stablePort: 3000, canaryPort: 3001, canaryPercent: 10 });
  process.once('SIGINT', () => void gateway.close());
}
