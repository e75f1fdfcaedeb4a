/**
 * The one configuration schema. The TypeScript types of the whole configuration are inferred from it,
 * and it is the only validation: a file that passes it is a proxy that can start.
 * Keys are snake_case; durations are integer milliseconds named `*_ms`.
 */
import { isIP } from 'node:net';
import { z } from 'zod';
import { ARGON2ID_HASH, BCRYPT_HASH, SHA256_TOKEN } from '../middleware/auth/secret-formats.js';
import { DEFAULT_NAME, LOG_LEVELS, MAX_TIMER_MS } from './constants.js';
import { adminSchema, metricsSchema, tracingSchema } from './observability-schema.js';
import { upstreamProtocol, upstreamTls } from './resolve.js';
import { routeWebsocketSchema, websocketSchema } from './websocket-schema.js';

const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;

function isHost(value: string): boolean {
  return isIP(value) !== 0 || HOSTNAME.test(value);
}

function isCidr(value: string): boolean {
  const slash = value.indexOf('/');
  const ip = slash === -1 ? value : value.slice(0, slash);
  const family = isIP(ip);
  if (family === 0) return false;
  if (slash === -1) return true;
  const bits = value.slice(slash + 1);
  if (!/^\d{1,3}$/.test(bits)) return false;
  return Number(bits) <= (family === 4 ? 32 : 128);
}

const port = z
  .number({ error: 'must be a port number (1-65535)' })
  .int('must be a whole number (1-65535)')
  .min(1, 'must be 1-65535')
  .max(65535, 'must be 1-65535');

/**
 * The shortest timeout, interval or window a key takes, unless the key says otherwise: under 100 ms a
 * value is almost always seconds written as milliseconds (`interval_ms: 5`), and would probe, eject or
 * time out many times too often.
 */
export const MIN_DURATION_MS = 100;

/**
 * A duration in whole milliseconds, from `min` up to what a timer can hold. `off` says what 0 means for
 * a key where 0 turns the timer off; for every other key 0 is under the minimum like any small value.
 */
function durationMs(fallback: number, min = MIN_DURATION_MS, off?: string) {
  const range = off === undefined ? `at least ${min} milliseconds` : `0 (${off}) or at least ${min} milliseconds`;
  return z
    .number({ error: 'must be a whole number of milliseconds' })
    .int('must be a whole number of milliseconds')
    .min(off === undefined ? min : 0, `must be ${range}`)
    .max(MAX_TIMER_MS, `must be at most ${MAX_TIMER_MS} milliseconds (about 24 days)`)
    .superRefine(function offOrAtLeast(ms, ctx) {
      if (off !== undefined && ms > 0 && ms < min && Number.isInteger(ms)) ctx.addIssue({ code: 'too_small', origin: 'number', minimum: min, inclusive: true, input: ms, message: `must be ${range}` });
    })
    .default(fallback);
}

const positiveInt = (what: string, max = Number.MAX_SAFE_INTEGER) =>
  z
    .number({ error: `must be ${what}` })
    .int(`must be ${what}`)
    .min(1, `must be ${what}`)
    .max(max, `must be ${what}`);

const host = z.string({ error: 'must be an IP address or a host name' }).refine(isHost, 'must be an IP address or a host name');

/** Most worker processes a config may ask for. */
export const MAX_WORKERS = 256;

/** Most listening sockets per process (server.listen_sockets). */
export const MAX_LISTEN_SOCKETS = 256;
/** server.listen_sockets when not set: see docs/deployment.md#accepting for the measurement behind it. */
export const DEFAULT_LISTEN_SOCKETS = 64;

/** Node checks header timeouts once a second (proxy-server.ts), so a shorter one would not be kept. */
export const HEADER_TIMEOUT_MIN_MS = 1_000;

export const TLS_VERSIONS = ['TLSv1.2', 'TLSv1.3'] as const;

const filePath = z.string({ error: 'must be a file path' }).min(1, 'must not be empty');

/**
 * The listener's TLS: certificates (SNI picks one by name; the first is the default), the oldest protocol
 * version accepted, and client certificates (mTLS) when `client_ca_file` is given. The files are read
 * and checked when the config loads (config/tls-files.ts), relative to the config file.
 */
const tlsSchema = z.strictObject({
  certificates: z
    .array(z.strictObject({ cert_file: filePath, key_file: filePath }), { error: 'must be a list of { cert_file, key_file }' })
    .min(1, 'must list at least one certificate'),
  min_version: z.enum(TLS_VERSIONS, { error: 'must be TLSv1.2 or TLSv1.3' }).default('TLSv1.2'),
  /** Require a client certificate signed by one of these CAs; absent: no client certificates asked for. */
  client_ca_file: filePath.optional(),
  /** With client certificates: pass the verified certificate's subject and SHA-256 fingerprint upstream. */
  forward_client_cert: z.boolean().default(false),
});

const listenPort = z
  .number({ error: 'must be a port number (0-65535)' })
  .int('must be a whole number (0-65535)')
  .min(0, 'must be 0-65535')
  .max(65535, 'must be 0-65535');

/**
 * Limits of HTTP/2 connections (server.http2 on a TLS listener, server.h2c on a plain one); each defends
 * against one kind of abuse (docs/tls.md#http2). The header list limits are the HTTP/1.1 ones
 * (max_header_bytes, max_header_count).
 */
const http2LimitsSchema = z.strictObject({
  /** Streams open at once on a connection (SETTINGS_MAX_CONCURRENT_STREAMS); more are refused. */
  max_concurrent_streams: positiveInt('a whole number from 1 to 10000', 10_000).default(100),
  /** Streams the client resets (or that end reset) per connection per second before GOAWAY ENHANCE_YOUR_CALM (rapid reset). */
  max_resets_per_second: positiveInt('a whole number from 1 to 100000', 100_000).default(100),
  /** SETTINGS and PING frames a client may send per connection per second before GOAWAY ENHANCE_YOUR_CALM. */
  max_control_frames_per_second: positiveInt('a whole number from 1 to 100000', 100_000).default(100),
  /**
   * Bytes per second a client may send that carry no request (WINDOW_UPDATE, PRIORITY, unknown frames,
   * padding), beyond 8 for each byte of payload, before GOAWAY ENHANCE_YOUR_CALM.
   */
  max_overhead_bytes_per_second: positiveInt('a whole number of bytes from 1024 to 1000000000', 1_000_000_000).min(1024, 'must be a whole number of bytes from 1024 to 1000000000').default(1_048_576),
  /** HPACK dynamic table the client's encoder may use (SETTINGS_HEADER_TABLE_SIZE), in bytes. */
  hpack_table_size: z
    .number({ error: 'must be a whole number of bytes from 0 to 65536' })
    .int('must be a whole number of bytes from 0 to 65536')
    .min(0, 'must be a whole number of bytes from 0 to 65536')
    .max(65_536, 'must be a whole number of bytes from 0 to 65536')
    .default(4_096),
  /** A connection with no stream open for this long is closed with GOAWAY. */
  idle_timeout_ms: durationMs(75_000),
  /** A new connection must send its first request within this time (GOAWAY otherwise). */
  header_timeout_ms: durationMs(10_000, HEADER_TIMEOUT_MIN_MS),
});

