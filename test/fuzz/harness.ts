/**
 * Runs fuzz cases against a proxy over raw sockets and checks the properties:
 * - every case ends (a response and a close, or a close) within a bound;
 * - what the proxy answers parses strictly (status line, headers, framing, nothing after a close);
 * - nothing malformed reaches an upstream, and what does reach one obeys the upstream's rules
 *   (`tollgateRules`: credentials for the protected one, its own prefix for the public one, normal form);
 * - the path an upstream was sent is the normalized target of the request that was authorized.
 */
import { connect } from 'node:net';
import { normalizeTarget } from '../../src/proxy/path.js';
import { TOKEN } from './cases.js';
import { all, parseResponses, single, type ParsedResponse } from './strict-http.js';
import type { Finding, Inspect } from './strict-upstream.js';

export interface Outcome {
  /** Everything the proxy wrote before closing. */
  bytes: Buffer;
  /** The proxy neither answered nor closed within the bound. */
  hung: boolean;
}

/**
 * The request written after every case: a connection that still reads requests answers it and closes,
 * so a case ends without waiting for a timeout. (Closing the write side instead would not do: on a
 * half-close Node's HTTP server, like nginx, treats the client as gone and drops the requests in flight.)
 */
export const CLOSER = 'GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n';

/**
 * Writes the case and then CLOSER, and reads until the proxy closes or `timeoutMs` passes (connecting from
 * `localAddress` when given, a loopback address that tells an upstream which case a request came from). A case cut
 * short (a body shorter than its length, a head without its end) ends at the proxy's header or body
 * timeout, which the fuzz configs set well under `timeoutMs`.
 */
export function sendCase(port: number, text: string, timeoutMs: number, localAddress?: string): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: '127.0.0.1', ...(localAddress === undefined ? {} : { localAddress }) });
    const chunks: Buffer[] = [];
    let hung = false;
    const timer = setTimeout(() => {
      hung = true;
      socket.destroy();
    }, timeoutMs);
    socket.on('connect', () => socket.write(text + CLOSER, 'latin1'));
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'ECONNRESET' && err.code !== 'EPIPE') {
        clearTimeout(timer);
        reject(err);
      }
    });
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ bytes: Buffer.concat(chunks), hung });
    });
  });
}

/** The method and target of the first request line (leading empty lines skipped, as RFC 9112 allows). */
export function firstRequestLine(text: string): { method: string; target: string } | undefined {
  const start = /^(?:\r\n)*/.exec(text)?.[0].length ?? 0;
  const end = text.indexOf('\r\n', start);
  if (end === -1) return undefined;
  const parts = text.slice(start, end).split(' ');
  if (parts.length !== 3) return undefined;
  return { method: parts[0] as string, target: parts[1] as string };
}

/** Tollgate accepts `Bearer x` with the scheme in any case and any spaces or tabs between (RFC 9110 §11). */
const VALID_AUTHORIZATION = new RegExp(`^bearer[ \\t]+${TOKEN}$`, 'i');
const HOP_BY_HOP = ['keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade', 'expect'];

/**
 * What every request Tollgate forwards must satisfy, on top of parsing strictly. `protected` is the
 * upstream behind auth (credentials forwarded), `public` the one behind the `/public` prefix without auth.
 */
export function tollgateRules(role: 'protected' | 'public'): Inspect {
  return function inspectForwarded(request) {
    const problems: string[] = [];
    const { target, headers } = request;
    if (normalizeTarget(target, false) !== target) problems.push(`forwarded target not in normal form: ${JSON.stringify(target)}`);
    if (role === 'public' && !/^\/public(?:[/?]|$)/.test(target)) problems.push(`public upstream sent a path outside /public: ${JSON.stringify(target)}`);
    const authorization = all(headers, 'authorization');
    if (role === 'protected' && (authorization.length !== 1 || !VALID_AUTHORIZATION.test(authorization[0] as string))) {
      problems.push(`unauthenticated request reached the protected upstream (Authorization: ${JSON.stringify(authorization)})`);
    }
    if (role === 'public' && authorization.length > 1) problems.push('several Authorization headers forwarded');
    // A WebSocket handshake is proxied as one: GET with exactly `Connection: upgrade` and `Upgrade: websocket`.
    const webSocket = request.method === 'GET' && single(headers, 'upgrade') === 'websocket' && single(headers, 'connection') === 'upgrade';
    for (const [name] of headers) {
      const lower = name.toLowerCase();
      if (name.includes('_')) problems.push(`header with an underscore forwarded: ${name}`);
      if (HOP_BY_HOP.includes(lower) && !(webSocket && lower === 'upgrade')) problems.push(`hop-by-hop header forwarded: ${name}`);
    }
    const connection = single(headers, 'connection');
    if (connection === null || (connection !== undefined && !webSocket && !/^(?:keep-alive|close)$/i.test(connection))) problems.push(`Connection forwarded as ${JSON.stringify(all(headers, 'connection'))}`);
    // The client's own address (the differential run connects from other loopback addresses than 127.0.0.1).
    if (!/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(single(headers, 'x-forwarded-for') ?? '')) problems.push(`X-Forwarded-For ${JSON.stringify(all(headers, 'x-forwarded-for'))} (no proxy is trusted)`);
    return problems;
  };
}

