/**
 * The young-generation collections paced by body bytes (src/proxy/scavenge.ts): one after every
 * BODY_BYTES_PER_SCAVENGE bytes, none before; and no `gc` function left visible anywhere.
 */
import assert from 'node:assert/strict';
import { constants, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import vm from 'node:vm';
import { test } from 'node:test';
import { BODY_BYTES_PER_SCAVENGE, bodyBytesPassed } from '../../../src/proxy/scavenge.js';

/** Young-generation collections reported while `work` runs (and just after: the observer is asynchronous). */
async function minorCollections(work: () => void): Promise<number> {
  const seen: PerformanceEntry[] = [];
  const observer = new PerformanceObserver((list) => seen.push(...list.getEntries()));
  observer.observe({ entryTypes: ['gc'] });
  work();
  await new Promise((r) => setTimeout(r, 50));
  observer.disconnect();
  return seen.filter((e) => (e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MINOR).length;
}

test('a young-generation collection after each BODY_BYTES_PER_SCAVENGE bytes of body, none before', async () => {
  // Start from a fresh count: this passes the threshold once, whatever came before.
  await minorCollections(() => bodyBytesPassed(BODY_BYTES_PER_SCAVENGE));
  const chunk = 64 * 1024;
  const under = await minorCollections(() => {
    for (let n = chunk; n < BODY_BYTES_PER_SCAVENGE; n += chunk) bodyBytesPassed(chunk);
  });
  assert.equal(under, 0, 'no collection below the threshold (the loop allocates nothing)');
  const atThreshold = await minorCollections(() => bodyBytesPassed(chunk));
  assert.equal(atThreshold, 1);
  const threeMore = await minorCollections(() => {
    for (let i = 0; i < 3; i++) bodyBytesPassed(BODY_BYTES_PER_SCAVENGE);
  });
  assert.equal(threeMore, 3);
});

test('no gc function is left visible: not on this global, not in new contexts', () => {
  assert.equal(typeof (globalThis as { gc?: unknown }).gc, 'undefined');
  assert.equal(vm.runInNewContext('typeof gc'), 'undefined');
});
