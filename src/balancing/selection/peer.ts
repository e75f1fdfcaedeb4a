/** What a selection algorithm sees of a backend: the same shape for every strategy. */
export interface Peer {
  readonly name: string;
  /** Relative share of traffic, 1-1000. */
  readonly weight: number;
  /** Requests currently sent to this peer and not yet finished. */
  readonly inflight: number;
}

/** Whether a peer may take this request (healthy, not already tried, ...). */
export type Accept<P extends Peer> = (peer: P) => boolean;

/**
 * Picks one peer for a request, or undefined when no peer is acceptable. Called once per request on the hot
 * path; implementations keep their state between calls and never allocate.
 */
export interface Selector<P extends Peer> {
  select(accept: Accept<P>): P | undefined;
}
