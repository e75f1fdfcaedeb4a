/**
 * The admin listener: a node:http server of its own, on its own address and port (127.0.0.1:9901 by
 * default), never behind the proxy's auth and never reachable through the proxy port. It serves the
 * dashboard (one page and its assets, read from the package's ui/ folder), /metrics (Prometheus text),
 * /api/status (JSON), /api/events (the same JSON once a second over Server-Sent Events) and, the one
 * request that changes anything, `POST /api/reload`. Nothing here runs per proxied request, and no failure
 * here reaches the proxy.
 *
 * With `admin.token` set, every request needs it (Bearer, or Basic with it as the password, which a browser
 * prompts for); the config refuses an admin listener off the loopback address without one.
 *
 * The reload needs `Content-Type: application/json`: a browser page on another site can send a cross-site
 * POST with a form's content types without asking, but not that one without a CORS preflight, which this
 * listener never grants. So a page an operator visits cannot reload the proxy behind their back.
 */
import { readFile } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import type { AdminConfig } from '../config/schema.js';
import { authorizationParam, decodeBasic, equalsSecret } from '../middleware/auth/credentials.js';
import { ListenError } from '../server/listen-error.js';
import { createServer, type IncomingMessage, type ServerResponse } from '../util/http.js';
import type { Status } from './status.js';

/** The dashboard's files, relative to the ui folder, by the path they are served at. */
const ASSETS: Readonly<Record<string, { file: string; type: string }>> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/dashboard.js': { file: 'dashboard.js', type: 'text/javascript; charset=utf-8' },
  '/dashboard.css': { file: 'dashboard.css', type: 'text/css; charset=utf-8' },
  '/vendor/uPlot.iife.min.js': { file: 'vendor/uPlot.iife.min.js', type: 'text/javascript; charset=utf-8' },
  '/vendor/uPlot.min.css': { file: 'vendor/uPlot.min.css', type: 'text/css; charset=utf-8' },
};

/** ui/ at the package root: two levels above this file both in src/admin/ and in dist/admin/. */
export const UI_DIR = fileURLToPath(new URL('../../ui/', import.meta.url));

// Everything the page needs comes from this listener; nothing inline, nothing from elsewhere.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** An SSE client whose unsent data passes this is too slow to keep: it is disconnected. */
const MAX_BUFFERED = 1024 * 1024;
/** Seconds between two SSE events. */
export const EVENT_INTERVAL_MS = 1000;

/** The line that tells where the admin listener is (tests with `admin.port: 0` read the port from it). */
export function logAdminListening(logger: Logger, at: AddressInfo): void {
  const host = at.family === 'IPv6' ? `[${at.address}]` : at.address;
  logger.info({ admin_address: at.address, admin_port: at.port }, `admin listening on http://${host}:${at.port}/ (dashboard, /metrics, /api/status)`);
}

export interface AdminServerOptions {
  config: AdminConfig;
  logger: Logger;
  /** The status document (/api/status and each SSE event). */
  status: () => Promise<Status>;
  /** The Prometheus exposition and its content type. */
  scrape: () => Promise<string>;
  scrapeContentType: string;
  /** Folder of the dashboard files (default UI_DIR). */
  uiDir?: string;
  /**
   * `POST /api/reload`: re-reads the config file and puts it in force. Answered 200 with what it did, or
   * 400 with the config's errors (the old config keeps serving). Absent: the endpoint answers 404.
   */
  reload?: () => Promise<{ result: 'ok' | 'error' }>;
}

interface Asset {
  body: Buffer;
  type: string;
}

export class AdminServer {
  readonly server: Server;
  readonly #options: AdminServerOptions;
  readonly #logger: Logger;
  readonly #assets = new Map<string, Asset>();
  readonly #clients = new Set<ServerResponse>();
  #timer: NodeJS.Timeout | undefined;
  #sending = false;
  #closed: Promise<void> | undefined;

