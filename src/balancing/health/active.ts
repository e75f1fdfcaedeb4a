import { connect } from 'node:net';
import type { Logger } from 'pino';
import { Agent, Pool, request, type Dispatcher } from 'undici';
import type { LoadBalancingConfig } from '../../config/schema.js';
import type { Clock } from '../../util/clock.js';
import type { Backend } from '../backend.js';
import { describeFailure } from './failure-reason.js';
import { acceptsTls, TLS_PORT_HINT } from './tls-sniff.js';

type ActiveConfig = LoadBalancingConfig['health_check']['active'];

/** The outcome of one check: whether it passed, and what was seen (for the log line of a change). */
export interface ProbeResult {
  passed: boolean;
  /** `connected`, `got 200`, `got 500, expected 200-399`, `connection refused`, `timed out after 2000 ms`... */
  detail: string;
  /** The upstream closed an http check's connection without a byte, as a TLS server does. */
  closedSilently?: boolean;
}

/** One check of one backend. Never rejects. */
export type Probe = (backend: Backend) => Promise<ProbeResult>;

/** A tcp check: a TCP connection opens. No TLS handshake, even for an upstream reached over TLS (an http check does that). */
export function tcpProbe(timeoutMs: number): Probe {
  return function probeTcp(backend) {
    return new Promise((resolve) => {
      const socket = connect({ host: backend.host, port: backend.port, timeout: timeoutMs });
      const done = (passed: boolean, detail: string): void => {
        socket.destroy();
        resolve({ passed, detail });
      };
      socket.once('connect', () => done(true, 'connected'));
      socket.once('timeout', () => done(false, `connect timed out after ${timeoutMs} ms`));
      socket.once('error', (err) => done(false, describeFailure(err)));
    });
  };
}

/** Undici's and the abort signal's timeouts: all mean the check took longer than `timeout_ms`. */
const PROBE_TIMEOUTS = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']);

/**
 * An http check: a request to each backend over `agent`, or for a backend reached over TLS over its pool
 * in `tlsPools` (the backend's own CA, client certificate, SNI and verification, so a certificate the
 * proxy would refuse fails the check).
 */
export function httpProbe(config: ActiveConfig, agent: Dispatcher, tlsPools?: ReadonlyMap<Backend, Dispatcher>): Probe {
  const { method, path, expected_status: range, host } = config.http;
  const [low, high = low] = range.split('-').map(Number) as [number, number?];
  return async function probeHttp(backend) {
    try {
      const res = await request(`${backend.origin}${path}`, {
        method,
        dispatcher: tlsPools?.get(backend) ?? agent,
        headers: { host: host ?? backend.address, 'user-agent': 'tollgate-health-check' },
        headersTimeout: config.timeout_ms,
        bodyTimeout: config.timeout_ms,
        signal: AbortSignal.timeout(config.timeout_ms),
      });
      await res.body.dump();
      const status = res.statusCode;
      if (status >= low && status <= high) return { passed: true, detail: `got ${status}` };
      return { passed: false, detail: `got ${status}, expected ${range}` };
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if ((err as Error).name === 'TimeoutError' || PROBE_TIMEOUTS.has(code as string)) return { passed: false, detail: `timed out after ${config.timeout_ms} ms` };
      if (code === 'UND_ERR_SOCKET' || code === 'ECONNRESET') return { passed: false, detail: describeFailure(err), closedSilently: true };
      return { passed: false, detail: describeFailure(err) };
    }
  };
}

interface CheckState {
  passes: number;
  failures: number;
}

/**
 * Active health checks (as Pingora's): every `interval_ms`, all backends of the group are probed in
 * parallel, off the request path. `unhealthy_threshold` failures in a row take a backend out,
 * `healthy_threshold` passes in a row bring it back; each change is logged with its reason (the count and
 * what the last check saw).
 */
export class ActiveHealthChecker {
  readonly #config: ActiveConfig;
  readonly #backends: readonly Backend[];
  readonly #logger: Logger;
  readonly #clock: Clock;
  readonly #probe: Probe;
  readonly #agent: Agent | undefined;
  /** The http checks' connections to backends reached over TLS, one pool each (their TLS settings differ). */
  readonly #tlsPools = new Map<Backend, Pool>();
  readonly #state = new Map<Backend, CheckState>();
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;

  readonly #onReturn: () => void;

  constructor(config: ActiveConfig, backends: readonly Backend[], logger: Logger, clock: Clock, onReturn: () => void, probe?: Probe) {
    this.#onReturn = onReturn;
    this.#config = config;
    this.#backends = backends;
    this.#logger = logger;
    this.#clock = clock;
    if (probe !== undefined) this.#probe = probe;
    else if (config.type === 'http') {
      this.#agent = new Agent({ connections: 1, pipelining: 0 });
      for (const b of backends) {
        if (b.connector !== undefined) this.#tlsPools.set(b, new Pool(b.origin, { connections: 1, pipelining: 0, connect: b.connector, allowH2: b.allowH2 }));
      }
      this.#probe = httpProbe(config, this.#agent, this.#tlsPools);
    } else this.#probe = tcpProbe(config.timeout_ms);
    for (const b of backends) this.#state.set(b, { passes: 0, failures: 0 });
  }

  start(): void {
    if (this.#timer !== undefined) return;
    void this.checkAll();
    this.#timer = setInterval(() => void this.checkAll(), this.#config.interval_ms);
    this.#timer.unref();
  }

  /** Probes every backend once (skipped while the previous round is still running). */
  checkAll(): Promise<void> {
    this.#running ??= Promise.all(this.#backends.map((b) => this.#check(b))).then(() => {
      this.#running = undefined;
    });
    return this.#running;
  }

  async stop(): Promise<void> {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#running;
    await this.#agent?.close();
    await Promise.all([...this.#tlsPools.values()].map((p) => p.close()));
  }

  async #check(backend: Backend): Promise<void> {
    const { passed, detail, closedSilently } = await this.#probe(backend);
    const state = this.#state.get(backend) as CheckState;
    if (passed) {
      state.passes++;
      state.failures = 0;
      if (!backend.activeUp && state.passes >= this.#config.healthy_threshold) {
        backend.setHealthy(true, this.#clock());
        this.#onReturn();
        const reason = `${state.passes} ${this.#config.type} check${state.passes === 1 ? '' : 's'} in a row passed, the last: ${detail}`;
        this.#logger.info({ upstream: backend.name, upstream_addr: backend.address, passes: state.passes, reason }, 'upstream healthy again: taking requests');
      }
    } else {
      state.failures++;
      state.passes = 0;
      if (backend.activeUp && state.failures >= this.#config.unhealthy_threshold) {
        backend.setHealthy(false);
        let reason = `${state.failures} ${this.#config.type} check${state.failures === 1 ? '' : 's'} in a row failed, the last: ${detail}`;
        // Taken out already; asking whether it speaks TLS only makes the line more useful.
        if (closedSilently === true && backend.tls === undefined && (await acceptsTls(backend.host, backend.port, this.#config.timeout_ms))) reason += `; ${TLS_PORT_HINT}`;
        this.#logger.warn({ upstream: backend.name, upstream_addr: backend.address, failures: state.failures, reason }, 'upstream unhealthy: taken out of rotation');
      }
    }
  }
}
