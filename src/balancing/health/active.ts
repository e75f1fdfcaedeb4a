import { connect } from 'node:net';
import type { Logger } from 'pino';
import type { Dispatcher } from 'undici';
import { Agent, Pool, request } from '../../util/undici.js';
import type { LoadBalancingConfig } from '../../config/schema.js';
import type { Clock } from '../../util/clock.js';
import type { Backend } from '../backend.js';
import { H2cSession } from '../h2c-session.js';
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

/** HealthCheckResponse.ServingStatus of grpc/grpc doc/health-checking.md, by number. */
const SERVING_STATUS = ['UNKNOWN', 'SERVING', 'NOT_SERVING', 'SERVICE_UNKNOWN'];

/**
 * A HealthCheckRequest (`message { string service = 1; }`) in a gRPC frame: the 5-byte prefix (not
 * compressed, length) and the protobuf bytes. Hand-encoded: one string field does not need a protobuf library.
 */
export function healthCheckFrame(service: string): Buffer {
  const name = Buffer.from(service, 'utf8');
  const message = name.length === 0 ? Buffer.alloc(0) : Buffer.concat([Buffer.from([0x0a]), varint(name.length), name]);
  const prefix = Buffer.alloc(5);
  prefix.writeUInt32BE(message.length, 1);
  return Buffer.concat([prefix, message]);
}

function varint(n: number): Buffer {
  const bytes: number[] = [];
  while (n > 0x7f) {
    bytes.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  bytes.push(n);
  return Buffer.from(bytes);
}

/**
 * The `status` (field 1, an enum) of a HealthCheckResponse frame; 0 (UNKNOWN) when absent, as protobuf
 * reads a missing field, and -1 when the frame is not one.
 */
export function servingStatus(frame: Buffer): number {
  if (frame.length < 5 || frame[0] !== 0 || frame.readUInt32BE(1) !== frame.length - 5) return -1;
  let at = 5;
  let status = 0;
  while (at < frame.length) {
    const tag = frame[at++] as number;
    if (tag === 0x08) {
      // A varint; the statuses are small, but a longer one is read whole.
      let value = 0;
      let shift = 0;
      let byte: number;
      do {
        if (at >= frame.length || shift > 28) return -1;
        byte = frame[at++] as number;
        value |= (byte & 0x7f) << shift;
        shift += 7;
      } while (byte & 0x80);
      status = value;
    } else return status; // a field this reader does not know: the status, if any, came first
  }
  return status;
}

/** What a grpc check's call returned: HTTP status, grpc-status and grpc-message (headers or trailers), the body. */
interface GrpcAnswer {
  status: number;
  grpcStatus: string | undefined;
  grpcMessage: string | undefined;
  body: Buffer;
}

/**
 * One unary call on `dispatcher`, through undici's handler API: its `request()` loses HTTP/2 trailers
 * (undici 7.30 hands them to a parser of raw header lines as node:http2's object, and `res.trailers` stays
 * empty), and gRPC's status is in the trailers.
 */
function grpcUnary(dispatcher: Pick<Dispatcher, 'dispatch'>, path: string, frame: Buffer, timeoutMs: number): Promise<GrpcAnswer> {
  return new Promise((resolve, reject) => {
    const answer: GrpcAnswer = { status: 0, grpcStatus: undefined, grpcMessage: undefined, body: Buffer.alloc(0) };
    const chunks: Buffer[] = [];
    const note = (name: string, value: string): void => {
      const lower = name.toLowerCase();
      if (lower === 'grpc-status') answer.grpcStatus = value;
      else if (lower === 'grpc-message') answer.grpcMessage = value;
    };
    const timer = setTimeout(() => {
      const timeout = Object.assign(new Error(`timed out after ${timeoutMs} ms`), { name: 'TimeoutError' });
      reject(timeout); // still connecting: the connect timeout ends that attempt
      abort?.(timeout);
    }, timeoutMs);
    let abort: ((err: Error) => void) | undefined;
    dispatcher.dispatch(
      {
        path,
        method: 'POST',
        headers: ['content-type', 'application/grpc', 'te', 'trailers', 'user-agent', 'tollgate-health-check'],
        body: frame,
        idempotent: true,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      },
      {
        onConnect(abortCall) {
          abort = abortCall;
        },
        onHeaders(status, raw) {
          answer.status = status;
          for (let i = 0; i + 1 < raw.length; i += 2) note(String(raw[i]), String(raw[i + 1]));
          return true;
        },
        onData(chunk) {
          chunks.push(chunk);
          return true;
        },
        onComplete(trailers: unknown) {
          clearTimeout(timer);
          if (Array.isArray(trailers)) for (let i = 0; i + 1 < trailers.length; i += 2) note(String(trailers[i]), String(trailers[i + 1]));
          else if (typeof trailers === 'object' && trailers !== null) for (const [name, value] of Object.entries(trailers)) note(name, String(value));
          answer.body = Buffer.concat(chunks);
          resolve(answer);
        },
        onError(err) {
          clearTimeout(timer);
          reject(err);
        },
      },
    );
  });
}

/**
 * A grpc check: `grpc.health.v1.Health/Check` for `service` over HTTP/2 (each backend's own h2 or h2c
 * connection, from `pools`); passes when the call ends with grpc-status 0 and the answer is SERVING.
 */
export function grpcProbe(config: ActiveConfig, pools: ReadonlyMap<Backend, Pick<Dispatcher, 'dispatch'>>): Probe {
  const frame = healthCheckFrame(config.grpc?.service ?? '');
  return async function probeGrpc(backend) {
    try {
 const answer = await grpcUnary(pools.get(backend) as Pick<Dispatcher, 'dispatch'>, '/grpc.health.v1.Health/Check', frame, config.timeout_ms);
      if (answer.status !== 200) return { passed: false, detail: `got HTTP ${answer.status}` };
      if (answer.grpcStatus !== '0') {
        const message = answer.grpcMessage === undefined ? '' : ` (${safeDecode(answer.grpcMessage)})`;
        return { passed: false, detail: `grpc-status ${answer.grpcStatus ?? 'missing'}${message}` };
      }
      const status = servingStatus(answer.body);
      if (status === 1) return { passed: true, detail: 'SERVING' };
      return { passed: false, detail: status === -1 ? 'not a HealthCheckResponse' : (SERVING_STATUS[status] ?? `status ${status}`) };
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if ((err as Error).name === 'TimeoutError' || PROBE_TIMEOUTS.has(code as string)) return { passed: false, detail: `timed out after ${config.timeout_ms} ms` };
      return { passed: false, detail: describeFailure(err) };
    }
  };
}

/** grpc-message is percent-encoded; a malformed one is shown as it came. */
function safeDecode(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
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
  /** The grpc checks' connections, one per backend: an h2c session, or an HTTP/2 pool with its TLS settings. */
  readonly #grpcPools = new Map<Backend, Pool | H2cSession>();
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
    } else if (config.type === 'grpc') {
      for (const b of backends) {
        const t = config.timeout_ms;
        this.#grpcPools.set(b, b.connector === undefined ? new H2cSession(b.origin, { connectTimeoutMs: t, responseTimeoutMs: t, idleTimeoutMs: config.interval_ms + t }) : new Pool(b.origin, { connections: 1, allowH2: true, connect: b.connector }));
      }
      this.#probe = grpcProbe(config, this.#grpcPools);
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
    await Promise.all([...this.#tlsPools.values(), ...this.#grpcPools.values()].map((p) => p.close()));
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
