/**
 * Strict HTTP/1.1 parsers for the fuzz tests, written from RFC 9112 and RFC 3986 rather than borrowed from
 * a library, so they judge Tollgate's output without sharing its parser's leniencies. One parses what
 * reaches the test upstream (requests), the other what Tollgate answers (responses). Each returns what it
 * parsed and the first problem it found; any problem is a finding.
 */

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** A field value after its surrounding whitespace: visible ASCII, obs-text, and SP/HTAB between them. */
const FIELD_VALUE = /^(?:[\x21-\x7e\x80-\xff](?:[\t\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?$/;
const REQUEST_LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (\S+) HTTP\/1\.1$/;
const STATUS_LINE = /^HTTP\/1\.1 ([1-5]\d\d) [\t\x20-\x7e\x80-\xff]*$/;
/**
 * RFC 3986 origin-form: absolute-path [ "?" query ], pchar = unreserved / pct-encoded / sub-delims / ":" /
 * "@", plus the characters browsers send unescaped (`"<>[]^\`{|}`), which change no path's meaning. Never a
 * `#`, a `\\`, a bare `%`, a control, a space or a byte over 0x7e in the path; the query, which a proxy
 * passes on as it came, may hold any visible ASCII but `#`.
 */
const ORIGIN_FORM = /^(?:\/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@"<>[\]^`{|}]|%[0-9A-Fa-f]{2})*)+(?:\?[\x21-\x22\x24-\x7e]*)?$/;
const CHUNK_SIZE = /^([0-9A-Fa-f]{1,8})(?:[ \t]*;[ \t]*[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?:[ \t]*=[ \t]*(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+|"(?:[\t\x20\x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t\x20-\x7e\x80-\xff])*"))?)*$/;
const MAX_HEAD = 64 * 1024;
const CRLF = Buffer.from('\r\n');
const HEAD_END = Buffer.from('\r\n\r\n');

export type Headers = [name: string, value: string][];

/** The value of the only header of that name, undefined when absent, or null when it appears more than once. */
export function single(headers: Headers, name: string): string | undefined | null {
  let found: string | undefined;
  for (const [n, v] of headers) {
    if (n.toLowerCase() !== name) continue;
    if (found !== undefined) return null;
    found = v;
  }
  return found;
}

export function all(headers: Headers, name: string): string[] {
  return headers.filter(([n]) => n.toLowerCase() === name).map(([, v]) => v);
}

/** Head lines (without the blank line) → start line and headers, or the problem with them. */
function parseHead(head: string): { start: string; headers: Headers } | string {
  if (/[\r\n]/.test(head.replaceAll('\r\n', ''))) return 'bare CR or LF in the head';
  const lines = head.split('\r\n');
  const start = lines[0] as string;
  const headers: Headers = [];
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i] as string;
    if (line.startsWith(' ') || line.startsWith('\t')) return 'obs-fold in the head';
    const colon = line.indexOf(':');
    if (colon <= 0) return `header line without a name and colon: ${JSON.stringify(line.slice(0, 80))}`;
    const name = line.slice(0, colon);
    if (!TOKEN.test(name)) return `invalid header name ${JSON.stringify(name.slice(0, 80))}`;
    const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, '');
    if (!FIELD_VALUE.test(value)) return `invalid value of ${name}: ${JSON.stringify(value.slice(0, 80))}`;
    headers.push([name, value]);
  }
  return { start, headers };
}

/** How the body is framed, or the problem with the framing headers. */
function framing(headers: Headers): { kind: 'none' } | { kind: 'length'; length: number } | { kind: 'chunked' } | string {
  const te = all(headers, 'transfer-encoding');
  const cl = all(headers, 'content-length');
  if (te.length > 0 && cl.length > 0) return 'both Transfer-Encoding and Content-Length';
  if (te.length > 1) return 'Transfer-Encoding repeated';
  if (te.length === 1) return (te[0] as string).toLowerCase() === 'chunked' ? { kind: 'chunked' } : `Transfer-Encoding ${JSON.stringify(te[0])}`;
  if (cl.length > 1) return 'Content-Length repeated';
  if (cl.length === 1) {
    const value = cl[0] as string;
    if (!/^\d{1,15}$/.test(value)) return `invalid Content-Length ${JSON.stringify(value)}`;
    return { kind: 'length', length: Number(value) };
  }
  return { kind: 'none' };
}

/** A chunked body at `from`: its end offset and data, 'more' when incomplete, or the problem. */
function parseChunked(buf: Buffer, from: number): { end: number; data: Buffer } | 'more' | string {
  const parts: Buffer[] = [];
  let at = from;
  for (;;) {
    const eol = buf.indexOf(CRLF, at);
    if (eol === -1) return buf.length - at > 4096 ? 'chunk-size line too long' : 'more';
    const line = buf.toString('latin1', at, eol);
    const match = CHUNK_SIZE.exec(line);
    if (match === null) return `invalid chunk-size line ${JSON.stringify(line.slice(0, 80))}`;
    const size = parseInt(match[1] as string, 16);
    at = eol + 2;
    if (size === 0) break;
    if (buf.length < at + size + 2) return 'more';
    parts.push(buf.subarray(at, at + size));
    if (buf[at + size] !== 13 || buf[at + size + 1] !== 10) return 'chunk data not followed by CRLF';
    at += size + 2;
  }
  // Trailer section: field lines, then an empty line.
  for (;;) {
    const eol = buf.indexOf(CRLF, at);
    if (eol === -1) return 'more';
    const line = buf.toString('latin1', at, eol);
    at = eol + 2;
    if (line === '') return { end: at, data: Buffer.concat(parts) };
    const parsed = parseHead(`x\r\n${line}`);
    if (typeof parsed === 'string') return `trailer: ${parsed}`;
  }
}

/** What the problem with a request target sent upstream is, or undefined when it is RFC 3986 origin-form. */
export function targetProblem(target: string): string | undefined {
  if (!target.startsWith('/')) return `target not in origin form: ${JSON.stringify(target.slice(0, 80))}`;
  if (!ORIGIN_FORM.test(target)) return `target outside RFC 3986: ${JSON.stringify(target.slice(0, 80))}`;
  return undefined;
}

export interface ParsedRequest {
  method: string;
  target: string;
  headers: Headers;
  body: Buffer;
}

/**
 * Incremental strict request parser (what the test upstream receives): feed it bytes, get the complete
 * requests, or the first problem (after which the connection is useless).
 */
export class StrictRequestParser {
  #buf: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): { requests: ParsedRequest[]; problem?: string } {
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
    const requests: ParsedRequest[] = [];
    for (;;) {
      const buf = this.#buf;
      if (buf.length === 0) return { requests };
      const end = buf.indexOf(HEAD_END);
      if (end === -1) {
        if (buf.length > MAX_HEAD) return { requests, problem: 'head larger than 64 KiB' };
        return { requests };
      }
      const head = parseHead(buf.toString('latin1', 0, end));
      if (typeof head === 'string') return { requests, problem: head };
      const line = REQUEST_LINE.exec(head.start);
      if (line === null) return { requests, problem: `invalid request line ${JSON.stringify(head.start.slice(0, 120))}` };
      const [, method = '', target = ''] = line;
      const badTarget = targetProblem(target);
      if (badTarget !== undefined) return { requests, problem: badTarget };
      const hosts = all(head.headers, 'host');
      if (hosts.length !== 1) return { requests, problem: `${hosts.length} Host headers` };
      const frame = framing(head.headers);
      if (typeof frame === 'string') return { requests, problem: frame };
      let body: Buffer;
      let next: number;
      const at = end + 4;
      if (frame.kind === 'chunked') {
        const chunked = parseChunked(buf, at);
        if (chunked === 'more') return { requests };
        if (typeof chunked === 'string') return { requests, problem: chunked };
        body = chunked.data;
        next = chunked.end;
      } else {
        const length = frame.kind === 'length' ? frame.length : 0;
        if (buf.length < at + length) return { requests };
        body = buf.subarray(at, at + length);
        next = at + length;
      }
      requests.push({ method, target, headers: head.headers, body });
      this.#buf = buf.subarray(next);
    }
  }
}

