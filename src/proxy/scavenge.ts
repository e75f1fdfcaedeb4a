/**
 * Pacing V8's young-generation collections by body bytes.
 *
 * Every chunk read from a socket is a new ArrayBuffer whose memory lives outside V8's heap, and V8 frees
 * it only when it collects the generation the buffer's object is in. A streamed body dies young, but the
 * young generation is collected when JavaScript objects fill it, and a large body makes few of those: on
 * Node 24 a 1 MiB download allocates 16 buffers of 64 KiB and hardly any objects. So the buffers pile up
 * until their total passes V8's limit for memory outside the heap (64 MiB above what the last full
 * collection left), and each time V8 starts a full mark-and-sweep of the whole heap: about ten a second at
 * 600 MiB/s, a third of the CPU time of a proxied download (docs/benchmarks.md, "The large-body path").
 *
 * Collecting the young generation after every BODY_BYTES_PER_SCAVENGE of body bytes frees those buffers
 * long before that limit, for the price of a collection of the young generation (mostly empty here).
 * V8's collector is reached through `gc()`, which Node shows only with --expose-gc: the flag is turned on
 * just long enough to take the function from a fresh context, so no global `gc` appears for plugins, and
 * contexts or workers created later do not get one either. Without it (an embedder that forbids
 * setting flags) bodies stream as before.
 */
import v8 from 'node:v8';
import vm from 'node:vm';

/** Body bytes between two young-generation collections (well below V8's 64 MiB, measured: 8 and 16 alike). */
export const BODY_BYTES_PER_SCAVENGE = 8 * 1024 * 1024;

type Collect = (options: { type: 'minor' | 'major' }) => void;

function youngCollector(): Collect | undefined {
  const exposed = (globalThis as { gc?: unknown }).gc;
  if (typeof exposed === 'function') return exposed as Collect;
  try {
    v8.setFlagsFromString('--expose-gc');
    try {
      const gc: unknown = vm.runInNewContext('gc');
      return typeof gc === 'function' ? (gc as Collect) : undefined;
    } finally {
      v8.setFlagsFromString('--no-expose-gc');
    }
  } catch {
    return undefined;
  }
}

const collect = youngCollector();
let sinceLast = 0;

/** Counts `n` bytes of a body passed on (either direction); collects the young generation every BODY_BYTES_PER_SCAVENGE. */
export function bodyBytesPassed(n: number): void {
  sinceLast += n;
  if (sinceLast < BODY_BYTES_PER_SCAVENGE || collect === undefined) return;
  sinceLast = 0;
  collect({ type: 'minor' });
}
