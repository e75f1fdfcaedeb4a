import type { Accept, Peer, Selector } from './peer.js';

/**
 * Smooth weighted round robin, the algorithm nginx uses: each pick adds every peer's weight to its running
 * score, takes the highest score and subtracts the total from it. Weights 3:1 give A A B A (spread out),
 * not A A A B. Peers that are not accepted are skipped without disturbing the others' turns.
 */
export function createRoundRobin<P extends Peer>(peers: readonly P[]): Selector<P> {
  const score = new Float64Array(peers.length);
  return {
    select: function selectRoundRobin(accept: Accept<P>): P | undefined {
      let best = -1;
      let total = 0;
      for (let i = 0; i < peers.length; i++) {
        const peer = peers[i] as P;
        if (!accept(peer)) continue;
        score[i] = (score[i] as number) + peer.weight;
        total += peer.weight;
        if (best === -1 || (score[i] as number) > (score[best] as number)) best = i;
      }
      if (best === -1) return undefined;
      score[best] = (score[best] as number) - total;
      return peers[best];
    },
  };
}
