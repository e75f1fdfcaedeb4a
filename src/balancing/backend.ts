import { Pool } from 'undici';
import type { LoadBalancingConfig, UpstreamConfig } from '../config/schema.js';
import type { Peer } from './selection/index.js';

/**
 * One upstream server: its connection pool and the live numbers selection reads. Made when the config is
 * loaded; `inflight` and `healthy` change while the proxy runs.
 */
export class Backend implements Peer {
  readonly name: string;
  readonly weight: number;
  /** `host:port` as written in logs (`[v6]:port` for IPv6). */
  readonly address: string;
  readonly origin: string;
  readonly pool: Pool;
  inflight = 0;
  /** Whether the backend may take requests; health checks set it through `setHealthy`. */
  healthy = true;

  constructor(upstream: UpstreamConfig, lb: LoadBalancingConfig) {
    this.name = upstream.name;
    this.weight = upstream.weight;
    const host = upstream.address.includes(':') ? `[${upstream.address}]` : upstream.address;
    this.address = `${host}:${upstream.port}`;
    this.origin = `http://${this.address}`;
    this.pool = new Pool(this.origin, {
      connections: lb.pool.max_connections,
      pipelining: 1,
      keepAliveTimeout: lb.pool.keepalive_timeout_ms,
      keepAliveMaxTimeout: Math.max(lb.pool.keepalive_timeout_ms, 1),
      connect: { timeout: lb.connect_timeout_ms },
      headersTimeout: lb.response_timeout_ms,
      bodyTimeout: lb.response_timeout_ms,
    });
  }

  setHealthy(up: boolean): void {
    this.healthy = up;
  }
}
