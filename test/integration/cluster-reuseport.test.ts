/**
 * How cluster workers get their connections. On Node >= 22.12 (Linux) each worker binds the port itself
 * with SO_REUSEPORT and accepts for itself; on older Node the primary accepts and hands connections over.
 * Either way a port already in use stops a second instance with the usual error.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { request } from '../helpers/http.js';
import { runCli, writeConfig } from '../helpers/cli.js';
import { servedBy, startCluster, stopCluster, type Cluster } from '../helpers/cluster.js';
import { freePort, listeningSockets, startBackend, waitFor, type Backend } from '../helpers/servers.js';
import { REUSE_PORT } from '../../src/server/proxy-server.js';

function yaml(port: number, backendPort: number): string {
  return [
    'server:',
    `  listen_port: ${port}`,
    '  listen_address: "127.0.0.1"',
    '  workers: 2',
    '  listen_sockets: 3',
    'load_balancing:',
    '  health_check: { active: { enabled: false } }',
    '  upstreams:',
    `    - { name: b, address: 127.0.0.1, port: ${backendPort} }`,
    'admin:',
    '  port: 0',
  ].join('\n');
}


describe(`cluster workers on a fixed port (Node ${process.versions.node}: ${REUSE_PORT ? 'SO_REUSEPORT, each worker accepts' : 'the primary accepts and hands over'})`, () => {
  let backend: Backend;
  let c: Cluster;
  let port: number;
  before(async () => {
    backend = await startBackend('b');
    port = await freePort();
    c = await startCluster(yaml(port, backend.port));
  });
  after(async () => {
    await stopCluster(c);
    await backend.close();
  });

  test(REUSE_PORT ? 'listen_sockets: 3 gives six listening sockets, three per worker' : 'one listening socket, the primary\'s', () => {
    assert.equal(c.port, port);
    assert.equal(listeningSockets(port), REUSE_PORT ? 6 : 1);
  });

  test('new connections reach both workers', async () => {
    // Each request on a connection of its own: with SO_REUSEPORT the kernel spreads them by their address
    // and port, so 40 connections all reaching one worker would be a 1 in 2^39 chance.
    for (let i = 0; i < 40; i++) {
      const reply = await request(`${c.url}/spread`, { headers: { connection: 'close' } });
      assert.equal(reply.status, 200);
    }
    await waitFor(() => servedBy(c.child, '/spread').size === 2, 5_000, 'completion lines from both workers');
  });

  test('a second instance on the same port stops with the port-in-use error (exit 1)', async () => {
    const run = await runCli(['--config', writeConfig(yaml(port, backend.port))], {}, 20_000);
    assert.equal(run.code, 1);
    assert.match(run.stderr, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port} for the proxy: address already in use`));
  });
});
