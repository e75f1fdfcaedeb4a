/**
 * Request-target normalization, done once per request before any filter runs, so the path that is
 * authorized, rate-limited, logged and forwarded is one and the same string.
 *
 * - dot segments are resolved (`/a/./b/../c` → `/a/c`), `%2e` / `%2E` counting as `.`;
 * - repeated slashes are merged (`//a///b` → `/a/b`);
 * - percent-encoded unreserved characters (letters, digits, `-`, `.`, `_`, `~`) are decoded (`/%61dmin` →
 *   `/admin`), as RFC 3986 section 6.2.2.2 says they are the same path: an upstream that decodes them must
 *   not see another path than the one the routes and auth saw;
 * - `%00` anywhere in the path is refused, and so is a `%` not followed by two hex digits;
 * - `%2F` and `%5C` (encoded `/` and `\`) are never decoded into separators: kept as they are, or refused
 *   when `rejectEncodedSlashes` is set;
 * - a literal `\` in the path is refused (some upstreams read it as `/`), and so is a `#` anywhere (a
 *   fragment is never part of a request target, and an upstream would cut the path there);
 * - nothing else is decoded or re-encoded, and the query string is left exactly as it came.
 */
import { ProxyError } from './errors.js';

const NUL = new ProxyError('bad_request', { message: 'The request path contains an encoded NUL (%00).' });
const ENCODED_SLASH = new ProxyError('bad_request', { message: 'The request path contains an encoded slash or backslash (%2F, %5C).' });
const NOT_ORIGIN = new ProxyError('bad_request', { message: 'The request target must be a path.' });
const FRAGMENT = new ProxyError('bad_request', { message: 'The request target contains a fragment (#).' });
const BACKSLASH = new ProxyError('bad_request', { message: 'The request path contains a backslash.' });
const BAD_ESCAPE = new ProxyError('bad_request', { message: 'The request path contains a % not followed by two hex digits.' });

/** Paths with none of these need no work: the common case costs one regular-expression test. */
const NEEDS_WORK = /\/\/|\/\.|%|#|\\/;
/** A % not starting a valid escape. */
const BAD_PERCENT = /%(?![0-9a-f]{2})/i;
/** Escapes of unreserved characters: A-Z, a-z, 0-9, '-', '.', '_', '~'. */
const UNRESERVED = /%(?:3[0-9]|4[1-9a-f]|5[0-9a]|6[1-9a-f]|7[0-9a]|2[de]|5f|7e)/gi;

function decodeUnreserved(escape: string): string {
  return String.fromCharCode(parseInt(escape.slice(1), 16));
}

/** `/path?query` in normal form, or the ProxyError that refuses it. Accepts origin and absolute form. */
export function normalizeTarget(target: string, rejectEncodedSlashes: boolean): string | ProxyError {
  let origin = target;
  if (target.charCodeAt(0) !== 47 /* / */) {
    const scheme = /^https?:\/\/[^/?#]*/i.exec(target);
    if (scheme === null) return NOT_ORIGIN;
    // Absolute form: the authority is ignored (the request goes to the configured upstream), only the path kept.
    origin = target.slice(scheme[0].length);
    if (origin === '' || origin.charCodeAt(0) === 63 /* ? */) origin = `/${origin}`;
    if (origin.charCodeAt(0) !== 47) return NOT_ORIGIN;
  }
  if (!NEEDS_WORK.test(origin)) return origin;
  if (origin.includes('#')) return FRAGMENT;

  const q = origin.indexOf('?');
  const path = q === -1 ? origin : origin.slice(0, q);
  const query = q === -1 ? '' : origin.slice(q);
  const lower = path.toLowerCase();
  if (lower.includes('%00')) return NUL;
  if (path.includes('\\')) return BACKSLASH;
  if (BAD_PERCENT.test(path)) return BAD_ESCAPE;
  if (rejectEncodedSlashes && (lower.includes('%2f') || lower.includes('%5c'))) return ENCODED_SLASH;

  const segments: string[] = [];
  const parts = path.split('/');
  let trailingSlash = false;
  for (let i = 1; i < parts.length; i++) {
    const raw = parts[i] as string;
    const last = i === parts.length - 1;
    if (raw === '') {
      if (last) trailingSlash = true;
      continue; // merged slash
    }
    const segment = raw.includes('%') ? raw.replace(UNRESERVED, decodeUnreserved) : raw;
    if (segment === '.') {
      if (last) trailingSlash = true;
    } else if (segment === '..') {
      segments.pop();
      if (last) trailingSlash = true;
    } else segments.push(segment);
  }
  let normal = `/${segments.join('/')}`;
  if (trailingSlash && segments.length > 0) normal += '/';
  return normal + query;
}
