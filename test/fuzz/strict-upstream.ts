/**
 * The fuzz tests' upstream: a raw TCP server that re-parses every byte it receives with the strict parser
 * and records what arrived. A request it cannot parse is an anomaly (recorded, connection dropped); each
 * parsed request is handed to `inspect`, whose complaints are recorded as violations. Every request is
 * answered 200 with `X-Upstream` (the role) and `X-Seen-Target` (the target received), so a client can
 * see which upstream answered and what path it was sent.
 */
import { once } from 'node:events';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { StrictRequestParser, all, single, type ParsedRequest } from './strict-http.js';

export interface Finding {
  role: string;
  problem: string;
  /** The request as received (for a parsed request) or the unparsable bytes, cut to 400 characters. */
  detail: string;
}

/** What one parsed request was: its method, its target as received, its `Authorization` values and `X-Forwarded-For`. */
export interface Received {
  method: string;
  target: string;
  authorization: string[];
  forwardedFor: string;
}

export interface StrictUpstream {
  role: string;
  port: number;
  /** Requests parsed since start. */
  requests: number;
  /** The requests parsed since the last `take()`. */
  received: Received[];
  findings: Finding[];
  /** Returns and clears what was recorded since the last call. */
  take(): { received: Received[]; findings: Finding[] };
  close(): Promise<void>;
}

export type Inspect = (request: ParsedRequest) => string[];

function describe(request: ParsedRequest): string {
  const head = `${request.method} ${request.target}\n${request.headers.map(([n, v]) => `${n}: ${v}`).join('\n')}`;
  return `${head}\n\n${request.body.toString('latin1')}`.slice(0, 400);
}

export async function startStrictUpstream(role: string, inspect: Inspect = () => []): Promise<StrictUpstream> {
  const sockets = new Set<Socket>();
  const upstream: StrictUpstream = {
    role,
    port: 0,
    requests: 0,
    received: [],
    findings: [],
    take() {
      const taken = { received: upstream.received, findings: upstream.findings };
      upstream.received = [];
      upstream.findings = [];
      return taken;
    },
    close: async () => {
      for (const socket of sockets) socket.destroy();
      server.close();
      await once(server, 'close');
    },
  };
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    const parser = new StrictRequestParser();
    let tail = '';
    socket.on('data', (chunk: Buffer) => {
      tail = (tail + chunk.toString('latin1')).slice(-400); // the bytes before a problem
      const { requests, problem } = parser.push(chunk);
      for (const request of requests) {
        upstream.requests++;
        upstream.received.push({ method: request.method, target: request.target, authorization: all(request.headers, 'authorization'), forwardedFor: all(request.headers, 'x-forwarded-for').join(', ') });
        for (const complaint of inspect(request)) upstream.findings.push({ role, problem: complaint, detail: describe(request) });
        const body = `${role} ${request.method} ${request.target}`;
        const chunked = request.body.length % 2 === 1; // both framings go back through the proxy
        const close = /(?:^|,)\s*close\s*(?:,|$)/i.test(single(request.headers, 'connection') ?? '');
        let reply = `HTTP/1.1 200 OK\r\nX-Upstream: ${role}\r\nX-Seen-Target: ${request.target}\r\nContent-Type: text/plain\r\n`;
        if (close) reply += 'Connection: close\r\n';
        if (request.method === 'HEAD') reply += `Content-Length: ${body.length}\r\n\r\n`;
        else if (chunked) reply += `Transfer-Encoding: chunked\r\n\r\n${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`;
        else reply += `Content-Length: ${body.length}\r\n\r\n${body}`;
        socket.write(reply, 'latin1');
        if (close) {
          socket.end();
          return;
        }
      }
      if (problem !== undefined) {
        upstream.findings.push({ role, problem: `malformed request reached the upstream: ${problem}`, detail: tail });
        socket.destroy();
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  upstream.port = (server.address() as AddressInfo).port;
  return upstream;
}
