/**
 * Real servers for integration tests: backends on 127.0.0.1:0 and a real proxy built from a config object.
 */
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, createServer as createNetServer, type AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { createProxy, type Proxy } from '../../src/app.js';
import { configSchema } from '../../src/config/schema.js';
import type { Phases } from '../../src/proxy/phases.js';
import type { Clock, Random } from '../../src/util/clock.js';

export interface Backend {
  name: string;
  port: number;
  server: Server;
  /** Requests this backend has received. */
  hits: number;
  close(): Promise<void>;
}

export type Handler = (req: IncomingMessage, res: ServerResponse, backend: Backend) => void;

/** Default backend answer: JSON with its name and what it received. */
export const echo: Handler = (req, res, backend) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const body = JSON.stringify({ backend: backend.name, method: req.method, url: req.url, headers: req.headers, body: Buffer.concat(chunks).toString() });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
};

export async function startBackend(name: string, handler: Handler = echo): Promise<Backend> {
  const backend: Backend = {
    name,
    port: 0,
    server: createServer((req, res) => {
      backend.hits++;
      handler(req, res, backend);
    }),
    hits: 0,
    close: async () => {
      backend.server.closeAllConnections();
      await new Promise<void>((resolve) => backend.server.close(() => resolve()));
    },
  };
  backend.server.listen(0, '127.0.0.1');
  await once(backend.server, 'listening');
  backend.port = (backend.server.address() as AddressInfo).port;
  return backend;
}

export interface HoldingBackend extends Backend {
  /** Responses to requests for /hold, not yet answered: the test ends them. */
  held: ServerResponse[];
}

/** A backend that answers `ok` at once, except /hold, which it keeps open until the test ends the response. */
export async function startHoldingBackend(name: string): Promise<HoldingBackend> {
  const held: ServerResponse[] = [];
  const backend = await startBackend(name, (req, res) => {
    if (req.url === '/hold') held.push(res);
    else res.end('ok');
  });
  const close = backend.close;
  return Object.assign(backend, {
    held,
    close: async () => {
      for (const res of held) res.end();
      await close();
    },
  });
}

/**
 * `n` ports that nothing listens on and that nothing else can take while this test process runs. Each is
 * the local port of a connection to a holder server: a connection to it is refused (no listener) and a
 * bind to it fails with EADDRINUSE, so a test file running in parallel cannot start a server there.
 */
export async function closedPorts(n: number): Promise<number[]> {
  const holder = await portHolder();
  const sockets = Array.from({ length: n }, () => connect(holder.port, '127.0.0.1'));
  await Promise.all(sockets.map((s) => once(s, 'connect')));
  for (const s of sockets) {
    s.on('error', () => {});
    s.unref();
  }
  return sockets.map((s) => s.localPort as number);
}

/** A port that refuses connections and stays refused (see closedPorts). */
export async function closedPort(): Promise<number> {
  return (await closedPorts(1))[0] as number;
}

let holding: Promise<{ port: number }> | undefined;
function portHolder(): Promise<{ port: number }> {
  holding ??= (async () => {
    const server = createNetServer((s) => s.on('error', () => {}).unref());
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    server.unref();
    return { port: (server.address() as AddressInfo).port };
  })();
  return holding;
}

/**
 * A port that was free a moment ago (bound, then released). Only for a child process that must be told its
 * ports (the demo's backends) or a test about a port being released; anything that can listen on port 0
 * should, since a released port can be taken by a test file running in parallel.
 */
export async function freePort(): Promise<number> {
  return (await freePorts(1))[0] as number;
}

/** `n` different free ports (bound together, then released together); see freePort. */
export async function freePorts(n: number): Promise<number[]> {
  const servers = Array.from({ length: n }, () => createServer());
  for (const server of servers) server.listen(0, '127.0.0.1');
  await Promise.all(servers.map((server) => once(server, 'listening')));
  const ports = servers.map((server) => (server.address() as AddressInfo).port);
  await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
  return ports;
}

