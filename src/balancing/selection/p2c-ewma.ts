import type { Clock, Random } from '../../util/clock.js';
import type { Accept, Peer, Selector } from './peer.js';

/** Decay time of the latency estimate: without news it falls to 1/e (37%) over this long (Linkerd's default). */
export const EWMA_DECAY_MS = 10_000;

/** A peer not picked for this long, with nothing in flight, is tried again as if new. */
export const PROBE_AFTER_MS = EWMA_DECAY_MS;

/**
 * Cost of a peer never measured that has requests in flight: above any measured cost (as Finagle's
 * penalty), so a new peer gets one request at a time until its first answer says how fast it is.
 */
const UNMEASURED_BUSY = 1e9;

/**
 * Power of two choices by peak-EWMA latency (as Finagle and Linkerd): two distinct acceptable peers are
 * drawn at random and the one with the lower cost wins (`p2cCost`); on a tie the higher weight wins, then
 * the first drawn. With fewer than two acceptable peers the only one is taken. Runs once per attempt; the
 * clock gives the time the estimates are decayed to and the time each peer was last picked.
 */
export function createP2cEwma<P extends Peer>(peers: readonly P[], random: Random, clock: Clock): Selector<P> {
  /** Indexes (into peers) of the acceptable peers of the current selection. */
  const candidates: number[] = [];
  /** When each peer was last picked; a new selector counts as having picked them all (no probe burst on reload). */
  const pickedAt = new Float64Array(peers.length).fill(clock());
  return {
    select: function selectP2c(accept: Accept<P>): P | undefined {
      candidates.length = 0;
      for (let k = 0; k < peers.length; k++) if (accept(peers[k] as P)) candidates.push(k);
      const n = candidates.length;
      if (n === 0) return undefined;
      const now = clock();
      let chosen = candidates[0] as number;
      if (n > 1) {
        const i = Math.floor(random() * n);
        let j = Math.floor(random() * (n - 1));
        if (j >= i) j++;
        const a = candidates[i] as number;
        const b = candidates[j] as number;
        const pa = peers[a] as P;
        const pb = peers[b] as P;
        const ca = p2cCost(pa, now, pickedAt[a] as number);
        const cb = p2cCost(pb, now, pickedAt[b] as number);
        chosen = cb < ca || (cb === ca && pb.weight > pa.weight) ? b : a;
      }
      pickedAt[chosen] = now;
      return peers[chosen];
    },
  };
}

/**
 * What sending one more request to `peer` costs at `now`: its latency estimate decayed to now
 * (`decayedLatency`) × (in flight + 1) / weight. A peer with nothing in flight that was never measured, or
 * was last picked `PROBE_AFTER_MS` or more ago (`pickedAt`), costs 0: it is tried when drawn, so a backend
 * that was slow once is measured again rather than avoided on an old figure. Pure.
 */
export function p2cCost(peer: Peer, now: number, pickedAt: number): number {
  if (peer.inflight === 0 && (peer.latencyMs === 0 || now - pickedAt >= PROBE_AFTER_MS)) return 0;
  if (peer.latencyMs === 0) return UNMEASURED_BUSY + peer.inflight;
  return (decayedLatency(peer.latencyMs, peer.latencyAt, now) * (peer.inflight + 1)) / peer.weight;
}

/**
 * The latency estimate at `now` of one last set at `at`: it falls towards 0 with time (as Finagle's and
 * Linkerd's peak EWMA), so a peer that gets no answers (because it is avoided) becomes cheap again and is
 * measured anew. A clock that went backwards counts as no time passed. Pure.
 */
export function decayedLatency(latencyMs: number, at: number, now: number): number {
  return latencyMs * Math.exp(-Math.max(0, now - at) / EWMA_DECAY_MS);
}

/**
 * Peak EWMA, on each answer: the estimate is first decayed to `now`; an observation at or above it
 * replaces it at once (so a slowing backend is avoided at once); a lower one pulls it down in proportion
 * to the time since the previous observation. An estimate `EWMA_DECAY_MS` or more old no longer counts:
 * the observation replaces it (a backend probed after a slow spell is judged on how it answers now). Pure.
 */
export function peakEwma(previous: number, previousAt: number, observed: number, now: number): number {
  const elapsed = Math.max(0, now - previousAt);
  if (previous === 0 || elapsed >= EWMA_DECAY_MS) return observed;
  const w = Math.exp(-elapsed / EWMA_DECAY_MS);
  const decayed = previous * w;
  if (observed >= decayed) return observed;
  return decayed * w + observed * (1 - w);
}
