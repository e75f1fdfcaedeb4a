/**
 * W3C Trace Context (level 1) for each proxied request: the client's `traceparent` is continued with a new
 * span id for this hop, or a trace is started when it is absent or invalid; the upstream receives the
 * result, with the client's `tracestate` when the traceparent was valid. No tracing SDK: Tollgate records no
 * spans, it passes the context on and writes the trace id into the completion log line.
 */
import { randomFillSync } from 'node:crypto';
import type { TracingConfig } from '../../config/schema.js';
import { hundredths } from '../../util/format.js';
import type { RequestContext } from '../../proxy/context.js';
import type { FilterResult, Phases } from '../../proxy/phases.js';

/** A parsed, valid traceparent. */
export interface TraceParent {
  traceId: string;
  parentId: string;
  flags: string;
}

const HEX = /^[0-9a-f]+$/;
const ZERO_TRACE = '0'.repeat(32);
const ZERO_SPAN = '0'.repeat(16);

/**
 * Parses a traceparent header value as level 1 says: `00-<32 hex>-<16 hex>-<2 hex>`, lower-case, the ids
 * not all zeros. A higher version (not `ff`) is read the same way as long as its first 55 characters have
 * that shape and, if longer, a `-` follows them. Anything else, including a repeated header, is undefined.
 */
export function parseTraceparent(value: string | string[] | undefined): TraceParent | undefined {
  if (typeof value !== 'string' || value.length < 55) return undefined;
  const version = value.slice(0, 2);
  if (!HEX.test(version) || version === 'ff') return undefined;
  if (version === '00' ? value.length !== 55 : value.length > 55 && value[55] !== '-') return undefined;
  if (value[2] !== '-' || value[35] !== '-' || value[52] !== '-') return undefined;
  const traceId = value.slice(3, 35);
  const parentId = value.slice(36, 52);
  const flags = value.slice(53, 55);
  if (!HEX.test(traceId) || !HEX.test(parentId) || !HEX.test(flags)) return undefined;
  if (traceId === ZERO_TRACE || parentId === ZERO_SPAN) return undefined;
  return { traceId, parentId, flags };
}

/** Longest tracestate passed on; level 1 asks every vendor to pass at least 512 characters. */
export const TRACESTATE_MAX = 512;
const TRACESTATE_MEMBERS = 32;
// key: lcalpha then up to 255 of lcalpha, digits, _ - * /; or tenant@system (241 and 14 characters).
const MEMBER = /^(?:[a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]$/;

/**
 * The tracestate to pass on, or undefined: several headers are one list (Node joins them with ", "), empty
 * members are dropped, a list with a malformed member or over 32 members is dropped whole, and a list
 * longer than 512 characters loses members over 128 characters first, then members from the end.
 */
export function boundTracestate(value: string | string[] | undefined): string | undefined {
  if (value === undefined) return undefined;
  const joined = typeof value === 'string' ? value : value.join(',');
  const members: string[] = [];
  for (const raw of joined.split(',')) {
    const member = raw.trim();
    if (member === '') continue;
    if (!MEMBER.test(member)) return undefined;
    members.push(member);
  }
  if (members.length === 0 || members.length > TRACESTATE_MEMBERS) return undefined;
  let text = members.join(',');
  if (text.length <= TRACESTATE_MAX) return text;
  let kept = members.filter((m) => m.length <= 128);
  text = kept.join(',');
  while (text.length > TRACESTATE_MAX && kept.length > 0) {
    kept = kept.slice(0, -1);
    text = kept.join(',');
  }
  return kept.length === 0 ? undefined : text;
}

/** Fills a buffer with random bytes (injected by tests; crypto.randomFillSync by default). */
export type FillRandom = (buffer: Buffer) => void;

/**
 * Random ids from a pooled buffer: one randomFillSync call and one hex conversion per 4 KiB (512 span
 * ids); each id is then a slice of that text instead of a call into Buffer#toString. An id that comes out
 * all zeros (invalid in Trace Context) is drawn again.
 */
export class IdSource {
  readonly #pool = Buffer.allocUnsafe(4096);
  readonly #fill: FillRandom;
  /** The pool as hex, two characters per byte. */
  #hex = '';
  #offset = this.#pool.length;

  constructor(fill: FillRandom = randomFillSync) {
    this.#fill = fill;
  }

  /** `bytes` random bytes as lower-case hex, never all zeros. */
  hex(bytes: 8 | 16): string {
    for (;;) {
      if (this.#offset + bytes > this.#pool.length) {
        this.#fill(this.#pool);
        this.#hex = this.#pool.toString('hex');
        this.#offset = 0;
      }
      const id = this.#hex.slice(this.#offset * 2, (this.#offset + bytes) * 2);
      this.#offset += bytes;
      if (id !== (bytes === 8 ? ZERO_SPAN : ZERO_TRACE)) return id;
    }
  }
}

/**
 * The trace-context phase, built once from the config. Its request filter runs first of all filters (so a
 * request refused with 401 or 429 has a trace id in its log line too); its upstream request filter adds
 * the headers on every attempt. The client's own traceparent and tracestate are consumed: the upstream gets
 * only what this phase writes.
 */
export function createTraceContext(config: TracingConfig, ids: IdSource = new IdSource()): Phases {
  const newFlags = config.sample_new_traces ? '01' : '00';
  return {
    name: 'trace-context',
    consumesRequestHeaders: ['traceparent', 'tracestate'],
    requestFilter: function startSpan(ctx: RequestContext): FilterResult {
      const headers = ctx.req.headers;
      const incoming = headers.traceparent === undefined ? undefined : parseTraceparent(headers.traceparent);
      const span = ids.hex(8);
      if (incoming === undefined) {
        ctx.traceId = ids.hex(16);
        ctx.traceParent = `00-${ctx.traceId}-${span}-${newFlags}`;
      } else {
        ctx.traceId = incoming.traceId;
        ctx.traceParent = `00-${incoming.traceId}-${span}-${incoming.flags}`;
        if (headers.tracestate !== undefined) ctx.traceState = boundTracestate(headers.tracestate);
      }
      return false;
    },
    upstreamRequestFilter: function sendTraceContext(ctx: RequestContext, out: string[]): void {
      out.push('traceparent', ctx.traceParent);
      if (ctx.traceState !== undefined) out.push('tracestate', ctx.traceState);
    },
  };
}

/**
 * `Server-Timing: upstream;dur=<ms>` on responses for which an upstream attempt was made: the time from
 * dispatching the attempt that answered to its response head (or to its failure).
 */
export function createServerTiming(): Phases {
  return {
    name: 'server-timing',
    responseFilter: function serverTiming(ctx: RequestContext, out: string[]): void {
      if (ctx.dispatchedAt === 0) return;
      // writeHead has just set responseTime, so the head's time needs no second clock read.
      const ms = ctx.startedAt + ctx.responseTime - ctx.dispatchedAt;
      out.push('Server-Timing', `upstream;dur=${hundredths(ms)}`);
    },
  };
}
