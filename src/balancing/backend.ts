import type { Dispatcher } from 'undici';
import { Pool } from '../util/undici.js';
import { upstreamProtocol, upstreamTls } from '../config/resolve.js';
import type { LoadBalancingConfig, PROTOCOLS, UpstreamConfig } from '../config/schema.js';
import { H2cSession } from './h2c-session.js';
import type { Peer } from './selection/index.js';
import { peakEwma } from './selection/p2c-ewma.js';
import { TlsFileError, tlsConnector, tlsMaterial, type Connector, type TlsMaterial } from './upstream-tls.js';

/**
 * One upstream server: its connection pool and the live numbers that selection and health read. Made when
 * the config is loaded; the mutable fields change while the proxy runs (clock values are milliseconds of
 * the proxy's injected clock).
 */
export class Backend implements Peer {
  /** The service (upstream group) it belongs to. */
  readonly service: string;
  readonly name: string;
  /**
   * Service, name, address, port and TLS settings (with the contents of its files): a backend with the
   * same key in the next generation is this one.
   */
  readonly key: string;
  /** The pool settings it was built with: a backend is carried into a new generation only if they are unchanged. */
  readonly poolKey: string;
  readonly configuredWeight: number;
  /** Effective weight: configured, or less while warming up after a return (slow start). */
  weight: number;
  /** `host:port` as written in logs (`[v6]:port` for IPv6). */
  readonly address: string;
  readonly host: string;
  readonly port: number;
  /** `http://host:port`, or `https://` for an upstream reached over TLS. */
  readonly origin: string;
  /** TLS settings with the files read; undefined for plain HTTP. */
  readonly tls: TlsMaterial | undefined;
  /**
   * What each request tells undici as its server name: the TLS name (undefined for plain HTTP). Undici
   * reconnects when it changes, and without it would take it from the request's Host.
   */
  readonly servername: string | undefined;
  /** Opens a connection (TLS, with this upstream's settings); undefined for plain HTTP. Health checks share it. */
  readonly connector: Connector | undefined;
  /** HTTP/2 is offered in the TLS handshake (`protocol: h2`), or spoken with prior knowledge (`h2c`). */
  readonly allowH2: boolean;
  /** The HTTP version it is spoken to in (`h2` without TLS never gets here: the config refuses it). */
  readonly protocol: (typeof PROTOCOLS)[number];
  /** Its connections: an undici Pool, or for h2c one node:http2 session (see h2c-session.ts for why). */
  readonly pool: UpstreamPool;
  inflight = 0;
  /** Active health: false after `unhealthy_threshold` failed checks, true again after `healthy_threshold` passes. */
  activeUp = true;
  /** Passive health: ejected until this time. */
  ejectedUntil = -Infinity;
  /** Ejections in a row, doubling the ejection time. */
  ejections = 0;
  /** Every ejection since start (the metrics' tollgate_upstream_ejections_total). */
  ejectionsTotal = 0;
  /** Failed requests in a row (passive health). */
  consecutiveFailures = 0;
  /** Ejected and no request has succeeded since: the next success is logged as its return. */
  returnPending = false;
  /** When the backend last became usable again (slow start ramps from here). */
  rampStart = -Infinity;
  latencyMs = 0;
  latencyAt = 0;
  /** Has answered at least one request with a response head (a TLS port never does). */
  answered = false;
  /** When the proxy last looked at whether it speaks TLS (monotonic ms; see proxy/tls-hint.ts). */
  tlsCheckedAt = -Infinity;

  /**
   * Builds the backend and its pool. `tls` is the upstream's TLS material when the caller has read it
   * already (the load balancer does, to compare keys); else the files are read here. Throws TlsFileError.
   */
  constructor(upstream: UpstreamConfig, lb: LoadBalancingConfig, service = 'default', tls: TlsMaterial | undefined | null = null) {
    this.service = service;
    this.name = upstream.name;
    this.tls = tls === null ? backendTls(upstream, lb, service) : tls;
    this.key = backendKey(service, upstream, this.tls);
    this.poolKey = poolKeyOf(lb);
    this.configuredWeight = upstream.weight;
    this.weight = upstream.weight;
    this.host = upstream.address;
    this.port = upstream.port;
    this.address = upstreamAddress(upstream);
    this.protocol = upstreamProtocol(lb, upstream);
    const h2c = this.protocol === 'h2c' && this.tls === undefined;
    this.allowH2 = h2c || (this.tls !== undefined && this.protocol === 'h2');
    this.origin = `${this.tls === undefined ? 'http' : 'https'}://${this.address}`;
    this.servername = this.tls?.name;
    this.connector = this.tls === undefined ? undefined : tlsConnector(this.tls, { timeoutMs: lb.connect_timeout_ms, allowH2: this.allowH2 });
    this.pool = h2c
      ? new H2cSession(this.origin, { connectTimeoutMs: lb.connect_timeout_ms, responseTimeoutMs: lb.response_timeout_ms, idleTimeoutMs: lb.pool.keepalive_timeout_ms })
      : new Pool(this.origin, {
      connections: lb.pool.max_connections,
      pipelining: 1,
      keepAliveTimeout: lb.pool.keepalive_timeout_ms,
      keepAliveMaxTimeout: Math.max(lb.pool.keepalive_timeout_ms, 1),
      connect: this.connector ?? { timeout: lb.connect_timeout_ms },
      allowH2: this.allowH2,
      headersTimeout: lb.response_timeout_ms,
      bodyTimeout: lb.response_timeout_ms,
    });
  }

