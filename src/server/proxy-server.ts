import { randomUUID } from 'node:crypto';
import { STATUS_CODES, createServer, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { ServerConfig } from '../config/schema.js';
import { ERROR_CATALOGUE, errorBody, type ErrorCode } from '../proxy/errors.js';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ListenError } from './listen-error.js';

/** An `upgrade` token in a Connection value, as Node's parser finds it (a little more widely: closing is safe). */
const UPGRADE_TOKEN = /(?:^|,)[ \t]*upgrade[ \t]*(?:,|$)/i;

/** What the listener hands requests to (the gateway, which passes each to its current generation). */
export interface RequestHandler {
  handle(req: IncomingMessage, res: ServerResponse): void;
  /** A request with `Expect: 100-continue` (Node sends no 100 by itself then). */
  handleExpectContinue(req: IncomingMessage, res: ServerResponse): void;
  /** Shutdown begins: new requests get 503 and every response closes its connection. */
  startDraining(): void;
  /**
   * Shutdown is about to close the connections still open: a request that ends from now on without its
   * whole response is cut off (logged and counted as such). Returns the requests in flight.
   */
  cutOff(): number;
}

export interface ProxyServerOptions {
  config: ServerConfig;
  handler: RequestHandler;
  logger: Logger;
  /** Runs after the last connection has closed during shutdown (close pools, stores). */
  onClosed?: () => Promise<void> | void;
  /**
   * Enforce max_connections by counting connections here instead of with Node's `maxConnections`. Cluster
   * workers need this: with Node's round-robin cluster, a worker that refuses a connection through
   * `maxConnections` hands it back to the primary, which offers it to the next worker, and round again
   * while every worker is full (3 waiting connections kept the primary at 47% CPU and each worker at 30%).
   * Counting here closes the extra connection right after accept, as a single process does.
   */
  countConnections?: boolean;
  /** A request Node's parser refused was answered with this status (metrics). */
  onRejected?: (status: number) => void;
}

/**
 * The downstream listener: node:http with Tollgate's limits, plus the ordered shutdown (stop accepting,
 * answer new requests with 503 and `Connection: close`, let in-flight requests finish, cut what is left
 * when the grace period ends).
 */
export class ProxyServer {
  readonly server: Server;
  readonly #config: ServerConfig;
  readonly #handler: RequestHandler;
  readonly #logger: Logger;
  readonly #onClosed: (() => Promise<void> | void) | undefined;
  readonly #onRejected: ((status: number) => void) | undefined;
  #shutdown: Promise<void> | undefined;
  /** The remaining connections have been (or are being) closed. */
  #cutting = false;
  #refused = 0;
  #refusedLogged = 0;
  #refusedTimer: NodeJS.Timeout | undefined;
  /** Open connections, when counted here (countConnections). */
  #open = 0;
  /** The last response begun on each connection, so a parse error after it is answered only once it is done. */
  readonly #lastResponse = new WeakMap<Duplex, ServerResponse>();

