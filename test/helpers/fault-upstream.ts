/**
 * A test upstream whose behaviour can be switched while it runs: answer normally, answer slowly, reset the
 * connection before the headers or in the middle of the body, send garbage, or stop listening altogether
 * (connections refused) and come back on the same port.
 */
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export type FaultMode = 'ok' | 'slow' | 'reset-before-headers' | 'reset-mid-body' | 'garbage' | 'read-body-then-reset';

export class FaultUpstream {
  readonly name: string;
  port = 0;
  mode: FaultMode = 'ok';
  /** Delay for `slow`, in ms. */
  delayMs = 100;
  /** Requests received (whatever the mode), and the paths seen. */
  hits = 0;
  readonly paths: string[] = [];
  #server: Server | undefined;
  readonly #sockets = new Set<Socket>();

  constructor(name: string) {
    this.name = name;
  }

  async start(port = 0): Promise<this> {
    const server = createServer((req, res) => this.#handle(req, res));
    server.on('connection', (s: Socket) => {
      this.#sockets.add(s);
      s.once('close', () => this.#sockets.delete(s));
    });
    server.listen(port, '127.0.0.1');
    await once(server, 'listening');
    this.port = (server.address() as AddressInfo).port;
    this.#server = server;
    return this;
  }

  /** Stops listening and resets every open connection: new connections are refused. */
  async kill(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    if (server === undefined) return;
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Listens again on the same port. */
  revive(): Promise<this> {
    return this.start(this.port);
  }

  #handle(req: IncomingMessage, res: ServerResponse): void {
    this.hits++;
    this.paths.push(req.url ?? '');
    req.on('error', () => {});
    const body = `${this.name} ${req.method} ${req.url}`;
    switch (this.mode) {
      case 'ok':
        req.resume();
        res.end(body);
        return;
      case 'slow':
        req.resume();
        setTimeout(() => res.end(body), this.delayMs);
        return;
      case 'reset-before-headers':
        req.socket.destroy();
        return;
      case 'read-body-then-reset':
        req.resume();
        req.on('end', () => req.socket.destroy());
        return;
      case 'reset-mid-body':
        req.resume();
        res.writeHead(200, { 'content-length': '1000' });
        res.write('partial');
        setTimeout(() => req.socket.destroy(), 20);
        return;
      case 'garbage':
        req.socket.end('this is not HTTP\r\n\r\n');
        return;
    }
  }
}

export async function startFaultUpstreams(...names: string[]): Promise<FaultUpstream[]> {
  return Promise.all(names.map((n) => new FaultUpstream(n).start()));
}
