// Preloaded into the proxy by bench/soak.mjs (node --expose-gc --require this file): on SIGUSR2 it runs a
// full garbage collection and appends the heap after it, as one JSON line, to $HEAP_PROBE_FILE.
'use strict';
const fs = require('node:fs');

const file = process.env.HEAP_PROBE_FILE;
if (file && typeof global.gc === 'function') {
  process.on('SIGUSR2', () => {
    global.gc();
    global.gc(); // a second pass frees what the first one's finalizers released
    const m = process.memoryUsage();
    fs.appendFileSync(file, `${JSON.stringify({ t: Date.now(), heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, rss: m.rss })}\n`);
  });
}
