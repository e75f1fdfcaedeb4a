import assert from 'node:assert/strict';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, test } from 'node:test';
import { MemoryStore } from '../../src/limits/memory-store.js';
import { policyFromRate } from '../../src/limits/token-bucket.js';
import { exchange, statusOf } from '../helpers/raw.js';
import { manualClock, startBackend, startProxy } from '../helpers/servers.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

describe('rate-limit evasion', () => {
  test('a client rotating X-Forwarded-For from an untrusted address stays one client', async () => {
    const backend = await startBackend('b');
    const proxy = await startProxy([backend], { middleware: { rate_limit: { enabled: true, requests_per_minute: 1, burst_size: 3 } } });
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 6; i++) {
        const reply = await exchange(proxy.port, `GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.51.100.${i}\r\nX-Real-IP: 198.51.100.${i}\r\nForwarded: for=198.51.100.${i}\r\nConnection: close\r\n\r\n`);
        statuses.push(statusOf(reply.text));
      }
      assert.deepEqual(statuses, [200, 200, 200, 429, 429, 429]);
    } finally {
      await proxy.close();
      await backend.close();
    }
  });

  test('100,000 distinct client keys keep the store at its cap, and the heap bounded', () => {
    const clock = manualClock();
    const cap = 10_000;
    const store = new MemoryStore({ policy: policyFromRate(100, 10), maxKeys: cap, clock });
    try {
      gc();
      const before = process.memoryUsage().heapUsed;
      let most = 0;
      for (let i = 0; i < 100_000; i++) {
        store.take(`addr:10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
        if (i % 1000 === 0) clock.advance(1);
        most = Math.max(most, store.size);
      }
      assert.ok(most <= cap, `store grew to ${most} keys (cap ${cap})`);
      assert.equal(store.size, cap);
      gc();
      const grown = process.memoryUsage().heapUsed - before;
      // 10,000 buckets take about 1-2 MiB; 8 MiB leaves room for the test's own garbage, and is far
      // below what 100,000 unbounded keys would take.
      assert.ok(grown < 8 * 1024 * 1024, `heap grew by ${(grown / 1048576).toFixed(1)} MiB`);
    } finally {
      store.close();
    }
  });
});
