/** Milliseconds from an arbitrary origin; injected wherever time matters so tests need not sleep. */
export type Clock = () => number;

/** Monotonic milliseconds (not wall time: immune to clock steps). */
export const monotonicClock: Clock = function monotonicClock() {
  return performance.now();
};

/** A number in [0, 1); injected wherever randomness matters so tests can pin it. */
export type Random = () => number;

export const mathRandom: Random = Math.random;
