/**
 * Milliseconds as text with at most two decimals (`1`, `0.42`, `12.5`): the same text as
 * `String(Math.round(ms * 100) / 100)`, built from two small integers. Three durations per request are
 * formatted (X-Response-Time, Server-Timing, the log line's duration_ms); through a double each went
 * through V8's double-to-string conversion, while small integers come from its number-string cache.
 */
export function hundredths(ms: number): string {
  const h = Math.round(ms * 100);
  // Beyond int32 (about 248 days) or negative: the general path.
  if (!(h >= 0 && h <= 0x7fffffff)) return String(h / 100);
  const whole = (h / 100) | 0;
  const frac = h - whole * 100;
  if (frac === 0) return `${whole}`;
  if (frac % 10 === 0) return `${whole}.${frac / 10}`;
  return frac < 10 ? `${whole}.0${frac}` : `${whole}.${frac}`;
}
