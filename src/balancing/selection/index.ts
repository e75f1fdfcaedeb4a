import type { Strategy } from '../../config/schema.js';
import type { Clock, Random } from '../../util/clock.js';
import { createConsistentHash } from './consistent-hash.js';
import { createLeastConn } from './least-conn.js';
import { createP2cEwma } from './p2c-ewma.js';
import type { Peer, Selector } from './peer.js';
import { createRandom } from './random.js';
import { createRoundRobin } from './round-robin.js';

export type { Accept, Peer, Selector } from './peer.js';

/** Builds the selector a config names; called when the config is loaded. */
export function createSelector<P extends Peer>(strategy: Strategy, peers: readonly P[], random: Random, clock: Clock): Selector<P> {
  switch (strategy) {
    case 'round_robin':
      return createRoundRobin(peers);
    case 'random':
      return createRandom(peers, random);
    case 'least_conn':
      return createLeastConn(peers, random);
    case 'consistent_hash':
      return createConsistentHash(peers);
    case 'p2c_ewma':
      return createP2cEwma(peers, random, clock);
  }
}