export interface Checked {
  problems: string[];
  responses: ParsedResponse[];
}

/** The response-side properties of one case through Tollgate; `findings` are the upstreams' for the case. */
export function checkTollgateCase(text: string, outcome: Outcome, findings: Finding[], timeoutMs: number): Checked {
  const problems: string[] = findings.map((f) => `${f.role} upstream: ${f.problem}\n    as received: ${JSON.stringify(f.detail)}`);
  if (outcome.hung) problems.push(`no close within ${timeoutMs} ms (received ${JSON.stringify(outcome.bytes.toString('latin1', 0, 200))})`);
  const { responses, problem } = parseResponses(outcome.bytes, text.includes('HEAD '));
  if (problem !== undefined) problems.push(`malformed response: ${problem}\n    received: ${JSON.stringify(outcome.bytes.toString('latin1', 0, 600))}`);
  for (const response of responses) {
    if (response.status === 500) problems.push(`500 internal error: ${response.body.toString('latin1', 0, 300)}`);
  }
  const first = responses.find((r) => r.status >= 200);
  const upstream = first === undefined ? undefined : single(first.headers, 'x-upstream');
  const line = firstRequestLine(text);
  // Which request the first response answers is known only when the first request line has three parts.
  if (first !== undefined && typeof upstream === 'string' && line !== undefined) {
    const expected = normalizeTarget(line.target, false);
    const seen = single(first.headers, 'x-seen-target');
    if (typeof expected !== 'string') problems.push(`forwarded a request whose target Tollgate refuses: ${JSON.stringify(line.target)}`);
    else if (seen !== expected) problems.push(`authorized ${JSON.stringify(expected)} but forwarded ${JSON.stringify(seen)}`);
  }
  return { problems, responses };
}

/** The sentinel after a batch: the proxy still answers its health path. */
export async function stillAnswers(port: number): Promise<boolean> {
  const outcome = await sendCase(port, 'GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', 5000).catch(() => undefined);
  return outcome !== undefined && /^HTTP\/1\.1 200 /.test(outcome.bytes.toString('latin1'));
}

/** The config both the in-process test and the spawned CLI use: auth everywhere except under /public. */
export function fuzzConfig(protectedPort: number, publicPort: number, listenPort = 0): Record<string, unknown> {
  const service = (name: string, port: number) => ({
    upstreams: [{ name, address: '127.0.0.1', port }],
    health_check: { active: { enabled: false }, passive: { enabled: false } },
    retries: { max_retries: 0 },
  });
  return {
    // Short timeouts, so that a case cut short ends in about a second.
    server: {
      listen_port: listenPort,
      listen_address: '127.0.0.1',
      max_body_bytes: 1024,
      header_timeout_ms: 1000,
      body_timeout_ms: 500,
      keepalive_timeout_ms: 500,
      shutdown_grace_ms: 500,
    },
    services: { protected: service('protected', protectedPort), public: service('public', publicPort) },
    routes: [
      { name: 'public', match: { path_prefix: '/public' }, service: 'public', middleware: { auth: { enabled: false } } },
      { name: 'protected', match: { path_prefix: '/' }, service: 'protected' },
    ],
    middleware: { auth: { enabled: true, valid_tokens: [TOKEN], forward_credentials: true } },
    admin: { enabled: false },
  };
}
