/** Real WebSocket servers and clients (the `ws` package) for tests. */
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { WebSocket, WebSocketServer } from 'ws';

export interface WsBackend {
  name: string;
  port: number;
  server: Server;
  wss: WebSocketServer;
  /** Upgrade requests that reached it. */
  upgrades: number;
  /** Ordinary HTTP requests that reached it. */
  hits: number;
  /** The server side of every WebSocket it accepted, in order. */
  accepted: WebSocket[];
  /** The upgrade requests it saw, in order. */
  requests: IncomingMessage[];
  /** TCP connections open on it now. */
  readonly openSockets: number;
  close(): Promise<void>;
}

export interface WsBackendOptions {
  /** What a WebSocket does with each message; echo by default. */
  onConnection?: (ws: WebSocket, req: IncomingMessage) => void;
  /** Answers ordinary HTTP requests (the backend's name by default). */
  onRequest?: (req: IncomingMessage, res: ServerResponse) => void;
  /** Answers the upgrade itself instead of accepting it (e.g. a refusal on the raw socket). */
  onUpgrade?: (req: IncomingMessage, socket: Socket, head: Buffer) => void;
}

/** An HTTP server on 127.0.0.1:0 that accepts WebSockets (and echoes their messages by default). */
export async function startWsBackend(name: string, options: WsBackendOptions = {}): Promise<WsBackend> {
  const sockets = new Set<Socket>();
  const server = createServer((req, res) => {
    backend.hits++;
    if (options.onRequest !== undefined) options.onRequest(req, res);
    else res.end(name);
  });
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  const wss = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024 * 1024 });
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    backend.upgrades++;
    backend.requests.push(req);
    if (options.onUpgrade !== undefined) {
      // Node has let go of the socket: closed by its peer, it is closed here too (it allows half-open).
      socket.on('end', () => socket.end());
      socket.on('error', () => socket.destroy());
      return options.onUpgrade(req, socket, head);
    }
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
  });
  wss.on('connection', (ws: WebSocket, req: IncomingMessage) => {
    backend.accepted.push(ws);
    if (options.onConnection !== undefined) return options.onConnection(ws, req);
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  });
  const backend: WsBackend = {
    name,
    port: 0,
    server,
    wss,
    upgrades: 0,
    hits: 0,
    accepted: [],
    requests: [],
    get openSockets() {
      return sockets.size;
    },
    close: async () => {
      for (const ws of wss.clients) ws.terminate();
      server.closeAllConnections();
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  backend.port = (server.address() as AddressInfo).port;
  return backend;
}

export interface Handshake {
  /** The open WebSocket, when the handshake succeeded. */
  ws?: WebSocket;
  /** The status the handshake was answered with (101 when it succeeded). */
  status: number;
  headers: IncomingMessage['headers'];
  body: string;
}

/** Opens a WebSocket; a refused handshake resolves with its status and body instead of failing. */
export function openWebSocket(url: string, headers: Record<string, string> = {}, options: { maxPayload?: number; ca?: string } = {}): Promise<Handshake> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers, maxPayload: options.maxPayload ?? 64 * 1024 * 1024, ...(options.ca === undefined ? {} : { ca: options.ca }) });
    ws.once('upgrade', (res: IncomingMessage) => {
      ws.once('open', () => resolve({ ws, status: res.statusCode ?? 0, headers: res.headers, body: '' }));
    });
    ws.once('unexpected-response', (_req, res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    ws.once('error', reject);
  });
}

/** Sends one message and resolves with the next message received. */
export function roundTrip(ws: WebSocket, data: string | Buffer): Promise<{ data: Buffer; isBinary: boolean }> {
  return new Promise((resolve, reject) => {
    ws.once('message', (message: Buffer, isBinary: boolean) => resolve({ data: message, isBinary }));
    ws.once('error', reject);
    ws.send(data, { binary: typeof data !== 'string' });
  });
}

/** Resolves when the WebSocket has closed, with its close code. */
export function closed(ws: WebSocket): Promise<number> {
  if (ws.readyState === WebSocket.CLOSED) return Promise.resolve(1006);
  return new Promise((resolve) => ws.once('close', (code: number) => resolve(code)));
}
