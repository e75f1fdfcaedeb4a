import type { Random } from '../../util/clock.js';
import type { Accept, Peer, Selector } from './peer.js';

/**
 * Power of two choices by peak-EWMA latency (as Finagle and Linkerd): two distinct acceptable peers are
 * drawn at random and the one with the lower cost wins, cost = latency × (in-flight + 1) / weight. A peer
 * not yet measured costs nothing, so new peers are tried. With fewer than two acceptable peers the only
 * one is taken.
 */
export function createP2cEwma<P extends Peer>(peers: readonly P[], random: Random): Selector<P> {
  const candidates: P[] = [];
  return {
    select: function selectP2c(accept: Accept<P>): P | undefined {
      candidates.length = 0;
      for (const peer of peers) if (accept(peer)) candidates.push(peer);
      const n = candidates.length;
      if (n <= 1) return candidates[0];
      const i = Math.floor(random() * n);
      let j = Math.floor(random() * (n - 1));
      if (j >= i) j++;
      const a = candidates[i] as P;
      const b = candidates[j] as P;
      return cost(b) < cost(a) ? b : a;
    },
  };
}

function cost(peer: Peer): number {
  return (peer.latencyMs * (peer.inflight + 1)) / peer.weight;
}

/** Decay time of the latency average: an old peak fades over about this long (Linkerd's default). */
export const EWMA_DECAY_MS = 10_000;

/**
 * Peak EWMA: a slower observation replaces the average at once (so a slowing backend is avoided at once);
 * faster ones pull it down in proportion to the time since the last observation.
 */
export function peakEwma(previous: number, previousAt: number, observed: number, now: number): number {
  if (previous === 0 || observed >= previous) return observed;
  const w = Math.exp(-Math.max(0, now - previousAt) / EWMA_DECAY_MS);
  return previous * w + observed * (1 - w);
}
