/**
 * Header rules shared by both directions. Names are compared lower-case.
 */
import { hundredths } from '../util/format.js';

/** Hop-by-hop headers (RFC 9110 section 7.6.1, plus the de-facto Keep-Alive and Proxy-Connection). */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/**
 * Whether a name of this length can be hop-by-hop (indexed by length): most header names are not, and are
 * told so without the lower-cased copy and Set lookup (a new string and its hash for every response header).
 */
const HOP_BY_HOP_LENGTHS: readonly boolean[] = (() => {
  const lengths: boolean[] = [];
  for (const name of HOP_BY_HOP) lengths[name.length] = true;
  return Array.from(lengths, (known) => known === true);
})();

/** The lower-cased name when `name` is hop-by-hop (any case), else undefined. */
export function hopByHop(name: string): string | undefined {
  if (HOP_BY_HOP_LENGTHS[name.length] !== true) return undefined;
  const lower = name.toLowerCase();
  return HOP_BY_HOP.has(lower) ? lower : undefined;
}

/**
 * Names listed in a Connection header value are hop-by-hop too. Returns undefined in the common case of
 * no Connection header or only `keep-alive` / `close`, so that case allocates nothing.
 */
export function connectionTokens(value: string | undefined): Set<string> | undefined {
  if (value === undefined) return undefined;
  // The usual values, without splitting: `keep-alive`, `close` (any case).
  if (value.length === 10 || value.length === 5) {
    const lower = value.toLowerCase();
    if (lower === 'keep-alive' || lower === 'close') return undefined;
  }
  let tokens: Set<string> | undefined;
  for (const raw of value.split(',')) {
    const token = raw.trim().toLowerCase();
    if (token === '' || token === 'close' || token === 'keep-alive') continue;
    (tokens ??= new Set()).add(token);
  }
  return tokens;
}

/** Formats milliseconds as the X-Response-Time value: `1ms`, `0.42ms` (two decimals at most). */
export function formatMs(ms: number): string {
  return `${hundredths(ms)}ms`;
}
