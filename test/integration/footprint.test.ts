/**
 * What a running proxy keeps loaded: neither undici's main module (fetch, WebSocket, the mocks; Tollgate
 * takes the parts it uses from their own files, src/util/undici.ts) nor, on Node 24, Node's own bundled
 * undici, which an ES import of node:http pulls in (src/util/http.ts); and in the `tollgate` command, not
 * zod (the config is read on a worker thread, gateway/parse-thread.ts). All would stay in the heap for the
 * life of the process. The checks run in child processes started for them, on the built package, with a
 * request proxied end to end first, so nothing the test runner loads is counted.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { listeningPort, ROOT, startCli, waitForOutput, writeConfig } from '../helpers/cli.js';
import { startBackend, waitFor } from '../helpers/servers.js';

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

test('the tollgate command does not load zod, at start or after a reload', async () => {
  const backend = await startBackend('b1');
  const out = join(tmpdir(), `tollgate-probe-${process.pid}.json`);
  rmSync(out, { force: true });
  const yaml = `server: { listen_address: 127.0.0.1, listen_port: 0 }
admin: { enabled: false }
logging: { level: info }
load_balancing:
  upstreams: [{ name: b1, address: 127.0.0.1, port: ${backend.port} }]
  health_check: { active: { enabled: false }, passive: { enabled: false } }
`;
  const file = writeConfig(yaml);
  const child = startCli(['--config', file], { NODE_OPTIONS: `--import=${join(ROOT, 'test/fixtures/report-zod-on-sigusr2.mjs')}`, PROBE_OUT: out });
  try {
    const port = await listeningPort(child);
    const status = await new Promise<number | undefined>((resolve, reject) => request({ host: '127.0.0.1', port, path: '/x' }, (res) => res.resume().on('end', () => resolve(res.statusCode))).on('error', reject).end());
    assert.equal(status, 200);
    child.kill('SIGHUP');
    await waitForOutput(child, /config reloaded: generation 2 serving/);
    child.kill('SIGUSR2');
    await waitFor(() => existsSync(out), 10_000, 'the probe to answer');
    assert.deepEqual(JSON.parse(readFileSync(out, 'utf8')), { before: false, after: true });
  } finally {
    child.kill('SIGTERM');
    rmSync(out, { force: true });
    await backend.close();
  }
});
