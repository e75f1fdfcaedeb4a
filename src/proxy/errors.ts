/**
 * The one error base of the proxy and its catalogue. Every response Tollgate generates itself (rather than
 * relaying from an upstream) comes from an entry here; docs/errors.md lists the same entries and a test
 * keeps the two in step.
 */

/** Where a failure came from, as Pingora's ErrorSource: the client, the upstream, or Tollgate itself. */
export type ErrorSource = 'downstream' | 'upstream' | 'internal';

export interface ErrorSpec {
  readonly status: number;
  readonly source: ErrorSource;
  /** Safe to try again on another upstream (nothing reached the upstream). */
  readonly retryable: boolean;
  readonly message: string;
}

export const ERROR_CATALOGUE = {
  bad_request: { status: 400, source: 'downstream', retryable: false, message: 'The request could not be understood.' },
  unauthorized: { status: 401, source: 'downstream', retryable: false, message: 'Missing or invalid credentials.' },
  forbidden: { status: 403, source: 'downstream', retryable: false, message: 'The client certificate is not allowed here.' },
  not_found: { status: 404, source: 'downstream', retryable: false, message: 'No such resource.' },
  no_route: { status: 404, source: 'downstream', retryable: false, message: 'No route matches the request.' },
  request_timeout: { status: 408, source: 'downstream', retryable: false, message: 'The request was not received in time.' },
  payload_too_large: { status: 413, source: 'downstream', retryable: false, message: 'The request body is larger than the proxy accepts.' },
  uri_too_long: { status: 414, source: 'downstream', retryable: false, message: 'The request target is too long.' },
  headers_too_large: { status: 431, source: 'downstream', retryable: false, message: 'The request headers are too large.' },
  rate_limited: { status: 429, source: 'downstream', retryable: false, message: 'Too many requests; retry after the time in Retry-After.' },
  internal_error: { status: 500, source: 'internal', retryable: false, message: 'The proxy failed to handle the request.' },
  not_implemented: { status: 501, source: 'downstream', retryable: false, message: 'The request uses a transfer coding the proxy does not support.' },
  bad_gateway: { status: 502, source: 'upstream', retryable: true, message: 'The upstream could not be reached or failed while answering.' },
  upstream_tls: { status: 502, source: 'upstream', retryable: true, message: 'The TLS handshake with the upstream failed.' },
  no_upstream: { status: 503, source: 'internal', retryable: false, message: 'No upstream is available.' },
  auth_unavailable: { status: 503, source: 'internal', retryable: false, message: 'The authentication service did not answer in time; retry later.' },
  rate_limit_unavailable: { status: 503, source: 'internal', retryable: false, message: 'The rate limit cannot be checked right now; retry after the time in Retry-After.' },
  shutting_down: { status: 503, source: 'internal', retryable: false, message: 'The proxy is shutting down; retry on a new connection.' },
  too_many_websockets: { status: 503, source: 'internal', retryable: false, message: 'Too many WebSocket connections are open; retry after the time in Retry-After.' },
  cut_off: { status: 503, source: 'internal', retryable: false, message: 'The proxy shut down before the response was complete.' },
  upstream_timeout: { status: 504, source: 'upstream', retryable: false, message: 'The upstream did not answer in time.' },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERROR_CATALOGUE;

/** A failure with a stable code; the proxy turns it into `{error, message, status, request_id}`. */
export class ProxyError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly source: ErrorSource;
  readonly retryable: boolean;
  /** Sent to the client as it is instead of the JSON error body (forward auth relays its service's refusal). */
  readonly response: RelayedResponse | undefined;

  constructor(code: ErrorCode, options?: { message?: string; cause?: unknown; retryable?: boolean; response?: RelayedResponse }) {
    const spec: ErrorSpec = ERROR_CATALOGUE[code];
    super(options?.message ?? spec.message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ProxyError';
    this.code = code;
    this.status = spec.status;
    this.source = spec.source;
    this.retryable = options?.retryable ?? spec.retryable;
    this.response = options?.response;
  }
}

/**
 * gRPC status codes (grpc/grpc doc/statuscodes.md) that Tollgate answers gRPC requests with. `OK` is
 * never Tollgate's own; it is here for the trailers of a relayed response.
 */
export const GRPC_STATUS = {
  OK: 0,
  UNKNOWN: 2,
  DEADLINE_EXCEEDED: 4,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNIMPLEMENTED: 12,
  UNAUTHENTICATED: 16,
} as const;

/**
 * The gRPC status of each catalogue code, for a refusal or failure of a gRPC request (answered as a
 * trailers-only response: HTTP 200 and this status; docs/errors.md#grpc-requests). After the HTTP-to-gRPC
 * mapping of grpc/grpc doc/http-grpc-status-mapping.md (400 INTERNAL, 401 UNAUTHENTICATED, 403
 * PERMISSION_DENIED, 404 UNIMPLEMENTED, 502/503/504 UNAVAILABLE), except where the catalogue knows more
 * than the status: a rate limit or a size limit is RESOURCE_EXHAUSTED (what gRPC servers answer for their
 * own quotas and message sizes), a timeout DEADLINE_EXCEEDED.
 */
export const GRPC_STATUS_OF: Readonly<Partial<Record<ErrorCode, number>>> = {
  bad_request: GRPC_STATUS.INTERNAL,
  unauthorized: GRPC_STATUS.UNAUTHENTICATED,
  forbidden: GRPC_STATUS.PERMISSION_DENIED,
  not_found: GRPC_STATUS.UNIMPLEMENTED,
  no_route: GRPC_STATUS.UNIMPLEMENTED,
  request_timeout: GRPC_STATUS.DEADLINE_EXCEEDED,
  payload_too_large: GRPC_STATUS.RESOURCE_EXHAUSTED,
  uri_too_long: GRPC_STATUS.RESOURCE_EXHAUSTED,
  headers_too_large: GRPC_STATUS.RESOURCE_EXHAUSTED,
  rate_limited: GRPC_STATUS.RESOURCE_EXHAUSTED,
  internal_error: GRPC_STATUS.INTERNAL,
  not_implemented: GRPC_STATUS.UNIMPLEMENTED,
  bad_gateway: GRPC_STATUS.UNAVAILABLE,
  upstream_tls: GRPC_STATUS.UNAVAILABLE,
  no_upstream: GRPC_STATUS.UNAVAILABLE,
  rate_limit_unavailable: GRPC_STATUS.UNAVAILABLE,
  shutting_down: GRPC_STATUS.UNAVAILABLE,
  cut_off: GRPC_STATUS.UNAVAILABLE,
  upstream_timeout: GRPC_STATUS.DEADLINE_EXCEEDED,
  auth_unavailable: GRPC_STATUS.UNAVAILABLE,
};

/** The gRPC status for a catalogue code: its entry above, else from its HTTP status as gRPC maps one. */
export function grpcStatusOf(code: ErrorCode): number {
  const own = GRPC_STATUS_OF[code];
  if (own !== undefined) return own;
  switch (ERROR_CATALOGUE[code].status) {
    case 400:
      return GRPC_STATUS.INTERNAL;
    case 401:
      return GRPC_STATUS.UNAUTHENTICATED;
    case 403:
      return GRPC_STATUS.PERMISSION_DENIED;
    case 404:
      return GRPC_STATUS.UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
      return GRPC_STATUS.UNAVAILABLE;
    default:
      return GRPC_STATUS.UNKNOWN;
  }
}

/**
 * grpc-message as the gRPC HTTP/2 protocol sends it: percent-encoded UTF-8, with the printable ASCII
 * except `%` left as it is.
 */
export function grpcMessage(message: string): string {
  if (/^[\x20-\x24\x26-\x7e]*$/.test(message)) return message;
  let out = '';
  for (const byte of Buffer.from(message, 'utf8')) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** A response to relay: its status, headers (name, value, ...; no framing or hop-by-hop ones) and whole body. */
export interface RelayedResponse {
  readonly status: number;
  readonly headers: readonly string[];
  readonly body: Buffer;
}

const REQUEST_ID = Symbol('tollgate.requestId');

/**
 * Marks an error that escapes the handling of a request (it will end the process: see exitOnFatalErrors)
 * with that request's id, so the fatal log line can name the request; returns the error, to be rethrown.
 * The first mark stays (the innermost request). Values that cannot carry it (a thrown string, a frozen
 * object) are returned unmarked. Not AsyncLocalStorage: entering it per request cost 5.2% more instructions
 * per request on Node 20 (215,416 against 204,790, bench/instructions.mjs, the standard config), where a
 * try/catch around the pipeline's entry points costs nothing until something throws.
 */
export function markRequest(err: unknown, requestId: string): unknown {
  if (typeof err === 'object' && err !== null && !Object.hasOwn(err, REQUEST_ID)) {
    try {
      Object.defineProperty(err, REQUEST_ID, { value: requestId });
    } catch {
      // Frozen or a proxy that refuses: unmarked.
    }
  }
  return err;
}

/** The request id `markRequest` put on an error, if any. */
export function requestIdOf(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const id = (err as { [REQUEST_ID]?: unknown })[REQUEST_ID];
  return typeof id === 'string' ? id : undefined;
}

/** The JSON body of every response Tollgate generates for an error (docs/errors.md). */
export function errorBody(code: ErrorCode, message: string, requestId: string): { error: ErrorCode; message: string; status: number; request_id: string } {
  return { error: code, message, status: ERROR_CATALOGUE[code].status, request_id: requestId };
}

const TIMEOUT_CODES = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'ETIMEDOUT']);
/** Failures where the upstream cannot have seen the request, so another upstream may be tried. */
const BEFORE_SEND_CODES = new Set(['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH']);

