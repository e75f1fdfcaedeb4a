import type { Random } from '../../util/clock.js';
import type { Accept, Peer, Selector } from './peer.js';

/**
 * Fewest in-flight requests relative to weight (inflight / weight, compared by cross-multiplication so no
 * division); peers that tie are chosen between at random in proportion to their weights (weighted reservoir
 * sampling, one pass). The weights matter most at low load, where every peer has 0 in flight and every
 * choice is a tie: 3:1:1 then sends 60/20/20%, not a third each.
 */
export function createLeastConn<P extends Peer>(peers: readonly P[], random: Random): Selector<P> {
  return {
    select: function selectLeastConn(accept: Accept<P>): P | undefined {
      let best: P | undefined;
      /** Sum of the weights of the peers tied with `best`. */
      let tied = 0;
      for (const peer of peers) {
        if (!accept(peer)) continue;
        if (best === undefined) {
          best = peer;
          tied = peer.weight;
          continue;
        }
        const lhs = peer.inflight * best.weight;
        const rhs = best.inflight * peer.weight;
        if (lhs < rhs) {
          best = peer;
          tied = peer.weight;
        } else if (lhs === rhs) {
          tied += peer.weight;
          if (random() * tied < peer.weight) best = peer;
        }
      }
      return best;
    },
  };
}
