/** HTTP/2 clients for tests: one request on a node:http2 session, and curl over HTTP/2. */
import { execFile } from 'node:child_process';
import type { ClientHttp2Session, IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http2';
import { promisify } from 'node:util';

export interface H2Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** One request on `session`; resolves with the whole answer, rejects on a stream error. */
export function h2Request(session: ClientHttp2Session, path: string, options: { method?: string; headers?: OutgoingHttpHeaders; body?: string } = {}): Promise<H2Reply> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':path': path, ':method': options.method ?? 'GET', ...options.headers }, { endStream: options.body === undefined });
    const chunks: Buffer[] = [];
    let headers: IncomingHttpHeaders = {};
    stream.on('response', (h) => {
      headers = h;
    });
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => resolve({ status: Number(headers[':status']), headers, body: Buffer.concat(chunks).toString() }));
    stream.on('error', reject);
    if (options.body !== undefined) stream.end(options.body);
  });
}

const run = promisify(execFile);

export interface CurlReply {
  status: number;
  /** Header names lower-cased, the last value of each. */
  headers: Record<string, string>;
  body: string;
  /** `2` or `1.1`, as curl's %{http_version} says. */
  version: string;
}

/** curl with `args` (the URL among them); reads the head with -D and the version with -w. */
export async function curl(args: string[]): Promise<CurlReply> {
  const marker = '\n--curl-version:';
  const { stdout } = await run('curl', ['-sS', '-D', '-', '-w', `${marker}%{http_version}`, ...args], { encoding: 'latin1' });
  const at = stdout.lastIndexOf(marker);
  const version = stdout.slice(at + marker.length).trim();
  const text = stdout.slice(0, at);
  const split = text.indexOf('\r\n\r\n');
  const head = text.slice(0, split).split('\r\n');
  const status = Number(/^HTTP\/[\d.]+ (\d{3})/.exec(head[0] ?? '')?.[1] ?? 0);
  const headers: Record<string, string> = {};
  for (const line of head.slice(1)) {
    const colon = line.indexOf(':');
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { status, headers, body: text.slice(split + 4), version };
}