  /** Takes over the live state of the backend it replaces (same key, new pool settings or weight). */
  adoptState(old: Backend): void {
    this.activeUp = old.activeUp;
    this.ejectedUntil = old.ejectedUntil;
    this.ejections = old.ejections;
    this.ejectionsTotal = old.ejectionsTotal;
    this.consecutiveFailures = old.consecutiveFailures;
    this.returnPending = old.returnPending;
    this.rampStart = old.rampStart;
    this.latencyMs = old.latencyMs;
    this.latencyAt = old.latencyAt;
    this.answered = old.answered;
    this.tlsCheckedAt = old.tlsCheckedAt;
  }

  /** Usable at `now`: up by active checks and not ejected. */
  usable(now: number): boolean {
    return this.activeUp && now >= this.ejectedUntil;
  }

  /** What `/health` shows: active state only (an ejection is short and passes by itself). */
  get healthy(): boolean {
    return this.activeUp;
  }

  /** Sets the active health state (health checks, tests, and later the admin API). */
  setHealthy(up: boolean, now = 0): void {
    if (up && !this.activeUp) {
      // Checks show it is back: any passive ejection from before is void, and it warms up from now.
      this.rampStart = now;
      this.ejectedUntil = -Infinity;
      this.consecutiveFailures = 0;
      this.returnPending = false; // the checker logs this return
    }
    this.activeUp = up;
  }

  /** Records the time to response headers of one request (p2c_ewma). */
  observeLatency(ms: number, now: number): void {
    this.latencyMs = peakEwma(this.latencyMs, this.latencyAt, ms, now);
    this.latencyAt = now;
  }
}

/** What forwarding needs of a backend's connections: undici's Pool, or an H2cSession in its image. */
export interface UpstreamPool {
  dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean;
  close(): Promise<void>;
  destroy(): Promise<void>;
}

/** The settings a backend's pool is built from, as one comparable string. */
export function poolKeyOf(lb: LoadBalancingConfig): string {
  return JSON.stringify([lb.pool.max_connections, lb.pool.keepalive_timeout_ms, lb.connect_timeout_ms, lb.response_timeout_ms]);
}

/**
 * The TLS material of an upstream (its files read), or undefined for plain HTTP. Throws TlsFileError naming
 * the upstream (a config given as an object was not checked by the loader, and a file may have changed since).
 */
export function backendTls(upstream: UpstreamConfig, lb: LoadBalancingConfig, service = 'default'): TlsMaterial | undefined {
  const tls = upstreamTls(lb, upstream);
  if (!tls.enabled) return undefined;
  try {
    return tlsMaterial(tls, upstream.address);
  } catch (err) {
    if (err instanceof TlsFileError) throw new TlsFileError(err.key, `service "${service}", upstream "${upstream.name}": tls.${err.key}: ${err.message}`);
    throw err;
  }
}

/**
 * Identity of a backend across generations: same service, name, address and port, and the same TLS
 * settings and files (another CA or certificate is another backend, with a pool of its own).
 */
export function backendKey(service: string, upstream: Pick<UpstreamConfig, 'name' | 'address' | 'port'>, tls?: TlsMaterial): string {
  return `${service}\u0000${upstream.name}\u0000${upstream.address}\u0000${upstream.port}\u0000${tls === undefined ? 'http' : tls.id}`;
}

/** `host:port` of an upstream (an IPv6 address in brackets), as logs and the status document show it. */
export function upstreamAddress(upstream: Pick<UpstreamConfig, 'address' | 'port'>): string {
  const host = upstream.address.includes(':') ? `[${upstream.address}]` : upstream.address;
  return `${host}:${upstream.port}`;
}
