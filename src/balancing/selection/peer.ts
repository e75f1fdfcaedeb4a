/** What a selection algorithm sees of a backend: the same shape for every strategy. */
export interface Peer {
  readonly name: string;
  /** `host:port`; seeds the consistent-hash ring, so a backend keeps its keys across restarts. */
  readonly address: string;
  /** Relative share of traffic: the configured weight, reduced while a backend warms up (slow start). */
  readonly weight: number;
  /** Requests currently sent to this peer and not yet finished. */
  readonly inflight: number;
  /** Peak-EWMA of response-header latency in ms (0 until measured); read by p2c_ewma. */
  readonly latencyMs: number;
  /** Clock time (ms) latencyMs was last set; p2c_ewma decays the estimate from there. */
  readonly latencyAt: number;
}

/** Whether a peer may take this request (healthy, not already tried, ...). */
export type Accept<P extends Peer> = (peer: P) => boolean;

/**
 * Picks one peer for a request, or undefined when no peer is acceptable. Called once per request on the hot
 * path; implementations keep their state between calls. `key` is the request's hash key (consistent_hash).
 */
export interface Selector<P extends Peer> {
  select(accept: Accept<P>, key: string): P | undefined;
}