  constructor(options: AdminServerOptions) {
    this.#options = options;
    this.#logger = options.logger;
    this.server = createServer({ keepAliveTimeout: 5_000, headersTimeout: 10_000, requestTimeout: 10_000 }, (req, res) => this.#handle(req, res));
    // Local operators and scrapers only: a bounded number of connections (SSE keeps one per open page).
    this.server.maxConnections = 256;
    this.server.on('clientError', (_err, socket) => socket.destroy());
  }

  /** Reads the dashboard files, then listens; resolves with the bound address, rejects with a ListenError. */
  async listen(): Promise<AddressInfo> {
    const dir = this.#options.uiDir ?? UI_DIR;
    for (const [path, { file, type }] of Object.entries(ASSETS)) {
      this.#assets.set(path, { body: await readFile(join(dir, file)), type });
    }
    const { address, port } = this.#options.config;
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(new ListenError('admin listener', address, port, err));
      this.server.once('error', onError);
      this.server.listen({ host: address, port }, () => {
        this.server.off('error', onError);
        this.server.on('error', (err) => this.#logger.error({ err }, 'admin listener error'));
        resolve(this.server.address() as AddressInfo);
      });
    });
  }

  /** The bound address, once listening. */
  address(): AddressInfo | undefined {
    const address = this.server.address();
    return address !== null && typeof address === 'object' ? address : undefined;
  }

  /** Ends the event streams and closes every admin connection. Safe to call more than once. */
  close(): Promise<void> {
    this.#closed ??= this.#close();
    return this.#closed;
  }

  async #close(): Promise<void> {
    this.#stopTicking();
    for (const res of this.#clients) res.destroy();
    this.#clients.clear();
    if (!this.server.listening) return;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await closed;
  }