const serverSchema = z.strictObject({
  /**
   * Processes serving requests: 1 (default) runs everything in one process; N > 1 or `auto` (one per CPU)
   * starts a primary that forks N workers sharing the listening port (src/cluster/primary.ts).
   */
  workers: z
    .union([z.literal('auto'), positiveInt(`auto or a whole number from 1 to ${MAX_WORKERS}`, MAX_WORKERS)], {
      error: `must be auto or a whole number from 1 to ${MAX_WORKERS}`,
    })
    .default(1),
  /** 0 asks the system for a free port (tests, embedding). */
  listen_port: listenPort.default(8080),
  listen_address: host.default('0.0.0.0'),
  max_connections: positiveInt('a whole number of at least 1').default(1000),
  /**
   * Listening sockets on listen_port (SO_REUSEPORT, Node >= 22.12 on Linux; 1 elsewhere): the event loop
   * accepts one connection per socket per turn, so a burst of new connections is taken this many at a time.
   */
  listen_sockets: positiveInt(`a whole number from 1 to ${MAX_LISTEN_SOCKETS}`, MAX_LISTEN_SOCKETS).default(DEFAULT_LISTEN_SOCKETS),
  /** Node's 0 would keep idle connections open forever; a few ms races a client reusing its connection. */
  keepalive_timeout_ms: durationMs(75_000),
  /** 0 cuts the connections still open at once. */
  shutdown_grace_ms: durationMs(30_000, 0),
  trusted_proxies: z.array(z.string().refine(isCidr, 'must be an IP address or a CIDR block such as 10.0.0.0/8')).default([]),
  health_path: z.string().regex(/^\/[^?#\s]*$/, 'must be a path starting with "/" (no query)').default('/health'),
  proxy_name: z.string().regex(/^[\x21-\x7e]+(?: [\x21-\x7e]+)*$/, 'must be printable ASCII').default('tollgate'),
  /** A client must send its whole request head within this time (408 otherwise). */
  header_timeout_ms: durationMs(10_000, HEADER_TIMEOUT_MIN_MS),
  /** Longest pause allowed between two pieces of a request body (408 otherwise). */
  body_timeout_ms: durationMs(30_000),
  /** Most header lines in a request (431 beyond). */
  max_header_count: positiveInt('a whole number from 1 to 10000', 10_000).default(100),
  /** Most bytes in a request head, request line included (431 beyond). */
  max_header_bytes: positiveInt('a whole number of bytes from 1024 to 1048576', 1_048_576).min(1024, 'must be at least 1024').default(16_384),
  /** Longest request target (414 beyond). */
  max_uri_bytes: positiveInt('a whole number of bytes of at least 1').default(8_192),
  /** Largest request body (413 beyond); 0 would refuse every body, so at least 1. */
  max_body_bytes: positiveInt('a whole number of bytes of at least 1').default(10 * 1024 * 1024),
  /** Header names with `_`: dropped before forwarding (as nginx), or the request refused with 400. */
  underscores_in_headers: z.enum(['drop', 'reject'], { error: 'must be drop or reject' }).default('drop'),
  /** `%2F` and `%5C` in the path: forwarded as they are (never decoded), or the request refused with 400. */
  encoded_slashes: z.enum(['keep', 'reject'], { error: 'must be keep or reject' }).default('keep'),
  /** HTTPS on listen_port; absent: plain HTTP. */
  tls: tlsSchema.optional(),
  /** With tls: a plain HTTP listener on this port that answers every request with a 308 to https. */
  redirect_http: z.strictObject({ port: listenPort }).optional(),
  /** With tls: offer h2 beside http/1.1 in ALPN. */
  http2: z.boolean({ error: 'must be true or false' }).default(true),
  /** Without tls: HTTP/2 with prior knowledge (h2c) beside HTTP/1.1 on the plain listener. */
  h2c: z.boolean({ error: 'must be true or false' }).default(false),
  http2_limits: http2LimitsSchema.prefault({}),
}).superRefine(function connectionsPerWorker(server, ctx) {
  // max_connections is split between the workers (docs/deployment.md): each needs a share of at least 1.
  if (typeof server.workers === 'number' && server.max_connections < server.workers) {
    ctx.addIssue({ code: 'custom', path: ['max_connections'], message: `must be at least server.workers (${server.workers}): each worker gets a share` });
  }
  if (server.redirect_http !== undefined && server.tls === undefined) {
    ctx.addIssue({ code: 'custom', path: ['redirect_http'], message: 'needs server.tls: it redirects to the https listener' });
  }
  if (server.redirect_http !== undefined && server.redirect_http.port !== 0 && server.redirect_http.port === server.listen_port) {
    ctx.addIssue({ code: 'custom', path: ['redirect_http', 'port'], message: 'must differ from server.listen_port' });
  }
  if (server.h2c && server.tls !== undefined) {
    ctx.addIssue({ code: 'custom', path: ['h2c'], message: 'is for a plain listener: with server.tls, HTTP/2 is server.http2' });
  }
  if (server.tls?.forward_client_cert === true && server.tls.client_ca_file === undefined) {
    ctx.addIssue({ code: 'custom', path: ['tls', 'forward_client_cert'], message: 'needs client_ca_file: only verified client certificates are forwarded' });
  }
});

/** A name for SNI and certificate checks: a host name (RFC 6066 allows no IP address there). */
const serverName = z
  .string({ error: 'must be a host name' })
  .refine((v) => isIP(v) === 0 && HOSTNAME.test(v), 'must be a host name (not an IP address: a certificate for an IP is checked against the address)');

/** The keys of an upstream's `tls` block; the files are read and checked when the config is loaded (load.ts). */
const tlsKeys = {
  /** TLS to the upstream; a `tls` block turns it on unless it says `enabled: false`. */
  enabled: z.boolean(),
  /** Sent as SNI and checked against the certificate; the upstream's address when absent. */
  servername: serverName,
  /** PEM file of the CAs that may sign the upstream's certificate, instead of Node's bundled roots. */
  ca_file: filePath,
  /** Check the upstream's certificate (chain and name); false accepts any (logged as a warning at start). */
  verify: z.boolean(),
  /** PEM client certificate and its key, for an upstream that asks for one (mTLS): both or neither. */
  cert_file: filePath,
  key_file: filePath,
};

function certWithKey(tls: { cert_file?: string | undefined; key_file?: string | undefined }, ctx: z.core.$RefinementCtx): void {
  if (tls.cert_file !== undefined && tls.key_file === undefined) ctx.addIssue({ code: 'custom', path: ['key_file'], message: 'is required with cert_file (the client certificate\'s key)' });
  if (tls.key_file !== undefined && tls.cert_file === undefined) ctx.addIssue({ code: 'custom', path: ['cert_file'], message: 'is required with key_file' });
}

/** A service's `tls`: what each of its upstreams uses, unless an upstream's own `tls` says otherwise. */
const serviceTlsSchema = z
  .strictObject({
    enabled: tlsKeys.enabled.default(true),
    servername: tlsKeys.servername.optional(),
    ca_file: tlsKeys.ca_file.optional(),
    verify: tlsKeys.verify.default(true),
    cert_file: tlsKeys.cert_file.optional(),
    key_file: tlsKeys.key_file.optional(),
  })
  .superRefine(certWithKey);

/** An upstream's `tls`: each key given replaces the service's key (cert_file and key_file together). */
const upstreamTlsSchema = z
  .strictObject({
    enabled: tlsKeys.enabled.optional(),
    servername: tlsKeys.servername.optional(),
    ca_file: tlsKeys.ca_file.optional(),
    verify: tlsKeys.verify.optional(),
    cert_file: tlsKeys.cert_file.optional(),
    key_file: tlsKeys.key_file.optional(),
  })
  .superRefine(certWithKey);

export const PROTOCOLS = ['http1', 'h2', 'h2c'] as const;
/**
 * `h2` offers HTTP/2 in the TLS handshake (ALPN); an upstream that does not take it is spoken to in HTTP/1.1.
 * `h2c` speaks HTTP/2 with prior knowledge over plain TCP (a gRPC server without TLS).
 */
const protocol = z.enum(PROTOCOLS, { error: 'must be http1, h2 or h2c' });

const upstreamSchema = z.strictObject({
  name: z.string().min(1, 'must not be empty').regex(/^[A-Za-z0-9._-]+$/, 'must use only letters, digits, ".", "_" and "-"'),
  address: host,
  port,
  weight: positiveInt('a whole number from 1 to 1000', 1000).default(1),
  /** Overrides the service's `tls` key by key. */
  tls: upstreamTlsSchema.optional(),
  /** Overrides the service's `protocol`. */
  protocol: protocol.optional(),
});

export const STRATEGIES = ['round_robin', 'random', 'least_conn', 'consistent_hash', 'p2c_ewma'] as const;

const fraction = (what: string) => z.number({ error: `must be ${what}` }).min(0, `must be ${what}`).max(100, `must be ${what}`);

const statusRange = z
  .string()
  .regex(/^[1-5]\d\d(-[1-5]\d\d)?$/, 'must be a status or a range such as "200-399"')
  .refine((r) => {
    const [lo, hi = lo] = r.split('-').map(Number) as [number, number?];
    return lo <= hi;
  }, 'must be a range from low to high');

const activeHealthSchema = z.strictObject({
  enabled: z.boolean().default(true),
  /**
   * `tcp`: the check passes when a connection opens; `http`: when a request gets an expected status;
   * `grpc`: when the gRPC health protocol (grpc.health.v1.Health/Check) answers SERVING (h2 or h2c upstreams).
   */
  type: z.enum(['tcp', 'http', 'grpc'], { error: 'must be tcp, http or grpc' }).default('tcp'),
  interval_ms: durationMs(5_000),
  timeout_ms: durationMs(2_000),
  /** Consecutive passed checks that bring a down backend back. */
  healthy_threshold: positiveInt('a whole number of at least 1').default(2),
  /** Consecutive failed checks that take a backend out. */
  unhealthy_threshold: positiveInt('a whole number of at least 1').default(3),
  http: z
    .strictObject({
      method: z.enum(['GET', 'HEAD', 'OPTIONS'], { error: 'must be GET, HEAD or OPTIONS' }).default('GET'),
      path: z.string().regex(/^\/\S*$/, 'must be a path starting with "/"').default('/'),
      expected_status: statusRange.default('200-399'),
      /** Host header of the check; the backend's address when absent. */
      host: z.string().min(1).optional(),
    })
    .prefault({}),
  /** For `type: grpc`; absent: the server as a whole is asked about. */
  grpc: z
    .strictObject({
      /** The service name asked about; '' (the default) asks about the server as a whole. */
      service: z.string().default(''),
    })
    .optional(),
});

const passiveHealthSchema = z.strictObject({
  enabled: z.boolean().default(true),
  /** Consecutive failed requests (connect errors, resets, timeouts) that eject a backend. */
  consecutive_failures: positiveInt('a whole number of at least 1').default(5),
  /** Count upstream 5xx responses as failures too. */
  include_5xx: z.boolean().default(false),
  /** First ejection time; doubled on each repeat, up to max_ejection_ms. */
  base_ejection_ms: durationMs(10_000),
  max_ejection_ms: durationMs(300_000),
  /** Never eject past this share of the group. */
  max_ejection_percent: fraction('a percentage from 0 to 100').default(50),
});

const retrySchema = z.strictObject({
  /** Further attempts on other backends after the first fails (0 turns retries off). */
  max_retries: z.number().int('must be a whole number').min(0, 'must be 0 or more').max(10, 'must be at most 10').default(1),
  /** Retries may be at most this share of requests (over the last 10 s), so a failing group gets no retry storm. */
  budget_percent: fraction('a percentage from 0 to 100').default(20),
  /** Retries always allowed per 10 s whatever the budget, so quiet proxies can still retry. */
  min_retries_per_window: z.number().int().min(0).default(3),
  /** Retries always allowed while fewer than this many are in flight (Envoy's min_retry_concurrency), whatever the budget. */
  min_concurrent_retries: z.number().int().min(0).default(3),
});

const hashKeySchema = z.strictObject({
  source: z.enum(['header', 'cookie', 'client_address', 'path'], { error: 'must be header, cookie, client_address or path' }).default('client_address'),
  /** Header or cookie name (for those sources). */
  name: z.string().min(1).optional(),
});

const poolSchema = z.strictObject({
  /** Connections kept per upstream (undici Pool `connections`). */
  max_connections: positiveInt('a whole number of at least 1').default(128),
  /** How long an idle upstream connection is kept, unless the upstream asks for less (undici refuses 0). */
  keepalive_timeout_ms: durationMs(60_000),
});

export const loadBalancingSchema = z.strictObject({
  strategy: z.enum(STRATEGIES, { error: `must be one of ${STRATEGIES.join(', ')}` }).default('round_robin'),
  upstreams: z
    .array(upstreamSchema, { error: 'must be a list of upstreams' })
    .min(1, 'must list at least one upstream')
    .superRefine(function uniqueNames(list, ctx) {
      const seen = new Set<string>();
      list.forEach((u, i) => {
        if (seen.has(u.name)) ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `duplicate upstream name "${u.name}"` });
        seen.add(u.name);
      });
    }),
  connect_timeout_ms: durationMs(5_000),
  /** Until the response headers, and between two pieces of the body; 0 for no limit (long polls, event streams). */
  response_timeout_ms: durationMs(30_000, MIN_DURATION_MS, 'no limit'),
  preserve_host: z.boolean().default(true),
  /** Whole upstream exchange, headers and body; 0 for no limit. */
  total_timeout_ms: durationMs(0, MIN_DURATION_MS, 'no limit'),
  pool: poolSchema.prefault({}),
  health_check: z.strictObject({ active: activeHealthSchema.prefault({}), passive: passiveHealthSchema.prefault({}) }).prefault({}),
  retries: retrySchema.prefault({}),
  /** For `consistent_hash`: what identifies a request. */
  hash_key: hashKeySchema
    .prefault({})
    .refine((k) => (k.source !== 'header' && k.source !== 'cookie') || k.name !== undefined, 'needs a name for a header or cookie key'),
  /** A backend that comes back takes a share of traffic growing linearly over this window; 0 is off. */
  slow_start_ms: durationMs(0, MIN_DURATION_MS, 'off'),
  /** TLS to every upstream of the service (each upstream may override it); plain HTTP when absent. */
  tls: serviceTlsSchema.optional(),
  /** HTTP version towards the upstreams: `h2` needs TLS, `h2c` is without it. */
  protocol: protocol.default('http1'),
}).superRefine(function h2NeedsTls(lb, ctx) {
  const grpcCheck = lb.health_check.active.enabled && lb.health_check.active.type === 'grpc';
  lb.upstreams.forEach((u, i) => {
    const spoken = upstreamProtocol(lb, u);
    const path = u.protocol === undefined ? ['protocol'] : ['upstreams', i, 'protocol'];
    if (grpcCheck && spoken === 'http1') {
      ctx.addIssue({ code: 'custom', path: ['health_check', 'active', 'type'], message: `grpc checks need HTTP/2: give upstream "${u.name}" protocol h2 (with tls) or h2c` });
    }
    if (u.protocol === undefined && lb.protocol === 'http1') return;
    if (spoken === 'h2' && !upstreamTls(lb, u).enabled) {
      ctx.addIssue({ code: 'custom', path, message: `h2 needs TLS (HTTP/2 is agreed in the TLS handshake): give upstream "${u.name}" tls` });
    }
    if (spoken === 'h2c' && upstreamTls(lb, u).enabled) {
      ctx.addIssue({ code: 'custom', path, message: `h2c is HTTP/2 without TLS: upstream "${u.name}" has tls, so use h2` });
    }
  });
});

