import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { ServerConfig } from '../config/schema.js';
import type { Pipeline } from '../proxy/pipeline.js';

export interface ProxyServerOptions {
  config: ServerConfig;
  pipeline: Pipeline;
  logger: Logger;
  /** Runs after the last connection has closed during shutdown (close pools, stores). */
  onClosed?: () => Promise<void> | void;
}

/**
 * The downstream listener: node:http with Tollgate's limits, plus the ordered shutdown (stop accepting,
 * answer new requests with 503 and `Connection: close`, let in-flight requests finish, cut what is left
 * when the grace period ends).
 */
export class ProxyServer {
  readonly server: Server;
  readonly #config: ServerConfig;
  readonly #pipeline: Pipeline;
  readonly #logger: Logger;
  readonly #onClosed: (() => Promise<void> | void) | undefined;
  #shutdown: Promise<void> | undefined;
  #refused = 0;
  #refusedLogged = 0;
  #refusedTimer: NodeJS.Timeout | undefined;

  constructor(options: ProxyServerOptions) {
    this.#config = options.config;
    this.#pipeline = options.pipeline;
    this.#logger = options.logger;
    this.#onClosed = options.onClosed;
    const server = createServer({ keepAliveTimeout: options.config.keepalive_timeout_ms }, options.pipeline.handle);
    // Connections past the limit are closed by Node right after accept; 'drop' tells us about each.
    server.maxConnections = options.config.max_connections;
    server.on('drop', () => this.#connectionRefused());
    server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
      // Malformed requests and sockets that fail before a request: answer 400 when still possible.
      if (socket.writable && err.code !== 'ECONNRESET') {
        socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      } else socket.destroy();
    });
    this.server = server;
  }

  /** Connections refused since start (over `max_connections`). */
  get refusedConnections(): number {
    return this.#refused;
  }

  listen(): Promise<AddressInfo> {
    const { listen_port: port, listen_address: host } = this.#config;
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
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

  async #drain(): Promise<void> {
    this.#pipeline.draining = true;
    const grace = this.#config.shutdown_grace_ms;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    const open = await new Promise<number>((resolve) => this.server.getConnections((_e, n) => resolve(n)));
    this.#logger.info({ open_connections: open, grace_ms: grace }, 'shutting down: no longer accepting connections');
    const deadline = setTimeout(() => {
      this.server.getConnections((_e, n) => {
        this.#logger.warn({ open_connections: n }, 'shutdown grace period over: closing the remaining connections');
        this.server.closeAllConnections();
      });
    }, grace);
    await closed;
    clearTimeout(deadline);
    if (this.#refusedTimer !== undefined) clearTimeout(this.#refusedTimer);
    await this.#onClosed?.();
    this.#logger.info('shutdown complete');
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