  #handle(req: IncomingMessage, res: ServerResponse): void {
    res.on('error', () => {}); // a client gone mid-write is nothing to report
    try {
      const token = this.#options.config.token;
      if (token !== undefined && !presentsToken(req.headers.authorization, token)) {
        // Basic in the challenge: a browser opening the dashboard then asks for it (any user name).
        return this.#json(res, 401, { error: 'unauthorized', message: 'The admin listener needs its token (admin.token).', status: 401 }, [
          'WWW-Authenticate',
          'Basic realm="tollgate admin", charset="UTF-8"',
        ]);
      }
      const method = req.method ?? 'GET';
      const url = req.url ?? '/';
      const q = url.indexOf('?');
      const path = q === -1 ? url : url.slice(0, q);
      if (path === '/api/reload' && this.#options.reload !== undefined) return this.#reload(req, res, method);
      if (method !== 'GET' && method !== 'HEAD') {
        return this.#json(res, 405, { error: 'method_not_allowed', message: 'The admin API answers GET and HEAD only (and POST on /api/reload).', status: 405 }, ['Allow', 'GET, HEAD']);
      }
      const head = method === 'HEAD';
      switch (path) {
        case '/metrics':
          return this.#metrics(res, head);
        case '/api/status':
          return this.#status(res, head);
        case '/api/events':
          return this.#events(req, res, head);
      }
      const asset = this.#assets.get(path);
      if (asset !== undefined) return this.#asset(res, asset, head);
      this.#json(res, 404, { error: 'not_found', message: 'No such resource on the admin listener.', status: 404 });
    } catch (err) {
      this.#failed(res, err);
    }
  }

  #reload(req: IncomingMessage, res: ServerResponse, method: string): void {
    const reload = this.#options.reload as NonNullable<AdminServerOptions['reload']>;
    if (method !== 'POST') {
      return this.#json(res, 405, { error: 'method_not_allowed', message: 'Reload with POST.', status: 405 }, ['Allow', 'POST']);
    }
    const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
    if (type !== 'application/json') {
      return this.#json(res, 415, { error: 'unsupported_media_type', message: 'Send the reload with Content-Type: application/json.', status: 415 });
    }
    // The body is not used; read it to its end (bounded) so the connection can be reused.
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > 65_536) req.destroy();
    });
    req.on('error', () => {});
    req.on('end', () => {
      reload().then(
        (outcome) => this.#json(res, outcome.result === 'ok' ? 200 : 400, outcome),
        (err: unknown) => this.#failed(res, err),
      );
    });
  }

  #asset(res: ServerResponse, asset: Asset, head: boolean): void {
    res.writeHead(200, [
      'Content-Type', asset.type,
      'Content-Length', String(asset.body.length),
      'Cache-Control', 'no-cache',
      'X-Content-Type-Options', 'nosniff',
      'Content-Security-Policy', CSP,
      'Referrer-Policy', 'no-referrer',
    ]);
    res.end(head ? undefined : asset.body);
  }

  #metrics(res: ServerResponse, head: boolean): void {
    this.#options.scrape().then(
      (text) => {
        const body = Buffer.from(text);
        res.writeHead(200, ['Content-Type', this.#options.scrapeContentType, 'Content-Length', String(body.length), 'Cache-Control', 'no-store']);
        res.end(head ? undefined : body);
      },
      (err: unknown) => this.#failed(res, err),
    );
  }

  #status(res: ServerResponse, head: boolean): void {
    this.#options.status().then(
      (status) => {
        const body = Buffer.from(JSON.stringify(status));
        res.writeHead(200, ['Content-Type', 'application/json; charset=utf-8', 'Content-Length', String(body.length), 'Cache-Control', 'no-store', 'X-Content-Type-Options', 'nosniff']);
        res.end(head ? undefined : body);
      },
      (err: unknown) => this.#failed(res, err),
    );
  }

  /** An SSE stream: the status now, then once a second until the client goes. */
  #events(req: IncomingMessage, res: ServerResponse, head: boolean): void {
    res.writeHead(200, ['Content-Type', 'text/event-stream; charset=utf-8', 'Cache-Control', 'no-store', 'X-Content-Type-Options', 'nosniff', 'X-Accel-Buffering', 'no']);
    if (head) {
      res.end();
      return;
    }
    req.socket.setNoDelay(true);
    res.write('retry: 2000\n\n');
    this.#clients.add(res);
    res.on('close', () => {
      this.#clients.delete(res);
      if (this.#clients.size === 0) this.#stopTicking();
    });
    this.#options.status().then(
      (status) => {
        if (!res.destroyed) res.write(`data: ${JSON.stringify(status)}\n\n`);
      },
      (err: unknown) => this.#logger.error({ err }, 'admin: building the status failed'),
    );
    // One timer for all clients, running only while there is at least one.
    if (this.#timer === undefined) {
      this.#timer = setInterval(() => this.#broadcast(), EVENT_INTERVAL_MS);
      this.#timer.unref();
    }
  }

  /** Sends one event, serialized once, to every client. */
  #broadcast(): void {
    if (this.#sending) return; // the previous status is still being built
    this.#sending = true;
    this.#options.status().then(
      (status) => {
        this.#sending = false;
        const event = `data: ${JSON.stringify(status)}\n\n`;
        for (const res of this.#clients) {
          if (res.writableLength > MAX_BUFFERED) res.destroy();
          else res.write(event);
        }
      },
      (err: unknown) => {
        this.#sending = false;
        this.#logger.error({ err }, 'admin: building the status failed');
      },
    );
  }

  #stopTicking(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #json(res: ServerResponse, status: number, body: object, headers: string[] = []): void {
    const text = Buffer.from(JSON.stringify(body));
    res.writeHead(status, ['Content-Type', 'application/json; charset=utf-8', 'Content-Length', String(text.length), 'Cache-Control', 'no-store', ...headers]);
    res.end(text);
  }

  #failed(res: ServerResponse, err: unknown): void {
    this.#logger.error({ err }, 'admin request failed');
    if (res.headersSent) {
      res.destroy();
      return;
    }
    if (!res.destroyed) this.#json(res, 500, { error: 'internal_error', message: 'The admin request failed.', status: 500 });
  }
}

/**
 * Whether an Authorization header carries the admin token: `Bearer <token>` (Prometheus' `authorization`,
 * curl), or Basic with the token as the password (a browser's prompt; the user name is not checked).
 * Compared in constant time.
 */
function presentsToken(header: string | undefined, token: string): boolean {
  const bearer = authorizationParam(header, 'Bearer');
  if (bearer !== undefined) return equalsSecret(bearer, token);
  const basic = authorizationParam(header, 'Basic');
  const credentials = basic === undefined ? undefined : decodeBasic(basic);
  return credentials !== undefined && equalsSecret(credentials.password, token);
}
