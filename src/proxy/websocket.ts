/**
 * WebSockets (RFC 6455) over HTTP/1.1: which upgrade requests are proxied, the upstream handshake, and the
 * byte tunnel that follows it. The handshake request goes through the route's phases like any request
 * (route match, trace context, auth, rate limit); only when the upstream has answered 101 with a valid
 * `Sec-WebSocket-Accept` is the client answered 101, and from then on bytes flow both ways unparsed, with
 * backpressure, until either side closes. The request stays in flight (on its pipeline and its backend's
 * balancer) until the tunnel closes, and is logged then, once.
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Dispatcher } from 'undici';
import type { RequestContext } from './context.js';
import { ProxyError, markRequest } from './errors.js';
import { ForwardHandler, upstreamResponseHeaders, type ForwardHost } from './forward.js';

/** Why a WebSocket closed: the `cause` label of `tollgate_websocket_closed_total` and the log's `closed_by`. */
export const WEBSOCKET_CLOSE_CAUSES = ['client_closed', 'client_reset', 'upstream_closed', 'upstream_reset', 'idle_timeout', 'shutdown'] as const;
export type WebSocketCloseCause = (typeof WEBSOCKET_CLOSE_CAUSES)[number];

/** Index into WEBSOCKET_CLOSE_CAUSES. */
export function closeCauseIndex(cause: WebSocketCloseCause): number {
  return WEBSOCKET_CLOSE_CAUSES.indexOf(cause);
}

/**
 * After one side has closed, how long the other gets to take the last bytes and close in turn before it is
 * destroyed (a peer that stops reading would otherwise hold its socket until the idle timeout).
 */
const CLOSE_GRACE_MS = 1_000;

/** RFC 6455 §1.3: the GUID appended to Sec-WebSocket-Key before hashing. */
const WEBSOCKET_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/**
 * Whether a request that Node's parser took for an upgrade (`Connection: upgrade` with `Upgrade`) is a
 * WebSocket handshake that Tollgate proxies: GET on HTTP/1.1, `websocket` among the Upgrade tokens, no body.
 * Every other upgrade request (h2c, a body, another method) stays an ordinary request, answered without 101.
 * Runs for upgrade requests only, as Node's `shouldUpgradeCallback`.
 */
export function isWebSocketUpgrade(req: IncomingMessage): boolean {
  if (req.method !== 'GET' || req.httpVersionMajor !== 1 || req.httpVersionMinor !== 1) return false;
  const headers = req.headers;
  // Bytes after the head belong to the tunnel, so a request body would be sent as WebSocket bytes.
  if (headers['transfer-encoding'] !== undefined) return false;
  const length = headers['content-length'];
  if (length !== undefined && length !== '0') return false;
  const upgrade = headers.upgrade;
  return upgrade !== undefined && hasToken(upgrade, 'websocket');
}

function hasToken(list: string, token: string): boolean {
  for (const part of list.split(',')) if (part.trim().toLowerCase() === token) return true;
  return false;
}

/** The Sec-WebSocket-Accept that answers a Sec-WebSocket-Key (RFC 6455 §4.2.2). */
export function acceptFor(key: string): string {
  return createHash('sha1').update(key + WEBSOCKET_GUID).digest('base64');
}

/**
 * Open WebSockets of the process and the places they hold under the caps: the instance's
 * (`websocket.max_connections`) and each route's. A place is taken before the upstream is asked (so
 * handshakes in progress count) and given back when the request ends. Shared by every generation, so a
 * reload keeps the counts.
 */
export class WebSocketRegistry {
  readonly #tunnels = new Set<Tunnel>();
  readonly #byRoute = new Map<string, number>();
  #held = 0;

  /** WebSockets open now (past the 101). */
  get open(): number {
    return this.#tunnels.size;
  }

