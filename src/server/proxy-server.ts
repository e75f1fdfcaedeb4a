import { randomUUID } from 'node:crypto';
import cluster from 'node:cluster';
import type { Server, ServerOptions } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { SecureContext, TLSSocket } from 'node:tls';
import { Server as NetServer, type AddressInfo, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { ServerConfig } from '../config/schema.js';
import { ERROR_CATALOGUE, errorBody, type ErrorCode } from '../proxy/errors.js';
import { createServer, IncomingMessage, ServerResponse, STATUS_CODES } from '../util/http.js';
import { isWebSocketUpgrade } from '../proxy/websocket.js';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import { H2_PREFACE, Http2Downstream } from './h2-downstream.js';
import { ListenError, type ListenerName } from './listen-error.js';
import type { TlsContexts } from './tls-contexts.js';

/** An `upgrade` token in a Connection value, as Node's parser finds it (a little more widely: closing is safe). */
const UPGRADE_TOKEN = /(?:^|,)[ \t]*upgrade[ \t]*(?:,|$)/i;

/**
 * Node decides which upgrade requests reach the 'upgrade' listener with `shouldUpgradeCallback` (Node 24,
 * 22.21); the others are ordinary requests, as without a listener. Without it (Node 20) the parser decides
 * by reading `req.upgrade` once the head is read, and WebSocketAwareMessage answers that read.
 */
const UPGRADE_CALLBACK = typeof (createServer() as unknown as { shouldUpgradeCallback?: unknown }).shouldUpgradeCallback === 'function';

const UPGRADE_FLAG = Symbol('tollgate.upgrade');

/**
 * Node 20's request class for the proxy listener: `upgrade` is true only for a WebSocket handshake (and
 * CONNECT, which Node hands to its own listener), so every other upgrade request (h2c, ...) stays an
 * ordinary request, exactly as it is without an 'upgrade' listener. The parser sets the flag before the
 * headers are added and reads it after, so the answer is computed when it is read.
 */
class WebSocketAwareMessage extends IncomingMessage {}
Object.defineProperty(WebSocketAwareMessage.prototype, 'upgrade', {
  get(this: IncomingMessage & { [UPGRADE_FLAG]?: boolean }): boolean {
    return this[UPGRADE_FLAG] === true && (this.method === 'CONNECT' || isWebSocketUpgrade(this));
  },
  set(this: IncomingMessage & { [UPGRADE_FLAG]?: boolean }, value: boolean) {
    this[UPGRADE_FLAG] = value;
  },
});

/** The code `#clientError` gets for a CONNECT request (not one of Node's). */
const CONNECT_REFUSED = 'TOLLGATE_CONNECT';

/** What the listener hands requests to (the gateway, which passes each to its current generation). */
export interface RequestHandler {
  handle(req: IncomingMessage, res: ServerResponse): void;
  /** A request with `Expect: 100-continue` (Node sends no 100 by itself then). */
  handleExpectContinue(req: IncomingMessage, res: ServerResponse): void;
  /** A request on an HTTP/2 stream (node:http2's compatibility objects); `expectsContinue` as above. */
  handleH2(req: Http2ServerRequest, res: Http2ServerResponse, expectsContinue: boolean): void;
  /**
   * A WebSocket handshake: `res` answers on the raw connection (and closes it) unless the upstream accepts
   * the WebSocket; `head` is what the client sent after the request head.
   */
  handleWebSocket(req: IncomingMessage, res: ServerResponse, head: Buffer): void;
  /** WebSockets open now. */
  readonly webSocketsOpen: number;
  /** Closes every open WebSocket (the grace period is over); returns how many there were. */
  closeWebSockets(): number;
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
  /** HTTPS with these certificates (`server.tls`); undefined: plain HTTP. */
  tls?: TlsContexts;
}

/**
 * The downstream listener: node:http (node:https with `server.tls`, and a plain redirect listener with
 * `redirect_http`) with Tollgate's limits, plus the ordered shutdown (stop accepting,
 * answer new requests with 503 and `Connection: close`, let in-flight requests finish, cut what is left
 * when the grace period ends).
 */
export class ProxyServer {
  readonly server: Server;
  /** The plain listener of `redirect_http`, answering 308 to https; undefined without it. */
  readonly redirectServer: Server | undefined;
  /** `:port` of the https listener in redirect Locations ('' for 443); known once it listens. */
  #httpsPortSuffix = '';
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
  /** Open connections, when counted here (countConnections, or several listening sockets). */
  #open = 0;
  /** How many sockets listen on the proxy port (server.listen_sockets where SO_REUSEPORT is there, else 1). */
  readonly #sockets: number;
  /** The proxy port's listening sockets besides `server`'s own, each handing its connections to `server`. */
  readonly #acceptors: NetServer[] = [];
  /** The certificates new handshakes get (a reload swaps them; open connections keep theirs). */
  #tls: TlsContexts | undefined;
  /** HTTP/2 connections (`server.http2` with TLS, `server.h2c` without); undefined when neither is on. */
  readonly #h2: Http2Downstream | undefined;
  /** The last response begun on each connection, so a parse error after it is answered only once it is done. */
  readonly #lastResponse = new WeakMap<Duplex, ServerResponse>();
  /** Connections handed over by Node's parser for a WebSocket: Node no longer tracks or closes them. */
  readonly #upgraded = new Set<Duplex>();

  constructor(options: ProxyServerOptions) {
    this.#config = options.config;
    this.#handler = options.handler;
    this.#logger = options.logger;
    this.#onClosed = options.onClosed;
    this.#onRejected = options.onRejected;
    const config = options.config;
    this.#sockets = listeningSockets(config);
    // Node's `maxConnections` counts per listening socket: with several, the limit is counted here.
    const count = options.countConnections === true || this.#sockets > 1;
    const http: ServerOptions = {
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
    };
    const handle = (req: IncomingMessage, res: ServerResponse): void => {
      this.#begin(req, res);
      this.#handler.handle(req, res);
    };
    const tls = options.tls;
    this.#tls = tls;
    // Only the proxy listener takes WebSocket handshakes (the redirect listener answers 308 to anything).
    const proxyHttp: ServerOptions = UPGRADE_CALLBACK
      ? ({ ...http, shouldUpgradeCallback: isWebSocketUpgrade } as ServerOptions)
      : { ...http, IncomingMessage: WebSocketAwareMessage };
    const server: Server =
      tls === undefined
        ? createServer(proxyHttp, handle)
        : (createTlsServer(
            {
              ...proxyHttp,
              ...tls.defaultOptions,
              // Client certificates, when asked for, are required and verified: an unverified one never
              // reaches a request.
              requestCert: tls.requestCert,
              rejectUnauthorized: true,
              // With http2, a client offering h2 gets it; http/1.1 otherwise.
              ALPNProtocols: config.http2 ? ['h2', 'http/1.1'] : ['http/1.1'],
              // A handshake gets the time a request head gets (Node's default is 120 s).
              handshakeTimeout: config.header_timeout_ms,
              SNICallback: this.#selectContext,
            },
            handle,
          ) as unknown as Server);
    const h2 = (tls === undefined ? config.h2c : config.http2) ? new Http2Downstream({ config, handler: this.#handler, logger: this.#logger }) : undefined;
    this.#h2 = h2;
    if (h2 !== undefined) this.#splitProtocols(server, h2, tls !== undefined);
    if (tls !== undefined) {
      // A failed handshake (an unknown or missing client certificate, a protocol below min_version) ends
      // its connection; nothing reached the pipeline, so it is a debug line only.
      server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket) => {
        this.#logger.debug({ client: socket.remoteAddress, cause: err.code ?? err.message }, 'TLS handshake failed');
        socket.destroy();
      });
    }
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
    this.#limitConnections(server, count);
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => this.#clientError(err, socket));
    server.on('connect', this.#connectRequest);
    server.on('upgrade', this.#upgrade);
    this.server = server;
    if (tls !== undefined && config.redirect_http !== undefined) {
      // The same parser limits and timeouts as the proxy port; every request gets its 308.
      const redirect = createServer(http, (req, res) => {
        this.#begin(req, res);
        this.#redirect(req, res);
      });
      redirect.maxHeadersCount = config.max_header_count + 1;
      this.#limitConnections(redirect, count);
      redirect.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => this.#clientError(err, socket));
      redirect.on('connect', this.#connectRequest);
      this.redirectServer = redirect;
    }
  }

  /**
   * Hands HTTP/2 connections to `h2` and the others to node:http, decided once per connection: by ALPN on
   * TLS, by the first bytes on a plain port (h2c with prior knowledge starts with the connection preface,
   * which no HTTP/1.1 request line can). node:http's own connection listener is taken off the server and
   * called for HTTP/1.1 connections, so those cost what they did without HTTP/2, bar the first read on h2c.
   */
  #splitProtocols(server: Server, h2: Http2Downstream, tls: boolean): void {
    const event = tls ? 'secureConnection' : 'connection';
    const http1 = server.listeners(event) as ((socket: Socket) => void)[];
    server.removeAllListeners(event);
    const toHttp1 = (socket: Socket): void => {
      for (const listener of http1) listener.call(server, socket);
    };
    if (tls) {
      server.on(event, (socket: TLSSocket) => {
        if (socket.alpnProtocol === 'h2') h2.accept(socket);
        else toHttp1(socket);
      });
      return;
    }
    const timeout = this.#config.header_timeout_ms;
    server.on(event, (socket: Socket) => sniffPreface(socket, timeout, toHttp1, (s) => h2.accept(s)));
  }

  /**
   * max_connections on a listener: counted here (cluster workers, see `countConnections`; the proxy and
   * redirect listeners then share the count), or by Node's `maxConnections` (each listener its own).
   */
  #limitConnections(server: Server, count: boolean): void {
    const max = this.#config.max_connections;
    if (count) {
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
      server.maxConnections = max;
      server.on('drop', () => this.#connectionRefused());
    }
  }

  /** A handshake's server name: the context of its certificate, looked up in the current generation's table. */
  readonly #selectContext = (serverName: string, done: (err: Error | null, context?: SecureContext) => void): void => {
    done(null, this.#tls?.forServerName(serverName));
  };

  /**
   * New certificates for new handshakes (a reload); connections already open keep the ones they have.
   * Ignored by a plain HTTP listener (turning TLS on or off needs a restart).
   */
  useTls(tls: TlsContexts | undefined): void {
    if (tls === undefined || this.#tls === undefined || tls === this.#tls) return;
    (this.server as unknown as { setSecureContext(options: object): void }).setSecureContext(tls.defaultOptions);
    this.#tls = tls;
  }

  /** Connections refused since start (over `max_connections`). */
  get refusedConnections(): number {
    return this.#refused;
  }

  /** Listens on `listen_address:listen_port`; rejects with a ListenError (the port is taken, ...). */
  async listen(): Promise<AddressInfo> {
    const { listen_port: port, listen_address: host } = this.#config;
    let address: AddressInfo;
    if (this.#sockets === 1) address = await listenOn(this.server, host, port, 'proxy', ownsListeningSocket(port));
    else {
      // A cluster's primary has checked the port before forking (src/cluster/primary.ts).
      if (port !== 0 && !cluster.isWorker) await checkPortFree('proxy', host, port);
      address = await listenOn(this.server, host, port, 'proxy', true);
    }
    try {
      for (let i = 1; i < this.#sockets; i++) {
        const acceptor = this.#acceptor();
        this.#acceptors.push(acceptor);
        await listenOn(acceptor, host, address.port, 'proxy', true);
      }
      if (this.redirectServer !== undefined && this.#config.redirect_http !== undefined) {
        this.#httpsPortSuffix = address.port === 443 ? '' : `:${address.port}`;
        await listenOn(this.redirectServer, host, this.#config.redirect_http.port, 'redirect_http listener', false);
      }
    } catch (err) {
      // Nothing stays bound when listen() fails.
      await this.stopListening();
      throw err;
    }
    return address;
  }

  /**
   * One more listening socket on the proxy port (SO_REUSEPORT: the kernel spreads new connections over the
   * group). Its connections go to `server` as if it had accepted them, with the same socket options.
   */
  #acceptor(): NetServer {
    const main = this.server as Server & { allowHalfOpen: boolean; noDelay: boolean; keepAlive: boolean; keepAliveInitialDelay: number; highWaterMark: number };
    const acceptor = new NetServer(
      {
        allowHalfOpen: main.allowHalfOpen,
        noDelay: main.noDelay,
        keepAlive: main.keepAlive,
        // Stored in seconds, given in ms.
        keepAliveInitialDelay: main.keepAliveInitialDelay * 1000,
        highWaterMark: main.highWaterMark,
      },
      (socket) => main.emit('connection', socket),
    );
    acceptor.on('error', (err) => this.#logger.error({ err }, 'proxy listener error'));
    return acceptor;
  }

  /** Closes the listening sockets (proxy and redirect); open connections stay. Resolves when they are closed. */
  async stopListening(): Promise<void> {
    const listeners: (Server | NetServer)[] = [this.server, ...this.#acceptors];
    if (this.redirectServer !== undefined) listeners.push(this.redirectServer);
    await Promise.all(listeners.map((l) => (l.listening ? new Promise<void>((resolve) => l.close(() => resolve())) : undefined)));
  }

  /** Client connections open on the proxy port, over all its listening sockets. */
  async openConnections(): Promise<number> {
    const counts = await Promise.all([this.server, ...this.#acceptors].map((l) => new Promise<number>((resolve) => l.getConnections((err, n) => resolve(err === null ? n : 0)))));
    return counts.reduce((a, b) => a + b, 0);
  }

  /** The redirect listener's address, once it listens. */
  get redirectAddress(): AddressInfo | undefined {
    return (this.redirectServer?.address() ?? undefined) as AddressInfo | undefined;
  }

  /**
   * `redirect_http`: 308 to the same host, path and query on https (the https listener's port unless it
   * is 443), with the headers of Tollgate's own answers; 400 for a request without a usable Host.
   */
  #redirect(req: IncomingMessage, res: ServerResponse): void {
    const requestId = randomUUID();
    const target = redirectTarget(req.headers.host, req.url ?? '');
    const draining = this.#shutdown !== undefined;
    // A body is not read: the connection closes after the answer rather than read it to discard it.
    const unreadBody = req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined;
    let status: number;
    let body: string;
    const headers: string[] = [];
    if (target === undefined) {
      status = 400;
      body = JSON.stringify(errorBody('bad_request', 'The request needs a Host header to be redirected to https.', requestId));
    } else {
      status = 308;
      const location = `https://${target.host}${this.#httpsPortSuffix}${target.path}`;
      headers.push('Location', location);
      body = JSON.stringify({ location, status, request_id: requestId });
    }
    headers.push('Content-Type', 'application/json; charset=utf-8', 'Content-Length', String(Buffer.byteLength(body)), 'Cache-Control', 'no-store');
    headers.push('X-Proxy-By', this.#config.proxy_name, 'X-Request-ID', requestId);
    if (draining || unreadBody || status === 400) headers.push('Connection', 'close');
    res.writeHead(status, headers);
    res.end(req.method === 'HEAD' ? undefined : body);
    this.#logger.info({ request_id: requestId, client: req.socket.remoteAddress ?? '', method: req.method, path: target?.path, status, listener: 'redirect_http' }, 'Request Completed');
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
    const redirect = this.redirectServer;
    // Each listener's close completes when the connections it accepted are closed.
    const closed = this.stopListening();
    this.server.closeIdleConnections();
    redirect?.closeIdleConnections();
    this.#h2?.drain();
    const open = await this.openConnections();
    this.#logger.info({ open_connections: open, websockets: this.#handler.webSocketsOpen, grace_ms: grace }, 'shutting down: no longer accepting connections');
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
    void this.openConnections().then((open) => {
      const requests = this.#handler.cutOff();
      // Open WebSockets are requests in flight too; closing them first lets each be logged as closed by shutdown.
      const websockets = this.#handler.closeWebSockets();
      this.#logger.warn({ open_connections: open, requests_in_flight: requests, websockets }, message);
      for (const socket of this.#upgraded) socket.destroy();
      this.server.closeAllConnections();
      this.redirectServer?.closeAllConnections();
      this.#h2?.closeAll();
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
   * A WebSocket handshake, handed over by Node's parser with the raw connection (Node no longer reads it
   * as HTTP, times it out or closes it). A response before it on the same connection (pipelining) is
   * finished first; then the request gets a response of its own on the connection, as Node would make it.
   */
  readonly #upgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    socket.on('error', ignoreError);
    const pending = this.#lastResponse.get(socket);
    if (pending !== undefined && !pending.destroyed && !(pending.writableFinished && pending.socket === null)) {
      pending.once('close', () => this.#webSocketRequest(req, socket as Socket, head));
      return;
    }
    this.#webSocketRequest(req, socket as Socket, head);
  };

  #webSocketRequest(req: IncomingMessage, socket: Socket, head: Buffer): void {
    // The response before it closed the connection (`Connection: close`, or the client left).
    if (socket.destroyed || !socket.writable) {
      socket.destroy();
      return;
    }
    this.#upgraded.add(socket);
    socket.once('close', () => this.#upgraded.delete(socket));
    const res = new ServerResponse(req);
    // Node's parser has let go of the connection: an answer other than 101 is the last on it.
    res.shouldKeepAlive = false;
    res.assignSocket(socket);
    res.once('finish', () => {
      // What Node does when a response it made finishes: the connection closes once written, then 'close'.
      res.detachSocket(socket);
      socket.destroySoon();
      process.nextTick(() => {
        if (res.destroyed) return;
        res.destroyed = true;
        res.emit('close');
      });
    });
    this.#handler.handleWebSocket(req, res, head);
  }

  /**
   * A response queued behind another one (pipelining) gets no 'close' from Node 20 when the connection ends
   * before its turn: it is destroyed without a socket, and 'close' is tied to the socket. The pipeline learns
   * that its client left from 'close', so without this the request stayed in flight for good (its upstream
   * request waiting for a body that would never come, shutdown waiting for it). Node 24 emits 'close' itself,
   * on the next tick after destroy(); it is emitted here only when Node did not.
   */
  #closeWithConnection(res: ServerResponse, socket: Socket): void {
    const gone = (): void => {
      if (res.socket !== null || res.closed) return;
      res.destroy();
      process.nextTick(() => {
        if (!res.closed) res.emit('close');
      });
    };
    socket.once('close', gone);
    res.once('socket', () => socket.off('close', gone));
  }

  /**
   * CONNECT (a tunnel through a forward proxy) is not served. Node's parser stops reading at it and, with no
   * 'connect' listener, destroys the connection at once, cutting off the responses of the requests before
   * it. It is answered like malformed bytes instead: 501, in its turn after those responses, then closed.
   */
  readonly #connectRequest = (_req: IncomingMessage, socket: Duplex): void => {
    this.#clientError(Object.assign(new Error('CONNECT is not supported'), { code: CONNECT_REFUSED }), socket);
  };

  /**
   * Requests Node's parser rejects (malformed, head too large, head too slow) never reach the pipeline:
   * they are answered here, with the same JSON error body and headers, logged, and the connection closed.
   */
  #clientError(err: NodeJS.ErrnoException, socket: Duplex): void {
    const code: ErrorCode =
      err.code === 'HPE_HEADER_OVERFLOW'
        ? 'headers_too_large'
        : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? 'request_timeout'
          : err.code === CONNECT_REFUSED
            ? 'not_implemented'
            : 'bad_request';
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
    const message =
      code === 'bad_request' ? 'The request is malformed HTTP.' : code === 'not_implemented' ? 'CONNECT is not supported: Tollgate is not a forward proxy.' : ERROR_CATALOGUE[code].message;
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

function ignoreError(): void {
  // Its 'close' follows; whoever owns the connection then (the request, the tunnel) acts on that.
}

/**
 * Whether a worker of a cluster binds the port itself (SO_REUSEPORT, Node >= 22.12 on Linux): the kernel
 * then spreads new connections over the workers' own listening sockets, and each worker accepts for itself,
 * instead of the primary accepting every connection and handing it over IPC. Port 0 keeps the hand-off:
 * each worker would get a port of its own.
 */
export function ownsListeningSocket(port: number): boolean {
  return cluster.isWorker && port !== 0 && REUSE_PORT;
}

/** SO_REUSEPORT through `listen({ reusePort })`: Node 22.12 and later, on Linux. */
export const REUSE_PORT = process.platform === 'linux' && atLeast(process.versions.node, 22, 12);

function atLeast(version: string, major: number, minor: number): boolean {
  const [a = 0, b = 0] = version.split('.').map(Number);
  return a > major || (a === major && b >= minor);
}

/**
 * h2c: reads a plain connection's first bytes, puts them back, and hands the connection to HTTP/2 when
 * they are the connection preface, to HTTP/1.1 as soon as they cannot be. A connection that sends too
 * little within the header timeout is closed, as a slow HTTP/1.1 head is.
 */
export function sniffPreface(socket: Socket, timeoutMs: number, http1: (socket: Socket) => void, h2: (socket: Socket) => void): void {
  let seen: Buffer = Buffer.alloc(0);
  const stop = (): void => {
    socket.off('readable', read);
    socket.off('error', failed);
    socket.off('end', ended);
    socket.off('timeout', failed);
    socket.setTimeout(0);
  };
  const failed = (): void => {
    stop();
    socket.destroy();
  };
  const ended = (): void => {
    stop();
    socket.destroy();
  };
  const read = (): void => {
    let chunk: Buffer | null;
    while ((chunk = socket.read() as Buffer | null) !== null) {
      seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
      const n = Math.min(seen.length, H2_PREFACE.length);
      if (seen.compare(H2_PREFACE, 0, n, 0, n) !== 0) {
        stop();
        socket.unshift(seen);
        http1(socket);
        return;
      }
      if (seen.length >= H2_PREFACE.length) {
        stop();
        socket.unshift(seen);
        h2(socket);
        return;
      }
    }
  };
  socket.on('readable', read);
  socket.on('error', failed);
  socket.on('end', ended);
  socket.setTimeout(timeoutMs);
  socket.on('timeout', failed);
}

/**
 * server.listen_sockets where the process binds the port itself with SO_REUSEPORT; 1 where it cannot (Node
 * before 22.12, not Linux) and in a cluster worker that gets its connections from the primary.
 */
export function listeningSockets(config: Pick<ServerConfig, 'listen_sockets' | 'listen_port'>): number {
  if (!REUSE_PORT || (cluster.isWorker && !ownsListeningSocket(config.listen_port))) return 1;
  return config.listen_sockets;
}

/**
 * Rejects with the ListenError a plain bind of host:port gets (the port is taken, ...); binds nothing. A
 * socket bound with SO_REUSEPORT would instead share a port another process of this user bound the same
 * way (a second instance started by mistake), so this runs first.
 */
export async function checkPortFree(name: ListenerName, host: string, port: number): Promise<void> {
  const probe = new NetServer();
  await listenOn(probe, host, port, name, false);
  await new Promise<void>((resolve) => probe.close(() => resolve()));
}

function listenOn(server: Server | NetServer, host: string, port: number, name: ListenerName, reusePort: boolean): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(new ListenError(name, host, port, err));
    server.once('error', onError);
    // `exclusive` makes a worker bind its own socket rather than ask the primary for one.
    const options = reusePort ? { port, host, exclusive: true, reusePort: true } : { port, host };
    server.listen(options, () => {
      server.off('error', onError);
      resolve(server.address() as AddressInfo);
    });
  });
}

/** A Host value: a name or IPv4 address, or an IPv6 address in brackets, with an optional port. */
const HOST = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::\d{1,5})?$/;

/**
 * The host (without its port) and the origin-form path of a redirect to https; undefined when the request
 * has no usable Host. An absolute-form target (`GET http://host/path`) gives both itself.
 */
export function redirectTarget(hostHeader: string | undefined, url: string): { host: string; path: string } | undefined {
  let host = hostHeader;
  let path = url;
  if (!url.startsWith('/')) {
    if (!URL.canParse(url)) return undefined;
    const absolute = new URL(url);
    if (absolute.protocol !== 'http:' && absolute.protocol !== 'https:') return undefined;
    host = absolute.host;
    path = `${absolute.pathname}${absolute.search}`;
  }
  if (host === undefined) return undefined;
  const match = HOST.exec(host);
  if (match === null) return undefined;
  return { host: (match[1] as string).toLowerCase(), path };
}