  constructor(options: ProxyServerOptions) {
    this.#config = options.config;
    this.#handler = options.handler;
    this.#logger = options.logger;
    this.#onClosed = options.onClosed;
    this.#onRejected = options.onRejected;
    const config = options.config;
    const server = createServer(
      {
        keepAliveTimeout: config.keepalive_timeout_ms,
        headersTimeout: config.header_timeout_ms,
        // Whole-request time is not limited: body_timeout_ms limits pauses instead, so big uploads work.
        requestTimeout: 0,
        // Node checks header timeouts on this interval (30 s by default): 1 s keeps them within a second.
        connectionsCheckingInterval: 1_000,
        maxHeaderSize: config.max_header_bytes,
        // Never set insecureHTTPParser: llhttp's strict mode is what refuses smuggling attempts.
        insecureHTTPParser: false,
        // The pipeline refuses a missing Host itself (400 with Tollgate's body and request id, logged): Node's
        // own refusal was written where Tollgate could not see it, and a parse error after it got a second 400.
        requireHostHeader: false,
      },
      (req, res) => {
        this.#begin(req, res);
        this.#handler.handle(req, res);
      },
    );
    // One more than the limit, so that a request over it is seen (and refused) rather than silently cut.
    server.maxHeadersCount = config.max_header_count + 1;
    server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
      this.#begin(req, res);
      this.#handler.handleExpectContinue(req, res);
    });
    // An Expect other than 100-continue is ignored (RFC 9110 allows it; nginx does the same) rather than
    // answered 417 by Node, unseen by the pipeline; Expect itself is never forwarded.
    server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
      this.#begin(req, res);
      this.#handler.handle(req, res);
    });
    if (options.countConnections === true) {
      const max = options.config.max_connections;
      const closed = (): void => {
        this.#open--;
      };
      server.on('connection', (socket: Socket) => {
        if (this.#open >= max) {
          socket.destroy();
          this.#connectionRefused();
          return;
        }
        this.#open++;
        socket.once('close', closed);
      });
    } else {
      // Connections past the limit are closed by Node right after accept; 'drop' tells us about each.
      server.maxConnections = options.config.max_connections;
      server.on('drop', () => this.#connectionRefused());
    }
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => this.#clientError(err, socket));
    this.server = server;
  }

  /** Connections refused since start (over `max_connections`). */
  get refusedConnections(): number {
    return this.#refused;
  }

  /** Listens on `listen_address:listen_port`; rejects with a ListenError (the port is taken, ...). */
  listen(): Promise<AddressInfo> {
    const { listen_port: port, listen_address: host } = this.#config;
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(new ListenError('proxy', host, port, err));
      this.server.once('error', onError);
      this.server.listen({ port, host }, () => {
        this.server.off('error', onError);
        resolve(this.server.address() as AddressInfo);
      });
    });
  }

  /** Graceful shutdown; resolves when every connection is closed. Safe to call more than once. */
  shutdown(): Promise<void> {
    this.#shutdown ??= this.#drain();
    return this.#shutdown;
  }

  /**
   * Shutdown without waiting (a second signal): starts it if it has not begun and closes the connections
   * still open now, as when the grace period runs out. Resolves when the shutdown is complete.
   */
  closeNow(): Promise<void> {
    const done = this.shutdown();
    this.#cutRemaining('closing the remaining connections now');
    return done;
  }

  async #drain(): Promise<void> {
    this.#handler.startDraining();
    const grace = this.#config.shutdown_grace_ms;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    const open = await new Promise<number>((resolve) => this.server.getConnections((_e, n) => resolve(n)));
    this.#logger.info({ open_connections: open, grace_ms: grace }, 'shutting down: no longer accepting connections');
    const deadline = setTimeout(() => this.#cutRemaining('shutdown grace period over: closing the remaining connections'), grace);
    await closed;
    clearTimeout(deadline);
    if (this.#refusedTimer !== undefined) clearTimeout(this.#refusedTimer);
    await this.#onClosed?.();
    this.#logger.info('shutdown complete');
  }

  /** Closes every connection still open; the requests on them are cut off, each logged by the pipeline. */
  #cutRemaining(message: string): void {
    if (this.#cutting) return;
    this.#cutting = true;
    this.server.getConnections((_e, open) => {
      const requests = this.#handler.cutOff();
      this.#logger.warn({ open_connections: open, requests_in_flight: requests }, message);
      this.server.closeAllConnections();
    });
  }

  /**
   * Every request, before the pipeline sees it. A request with `Upgrade` and an `upgrade` token in
   * `Connection` is answered as an ordinary request (Tollgate upgrades nothing), but Node's parser treats it
   * as the last HTTP on the connection: bytes after it in the same read are dropped, and a parse error in its
   * body is never reported. So its response closes the connection: the requests before it are answered in
   * order, and a client that pipelined more after it sees the close and sends them again (RFC 9112 §9.3.2),
   * instead of waiting for answers that would never come.
   */
  #begin(req: IncomingMessage, res: ServerResponse): void {
    const socket = req.socket;
    this.#lastResponse.set(socket, res);
    if (req.headers.upgrade !== undefined && UPGRADE_TOKEN.test(req.headers.connection ?? '')) res.shouldKeepAlive = false;
    if (res.socket === null) this.#closeWithConnection(res, socket);
  }

  /**
   * A response queued behind another one (pipelining) gets no 'close' from Node when the connection ends
   * before its turn: it is destroyed without a socket, and 'close' is tied to the socket. The pipeline learns
   * that its client left from 'close', so without this the request stayed in flight for good (its upstream
   * request waiting for a body that would never come, shutdown waiting for it).
   */
  #closeWithConnection(res: ServerResponse, socket: Socket): void {
    const gone = (): void => {
      if (res.socket !== null || res.closed) return;
      res.destroy();
      res.emit('close');
    };
    socket.once('close', gone);
    res.once('socket', () => socket.off('close', gone));
  }

  /**
   * Requests Node's parser rejects (malformed, head too large, head too slow) never reach the pipeline:
   * they are answered here, with the same JSON error body and headers, logged, and the connection closed.
   */
  #clientError(err: NodeJS.ErrnoException, socket: Duplex): void {
    const code: ErrorCode =
      err.code === 'HPE_HEADER_OVERFLOW' ? 'headers_too_large' : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 'request_timeout' : 'bad_request';
    const requestId = randomUUID();
    const client = (socket as Socket).remoteAddress ?? '';
    // A client that hangs up mid-request (EOF or reset) is gone: there is nobody to answer. The request,
    // if it had begun, is logged by the pipeline (status 499 or whatever was answered).
    if (err.code === 'ECONNRESET' || err.code === 'HPE_INVALID_EOF_STATE' || !socket.writable) {
      socket.destroy();
      return;
    }
    // Node parses pipelined requests ahead of the responses. When the bad bytes come after a request read
    // whole (or after a response has begun), that request's response is still to be written: an error
    // written now would reach the client in its place (taken as the answer to the earlier request) or after
    // its `Connection: close`. The error is answered once that response is done, if the connection is
    // still open then.
    // (A response is done once Node has detached it from the socket, after 'finish': writableFinished alone
    // turns true as soon as the bytes are handed to the socket, before Node closes for `Connection: close`.)
    const pending = this.#lastResponse.get(socket);
    const done = pending === undefined || pending.destroyed || (pending.writableFinished && pending.socket === null);
    if (!done && (pending.headersSent || pending.req.complete)) {
      pending.once('finish', () => this.#clientError(err, socket));
      pending.once('close', () => {
        if (!pending.writableFinished) socket.destroy();
      });
      return;
    }
    // The bad bytes are the last request's own (its body), so the error is that request's answer: it takes
    // that response's turn. While a response before it is still being written (pipelining), the last one has
    // no socket yet; Node hands it the socket once the earlier ones are done, and never when one of them
    // closed the connection (a second answer after `Connection: close`, or an answer cutting off the earlier
    // response, was what writing at once did).
    if (!done && pending.socket === null) {
      pending.once('socket', () => this.#clientError(err, socket));
      pending.once('close', () => {
        if (pending.socket === null) socket.destroy();
      });
      return;
    }
    const { status } = ERROR_CATALOGUE[code];
    const message = code === 'bad_request' ? 'The request is malformed HTTP.' : ERROR_CATALOGUE[code].message;
    const body = JSON.stringify(errorBody(code, message, requestId));
    socket.end(
      `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\nContent-Type: application/json; charset=utf-8\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\nX-Proxy-By: ${this.#config.proxy_name}\r\n` +
        `X-Request-ID: ${requestId}\r\nX-Response-Time: 0ms\r\n\r\n${body}`,
      // Fully closed once written, not left half-open: a slowloris client never reads or closes its side.
      () => socket.destroy(),
    );
    setTimeout(() => socket.destroy(), 1_000).unref();
    this.#logger.info({ request_id: requestId, client, status, error: code, cause: err.code ?? err.message }, 'Request Completed');
    this.#onRejected?.(status);
  }

  #connectionRefused(): void {
    this.#refused++;
    // One line a second at most, with the count, so a flood does not become a flood of log lines.
    if (this.#refusedTimer !== undefined) return;
    this.#logRefused();
    this.#refusedTimer = setTimeout(() => {
      this.#refusedTimer = undefined;
      if (this.#refused > this.#refusedLogged) this.#logRefused();
    }, 1000);
    this.#refusedTimer.unref();
  }

  #logRefused(): void {
    this.#logger.warn(
      { refused: this.#refused - this.#refusedLogged, refused_total: this.#refused, max_connections: this.#config.max_connections },
      'connection refused: max_connections reached',
    );
    this.#refusedLogged = this.#refused;
  }
}