  /** Takes a place for a handshake on `route`; false when a cap is reached. */
  reserve(route: string, routeMax: number | undefined, instanceMax: number): boolean {
    if (this.#held >= instanceMax) return false;
    const onRoute = this.#byRoute.get(route) ?? 0;
    if (routeMax !== undefined && onRoute >= routeMax) return false;
    this.#held++;
    this.#byRoute.set(route, onRoute + 1);
    return true;
  }

  release(route: string): void {
    this.#held--;
    const onRoute = (this.#byRoute.get(route) ?? 1) - 1;
    if (onRoute === 0) this.#byRoute.delete(route);
    else this.#byRoute.set(route, onRoute);
  }

  add(tunnel: Tunnel): void {
    this.#tunnels.add(tunnel);
  }

  delete(tunnel: Tunnel): void {
    this.#tunnels.delete(tunnel);
  }

  /** Closes every open WebSocket (the shutdown grace period is over); returns how many there were. */
  closeAll(): number {
    const open = this.#tunnels.size;
    for (const tunnel of [...this.#tunnels]) tunnel.close('shutdown');
    return open;
  }
}

/** One WebSocket handshake request's state (RequestContext.webSocket), from its arrival until it ends. */
export class WebSocketSession {
  /** Bytes the client sent after its handshake (read by Node's parser with it): the tunnel's first. */
  readonly head: Buffer;
  readonly registry: WebSocketRegistry;
  /** The route whose cap this request holds a place under; undefined while it holds none. */
  heldOn: string | undefined = undefined;
  /** performance.now() when the client was answered 101; -1 before. */
  openedAt = -1;
  /** Bytes from the client through the tunnel (those to the client count in ctx.bytesSent). */
  bytesReceived = 0;
  /** Why the tunnel closed; undefined while open, or when there was none (refused, or not upgraded). */
  closedBy: WebSocketCloseCause | undefined = undefined;
  tunnel: Tunnel | undefined = undefined;

  constructor(head: Buffer, registry: WebSocketRegistry) {
    this.head = head;
    this.registry = registry;
  }

  /** The request has ended: gives back its place under the caps, if it holds one. */
  end(): void {
    if (this.heldOn === undefined) return;
    this.registry.release(this.heldOn);
    this.heldOn = undefined;
  }
}

/** What the WebSocket handshake needs from the pipeline besides what forwarding needs. */
export interface WebSocketHost extends ForwardHost {
  /** The tunnel of `ctx` has closed: the request ends (logging phase) now. */
  tunnelClosed(ctx: RequestContext): void;
}

/**
 * The upstream side of a WebSocket handshake. Any answer but 101 is an ordinary response, streamed back by
 * the ForwardHandler it wraps (the client connection then closes: Node's parser has let go of it). A 101
 * is checked (`Upgrade: websocket` and the Sec-WebSocket-Accept for the client's key), answered to the
 * client with the route's response headers, and the two sockets are joined. The backend stays counted in
 * flight until the tunnel closes.
 */
export class WebSocketForwardHandler implements Dispatcher.DispatchHandler {
  readonly #ctx: RequestContext;
  readonly #host: WebSocketHost;
  readonly #forward: ForwardHandler;

  constructor(ctx: RequestContext, host: WebSocketHost) {
    this.#ctx = ctx;
    this.#host = host;
    this.#forward = new ForwardHandler(ctx, host);
  }

  onConnect(abort: (err?: Error) => void): void {
    this.#forward.onConnect(abort);
  }

  onHeaders(status: number, raw: Buffer[], resume: () => void): boolean {
    return this.#forward.onHeaders(status, raw, resume);
  }

  onData(chunk: Buffer): boolean {
    return this.#forward.onData(chunk);
  }

  onComplete(): void {
    this.#forward.onComplete();
  }

  onError(err: Error): void {
    this.#forward.onError(err);
  }

  onUpgrade(status: number, raw: Buffer[] | string[] | null, socket: Duplex): void {
    // Undici has let go of the socket: until the tunnel takes it, an error must not go unheard.
    socket.on('error', ignore);
    const ctx = this.#ctx;
    try {
      this.#upgraded(status, (raw ?? []) as Buffer[], socket);
    } catch (err) {
      socket.destroy();
      throw markRequest(err, ctx.requestId);
    }
  }

  #upgraded(status: number, raw: Buffer[], upstream: Duplex): void {
    const ctx = this.#ctx;
    const session = ctx.webSocket as WebSocketSession;
    const res = ctx.res;
    const client = ctx.req.socket;
    ctx.abortUpstream = undefined;
    ctx.upstreamLatency = performance.now() - ctx.dispatchedAt;
    if (ctx.totalTimer !== undefined) {
      // total_timeout_ms limits the handshake; the WebSocket's own limit is its idle timeout.
      clearTimeout(ctx.totalTimer);
      ctx.totalTimer = undefined;
    }
    if (ctx.finished || res.destroyed || client.destroyed) {
      // The client left while the upstream was answering.
      upstream.destroy();
      this.#release();
      return;
    }
    const problem = checkUpgrade(status, raw, ctx.req.headers['sec-websocket-key']);
    if (problem !== undefined) {
      upstream.destroy();
      this.#forward.onError(new ProxyError('bad_gateway', { message: problem }));
      return;
    }
    const headers = upstreamResponseHeaders(raw);
    headers.push('Connection', 'Upgrade', 'Upgrade', 'websocket');
    try {
      this.#host.writeHead(ctx, 101, headers);
      res.flushHeaders();
    } catch (err) {
      // A header Node refuses (invalid characters from the upstream): a bad upstream answer.
      upstream.destroy();
      this.#forward.onError(new ProxyError('bad_gateway', { message: 'The upstream answered the WebSocket handshake with an invalid header.', cause: err }));
      return;
    }
    ctx.error = undefined;
    session.openedAt = performance.now();
    // The 101 is on its way; from here the connection is the tunnel's, not an HTTP response's.
    (res as ServerResponse & { detachSocket(socket: Socket): void }).detachSocket(client);
    const idleTimeoutMs = ctx.route?.websocket?.idleTimeoutMs ?? 0;
    session.tunnel = new Tunnel(client, upstream, session.head, idleTimeoutMs, ctx, (tunnel) => {
      session.registry.delete(tunnel);
      this.#release();
      this.#host.tunnelClosed(ctx);
    });
    session.registry.add(session.tunnel);
  }

  /** Gives the backend back to its balancer: the attempt ended with a 101 (or the client left first). */
  #release(): void {
    const ctx = this.#ctx;
    const backend = ctx.backend;
    if (backend !== undefined) ctx.service?.release(backend, undefined, 101, ctx.upstreamLatency);
  }
}

/** Why an upstream's 101 does not complete the client's handshake; undefined when it does. */
function checkUpgrade(status: number, raw: Buffer[], key: string | undefined): string | undefined {
  // Over HTTP/1.1 undici hands over the connection only on a 101.
  if (status !== 101) return `The upstream answered the WebSocket handshake with ${status}.`;
  let upgrade = '';
  let accept: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = (raw[i] as Buffer).toString('latin1').toLowerCase();
    if (name === 'upgrade') upgrade = (raw[i + 1] as Buffer).toString('latin1');
    else if (name === 'sec-websocket-accept') accept = (raw[i + 1] as Buffer).toString('latin1').trim();
  }
  if (!hasToken(upgrade, 'websocket')) return 'The upstream switched to a protocol other than websocket.';
  if (key === undefined || accept !== acceptFor(key.trim())) return 'The upstream answered 101 without the Sec-WebSocket-Accept for the client\'s key.';
  return undefined;
}

function ignore(): void {
  // The socket's 'close' follows its 'error'; the tunnel (or the request) ends there.
}

/**
 * The bytes of one WebSocket, both ways, without parsing frames. A side that ends (FIN) ends the other
 * (its pending bytes are written first), a side that fails or is reset destroys the other at once, and a
 * side that stays open CLOSE_GRACE_MS after the other has closed is destroyed. Backpressure: a side whose
 * peer cannot take more is paused until the peer drains. The idle timeout is the client socket's own
 * timeout, which every byte read from or written to it resets: one timer per WebSocket, in both directions.
 */
export class Tunnel {
  readonly #client: Socket;
  readonly #upstream: Duplex;
  readonly #ctx: RequestContext;
  readonly #session: WebSocketSession;
  readonly #onClose: (tunnel: Tunnel) => void;
  #cause: WebSocketCloseCause | undefined = undefined;
  #grace: NodeJS.Timeout | undefined = undefined;
  #closedSides = 0;

