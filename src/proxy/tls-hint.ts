import type { Logger } from 'pino';
import type { Backend } from '../balancing/backend.js';
import { acceptsTls, startsWithTlsRecord } from '../balancing/health/tls-sniff.js';
import { type Clock, monotonicClock } from '../util/clock.js';
import type { ProxyError } from './errors.js';

/** Asks whether an upstream speaks TLS; injected so tests can answer without a handshake. */
export type TlsSniff = (backend: Backend) => Promise<boolean>;

export const HINT_MSG = 'upstream answered with TLS: is it an https port? Give the upstream tls: { enabled: true }';

/**
 * Explains a 502 from a plain-HTTP upstream that is really a TLS server (a common mistake: an https port
 * configured without `tls`), which otherwise shows only as "other side closed" or a parse error. Runs on the
 * failure path only. At most one hint (and one handshake) per backend per `intervalMs` (the time is kept on
 * the backend, so a reload does not start it afresh).
 */
export class TlsHint {
  readonly #logger: Logger;
  readonly #sniff: TlsSniff;
  readonly #intervalMs: number;
  readonly #clock: Clock;

  constructor(logger: Logger, options: { sniff?: TlsSniff; intervalMs?: number; clock?: Clock } = {}) {
    this.#logger = logger;
    this.#sniff = options.sniff ?? ((backend) => acceptsTls(backend.host, backend.port, 2_000));
    this.#intervalMs = options.intervalMs ?? 60_000;
    this.#clock = options.clock ?? monotonicClock;
  }

  /**
   * An attempt to `backend` failed before any response head. Logs the hint at once when the bytes undici
   * could not parse are a TLS record; when the upstream closed the connection without a byte and has never
   * answered a request, tries a TLS handshake off the request path and logs the hint if it completes.
   */
  check(backend: Backend, error: ProxyError, requestId: string): void {
    if (backend.tls !== undefined) return; // spoken to over TLS already: its failures say what they are
    const cause = error.cause as { name?: unknown; code?: unknown; data?: unknown } | undefined;
    if (cause === undefined) return;
    const tlsBytes = cause.name === 'HTTPParserError' && startsWithTlsRecord(cause.data);
    const closedSilently = (cause.code === 'UND_ERR_SOCKET' || cause.code === 'ECONNRESET') && !backend.answered;
    if (!tlsBytes && !closedSilently) return;
    const now = this.#clock();
    if (now - backend.tlsCheckedAt < this.#intervalMs) return;
    backend.tlsCheckedAt = now;
    if (tlsBytes) {
      this.#log(backend, requestId, 'the first bytes of its answer were a TLS record');
      return;
    }
    void this.#sniff(backend).then((speaksTls) => {
      if (speaksTls) this.#log(backend, requestId, 'it closed the connection without answering, and it completes a TLS handshake');
    });
  }

  #log(backend: Backend, requestId: string, reason: string): void {
    this.#logger.warn({ request_id: requestId, upstream: backend.name, upstream_addr: backend.address, reason }, HINT_MSG);
  }
}