export interface TestProxy {
  proxy: Proxy;
  url: string;
  port: number;
  /** The admin listener's base URL ('' when admin is off). */
  adminUrl: string;
  /** Every log line the proxy wrote, parsed. */
  logs: Record<string, unknown>[];
  close(): Promise<void>;
}

export interface ProxyTestOptions {
  clock?: Clock;
  random?: Random;
  phases?: Phases[];
  level?: string;
}

type Json = Record<string, unknown>;

/**
 * Starts a real proxy on 127.0.0.1:0 in front of the given backends (or explicit upstream entries), which
 * are the service `default`; `config.services` and `config.routes` add more. `config` is merged into a
 * minimal valid config; logs are captured in memory.
 */
export async function startProxy(
  upstreams: (Backend | { name: string; port: number; weight?: number; address?: string })[],
  config: { server?: Json; load_balancing?: Json; services?: Json; routes?: Json[]; middleware?: Json; logging?: Json; admin?: Json; metrics?: Json; tracing?: Json; websocket?: Json } = {},
  options: ProxyTestOptions = {},
): Promise<TestProxy> {
  const logs: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) if (line !== '') logs.push(JSON.parse(line) as Json);
      done();
    },
  });
  const parsed = configSchema.parse({
    server: { listen_port: 0, listen_address: '127.0.0.1', ...config.server },
    load_balancing: {
      upstreams: upstreams.map((u) => ({ name: u.name, address: 'address' in u && u.address !== undefined ? u.address : '127.0.0.1', port: u.port, weight: 'weight' in u && u.weight !== undefined ? u.weight : 1 })),
      ...config.load_balancing,
    },
    ...(config.services === undefined ? {} : { services: config.services }),
    ...(config.routes === undefined ? {} : { routes: config.routes }),
    middleware: config.middleware ?? {},
    logging: config.logging ?? {},
    // The admin listener on a free port, so proxies in parallel tests never compete for 9901.
    admin: { port: 0, ...config.admin },
    metrics: config.metrics ?? {},
    tracing: config.tracing ?? {},
    ...(config.websocket === undefined ? {} : { websocket: config.websocket }),
  });
  const logger = pino({ level: options.level ?? 'debug', base: null }, stream);
  const proxy = createProxy(parsed, {
    logger,
    ...(options.clock ? { clock: options.clock } : {}),
    ...(options.random ? { random: options.random } : {}),
    ...(options.phases ? { phases: options.phases } : {}),
  });
  const address = await proxy.listen();
  const admin = proxy.admin?.address();
  return {
    proxy,
    url: `http://127.0.0.1:${address.port}`,
    port: address.port,
    adminUrl: admin === undefined ? '' : `http://127.0.0.1:${admin.port}`,
    // Completion lines are written once per event-loop turn: reading the logs writes out any still waiting.
    get logs() {
      proxy.flushLogs();
      return logs;
    },
    close: () => proxy.close(),
  };
}

/** A clock the test moves by hand. */
export function manualClock(start = 1_000_000): Clock & { advance(ms: number): void } {
  let now = start;
  const clock = (() => now) as Clock & { advance(ms: number): void };
  clock.advance = (ms: number) => {
    now += ms;
  };
  return clock;
}

/** Deterministic [0, 1) sequence (a small LCG) for tests that need repeatable randomness. */
export function seededRandom(seed = 42): Random {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

/** Polls until `check` is true (or resolves true), or fails after `ms`. */
export async function waitFor(check: () => boolean | Promise<boolean>, ms = 5000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Sockets in LISTEN state on 127.0.0.1:port (/proc/net/tcp: local address in hex, state 0A). */
export function listeningSockets(port: number): number {
  const local = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  return readFileSync('/proc/net/tcp', 'utf8')
    .split('\n')
    .slice(1)
    .filter((line) => {
      const fields = line.trim().split(/\s+/);
      return fields[1] === local && fields[3] === '0A';
    }).length;
}