  constructor(client: Socket, upstream: Duplex, head: Buffer, idleTimeoutMs: number, ctx: RequestContext, onClose: (tunnel: Tunnel) => void) {
    this.#client = client;
    this.#upstream = upstream;
    this.#ctx = ctx;
    this.#session = ctx.webSocket as WebSocketSession;
    this.#onClose = onClose;
    const session = this.#session;
    client.on('error', () => this.#failed('client_reset'));
    upstream.on('error', () => this.#failed('upstream_reset'));
    client.on('end', () => this.#ended('client_closed', upstream));
    upstream.on('end', () => this.#ended('upstream_closed', client));
    client.on('close', () => this.#sideClosed('client_closed', upstream));
    upstream.on('close', () => this.#sideClosed('upstream_closed', client));
    client.on('drain', () => upstream.resume());
    upstream.on('drain', () => client.resume());
    if (head.length > 0) {
      session.bytesReceived += head.length;
      upstream.write(head);
    }
    // Bytes for a side that has already ended cannot reach it: they are dropped rather than written after
    // its end (an error that would destroy the other side with what is still queued for it).
    client.on('data', (chunk: Buffer) => {
      session.bytesReceived += chunk.length;
      if (!upstream.writableEnded && !upstream.write(chunk)) client.pause();
    });
    upstream.on('data', (chunk: Buffer) => {
      ctx.bytesSent += chunk.length;
      if (!client.writableEnded && !client.write(chunk)) upstream.pause();
    });
    client.setTimeout(idleTimeoutMs);
    client.on('timeout', () => this.close('idle_timeout'));
    // Either socket may have closed while the handshake was answered: then its 'close' has passed.
    if (client.closed) this.#sideClosed('client_closed', upstream);
    if (upstream.closed) this.#sideClosed('upstream_closed', client);
  }

  /** Closes both sides now (idle timeout, shutdown). */
  close(cause: WebSocketCloseCause): void {
    this.#cause ??= cause;
    this.#client.destroy();
    this.#upstream.destroy();
  }

  #failed(cause: WebSocketCloseCause): void {
    this.#cause ??= cause;
    this.#client.destroy();
    this.#upstream.destroy();
  }

  #ended(cause: WebSocketCloseCause, other: Duplex): void {
    this.#cause ??= cause;
    other.end();
  }

  #sideClosed(cause: WebSocketCloseCause, other: Duplex): void {
    this.#closedSides++;
    if (this.#closedSides === 2) {
      this.#finish();
      return;
    }
    this.#cause ??= cause;
    if (other.destroyed) return;
    other.end();
    this.#grace = setTimeout(() => other.destroy(), CLOSE_GRACE_MS);
    this.#grace.unref();
  }

  #finish(): void {
    if (this.#grace !== undefined) clearTimeout(this.#grace);
    this.#client.setTimeout(0);
    this.#session.closedBy = this.#cause ?? 'client_closed';
    try {
      this.#onClose(this);
    } catch (err) {
      throw markRequest(err, this.#ctx.requestId);
    }
  }
}