/**
 * OpenSSL's certificate verification results as Node gives them (`err.code`), and the name check's: the
 * handshake stopped before a byte of the request was sent.
 */
const CERTIFICATE_CODES = new Set([
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'CERT_REVOKED',
  'CERT_SIGNATURE_FAILURE',
  'INVALID_CA',
  'INVALID_PURPOSE',
  'PATH_LENGTH_EXCEEDED',
  'HOSTNAME_MISMATCH',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/** A failure of the TLS layer with an upstream: a certificate refused, or an alert or protocol error from OpenSSL. */
export function isTlsFailure(code: string): boolean {
  return CERTIFICATE_CODES.has(code) || code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_');
}

/** Maps an error from the upstream client (undici or the socket) to the proxy's catalogue. */
export function fromUpstreamError(err: unknown): ProxyError {
  if (err instanceof ProxyError) return err;
  const code = (err as { code?: string } | null)?.code ?? '';
  // Refused in the handshake: nothing was sent, so another upstream may be tried.
  if (isTlsFailure(code)) return new ProxyError('upstream_tls', { cause: err });
  if (TIMEOUT_CODES.has(code)) {
    return new ProxyError('upstream_timeout', { cause: err, retryable: BEFORE_SEND_CODES.has(code) });
  }
  return new ProxyError('bad_gateway', { cause: err, retryable: BEFORE_SEND_CODES.has(code) });
}
