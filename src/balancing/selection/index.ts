import type { Strategy } from '../../config/schema.js';
import type { Random } from '../../util/clock.js';
import { createLeastConn } from './least-conn.js';
import type { Peer, Selector } from './peer.js';
import { createRandom } from './random.js';
import { createRoundRobin } from './round-robin.js';

export type { Accept, Peer, Selector } from './peer.js';

/** Builds the selector a config names; called when the config is loaded. */
export function createSelector<P extends Peer>(strategy: Strategy, peers: readonly P[], random: Random): Selector<P> {
  switch (strategy) {
    case 'round_robin':
      return createRoundRobin(peers);
    case 'random':
      return createRandom(peers, random);
    case 'least_conn':
      return createLeastConn(peers, random);
  }
}
