/**
 * Reload in cluster mode (`server.workers: 2`) through the real CLI: the primary validates the file once and
 * switches every worker; the status document says which generation each worker runs.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { request } from '../helpers/http.js';
import { lines, startCluster, stopCluster, type Cluster } from '../helpers/cluster.js';
import { samples, scrape } from '../helpers/metrics.js';
import { startBackend, waitFor, type Backend } from '../helpers/servers.js';

function yaml(port: number, backend: Backend, routes: string): string {
  return [
    'server: { listen_port: ' + port + ', listen_address: "127.0.0.1", workers: 2, shutdown_grace_ms: 2000 }',
    'admin: { port: 0 }',
    'services:',
    `  s: { upstreams: [{ name: ${backend.name}, address: 127.0.0.1, port: ${backend.port} }], health_check: { active: { enabled: false } } }`,
    'routes:',
    routes,
  ].join('\n');
}

interface ConfigStatus {
  generation: number;
  hash: string;
  last_reload?: { result: string; errors: string[]; workers: { slot: number; generation: number | null; result: string }[] };
  workers: { slot: number; generation: number | null }[];
}

describe('cluster reload (server.workers: 2), through the real CLI', () => {
  let backend: Backend;
  let c: Cluster;
  let file: string;
  let port: number;
  before(async () => {
    backend = await startBackend('c');
    port = 0;
    c = await startCluster(yaml(port, backend, '  - { name: a, match: { path_prefix: /a }, service: s }'));
    // The file startCluster wrote: the test changes it and reloads.
    file = c.child.spawnargs[c.child.spawnargs.indexOf('--config') + 1] as string;
  });
  after(async () => {
    await stopCluster(c);
    await backend.close();
  });

  const status = async (): Promise<ConfigStatus> => (await request(`${c.adminUrl}/api/status`)).json<{ config: ConfigStatus }>().config;

  test('SIGHUP to the primary switches both workers; each says which generation it runs', async () => {
    const before = await status();
    assert.equal(before.generation, 1);
    assert.deepEqual(before.workers.map((w) => w.generation), [1, 1]);
    assert.equal((await request(`${c.url}/b/x`)).status, 404);

    writeFileSync(file, yaml(port, backend, '  - { name: a, match: { path_prefix: /a }, service: s }\n  - { name: b, match: { path_prefix: /b }, service: s }'));
    c.child.kill('SIGHUP');
    await waitFor(async () => (await status()).last_reload?.result === 'ok', 10_000, 'the reload to finish');
    const after = await status();
    assert.equal(after.generation, 2);
    assert.deepEqual(after.workers.map((w) => w.generation), [2, 2]);
    assert.deepEqual(after.last_reload?.workers.map((w) => [w.slot, w.generation, w.result]), [[0, 2, 'ok'], [1, 2, 'ok']]);
    assert.notEqual(after.hash, before.hash);
    const listed = (await request(`${c.adminUrl}/api/status`)).json<{ routes: { name: string }[] }>().routes.map((r) => r.name);
    assert.deepEqual(listed.sort(), ['a', 'b'], 'the primary lists the routes in force');
    // Fresh connections, spread over the workers: every one has the new route.
    for (let i = 0; i < 12; i++) assert.equal((await request(`${c.url}/b/${i}`)).status, 200);
    // Both workers logged the switch.
    const switched = lines(c.child).filter((l) => l.msg === 'config reloaded: generation 2 serving' && typeof l.worker === 'number');
    assert.deepEqual(switched.map((l) => l.worker).sort(), [0, 1]);
  });

  test('POST /api/reload on the primary: a bad file answers 400 and every worker keeps its generation', async () => {
    writeFileSync(file, yaml(port, backend, '  - { name: a, match: { path_prefix: /a }, service: nowhere }'));
    const reply = await request(`${c.adminUrl}/api/reload`, { method: 'POST', headers: { 'content-type': 'application/json' } });
    assert.equal(reply.status, 400);
    const body = reply.json<{ result: string; errors: string[] }>();
    assert.equal(body.result, 'error');
    assert.ok(body.errors.some((e) => /routes\[0\]\.service: no service named "nowhere"/.test(e)), JSON.stringify(body.errors));
    const now = await status();
    assert.equal(now.generation, 2);
    assert.deepEqual(now.workers.map((w) => w.generation), [2, 2]);
    assert.equal((await request(`${c.url}/b/1`)).status, 200);
    const reloads = samples(await scrape(c.adminUrl), 'tollgate_config_reloads_total');
    assert.equal(reloads.get('{result="ok"}'), 1);
    assert.equal(reloads.get('{result="error"}'), 1);

    writeFileSync(file, yaml(port, backend, '  - { name: a, match: { path_prefix: /a }, service: s }'));
    const good = await request(`${c.adminUrl}/api/reload`, { method: 'POST', headers: { 'content-type': 'application/json' } });
    assert.equal(good.status, 200);
    assert.equal(good.json<{ generation: number }>().generation, 3);
    assert.equal((await request(`${c.url}/b/1`)).status, 404);
  });

  test('a worker that does not answer a reload is restarted on the new generation', async () => {
    const stopped = (await status()).workers[1];
    assert.ok(stopped !== undefined);
    const pid = lines(c.child).filter((l) => l.msg === 'worker started' && l.worker === 1).map((l) => l.worker_pid as number).pop() as number;
    process.kill(pid, 'SIGSTOP');
    writeFileSync(file, yaml(port, backend, '  - { name: a, match: { path_prefix: /a }, service: s }\n  - { name: c, match: { path_prefix: /c }, service: s }'));
    const reply = await request(`${c.adminUrl}/api/reload`, { method: 'POST', headers: { 'content-type': 'application/json' } });
    assert.equal(reply.status, 200);
    const body = reply.json<{ generation: number; workers: { slot: number; result: string }[] }>();
    assert.deepEqual(body.workers.map((w) => [w.slot, w.result]), [[0, 'ok'], [1, 'restarted']]);
    await waitFor(async () => (await status()).workers.every((w) => w.generation === body.generation), 15_000, 'the restarted worker to run the new generation');
    assert.ok(lines(c.child).some((l) => l.msg === 'worker failed to switch to the new config: restarting it' && l.worker === 1));
    assert.equal((await request(`${c.url}/c/1`)).status, 200);
  });

  test('a reload that turns on a route limit, then changes it: the primary\'s buckets hold it across both workers', async () => {
    const limited = (burst: number): string =>
      yaml(port, backend, `  - { name: a, match: { path_prefix: /a }, service: s, middleware: { rate_limit: { enabled: true, requests_per_minute: 1, burst_size: ${burst}, store: { type: memory, timeout_ms: 10000 } } } }`);
    const codes = async (n: number): Promise<number[]> => {
      const out: number[] = [];
      // Fresh connections: the requests are spread over both workers, and one bucket counts them all.
      for (let i = 0; i < n; i++) out.push((await request(`${c.url}/a/${i}`)).status);
      return out;
    };
    writeFileSync(file, limited(3));
    assert.equal((await request(`${c.adminUrl}/api/reload`, { method: 'POST', headers: { 'content-type': 'application/json' } })).status, 200);
    assert.deepEqual(await codes(5), [200, 200, 200, 429, 429]);
    writeFileSync(file, limited(4));
    assert.equal((await request(`${c.adminUrl}/api/reload`, { method: 'POST', headers: { 'content-type': 'application/json' } })).status, 200);
    assert.deepEqual(await codes(5), [200, 200, 200, 200, 429], 'a changed policy is a new bucket');
  });
});