export const AUTH_TYPES = ['bearer', 'basic', 'api_key', 'client_cert', 'jwt', 'forward'] as const;

/** A SHA-256 fingerprint as `openssl x509 -fingerprint -sha256` prints it (colons optional, any case). */
const FINGERPRINT = /^(?:[0-9A-Fa-f]{2}:){31}[0-9A-Fa-f]{2}$|^[0-9A-Fa-f]{64}$/;

const headerName = z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, 'must be a valid header name');

/** The JWS algorithms `jwt.algorithms` may list; `none` never (a token without a signature proves nothing). */
export const JWT_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519', 'HS256', 'HS384', 'HS512'] as const;

function isLoopbackHost(hostname: string): boolean {
  const h = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** An https:// URL; http:// only to a loopback address (a test's or a sidecar's key server). */
const jwksUrl = z.string({ error: 'must be an https:// URL' }).refine(function isJwksUrl(value) {
  if (!URL.canParse(value)) return false;
  const url = new URL(value);
  return url.protocol === 'https:' || (url.protocol === 'http:' && isLoopbackHost(url.hostname));
}, 'must be an https:// URL (http:// is allowed only to a loopback address such as 127.0.0.1)');

/** `auth_type: jwt`: where the keys come from (one of jwks_url, public_key_file, secret) and what a token must say. */
const jwtSchema = z
  .strictObject({
    /** The identity provider's JWKS; fetched at start, cached, refreshed on its cache lifetime and for unknown kids. */
    jwks_url: jwksUrl.optional(),
    /** A PEM public key (or certificate), relative to the config file. */
    public_key_file: filePath.optional(),
    /** A shared secret for HS256/384/512 (at least 32 characters). */
    secret: z.string().min(32, 'must be at least 32 characters (RFC 7518: no shorter than the hash)').optional(),
    /** The exact `iss` a token must carry. */
    issuer: z.string().min(1, 'must not be empty').optional(),
    /** A token's `aud` must name one of these. */
    audiences: z.array(z.string().min(1, 'must not be empty')).min(1, 'must list at least one audience').optional(),
    /** The algorithms accepted; the token's `alg` header must be one of them, and its key must be of that type. */
    algorithms: z
      .array(
        z.string().refine((a) => a.toLowerCase() !== 'none', '"none" is never allowed: a token without a signature proves nothing').refine(
          (a) => a.toLowerCase() === 'none' || (JWT_ALGORITHMS as readonly string[]).includes(a),
          `must be one of ${JWT_ALGORITHMS.join(', ')}`,
        ),
      )
      .min(1, 'must list at least one algorithm')
      .default(['RS256', 'ES256', 'EdDSA']),
    /** Leeway for exp and nbf. */
    clock_skew_ms: z
      .number({ error: 'must be a whole number of milliseconds from 0 to 300000' })
      .int('must be a whole number of milliseconds from 0 to 300000')
      .min(0, 'must be a whole number of milliseconds from 0 to 300000')
      .max(300_000, 'must be a whole number of milliseconds from 0 to 300000')
      .default(30_000),
    /** Claim → value a token must carry (exactly, or as one word of a space-separated claim, or an element of an array claim); 403 otherwise. */
    required_claims: z.record(z.string().min(1), z.union([z.string(), z.number(), z.boolean()], { error: 'must be a string, a number or true/false' })).default({}),
    /** Claim → request header sent upstream with its value. The client's own headers of these names are always removed. */
    claims_to_headers: z.record(z.string().min(1), headerName).default({}),
    /** Also read the token from this cookie when there is no Authorization header. */
    cookie: z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, 'must be a valid cookie name').optional(),
    /** Longest wait for the JWKS endpoint. */
    jwks_timeout_ms: durationMs(5_000),
  })
  .superRefine(function oneKeySource(jwt, ctx) {
    const given = (['jwks_url', 'public_key_file', 'secret'] as const).filter((k) => jwt[k] !== undefined);
    if (given.length === 0) ctx.addIssue({ code: 'custom', path: ['jwks_url'], message: 'is required (or public_key_file, or secret)' });
    else if (given.length > 1) ctx.addIssue({ code: 'custom', path: [given[1] as string], message: 'give only one of jwks_url, public_key_file or secret' });
    jwt.algorithms.forEach((alg, i) => {
      const hmac = alg.startsWith('HS');
      // HS keys are shared secrets: never taken from a public key file or a JWKS, and a secret verifies nothing else.
      if (hmac && jwt.secret === undefined && given.length === 1) ctx.addIssue({ code: 'custom', path: ['algorithms', i], message: `${alg} needs jwt.secret: an HMAC key is never taken from ${given[0] as string}` });
      if (!hmac && jwt.secret !== undefined && alg.toLowerCase() !== 'none') ctx.addIssue({ code: 'custom', path: ['algorithms', i], message: `${alg} needs a public key (jwks_url or public_key_file): jwt.secret verifies HS256, HS384 and HS512 only` });
    });
    for (const [claim, header] of Object.entries(jwt.claims_to_headers)) {
      const lower = header.toLowerCase();
      if (lower === 'host' || lower === 'authorization' || lower === 'cookie' || lower === 'x-request-id' || CONNECTION_SPECIFIC.has(lower)) {
        ctx.addIssue({ code: 'custom', path: ['claims_to_headers', claim], message: `${header} cannot carry a claim` });
      }
    }
  });