export interface ParsedResponse {
  status: number;
  headers: Headers;
  body: Buffer;
}

/**
 * Parses everything a server wrote on a connection it has closed: complete responses, nothing left over.
 * With `headSent` (a HEAD request line appears in what was sent; after mutations, which request a response
 * answers is not always known), a response may also have no body where the next response or the end of
 * the bytes begins; otherwise its framing must be filled exactly.
 */
export function parseResponses(bytes: Buffer, headSent: boolean): { responses: ParsedResponse[]; problem?: string } {
  const responses: ParsedResponse[] = [];
  let at = 0;
  while (at < bytes.length) {
    const end = bytes.indexOf(HEAD_END, at);
    if (end === -1) return { responses, problem: `incomplete response head ${JSON.stringify(bytes.toString('latin1', at, at + 80))}` };
    const head = parseHead(bytes.toString('latin1', at, end));
    if (typeof head === 'string') return { responses, problem: head };
    const line = STATUS_LINE.exec(head.start);
    if (line === null) return { responses, problem: `invalid status line ${JSON.stringify(head.start.slice(0, 80))}` };
    const status = Number(line[1]);
    const frame = framing(head.headers);
    if (typeof frame === 'string') return { responses, problem: frame };
    at = end + 4;
    let body: Buffer = Buffer.alloc(0);
    const noBody = headSent && (at === bytes.length || bytes.toString('latin1', at, at + 9) === 'HTTP/1.1 ');
    if (status < 200 || status === 204 || status === 304) {
      if (status < 200 && frame.kind !== 'none') return { responses, problem: `${status} with a body framing` };
    } else if (!noBody) {
      if (frame.kind === 'none') {
        // Close-delimited: allowed when the response says it closes (an HTTP/1.0 client cannot take chunked).
        if (!/close/i.test(all(head.headers, 'connection').join())) return { responses, problem: `${status} without Content-Length, Transfer-Encoding or Connection: close` };
        responses.push({ status, headers: head.headers, body: bytes.subarray(at) });
        return { responses };
      }
      if (frame.kind === 'chunked') {
        const chunked = parseChunked(bytes, at);
        if (chunked === 'more') return { responses, problem: 'truncated chunked body' };
        if (typeof chunked === 'string') return { responses, problem: chunked };
        body = chunked.data;
        at = chunked.end;
      } else {
        if (bytes.length < at + frame.length) return { responses, problem: `truncated body: ${bytes.length - at} of ${frame.length} bytes` };
        body = bytes.subarray(at, at + frame.length);
        at += frame.length;
      }
    }
    responses.push({ status, headers: head.headers, body });
    const connection = all(head.headers, 'connection').join(',').toLowerCase();
    if (/(?:^|,)\s*close\s*(?:,|$)/.test(connection) && at < bytes.length) {
      return { responses, problem: `bytes after a response with Connection: close ${JSON.stringify(bytes.toString('latin1', at, at + 80))}` };
    }
  }
  return { responses };
}
