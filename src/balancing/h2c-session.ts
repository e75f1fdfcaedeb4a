/**
 * The connection to an h2c upstream (`protocol: h2c`: HTTP/2 with prior knowledge, no TLS, what a
 * plaintext gRPC server speaks): one node:http2 client session, made on the first request, made again
 * when it closes or the upstream sends GOAWAY, carrying every request of the backend as a stream.
 *
 * Why not undici (7.30), which does the rest of the upstream I/O: its HTTP/2 client sends a request with a
 * streamed body (every gRPC call) only on a connection with nothing else running, so calls do not share
 * connections, and it cannot send request trailers. Measured on the same loaded 2-core machine, 10 callers
 * in a loop against one grpc-js server: undici 786-1,038 calls/s over 10 connections, this session
 * 2,298-4,773 calls/s over one.
 *
 * It takes the same dispatch options and handler as an undici Pool (the subset the pipeline and the
 * health checks use), so ForwardHandler serves both: onConnect once the session is up (the request body is
 * piped only then, so a refused connection consumed nothing and can be retried), onHeaders with raw header
 * lines, onData with backpressure, onComplete with the trailers (node:http2's object), onError once.
 */
import { connect, constants, type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';
import { connect as netConnect } from 'node:net';
import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';

export interface H2cOptions {
  connectTimeoutMs: number;
  /** Until the response head, and between two pieces of the response; 0 for none. */
  responseTimeoutMs: number;
  /** A session with no stream for this long is closed (GOAWAY). */
  idleTimeoutMs: number;
}

/** Where a request's trailers are, once its body has ended: the client's request (undici has no such option). */
export interface RequestTrailers {
  readonly trailers: NodeJS.Dict<string>;
}

/** What the pipeline and the health checks dispatch: undici's options, of which these are read. */
type H2cDispatchOptions = Pick<Dispatcher.DispatchOptions, 'path' | 'method' | 'headers' | 'body'> & { trailersFrom?: RequestTrailers };

/** An error with the code fromUpstreamError maps (proxy/errors.ts), as undici's would carry. */
function coded(message: string, code: string): Error {
  return Object.assign(new Error(message), { code });
}

export class H2cSession {
  readonly #origin: string;
  readonly #options: H2cOptions;
  #session: ClientHttp2Session | undefined = undefined;
  #connected = false;
  /** Requests waiting for the session to connect. */
  #waiting: H2cRequest[] = [];
  #closed = false;

  constructor(origin: string, options: H2cOptions) {
    this.#origin = origin;
    this.#options = options;
  }

  /** Sends one request; the handler hears of everything that happens to it. Returns true (never busy). */
  dispatch(options: H2cDispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    if (this.#closed) {
      handler.onError?.(coded('the upstream connection is closed', 'UND_ERR_CLOSED'));
      return true;
    }
    const session = this.#usableSession();
    const request = new H2cRequest(session, options, handler, this.#options.responseTimeoutMs);
    if (this.#connected) request.start();
    else this.#waiting.push(request);
    return true;
  }

  /** Closes the session once its streams are done. */
  async close(): Promise<void> {
    this.#closed = true;
    const session = this.#session;
    if (session === undefined || session.destroyed) return;
    await new Promise<void>((resolve) => {
      session.once('close', () => resolve());
      if (!session.closed) session.close();
    });
  }

  /** Closes the session now. */
  async destroy(): Promise<void> {
    this.#closed = true;
    this.#session?.destroy();
  }

  #usableSession(): ClientHttp2Session {
    const current = this.#session;
    if (current !== undefined && !current.closed && !current.destroyed) return current;
    this.#connected = false;
    const { hostname, port } = new URL(this.#origin);
    const host = hostname.startsWith('[') ? hostname.slice(1, -1) : hostname;
    // Nagle off, as undici's connections have it: a request's last small frame would wait for an ACK.
    const session = connect(this.#origin, { settings: { enablePush: false }, createConnection: () => netConnect({ host, port: Number(port), noDelay: true }) });
    this.#session = session;
    const timer = setTimeout(() => session.destroy(coded(`connect timed out after ${this.#options.connectTimeoutMs} ms`, 'UND_ERR_CONNECT_TIMEOUT')), this.#options.connectTimeoutMs);
    timer.unref();
    session.once('connect', () => {
      clearTimeout(timer);
      if (this.#session === session) this.#connected = true;
      const waiting = this.#waiting;
      this.#waiting = [];
      for (const request of waiting) request.start();
    });
    // A session that fails before it connects fails its waiting requests with its error; after, each
    // stream reports its own end.
    session.on('error', (err: Error) => {
      clearTimeout(timer);
      if (this.#session === session && !this.#connected) this.#failWaiting(err);
    });
    session.once('close', () => {
      clearTimeout(timer);
      if (this.#session === session) {
        if (!this.#connected) this.#failWaiting(coded('the upstream closed the connection', 'UND_ERR_SOCKET'));
        this.#session = undefined;
        this.#connected = false;
      }
    });
    // New requests go to a new session; the streams it keeps finish on this one.
    session.once('goaway', () => {
      if (this.#session === session) this.#session = undefined;
    });
    session.setTimeout(this.#options.idleTimeoutMs, () => {
      if (session.closed) return;
      session.close();
      if (this.#session === session) this.#session = undefined;
    });
    // Idle sessions must not hold the process open.
    session.unref();
    return session;
  }

  #failWaiting(err: Error): void {
    const waiting = this.#waiting;
    this.#waiting = [];
    for (const request of waiting) request.fail(err);
  }
}

/** One request: a stream on the session, reported to an undici-style handler exactly once. */
class H2cRequest {
  readonly #session: ClientHttp2Session;
  readonly #options: H2cDispatchOptions;
  readonly #handler: Dispatcher.DispatchHandler;
  readonly #timeoutMs: number;
  #stream: ClientHttp2Stream | undefined = undefined;
  #done = false;
  #responded = false;
  #trailers: IncomingHttpHeaders | null = null;

  constructor(session: ClientHttp2Session, options: H2cDispatchOptions, handler: Dispatcher.DispatchHandler, timeoutMs: number) {
    this.#session = session;
    this.#options = options;
    this.#handler = handler;
    this.#timeoutMs = timeoutMs;
  }

  start(): void {
    const session = this.#session;
    if (session.destroyed || session.closed) {
      this.fail(coded('the upstream connection closed before the request was sent', 'ECONNREFUSED'));
      return;
    }
    const body = this.#options.body as Readable | Buffer | null | undefined;
    let stream: ClientHttp2Stream;
    try {
      const endStream = body === null || body === undefined;
      // With a body, the stream waits for its trailers, so the client's (if it sent any) follow the body.
      stream = session.request(requestHeaders(this.#options), { endStream, waitForTrailers: !endStream });
    } catch (err) {
      this.fail(err as Error);
      return;
    }
    this.#stream = stream;
    stream.on('response', (headers) => this.#response(headers));
    stream.on('data', (chunk: Buffer) => {
      if (this.#done) return;
      if (this.#handler.onData?.(chunk) === false) stream.pause();
    });
    stream.on('trailers', (trailers) => {
      this.#trailers = trailers;
    });
    stream.on('end', () => this.#end());
    stream.on('wantTrailers', () => {
      try {
        stream.sendTrailers(forwardedTrailers(this.#options.trailersFrom));
      } catch {
        stream.sendTrailers({}); // a field node:http2 refuses: the stream still has to end
      }
    });
    stream.on('error', (err: Error) => this.fail(err));
    stream.on('close', () => {
      if (this.#done) return;
      // Closed without an end: reset by the upstream (or the session went away). REFUSED_STREAM says the
      // upstream did not process it (RFC 9113 §8.7): safe to try elsewhere.
      const code = stream.rstCode ?? constants.NGHTTP2_INTERNAL_ERROR;
      if (code === constants.NGHTTP2_REFUSED_STREAM) this.fail(coded('the upstream refused the stream (REFUSED_STREAM)', 'ECONNREFUSED'));
      else this.fail(coded(`the upstream reset the stream (HTTP/2 error code ${code})`, 'UND_ERR_SOCKET'));
    });
    if (this.#timeoutMs > 0) {
      stream.setTimeout(this.#timeoutMs, () => {
        const timeout = this.#responded ? coded('the upstream paused its response too long', 'UND_ERR_BODY_TIMEOUT') : coded('the upstream sent no response head in time', 'UND_ERR_HEADERS_TIMEOUT');
        this.#abort(timeout);
      });
    }
    try {
      this.#handler.onConnect?.((err?: Error) => this.#abort(err ?? coded('request aborted', 'UND_ERR_ABORTED')));
    } catch (err) {
      this.#abort(err as Error);
      throw err;
    }
    if (this.#done || body === null || body === undefined) return;
    if (Buffer.isBuffer(body)) stream.end(body);
    else {
      body.on('error', (err: Error) => this.#abort(err));
      body.pipe(stream);
    }
  }

  #response(headers: IncomingHttpHeaders): void {
    if (this.#done) return;
    this.#responded = true;
    const stream = this.#stream as ClientHttp2Stream;
    const status = Number(headers[':status']);
    const resume = (): void => {
      if (!this.#done) stream.resume();
    };
    if (this.#handler.onHeaders?.(status, rawLines(headers), resume, '') === false) stream.pause();
  }

  #end(): void {
    if (this.#done) return;
    // A reset ends the readable side too, with the stream's code already set: that is no complete response.
    const code = (this.#stream as ClientHttp2Stream).rstCode;
    if (code !== undefined && code !== constants.NGHTTP2_NO_ERROR) {
      this.fail(coded(`the upstream reset the stream (HTTP/2 error code ${code})`, 'UND_ERR_SOCKET'));
      return;
    }
    if (!this.#responded) {
      this.fail(coded('the upstream ended the stream without a response', 'UND_ERR_SOCKET'));
      return;
    }
    this.#done = true;
    this.#handler.onComplete?.(this.#trailers as unknown as string[] | null);
  }

  /** Cancels the stream (RST_STREAM CANCEL) and reports `err`. */
  #abort(err: Error): void {
    if (this.#done) return;
    const stream = this.#stream;
    if (stream !== undefined && !stream.destroyed) stream.close(constants.NGHTTP2_CANCEL);
    this.fail(err);
  }

  /** Reports `err` to the handler, once (also for a request that never got its stream: nothing was sent). */
  fail(err: Error): void {
    if (this.#done) return;
    this.#done = true;
    const body = this.#options.body as Readable | Buffer | null | undefined;
    if (body !== null && body !== undefined && !Buffer.isBuffer(body) && !body.destroyed) body.destroy();
    this.#handler.onError?.(err);
  }
}

/** The request's header lines (names and values alternating) as node:http2 takes them; Host becomes :authority. */
function requestHeaders(options: H2cDispatchOptions): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = { ':method': options.method, ':path': options.path };
  const lines = options.headers as string[] | undefined;
  if (lines === undefined) return out;
  for (let i = 0; i + 1 < lines.length; i += 2) {
    let name = (lines[i] as string).toLowerCase();
    const value = lines[i + 1] as string;
    if (name === 'host') name = ':authority';
    const had = out[name];
    if (had === undefined) out[name] = value;
    else if (Array.isArray(had)) had.push(value);
    else out[name] = [String(had), value];
  }
  return out;
}

/**
 * HTTP/1.1 and HTTP/2 fields that may not be trailers in HTTP/2 (node:http2 throws on the
 * connection-specific ones), or that say how to frame or route the message (RFC 9110 §6.5.1).
 */
const NOT_TRAILERS: ReadonlySet<string> = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer', 'host', 'content-length', 'content-type']);

/** The client's request trailers to send on, if any. */
function forwardedTrailers(source: RequestTrailers | undefined): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  const trailers = source?.trailers;
  if (trailers === undefined) return out;
  for (const name of Object.keys(trailers)) {
    const value = trailers[name];
    if (value === undefined || name.charCodeAt(0) === 58 || NOT_TRAILERS.has(name)) continue;
    out[name] = value;
  }
  return out;
}

/** Response headers as undici's raw lines (buffers), pseudo-headers left out. */
function rawLines(headers: IncomingHttpHeaders): Buffer[] {
  const raw: Buffer[] = [];
  for (const name of Object.keys(headers)) {
    if (name.charCodeAt(0) === 58) continue; // ':'
    const value = headers[name];
    if (value === undefined) continue;
    if (Array.isArray(value)) for (const v of value) raw.push(Buffer.from(name, 'latin1'), Buffer.from(v, 'latin1'));
    else raw.push(Buffer.from(name, 'latin1'), Buffer.from(String(value), 'latin1'));
  }
  return raw;
}
