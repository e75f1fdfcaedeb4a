/**
 * HTTP/2 from clients: a node:http2 server that never listens itself. The proxy listener hands it the
 * connections that speak HTTP/2 (ALPN `h2` on TLS, the connection preface on a plain port with h2c), and
 * it hands each stream to the pipeline as a request, through node:http2's compatibility API.
 *
 * Per connection it adds the defences node:http2 and nghttp2 do not give by themselves (docs/tls.md#http2):
 * a limit on reset streams per second (rapid reset, CVE-2023-44487), on SETTINGS and PING frames per
 * second, and on the bytes a client sends that carry no request (WINDOW_UPDATE, PRIORITY, unknown frame
 * types, padding: floods node:http2 never shows to JavaScript), each ending the connection with GOAWAY
 * ENHANCE_YOUR_CALM; a first-request timeout and an
 * idle timeout (no stream open), each ending it with GOAWAY NO_ERROR. Concurrent streams, the header list
 * (size and fields, which also bounds CONTINUATION) and the HPACK table are SETTINGS nghttp2 enforces.
 */
import { constants, createServer, Http2ServerRequest, Http2ServerResponse, type Http2Server, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import type { IncomingHttpHeaders } from 'node:http';
import type { ReadableOptions } from 'node:stream';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { ServerConfig } from '../config/schema.js';
import type { RequestHandler } from './proxy-server.js';

/** The HTTP/2 connection preface (RFC 9113 §3.4): what an h2c client with prior knowledge sends first. */
export const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/** How long a connection over a limit stays after its GOAWAY ENHANCE_YOUR_CALM (see SessionGuard#calm). */
const CALM_LINGER_MS = 250;

/** Pseudo-headers a request carries (:method, :scheme, :authority, :path): not counted as header fields. */
const PSEUDO_HEADERS = 4;

/** How often each connection's overhead is checked (see SessionGuard#checkOverhead). */
const OVERHEAD_CHECK_MS = 1000;
/**
 * Overhead a connection may send for each byte of payload, on top of max_overhead_bytes_per_second: small
 * DATA frames (a streaming gRPC call sends one per message), and the WINDOW_UPDATE frames a client sends for
 * what it downloads, cost a few bytes of frame for each few bytes of payload.
 */
const OVERHEAD_PER_PAYLOAD_BYTE = 8;

/** Each connection's guard, found by the requests of its streams (H2Request). */
const guards = new WeakMap<ServerHttp2Session, SessionGuard>();

/**
 * The compatibility request, counting what its stream carries toward the connection's payload: the header
 * list when the stream opens, and each chunk of the body as node:http2 hands it over.
 */
export class H2Request extends Http2ServerRequest {
  readonly #guard: SessionGuard | undefined;

  constructor(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, options: ReadableOptions, rawHeaders: string[]) {
    super(stream, headers, options, rawHeaders);
    this.#guard = guards.get(stream.session as ServerHttp2Session);
    if (this.#guard !== undefined) {
      let bytes = 0;
      for (const field of rawHeaders) bytes += field.length;
      this.#guard.payload += bytes;
    }
  }

  override push(chunk: unknown, encoding?: BufferEncoding): boolean {
    if (this.#guard !== undefined && chunk !== null) this.#guard.payload += (chunk as Buffer).length;
    return super.push(chunk, encoding);
  }
}


/**
 * The compatibility response with the member the pipeline reads that node:http2 leaves out: `destroyed`
 * (the client reset the stream, or the connection closed), as node:http's ServerResponse has it.
 */
export class H2Response extends Http2ServerResponse<H2Request> {}
// (@types/node declares `destroyed` as a property, which a class may not override with an accessor.)
Object.defineProperty(H2Response.prototype, 'destroyed', {
  get(this: Http2ServerResponse): boolean {
    return this.stream.destroyed;
  },
});

export interface Http2DownstreamOptions {
  config: ServerConfig;
  handler: RequestHandler;
  logger: Logger;
}

export class Http2Downstream {
  readonly #server: Http2Server;
  readonly #sessions = new Set<ServerHttp2Session>();
  readonly #config: ServerConfig;
  readonly #logger: Logger;
  #draining = false;
  /** Checks every connection's overhead once a second while any is open. */
  #overheadTimer: NodeJS.Timeout | undefined;

  constructor(options: Http2DownstreamOptions) {
    const config = options.config;
    const limits = config.http2_limits;
    this.#config = config;
    this.#logger = options.logger;
    const handler = options.handler;
    this.#server = createServer({
      settings: {
        maxConcurrentStreams: limits.max_concurrent_streams,
        // The HTTP/1.1 head limit, as RFC 9113 counts a header list (each field's name and value plus 32).
        maxHeaderListSize: config.max_header_bytes,
        headerTableSize: limits.hpack_table_size,
        enablePush: false,
      },
      // One field more than max_header_count gets through to the pipeline, which answers 431 as on
      // HTTP/1.1; nghttp2 resets a stream with more (ENHANCE_YOUR_CALM).
      maxHeaderListPairs: config.max_header_count + PSEUDO_HEADERS + 1,
      // The HPACK table the server's own encoder keeps for this connection.
      maxDeflateDynamicTableSize: limits.hpack_table_size,
      Http2ServerRequest: H2Request,
      Http2ServerResponse: H2Response,
    });
    // A response sent before the client finished its request body is followed by RST_STREAM NO_ERROR, as
    // RFC 9113 §8.1 allows (node:http2 does it), where HTTP/1.1 closes the connection: the stream then no
    // longer counts against max_concurrent_streams.
    const serve = (req: Http2ServerRequest, res: Http2ServerResponse, expectsContinue: boolean): void => handler.handleH2(req, res, expectsContinue);
    this.#server.on('request', (req: Http2ServerRequest, res: Http2ServerResponse) => serve(req, res, false));
    this.#server.on('checkContinue', (req: Http2ServerRequest, res: Http2ServerResponse) => serve(req, res, true));
    // CONNECT too goes to the pipeline, which refuses it with its own 501 (node:http2 would answer 405 unseen).
    this.#server.on('connect', (req: Http2ServerRequest, res: Http2ServerResponse) => serve(req, res, false));
    this.#server.on('session', (session: ServerHttp2Session) => this.#watch(session));
    // A session that failed (a protocol error, a socket error) is destroyed by node:http2; nothing to answer.
    this.#server.on('sessionError', (err: NodeJS.ErrnoException, session: ServerHttp2Session) => {
      this.#logger.debug({ client: session.socket?.remoteAddress, cause: err.code ?? err.message }, 'HTTP/2 connection failed');
    });
  }

  /** Takes a connection that speaks HTTP/2 (its bytes unread, or put back with `unshift`). */
  accept(socket: Socket): void {
    // node:http turns Nagle's algorithm off on its connections (noDelay); a connection handed over here
    // skips that. With it on, a response's last small frame (a gRPC call's trailers) waited for the
    // client's delayed ACK: 19 ms per sequential unary call against 2.9 ms without (grpc-js, loopback).
    socket.setNoDelay(true);
    this.#server.emit('connection', socket);
  }

  /** HTTP/2 connections open now. */
  get sessions(): number {
    return this.#sessions.size;
  }

  /**
   * Shutdown begins: every connection gets GOAWAY (NO_ERROR, naming its last stream) and closes once its
   * open streams are done; a connection that arrives from now on is closed the same way.
   */
  drain(): void {
    this.#draining = true;
    for (const session of this.#sessions) session.close();
  }

  /** Shutdown's grace period is over: every connection is closed now. */
  closeAll(): void {
    for (const session of this.#sessions) session.destroy();
  }

  #watch(session: ServerHttp2Session): void {
    this.#sessions.add(session);
    const guard = new SessionGuard(session, this.#config.http2_limits, this.#logger);
    guards.set(session, guard);
    session.once('close', () => {
      this.#sessions.delete(session);
      guard.stop();
      if (this.#sessions.size === 0 && this.#overheadTimer !== undefined) {
        clearInterval(this.#overheadTimer);
        this.#overheadTimer = undefined;
      }
    });
    if (this.#overheadTimer === undefined) {
      this.#overheadTimer = setInterval(() => {
        for (const open of this.#sessions) guards.get(open)?.checkOverhead();
      }, OVERHEAD_CHECK_MS);
      this.#overheadTimer.unref();
    }
    if (this.#draining) session.close();
  }
}

/**
 * One connection's limits that nghttp2 does not keep: resets and control frames per second, and the
 * connection's timers. Events that count are rare on a healthy connection, so each reads the clock itself.
 */
class SessionGuard {
  readonly #session: ServerHttp2Session;
  readonly #limits: ServerConfig['http2_limits'];
  readonly #logger: Logger;
  #open = 0;
  readonly #resets = new PerSecond();
  readonly #controlFrames = new PerSecond();
  #timer: NodeJS.Timeout | undefined;
  #ended = false;
  /** Bytes of requests received: header lists and bodies (counted by H2Request). */
  payload = 0;
  /** The streams open now: their bodies' bytes still held by node:http2 count as payload too. */
  readonly #streams = new Set<ServerHttp2Stream>();
  /** The socket's byte counts and the payload at the last check. */
  #lastRead = 0;
  #lastWritten = 0;
  #lastPayload = 0;

  constructor(session: ServerHttp2Session, limits: ServerConfig['http2_limits'], logger: Logger) {
    this.#session = session;
    this.#limits = limits;
    this.#logger = logger;
    session.on('stream', (stream: ServerHttp2Stream) => this.#stream(stream));
    // Each SETTINGS and PING frame from the client (node:http2 emits these only while someone listens).
    session.on('remoteSettings', () => this.#controlFrame());
    session.on('ping', () => this.#controlFrame());
    // A connection must bring its first request within the header timeout, as an HTTP/1.1 head must.
    this.#timer = setTimeout(() => this.#timeout('no request within http2_limits.header_timeout_ms'), limits.header_timeout_ms);
    this.#timer.unref();
  }

  stop(): void {
    this.#ended = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
  }

  #stream(stream: ServerHttp2Stream): void {
    if (this.#open++ === 0 && this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    this.#streams.add(stream);
    stream.once('close', () => {
      this.#streams.delete(stream);
      // What the stream received and nobody read (a refused request's body) is payload all the same.
      this.payload += stream.readableLength;
      if (stream.rstCode !== constants.NGHTTP2_NO_ERROR) this.#reset();
      if (--this.#open === 0 && !this.#ended) {
        this.#timer = setTimeout(() => this.#timeout('idle for http2_limits.idle_timeout_ms'), this.#limits.idle_timeout_ms);
        this.#timer.unref();
      }
    });
  }

  /** A stream ended with RST_STREAM (the client's, or one sent because of an error on it). */
  #reset(): void {
    if (this.#resets.count(performance.now()) > this.#limits.max_resets_per_second) this.#calm('http2_limits.max_resets_per_second');
  }

  #controlFrame(): void {
    if (this.#controlFrames.count(performance.now()) > this.#limits.max_control_frames_per_second) this.#calm('http2_limits.max_control_frames_per_second');
  }

  /**
   * Once a second: the bytes the client sent since the last check that carried no request. nghttp2 takes
   * WINDOW_UPDATE, PRIORITY and unknown frames, and padding, without telling JavaScript, so they are
   * counted as the socket's bytes read minus the payload (header lists, and bodies as they arrive). A client
   * may send max_overhead_bytes_per_second of them, plus 8 bytes for every byte of payload it sent or was
   * sent; past that, GOAWAY ENHANCE_YOUR_CALM (nginx has a similar check, over a connection's lifetime: docs/tls.md#http2).
   */
  checkOverhead(): void {
    const socket = this.#session.socket;
    if (this.#ended || this.#session.destroyed || socket === undefined || socket === null) return;
    let held = 0;
    for (const stream of this.#streams) held += stream.readableLength;
    const read = socket.bytesRead;
    const written = socket.bytesWritten;
    const payload = this.payload + held;
    const overhead = read - this.#lastRead - (payload - this.#lastPayload);
    const allowed = this.#limits.max_overhead_bytes_per_second + OVERHEAD_PER_PAYLOAD_BYTE * (payload - this.#lastPayload + written - this.#lastWritten);
    this.#lastRead = read;
    this.#lastWritten = written;
    this.#lastPayload = payload;
    if (overhead > allowed) this.#calm('http2_limits.max_overhead_bytes_per_second');
  }

  /** GOAWAY ENHANCE_YOUR_CALM and the connection closed: the client went over a limit. */
  #calm(limit: string): void {
    if (this.#ended || this.#session.destroyed) return;
    this.#ended = true;
    this.#logger.warn({ client: this.#session.socket?.remoteAddress, limit }, 'HTTP/2 connection closed: over a limit');
    // nghttp2 ignores the streams the client opens after a GOAWAY. The connection is closed a little later
    // rather than at once: closing a socket with unread bytes (a flood leaves plenty) sends a TCP reset,
    // and the client's system may then drop the GOAWAY before the client reads it.
    this.#session.goaway(constants.NGHTTP2_ENHANCE_YOUR_CALM);
    const session = this.#session;
    setTimeout(() => session.destroy(), CALM_LINGER_MS).unref();
  }

  #timeout(reason: string): void {
    this.#timer = undefined;
    if (this.#ended || this.#session.destroyed) return;
    this.#ended = true;
    this.#logger.debug({ client: this.#session.socket?.remoteAddress, reason }, 'HTTP/2 connection closed');
    // GOAWAY NO_ERROR; nothing is open, so node:http2 closes the connection at once.
    this.#session.close();
  }
}

/** Events in the current one-second window (a fixed window, restarted by the first event after it ends). */
class PerSecond {
  #count = 0;
  #windowStart = 0;

  /** Counts one event at `now` (ms) and returns the count of its window. */
  count(now: number): number {
    if (now - this.#windowStart >= 1000) {
      this.#windowStart = now;
      this.#count = 0;
    }
    return ++this.#count;
  }
}
