import type { Random } from '../../util/clock.js';
import type { Accept, Peer, Selector } from './peer.js';

/**
 * Fewest in-flight requests relative to weight (inflight / weight, compared by cross-multiplication so no
 * division); peers that tie are chosen between uniformly at random (reservoir sampling, one pass).
 */
export function createLeastConn<P extends Peer>(peers: readonly P[], random: Random): Selector<P> {
  return {
    select: function selectLeastConn(accept: Accept<P>): P | undefined {
      let best: P | undefined;
      let ties = 0;
      for (const peer of peers) {
        if (!accept(peer)) continue;
        if (best === undefined) {
          best = peer;
          ties = 1;
          continue;
        }
        const lhs = peer.inflight * best.weight;
        const rhs = best.inflight * peer.weight;
        if (lhs < rhs) {
          best = peer;
          ties = 1;
        } else if (lhs === rhs) {
          ties++;
          if (random() * ties < 1) best = peer;
        }
      }
      return best;
    },
  };
}
