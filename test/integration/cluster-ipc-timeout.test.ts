/**
 * Cluster mode with the memory store: a worker asks the primary for each take, and waits at most the
 * store's `timeout_ms`; then `on_error` decides. The primary is stalled with SIGSTOP. In Node's cluster the
 * primary accepts connections and hands them to workers, so a stopped primary takes no new connection: the
 * request goes over a keep-alive connection opened (and used once) before the stop, which the worker
 * holding it answers by itself.
 */
import assert from 'node:assert/strict';
import { Agent, request as httpRequest } from 'node:http';
import { after, before, describe, test } from 'node:test';
import type { Status } from '../../src/admin/status.js';
import { request, type Reply } from '../helpers/http.js';
import { lines, startCluster, stopCluster, type Cluster } from '../helpers/cluster.js';
import { samples, scrape } from '../helpers/metrics.js';
import { startBackend, waitFor, type Backend } from '../helpers/servers.js';

function yaml(port: number, backendPort: number, onError: 'allow' | 'deny'): string {
  return [
    'server:',
    `  listen_port: ${port}`,
    '  listen_address: "127.0.0.1"',
    '  workers: 2',
    '  shutdown_grace_ms: 5000',
    'load_balancing:',
    '  health_check: { active: { enabled: false } }',
    '  upstreams:',
    `    - { name: b, address: 127.0.0.1, port: ${backendPort} }`,
    'middleware:',
    '  rate_limit:',
    '    enabled: true',
    '    requests_per_minute: 60',
    '    burst_size: 100',
    `    store: { type: memory, timeout_ms: 200, on_error: ${onError} }`,
    'admin:',
    '  port: 0',
  ].join('\n');
}

/** A request over `agent` (one keep-alive connection); also says which local port the connection had. */
function get(agent: Agent, url: string): Promise<Reply & { localPort: number }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { agent, timeout: 15_000 }, (res) => {
      const localPort = res.socket.localPort ?? 0;
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString();
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, json: () => JSON.parse(body), localPort });
      });
    });
    // Without an answer the test fails here instead of hanging (the bound under test is 200 ms).
    req.on('timeout', () => req.destroy(new Error('no answer within 15 s')));
    req.on('error', reject);
    req.end();
  });
}

/** Stops the primary, runs `fn`, and always lets the primary go on. */
async function withPrimaryStopped<T>(c: Cluster, fn: () => Promise<T>): Promise<T> {
  const pid = c.child.pid;
  assert.ok(pid !== undefined);
  process.kill(pid, 'SIGSTOP');
  try {
    return await fn();
  } finally {
    process.kill(pid, 'SIGCONT');
  }
}

for (const onError of ['allow', 'deny'] as const) {
  describe(`cluster mode, memory store, on_error: ${onError}: a stalled primary`, () => {
    let backend: Backend;
    let c: Cluster;
    let agent: Agent;
    before(async () => {
      backend = await startBackend('b');
      const port = 0;
      c = await startCluster(yaml(port, backend.port, onError));
      agent = new Agent({ keepAlive: true, maxSockets: 1 });
    });
    after(async () => {
      agent.destroy();
      await stopCluster(c);
      await backend.close();
    });

    test(`a worker answers within the bound (${onError === 'allow' ? '200 without RateLimit headers' : '503 rate_limit_unavailable'})`, async () => {
      // The primary answers: the bucket's headers.
      const first = await get(agent, `${c.url}/first`);
      assert.equal(first.status, 200);
      assert.match(String(first.headers['ratelimit']), /^"default";r=99;/);

      const stalled = await withPrimaryStopped(c, () => get(agent, `${c.url}/stalled`));
      assert.equal(stalled.localPort, first.localPort, 'the same keep-alive connection');
      if (onError === 'allow') {
        assert.equal(stalled.status, 200);
        assert.equal(stalled.headers['ratelimit'], undefined, 'nothing is known about the bucket');
      } else {
        assert.equal(stalled.status, 503);
        assert.equal(stalled.json().error, 'rate_limit_unavailable');
        assert.equal(stalled.headers['retry-after'], '1');
      }

      // The primary is back and adds up what its workers counted: one take timed out, and the worker that
      // made it shows the store failing until its next take is answered.
      const errors = samples(await scrape(c.adminUrl), 'tollgate_ratelimit_store_errors_total');
      assert.deepEqual([errors.get('{store="ipc",kind="timeout"}'), errors.get('{store="ipc",kind="unavailable"}'), errors.get('{store="redis",kind="timeout"}')], [1, 0, 0]);
      const status = async (): Promise<Status> => (await request(`${c.adminUrl}/api/status`)).json<Status>();
      const during = await status();
      assert.deepEqual(during.rate_limit.errors.ipc, { timeout: 1, unavailable: 0, error: 0 });
      assert.deepEqual(during.rate_limit.stores.map((r) => [r.store, r.target, r.routes, r.state, r.last_error?.kind]), [['ipc', 'primary', ['default'], 'failing', 'timeout']]);

      // Its late answer is dropped, takes are answered again, the timeout was logged.
      const again = await get(agent, `${c.url}/again`);
      assert.equal(again.status, 200);
      assert.match(String(again.headers['ratelimit']), /^"default";r=\d+;/);
      await waitFor(
        () => lines(c.child).some((l) => typeof l.msg === 'string' && l.msg.startsWith('rate-limit store unavailable') && l.timeouts_total === 1),
        5_000,
        'the worker to log the timed-out take',
      );
      assert.equal((await status()).rate_limit.stores[0]?.state, 'ready');
    });
  });
}
