/**
 * What a running proxy keeps loaded: neither undici's main module (fetch, WebSocket, the mocks; Tollgate
 * takes the parts it uses from their own files, src/util/undici.ts) nor, on Node 24, Node's own bundled
 * undici, which an ES import of node:http pulls in (src/util/http.ts). Both would stay in the heap for the
 * life of the process. The check runs in a child process started for it, on the built package, with a
 * request proxied end to end first, so nothing the test runner loads is counted.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { ROOT } from '../helpers/cli.js';

const CHILD = `
const http = process.getBuiltinModule('node:http');
const { createRequire } = process.getBuiltinModule('node:module');
const { createGateway } = await import(${JSON.stringify(join(ROOT, 'dist/index.js'))});
const require = createRequire(${JSON.stringify(join(ROOT, 'package.json'))});
const upstream = http.createServer((req, res) => res.end('up ' + req.url));
await new Promise((resolve) => upstream.listen(0, '127.0.0.1', resolve));
const noHealth = { active: { enabled: false }, passive: { enabled: false } };
const gateway = await createGateway({ config: {
  server: { listen_port: 0, listen_address: '127.0.0.1' },
  admin: { enabled: false },
  logging: { level: 'silent' },
  services: { a: { upstreams: [{ name: 'a1', address: '127.0.0.1', port: upstream.address().port }], health_check: noHealth } },
  routes: [{ name: 'all', match: { path_prefix: '/' }, service: 'a' }],
} });
const { port } = await gateway.listen();
const body = await new Promise((resolve, reject) => http.get({ host: '127.0.0.1', port, path: '/x' }, (res) => {
  let text = ''; res.setEncoding('utf8'); res.on('data', (c) => (text += c)); res.on('end', () => resolve(text));
}).on('error', reject));
const loaded = () => ({
  nodeBundledUndici: process.moduleLoadList.some((m) => m.includes('deps/undici')),
  undiciMain: require.cache[require.resolve('undici')] !== undefined,
});
const served = loaded();
await gateway.close(); upstream.close();
// The control: an ES import of node:http, as Tollgate no longer does; on Node 24 it loads the bundled undici.
await import('node:http');
console.log(JSON.stringify({ body, served, afterImport: loaded(), httpHasWebSocket: 'WebSocket' in http }));
`;

test('a proxy that served a request has loaded neither undici’s main module nor Node’s bundled undici', async () => {
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', CHILD], { cwd: ROOT, timeout: 30_000 });
  const seen = JSON.parse(stdout.trim().split('\n').at(-1) ?? '') as {
    body: string;
    served: { nodeBundledUndici: boolean; undiciMain: boolean };
    afterImport: { nodeBundledUndici: boolean };
    httpHasWebSocket: boolean;
  };
  assert.equal(seen.body, 'up /x');
  assert.deepEqual(seen.served, { nodeBundledUndici: false, undiciMain: false });
  // Where node:http has the WebSocket export (Node 22.4 and later), the probe must see the control's load.
  assert.equal(seen.afterImport.nodeBundledUndici, seen.httpHasWebSocket);
});
