import type { Random } from '../../util/clock.js';
import type { Accept, Peer, Selector } from './peer.js';

/** Weighted random: each acceptable peer is picked with probability weight / (sum of acceptable weights). */
export function createRandom<P extends Peer>(peers: readonly P[], random: Random): Selector<P> {
  return {
    select: function selectRandom(accept: Accept<P>): P | undefined {
      let total = 0;
      for (const peer of peers) if (accept(peer)) total += peer.weight;
      if (total === 0) return undefined;
      let point = random() * total;
      let last: P | undefined;
      for (const peer of peers) {
        if (!accept(peer)) continue;
        last = peer;
        point -= peer.weight;
        if (point < 0) return peer;
      }
      return last; // only reached through floating-point rounding at the very top of the range
    },
  };
}
