/**
 * A response filter that tells the client how long the upstream took: `X-Upstream` (the backend that
 * answered) and `X-Upstream-Time` (milliseconds from dispatch to its response head, as Tollgate measured
 * it), and `X-Total-Time` (since the request arrived). Responses Tollgate generates itself carry
 * `X-Upstream: none`.
 *
 * Run it: npm run build && node --import tsx examples/upstream-timing.ts (backends on 127.0.0.1:3000-3001).
 */
import { pathToFileURL } from 'node:url';
import { createGateway, definePhases, type Gateway } from 'tollgate';

export const upstreamTiming = definePhases({
  name: 'upstream-timing',
  responseFilter(session) {
    const upstream = session.upstream;
    const latency = session.upstreamLatencyMs;
    if (upstream === undefined || latency < 0) session.responseHeaders.set('X-Upstream', 'none');
    else {
      session.responseHeaders.set('X-Upstream', `${upstream.service}/${upstream.name}`);
      session.responseHeaders.set('X-Upstream-Time', latency.toFixed(1));
    }
    session.responseHeaders.set('X-Total-Time', session.elapsedMs().toFixed(1));
  },
});

export interface TimingOptions {
  /** Default info: a JSON line per request on stdout. */
  logLevel?: 'info' | 'warn' | 'silent';
  port: number;
  backendPorts: number[];
}

export async function start(options: TimingOptions): Promise<Gateway> {
  const gateway = await createGateway({
    config: {
      server: { listen_port: options.port, listen_address: '127.0.0.1' },
      admin: { enabled: false },
      logging: { level: options.logLevel ?? 'info' },
      load_balancing: {
        upstreams: options.backendPorts.map((port, i) => ({ name: `app-${i + 1}`, address: '127.0.0.1', port })),
        retries: { max_retries: 0 },
        health_check: { active: { enabled: false }, passive: { enabled: false } },
      },
    },
    phases: [upstreamTiming],
  });
  await gateway.listen();
  return gateway;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const gateway = await start({ port: 8080, backendPorts: [3000, 3001] });
  process.once('SIGINT', () => void gateway.close());
}