/**
 * `auth_type: forward`: an auth service is asked about each request (as nginx's auth_request and Traefik's
 * ForwardAuth); a 2xx lets it through, any other answer goes back to the client, a timeout or error is 503.
 */
const forwardSchema = z.strictObject({
  /** The auth service: http:// or https://. */
  url: z.string({ error: 'must be an http:// or https:// URL' }).refine(function isHttpUrl(value) {
    if (!URL.canParse(value)) return false;
    const url = new URL(value);
    return (url.protocol === 'http:' || url.protocol === 'https:') && url.username === '' && url.password === '';
  }, 'must be an http:// or https:// URL (without credentials)'),
  /** Longest wait for the service's whole answer; past it the request is answered 503. */
  timeout_ms: durationMs(2_000),
  /** Request headers sent to the service (lower-case names compared). */
  copy_request_headers: z.array(headerName).default(['Authorization', 'Cookie']),
  /** Headers of the service's 2xx answer added to the request sent upstream (the client's own are removed). */
  copy_response_headers: z.array(headerName).default([]),
  /** Cache a 2xx answer this long, per credential (a digest of the copied headers), method and path; 0: never. */
  cache_ms: durationMs(0, 100, 'no caching'),
});

/** The keys of one auth scheme: the whole of `auth` without `any_of`, and each entry of `any_of`. */
const authSchemeFields = {
  enabled: z.boolean().default(false),
  auth_type: z.enum(AUTH_TYPES, { error: `must be one of ${AUTH_TYPES.join(', ')}` }).default('bearer'),
  /** Tokens as sent, or `sha256:` and the token's SHA-256 in hex (so the config holds no secret). */
  valid_tokens: z.array(z.string().min(1, 'must not be empty')).default([]),
  users: z
    .array(
      z
        .strictObject({
          username: z.string().min(1, 'must not be empty').refine((u) => !u.includes(':'), 'must not contain ":"'),
          password: z.string().optional(),
          /** bcrypt (`$2a$`, `$2b$`, `$2y$`) or argon2id (`$argon2id$`), as `tollgate hash-secret` prints. */
          password_hash: z
            .string()
            .refine((h) => BCRYPT_HASH.test(h) || ARGON2ID_HASH.test(h), 'must be a bcrypt ($2a$, $2b$, $2y$) or argon2id ($argon2id$) hash, as `tollgate hash-secret` prints')
            .optional(),
        })
        .superRefine(function passwordOrHash(user, ctx) {
          if ((user.password === undefined) === (user.password_hash === undefined)) ctx.addIssue({ code: 'custom', path: ['password'], message: 'give password or password_hash (exactly one)' });
        }),
    )
    .default([]),
  /** An Apache htpasswd file of Basic users (bcrypt, {SHA} or argon2id lines), relative to the config file. */
  users_file: filePath.optional(),
  /** Slow hashes (bcrypt, argon2id): verifications at once, waiting at most, and the cache of verified credentials. */
  password_verification: z
    .strictObject({
      concurrency: positiveInt('a whole number from 1 to 64', 64).default(1),
      max_queue: positiveInt('a whole number from 1 to 100000', 100_000).default(1_000),
      cache_size: positiveInt('a whole number from 1 to 1000000', 1_000_000).default(10_000),
      cache_ttl_ms: durationMs(300_000, 1_000),
    })
    .prefault({}),
  api_key_header: headerName.default('X-API-Key'),
  forward_credentials: z.boolean().default(false),
  realm: z.string().regex(/^[^"\\\r\n]*$/, 'must not contain quotes, backslashes or line breaks').default('tollgate'),
  /** `auth_type: jwt`. */
  jwt: jwtSchema.optional(),
  /** `auth_type: forward`. */
  forward: forwardSchema.optional(),
};

/** Auth types an `any_of` entry may have: schemes whose credentials a request carries in its headers. */
const ANY_OF_TYPES: ReadonlySet<string> = new Set(['bearer', 'basic', 'api_key', 'jwt']);

/** Each scheme has what it needs: tokens, users, a jwt block... */
function credentialsPresent(auth: z.infer<z.ZodObject<typeof authSchemeFields>>, ctx: z.core.$RefinementCtx): void {
  if (!auth.enabled) return;
  if (auth.auth_type === 'forward') {
    if (auth.forward === undefined) ctx.addIssue({ code: 'custom', path: ['forward'], message: 'forward auth needs a forward block (url)' });
  } else if (auth.auth_type === 'jwt') {
    if (auth.jwt === undefined) ctx.addIssue({ code: 'custom', path: ['jwt'], message: 'jwt auth needs a jwt block (jwks_url, public_key_file or secret)' });
  } else if (auth.auth_type === 'basic') {
    if (auth.users.length === 0 && auth.users_file === undefined && auth.valid_tokens.length === 0) {
      ctx.addIssue({ code: 'custom', path: ['users'], message: 'basic auth needs users, users_file or valid_tokens' });
    }
  } else if (auth.valid_tokens.length === 0) {
    ctx.addIssue({ code: 'custom', path: ['valid_tokens'], message: `${auth.auth_type} auth needs at least one ${auth.auth_type === 'client_cert' ? 'fingerprint' : 'token'}` });
  }
  if (auth.auth_type !== 'client_cert') {
    auth.valid_tokens.forEach((token, i) => {
      if (token.startsWith('sha256:') && !SHA256_TOKEN.test(token)) ctx.addIssue({ code: 'custom', path: ['valid_tokens', i], message: 'sha256: must be followed by 64 hex digits (the SHA-256 of the token)' });
    });
  }
  if (auth.auth_type === 'client_cert') {
    auth.valid_tokens.forEach((token, i) => {
      if (!FINGERPRINT.test(token)) ctx.addIssue({ code: 'custom', path: ['valid_tokens', i], message: 'must be a SHA-256 fingerprint: 64 hex digits, in pairs separated by ":" or not' });
    });
  }
}

/** An entry of `any_of`: a scheme, on unless it says `enabled: false`. */
const authSchemeSchema = z.strictObject({ ...authSchemeFields, enabled: z.boolean().default(true) }).superRefine(credentialsPresent);

export const authSchema = z
  .strictObject({
    ...authSchemeFields,
    /**
     * Several schemes: a request is accepted by the first whose credentials it carries and that accepts
     * them; the 401 lists every scheme's challenge. The top-level scheme keys are then not used.
     */
    any_of: z.array(authSchemeSchema, { error: 'must be a list of auth schemes' }).min(1, 'must list at least one scheme').optional(),
  })
  .superRefine(function schemeOrSchemes(auth, ctx) {
    if (auth.any_of === undefined) {
      credentialsPresent(auth, ctx);
      return;
    }
    auth.any_of.forEach((scheme, i) => {
      if (!ANY_OF_TYPES.has(scheme.auth_type)) ctx.addIssue({ code: 'custom', path: ['any_of', i, 'auth_type'], message: `must be one of ${[...ANY_OF_TYPES].join(', ')} in any_of` });
    });
    if (auth.enabled && auth.any_of.every((scheme) => !scheme.enabled)) ctx.addIssue({ code: 'custom', path: ['any_of'], message: 'every scheme is disabled' });
  });

/** `redis://[user:password@]host[:port][/db]`, or `rediss://` for TLS. */
const redisUrl = z
  .string({ error: 'must be a redis:// or rediss:// URL' })
  .refine(function isRedisUrl(value) {
    if (!URL.canParse(value)) return false;
    const url = new URL(value);
    return (url.protocol === 'redis:' || url.protocol === 'rediss:') && url.hostname !== '' && /^(\/\d*)?$/.test(url.pathname);
  }, 'must be a redis:// or rediss:// URL such as redis://127.0.0.1:6379/0');

/**
 * A shared store's wait is a per-request budget, where a few milliseconds is a fair choice; under 5 ms the
 * event loop's own delays alone would trip it and `on_error` would decide every request.
 */
export const STORE_TIMEOUT_MIN_MS = 5;

/** Longest wait for a shared store on a request; past it `on_error` decides. */
const storeTimeoutMs = z
  .number({ error: `must be a whole number of milliseconds from ${STORE_TIMEOUT_MIN_MS} to 60000` })
  .int(`must be a whole number of milliseconds from ${STORE_TIMEOUT_MIN_MS} to 60000`)
  .min(STORE_TIMEOUT_MIN_MS, `must be a whole number of milliseconds from ${STORE_TIMEOUT_MIN_MS} to 60000`)
  .max(60_000, `must be a whole number of milliseconds from ${STORE_TIMEOUT_MIN_MS} to 60000`)
  .default(100);
/** When a shared store cannot answer: `allow` lets the request through, `deny` answers 503 with Retry-After. */
const storeOnError = z.enum(['allow', 'deny'], { error: 'must be allow or deny' }).default('allow');

const memoryStoreSchema = z.strictObject({
  type: z.literal('memory'),
  /**
   * Cluster mode only (`server.workers` > 1): the buckets live in the primary, and a worker waits at most
   * this long for its answer before `on_error` decides. A single process answers from its own memory.
   */
  timeout_ms: storeTimeoutMs,
  /** Cluster mode only: what a request gets when the primary does not answer within `timeout_ms`. */
  on_error: storeOnError,
});

const redisStoreSchema = z
  .strictObject({
    type: z.literal('redis'),
    /** A single Redis server (user, password, database and TLS from the URL). */
    url: redisUrl.optional(),
    /** Redis Cluster: seed nodes; the credentials of the first apply to every node. */
    cluster: z.strictObject({ nodes: z.array(redisUrl).min(1, 'must list at least one node') }).optional(),
    /** Redis Sentinel: the sentinels to ask for the master named `name`. */
    sentinel: z
      .strictObject({
        name: z.string().min(1, 'must not be empty'),
        nodes: z.array(redisUrl).min(1, 'must list at least one sentinel'),
        /** The master's password (a sentinel's own password goes in its URL). */
        password: z.string().optional(),
        db: z.number().int('must be a whole number').min(0, 'must be 0 or more').default(0),
      })
      .optional(),
    /** Put in front of every bucket key, so several proxies (or other users) can share one Redis. */
    key_prefix: z.string().max(256, 'must be at most 256 characters').default('tollgate:'),
    /** Longest wait for Redis on a request; past it (or when Redis is down) `on_error` decides. */
    timeout_ms: storeTimeoutMs,
    /** When Redis cannot answer: `allow` lets the request through, `deny` answers 503 with Retry-After. */
    on_error: storeOnError,
  })
  .superRefine(function oneTopology(store, ctx) {
    const given = (['url', 'cluster', 'sentinel'] as const).filter((k) => store[k] !== undefined);
    if (given.length === 0) ctx.addIssue({ code: 'custom', path: ['url'], message: 'is required (or cluster, or sentinel)' });
    else if (given.length > 1) ctx.addIssue({ code: 'custom', path: [given[1] as string], message: 'give only one of url, cluster or sentinel' });
  });

const storeSchema = z.discriminatedUnion('type', [memoryStoreSchema, redisStoreSchema], { error: 'must be memory or redis' });

/** What a rate-limit bucket is keyed by (docs/configuration.md#rate-limit-keys). */
const RATE_LIMIT_KEY = /^(?:client_address|credential|header:[!#$%&'*+.^_`|~0-9A-Za-z-]+|claim:[^\s]{1,256})$/;

export const rateLimitSchema = z.strictObject({
  enabled: z.boolean().default(false),
  /**
   * Whose bucket a request takes from: `credential` (the authenticated credential, by a digest; the
   * client address when not authenticated), `client_address`, `header:NAME` or `claim:NAME` (a JWT claim).
   * A request that failed authentication is always charged to its client address.
   */
  key: z
    .string({ error: 'must be client_address, credential, header:NAME or claim:NAME' })
    .regex(RATE_LIMIT_KEY, 'must be client_address, credential, header:NAME or claim:NAME')
    .default('credential'),
  requests_per_minute: positiveInt('a whole number of at least 1').default(100),
  burst_size: positiveInt('a whole number of at least 1').default(10),
  /** Most client buckets kept at once; beyond it, idle ones are dropped first, then the oldest created. */
  max_keys: positiveInt('a whole number of at least 1').default(100_000),
  /** Where the buckets live: this instance's memory (shared by its workers), or Redis (shared by instances). */
  store: storeSchema.prefault({ type: 'memory' }),
});

const middlewareSchema = z.strictObject({
  auth: authSchema.prefault({}),
  rate_limit: rateLimitSchema.prefault({}),
});

const loggingSchema = z.strictObject({
  level: z.enum(LOG_LEVELS, { error: `must be one of ${LOG_LEVELS.join(', ')}` }).default('info'),
  format: z.enum(['json', 'pretty'], { error: 'must be json or pretty' }).default('json'),
  file: z.string().min(1).optional(),
});

/** Names of services and routes: they appear in metrics labels, logs and the status document. */
const NAME = /^[A-Za-z0-9._-]{1,64}$/;
const name = z.string({ error: 'must be a name' }).regex(NAME, 'must be 1-64 letters, digits, ".", "_" or "-"');
/**
 * A route's or a service's own name: `none` is what metrics and logs say for requests no route took or no
 * upstream answered, so a route or service of that name would be counted with them.
 */
const RESERVED_NAME = 'none';
const RESERVED_MESSAGE = '"none" is reserved (metrics and logs use it for requests no route or service took)';
const ownName = name.refine((n) => n !== RESERVED_NAME, RESERVED_MESSAGE);

/** `api.example.com`, or `*.example.com` for any name under example.com (not example.com itself). */
const hostPattern = z
  .string({ error: 'must be a host name or *.suffix' })
  .refine((h) => (h.startsWith('*.') ? HOSTNAME.test(h.slice(2)) : isHost(h)), 'must be a host name, an IP address or a wildcard such as *.example.com');

const routePath = z.string().regex(/^\/[^?#\s]*$/, 'must be a path starting with "/" (no query)');

const HTTP_METHOD = /^[!#$%&'*+.^_`|~0-9A-Z-]+$/;

const matchSchema = z
  .strictObject({
    /** Exact names or `*.suffix` wildcards, case-insensitive; the port of the request's Host is ignored. */
    hosts: z.array(hostPattern).min(1, 'must list at least one host').optional(),
    /** The normalized path, exactly (the query is not part of it). */
    path: routePath.optional(),
    /** The normalized path starts with this, at a segment boundary (`/v1` matches `/v1/x`, never `/v1x`). */
    path_prefix: routePath.optional(),
    methods: z.array(z.string().regex(HTTP_METHOD, 'must be an upper-case method name such as GET')).min(1, 'must list at least one method').optional(),
    /** Header name → exact value. */
    headers: z.record(headerName, z.string()).optional(),
  })
  .refine((m) => m.path === undefined || m.path_prefix === undefined, 'give path or path_prefix, not both');

/** Header names that describe one connection, never a message: not settable by header edits. */
const CONNECTION_SPECIFIC: ReadonlySet<string> = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer', 'http2-settings']);

const headerEditsSchema = z.strictObject({
  /** Replaces any header of that name (case-insensitive). */
  set: z.record(headerName, z.string().regex(/^[\t\x20-\x7e\x80-\xff]*$/, 'must not contain control characters')).default({}),
  remove: z.array(headerName).default([]),
});

const REDIRECT_STATUSES = [301, 302, 303, 307, 308] as const;

const routeSchema = z
  .strictObject({
    name: ownName,
    match: matchSchema.prefault({}),
    /** The service (a key of `services`) the route forwards to. */
    service: name.optional(),
    /** Answered by Tollgate itself: a redirect to this URL. */
    redirect: z
      .strictObject({
        to: z.string().min(1, 'must not be empty').regex(/^[\x21-\x7e]+$/, 'must be a URL or a path without spaces'),
        status: z.union(REDIRECT_STATUSES.map((n) => z.literal(n)), { error: 'must be 301, 302, 303, 307 or 308' }).default(302),
      })
      .optional(),
    /** Remove the matched path_prefix from the path sent upstream (`/v1/users` → `/users`). */
    strip_prefix: z.boolean().default(false),
    /** Replace the matched path_prefix with this in the path sent upstream (`/v1/users` → `/v2/users`). */
    rewrite_prefix: routePath.optional(),
    /** This route's auth and rate limit: each key given here replaces the top-level one of the same name. */
    middleware: z.strictObject({ auth: authSchema.optional(), rate_limit: rateLimitSchema.optional() }).prefault({}),
    /** Edits to the request sent upstream, after Tollgate's own headers. */
    request_headers: headerEditsSchema.prefault({}),
    /** Edits to the response sent to the client, after Tollgate's own headers. */
    response_headers: headerEditsSchema.prefault({}),
    /** WebSockets on this route: false turns them off; keys given replace the top-level `websocket` ones. */
    websocket: routeWebsocketSchema.optional(),
    /**
     * Phases from JavaScript modules, run in this order after the route's auth and rate limit: `module` is a
     * file (relative to the config file) whose default export makes the phases from `options`, or a name
     * the library user registered (docs/library.md).
     */
    plugins: z.array(z.strictObject({ module: z.string().min(1, 'must name a module'), options: z.unknown().optional() }), { error: 'must be a list of { module, options }' }).default([]),
  })
  .superRefine(function routeShape(route, ctx) {
    if ((route.service === undefined) === (route.redirect === undefined)) {
      ctx.addIssue({ code: 'custom', path: ['service'], message: 'give service or redirect (exactly one)' });
    }
    if ((route.strip_prefix || route.rewrite_prefix !== undefined) && route.match.path_prefix === undefined) {
      ctx.addIssue({ code: 'custom', path: [route.strip_prefix ? 'strip_prefix' : 'rewrite_prefix'], message: 'needs match.path_prefix' });
    }
    if (route.strip_prefix && route.rewrite_prefix !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['rewrite_prefix'], message: 'give strip_prefix or rewrite_prefix, not both' });
    }
    for (const side of ['request_headers', 'response_headers'] as const) {
      const edits = route[side];
      edits.remove.forEach((h, i) => {
        if (h.toLowerCase() === 'x-request-id') ctx.addIssue({ code: 'custom', path: [side, 'remove', i], message: 'X-Request-ID is Tollgate\'s own and cannot be removed' });
      });
      for (const h of Object.keys(edits.set)) {
        if (h.toLowerCase() === 'x-request-id') ctx.addIssue({ code: 'custom', path: [side, 'set', h], message: 'X-Request-ID is Tollgate\'s own and cannot be set' });
        // Framing and connection headers belong to each hop (and HTTP/2 has none: node:http2 refuses them).
        else if (CONNECTION_SPECIFIC.has(h.toLowerCase())) ctx.addIssue({ code: 'custom', path: [side, 'set', h], message: 'is a hop-by-hop header, which Tollgate writes itself for each connection' });
      }
    }
  });

/**
 * A route's `middleware.auth` / `middleware.rate_limit` is read on top of the top-level one: the keys the
 * route gives win, the rest are inherited (`rate_limit: { requests_per_minute: 600 }` keeps the top-level
 * store). Done on the raw input, before defaults, so an inherited key and a given one are told apart.
 */
function inheritMiddleware(input: unknown): unknown {
  if (!isRecord(input) || !Array.isArray(input.routes)) return input;
  const top = isRecord(input.middleware) ? input.middleware : {};
  return {
    ...input,
    routes: input.routes.map((route: unknown) => {
      if (!isRecord(route) || !isRecord(route.middleware)) return route;
      const own = route.middleware;
      const merged: Record<string, unknown> = { ...own };
      for (const key of ['auth', 'rate_limit']) {
        if (isRecord(own[key]) && isRecord(top[key])) merged[key] = { ...top[key], ...own[key] };
      }
      return { ...route, middleware: merged };
    }),
  };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export const configSchema = z.preprocess(
  inheritMiddleware,
  z
    .strictObject({
      server: serverSchema.prefault({}),
      /** The single upstream group of a file without `services`: the service `default` (with `services`, one more of them). */
      load_balancing: loadBalancingSchema.optional(),
      /** Named upstream groups; each takes every key `load_balancing` takes. */
      services: z.record(name, loadBalancingSchema).optional(),
      /**
       * Which requests go where. Without it, one route `default` sends every request to the service
       * `default`. Tried by precedence (src/routing/matcher.ts), never by order.
       */
      routes: z
        .array(routeSchema, { error: 'must be a list of routes' })
        .min(1, 'must list at least one route')
        .superRefine(function uniqueRouteNames(list, ctx) {
          const seen = new Set<string>();
          list.forEach((r, i) => {
            if (seen.has(r.name)) ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `duplicate route name "${r.name}"` });
            seen.add(r.name);
          });
        })
        .optional(),
      middleware: middlewareSchema.prefault({}),
      logging: loggingSchema.prefault({}),
      admin: adminSchema.prefault({}),
      metrics: metricsSchema.prefault({}),
      tracing: tracingSchema.prefault({}),
      /** WebSockets: on for every route unless it says otherwise; idle timeout and the instance's cap. */
      websocket: websocketSchema.prefault({}),
    })
    .superRefine(function listenersApart({ server, admin }, ctx) {
      // Port 0 asks the system for a free port, which never clashes.
      if (!admin.enabled || admin.port === 0 || admin.port !== server.listen_port || !addressesOverlap(admin.address, server.listen_address)) return;
      const params: SharedPort = { port: admin.port, adminAddress: admin.address, proxyAddress: server.listen_address };
      ctx.addIssue({ code: 'custom', path: ['admin', 'port'], message: sharedPortMessage('admin.port', params), params: { sharedPort: params } });
    })
    .superRefine(function clientCertAuth(config, ctx) {
      // client_cert auth reads the certificate the listener verified: without client_ca_file there is none.
      if (config.server.tls?.client_ca_file !== undefined) return;
      const need = (path: (string | number)[]): void => ctx.addIssue({ code: 'custom', path, message: 'client_cert auth needs server.tls.client_ca_file' });
      if (config.middleware.auth.enabled && config.middleware.auth.auth_type === 'client_cert') need(['middleware', 'auth', 'auth_type']);
      config.routes?.forEach((route, i) => {
        const auth = route.middleware.auth;
        if (auth?.enabled === true && auth.auth_type === 'client_cert') need(['routes', i, 'middleware', 'auth', 'auth_type']);
      });
    })
    .superRefine(function servicesAndRoutes(config, ctx) {
      const services = new Set(Object.keys(config.services ?? {}));
      if (services.has(RESERVED_NAME)) ctx.addIssue({ code: 'custom', path: ['services', RESERVED_NAME], message: RESERVED_MESSAGE });
      if (config.load_balancing !== undefined) {
        if (services.has(DEFAULT_NAME)) {
          ctx.addIssue({ code: 'custom', path: ['services', DEFAULT_NAME], message: 'load_balancing is already the service "default": rename one' });
        }
        services.add(DEFAULT_NAME);
      }
      if (services.size === 0) {
        ctx.addIssue({ code: 'invalid_type', expected: 'object', path: ['load_balancing'], message: 'is required (or services)' });
        return;
      }
      if (config.routes === undefined) {
        if (!services.has(DEFAULT_NAME)) ctx.addIssue({ code: 'custom', path: ['routes'], message: 'is required unless there is a service "default" (load_balancing)' });
        return;
      }
      config.routes.forEach((route, i) => {
        if (route.service !== undefined && !services.has(route.service)) {
          ctx.addIssue({ code: 'custom', path: ['routes', i, 'service'], message: `no service named "${route.service}"` });
        }
      });
    }),
);

/** The proxy and the admin listener on one port (the issue's `params.sharedPort`, for load.ts). */
export interface SharedPort {
  port: number;
  adminAddress: string;
  proxyAddress: string;
}

/**
 * The problem of two listeners on one port, told at `key` (admin.port or server.listen_port) and naming
 * the other; `otherAt` says where the other is written (`proxy.yaml:2:16`, or its default).
 */
export function sharedPortMessage(key: 'admin.port' | 'server.listen_port', shared: SharedPort, otherAt?: string): string {
  const other = key === 'admin.port' ? 'server.listen_port' : 'admin.port';
  const addresses =
    shared.adminAddress === shared.proxyAddress
      ? `both on ${shared.proxyAddress}`
      : `and server.listen_address ${shared.proxyAddress} overlaps admin.address ${shared.adminAddress}`;
  return `${shared.port} is ${other} too${otherAt === undefined ? '' : ` (${otherAt})`}, ${addresses}: the proxy and the admin listener need different ports`;
}

/**
 * Whether listening on both addresses, one port, would fail (as tried on Linux, where Node's `::` takes
 * IPv4 too): the same address; `::` with any address; `0.0.0.0` with any IPv4 address (not with `::1`);
 * `localhost` with 127.0.0.1 or ::1. A host name other than localhost is not resolved here: it is taken
 * to overlap a wildcard address and itself.
 */
export function addressesOverlap(a: string, b: string): boolean {
  const x = canonicalAddress(a);
  const y = canonicalAddress(b);
  if (x === y || x === '::' || y === '::') return true;
  if (x === '0.0.0.0' || y === '0.0.0.0') {
    const other = x === '0.0.0.0' ? y : x;
    return isIP(other) !== 6;
  }
  if (x === 'localhost' || y === 'localhost') {
    const other = x === 'localhost' ? y : x;
    return other === '127.0.0.1' || other === '::1';
  }
  return false;
}

/** Lower case without a trailing dot; IPv6 compressed (`0:0::1` is `::1`); IPv4-mapped IPv6 as IPv4. */
function canonicalAddress(address: string): string {
  const lower = address.toLowerCase().replace(/\.$/, '');
  const mapped = /^(?:0{0,4}:){0,5}:?ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(lower);
  if (mapped !== null && isIP(mapped[1] as string) === 4) return mapped[1] as string;
  return isIP(lower) === 6 ? new URL(`http://[${lower}]/`).hostname.slice(1, -1) : lower;
}

/** The whole configuration after validation and defaults. */
export type Config = z.infer<typeof configSchema>;
export type ServerConfig = Config['server'];
export type Http2Limits = ServerConfig['http2_limits'];
export type TlsConfig = NonNullable<ServerConfig['tls']>;
export type LoadBalancingConfig = z.infer<typeof loadBalancingSchema>;
/** A service's and an upstream's own `tls` blocks, as written. */
export type ServiceTlsConfig = z.output<typeof serviceTlsSchema>;
export type UpstreamTlsConfig = z.output<typeof upstreamTlsSchema>;
export type RouteConfig = z.infer<typeof routeSchema>;
export type RouteMatchConfig = RouteConfig['match'];
export type HeaderEdits = RouteConfig['request_headers'];
export type UpstreamConfig = LoadBalancingConfig['upstreams'][number];
export type AuthConfig = Config['middleware']['auth'];
export type JwtConfig = NonNullable<AuthConfig['jwt']>;
/** One scheme: the top-level `auth` block, or an entry of its `any_of`. */
export type AuthSchemeConfig = z.infer<typeof authSchemeSchema>;
export type RateLimitConfig = Config['middleware']['rate_limit'];
export type StoreConfig = RateLimitConfig['store'];
export type RedisStoreConfig = Extract<StoreConfig, { type: 'redis' }>;
export type LoggingConfig = Config['logging'];
export type { AdminConfig, MetricsConfig, TracingConfig } from './observability-schema.js';
export type { RouteWebsocketConfig, WebsocketConfig } from './websocket-schema.js';
export type Strategy = (typeof STRATEGIES)[number];
export type LogLevel = (typeof LOG_LEVELS)[number];
