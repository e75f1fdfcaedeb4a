/**
 * The request head of an HTTP/2 stream, read into what the pipeline reads on HTTP/1.1: header lines
 * without pseudo-headers, and a Host. Runs once per HTTP/2 request, before the route is matched.
 *
 * nghttp2 (under node:http2) already refuses, as a stream error (RST_STREAM PROTOCOL_ERROR), what
 * RFC 9113 §8.2-8.3 forbids in a request: connection-specific fields (connection, keep-alive,
 * proxy-connection, transfer-encoding, upgrade, te other than trailers), upper-case names, unknown,
 * repeated, missing or misplaced pseudo-headers, and a content-length the DATA frames do not match
 * (test/integration/h2-protocol.test.ts checks each). What it lets through and is checked here: a Host
 * that disagrees with `:authority` (§8.3.1), and CONNECT, which Tollgate does not tunnel.
 */
import type { Http2ServerRequest } from 'node:http2';
import { ProxyError } from './errors.js';

const AUTHORITY_MISMATCH = new ProxyError('bad_request', { message: 'The Host header and :authority name different hosts.' });
const NO_CONNECT = new ProxyError('not_implemented', { message: 'The proxy does not tunnel CONNECT requests.' });
const TOO_LARGE = new ProxyError('headers_too_large', { message: 'The request header list is larger than the proxy accepts.' });
/** RFC 9113 §6.5.2 counts each field as its name, its value and 32 octets. */
const FIELD_OVERHEAD = 32;

/**
 * The header lines to read (names and values alternating, pseudo-headers left out, `cookie` fields joined
 * into one line as RFC 9113 §8.2.3 asks before forwarding to HTTP/1.1), or the refusal. `:authority`
 * becomes the Host when the client sent no Host: it is put first in the lines and in `req.headers`, so
 * routes, auth and X-Forwarded-Host see one Host as on HTTP/1.1. A header list over `maxBytes`
 * (max_header_bytes, counted as SETTINGS_MAX_HEADER_LIST_SIZE counts it) gets 431: nghttp2 applies the
 * SETTINGS value only once the client has acknowledged it, and a client that never does would otherwise
 * get up to node:http2's own 64 KiB through.
 */
export function readH2Head(req: Http2ServerRequest, maxBytes: number): string[] | ProxyError {
  const headers = req.headers;
  if (headers[':method'] === 'CONNECT') return NO_CONNECT;
  const authority = headers[':authority'];
  const host = headers.host;
  if (authority !== undefined && host !== undefined && authority.toLowerCase() !== host.toLowerCase()) return AUTHORITY_MISMATCH;
  const raw = req.rawHeaders;
  const lines: string[] = [];
  if (host === undefined && authority !== undefined) {
    headers.host = authority;
    lines.push('host', authority);
  }
  let cookies = 0;
  let bytes = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    bytes += name.length + (raw[i + 1] as string).length + FIELD_OVERHEAD;
    if (name.charCodeAt(0) === 58) continue; // ':'
    if (name === 'cookie') {
      cookies++;
      if (cookies > 1) continue;
    }
    lines.push(name, raw[i + 1] as string);
  }
  if (bytes > maxBytes) return TOO_LARGE;
  if (cookies > 1) {
    // node:http2 has joined them already, with the separator §8.2.3 names.
    for (let i = 0; i < lines.length; i += 2) if (lines[i] === 'cookie') lines[i + 1] = headers.cookie as string;
  }
  return lines;
}
