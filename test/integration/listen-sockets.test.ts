/**
 * server.listen_sockets: several listening sockets on the proxy port (SO_REUSEPORT, Node >= 22.12 on
 * Linux), because the event loop accepts one connection per listening socket per turn. Where SO_REUSEPORT is
 * not available the setting falls back to one socket. Either way: one port, every connection served,
 * max_connections counted over all the sockets, a port in use still refused, nothing bound after shutdown.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer, type Socket } from 'node:net';
import { describe, test } from 'node:test';
import { runCli, writeConfig } from '../helpers/cli.js';
import { request } from '../helpers/http.js';
import { samples, scrape } from '../helpers/metrics.js';
import { freePort, listeningSockets, startBackend, startProxy, waitFor } from '../helpers/servers.js';
import { REUSE_PORT } from '../../src/server/proxy-server.js';


/** A GET on a connection of its own, written raw; resolves with the status line. */
async function oneConnection(port: number, path: string): Promise<string> {
  const s = connect(port, '127.0.0.1');
  // A connection over max_connections is reset: it resolves with no status line.
  s.on('error', () => {});
  s.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
  let got = '';
  s.on('data', (c: Buffer) => (got += c.toString('latin1')));
  await new Promise((resolve) => s.on('close', resolve));
  return got.split('\r\n')[0] ?? '';
}

describe(`server.listen_sockets (Node ${process.versions.node}: ${REUSE_PORT ? 'SO_REUSEPORT' : 'no SO_REUSEPORT, one socket'})`, () => {
  test(REUSE_PORT ? 'listen_sockets: 8 binds eight sockets to one port, and a burst of 200 new connections is served' : 'listen_sockets: 8 falls back to one socket, and a burst of 200 new connections is served', async () => {
    const backend = await startBackend('b');
    const p = await startProxy([backend], { server: { listen_sockets: 8 } });
    try {
      assert.equal(listeningSockets(p.port), REUSE_PORT ? 8 : 1);
      const statuses = await Promise.all(Array.from({ length: 200 }, (_, i) => oneConnection(p.port, `/burst/${i}`)));
      assert.deepEqual(new Set(statuses), new Set(['HTTP/1.1 200 OK']));
      assert.equal(backend.hits, 200);
    } finally {
      await p.close();
      await backend.close();
    }
    assert.equal(listeningSockets(p.port), 0, 'no socket listens after shutdown');
  });

  test('the default: 64 sockets where SO_REUSEPORT is there, 1 elsewhere', async () => {
    const backend = await startBackend('b');
    const p = await startProxy([backend], {});
    try {
      assert.equal(listeningSockets(p.port), REUSE_PORT ? 64 : 1);
      assert.equal((await request(`${p.url}/`)).status, 200);
    } finally {
      await p.close();
      await backend.close();
    }
  });

  test('open connections are counted over every socket: tollgate_connections_open and /api/status', async () => {
    const backend = await startBackend('b');
    const p = await startProxy([backend], { server: { listen_sockets: 16 } });
    const held: Socket[] = [];
    try {
      for (let i = 0; i < 20; i++) {
        const s = connect(p.port, '127.0.0.1');
        s.write('GET /held HTTP/1.1\r\nHost: x\r\n\r\n');
        await once(s, 'data');
        held.push(s);
      }
      assert.equal(await p.proxy.server.openConnections(), 20);
      assert.equal(samples(await scrape(p.adminUrl), 'tollgate_connections_open').get(''), 20);
      const status = (await request(`${p.adminUrl}/api/status`)).json<{ connections: { open: number } }>();
      assert.equal(status.connections.open, 20);
    } finally {
      const closing = p.close();
      for (const s of held) s.destroy();
      await closing;
      await backend.close();
    }
  });

  test('max_connections counts the connections of every socket together', async () => {
    const backend = await startBackend('b');
    const p = await startProxy([backend], { server: { listen_sockets: 16, max_connections: 3 } });
    const held: Socket[] = [];
    try {
      // Connections spread over the sockets by their source port; 3 are held open with a request answered.
      for (let i = 0; i < 3; i++) {
        const s = connect(p.port, '127.0.0.1');
        s.write('GET /held HTTP/1.1\r\nHost: x\r\n\r\n');
        const [chunk] = (await once(s, 'data')) as [Buffer];
        assert.match(chunk.toString(), /^HTTP\/1\.1 200/);
        held.push(s);
      }
      // Every further connection, whichever socket accepts it, is over the limit: closed without an answer.
      const extra = await Promise.all(Array.from({ length: 20 }, () => oneConnection(p.port, '/extra')));
      assert.deepEqual(new Set(extra), new Set(['']));
      await waitFor(() => p.proxy.server.refusedConnections === 20, 2000, 'the 20 refusals to be counted');
      // Closing the held ones frees their places.
      for (const s of held) s.destroy();
      await waitFor(async () => (await oneConnection(p.port, '/after')) === 'HTTP/1.1 200 OK', 2000, 'a connection to be served again');
    } finally {
      for (const s of held) s.destroy();
      await p.close();
      await backend.close();
    }
  });

  test('a port another process listens on is refused with the port-in-use error (exit 1), SO_REUSEPORT or not', async () => {
    const backend = await startBackend('b');
    // Another Tollgate with several sockets, then a plain server: neither port may be shared.
    const first = await startProxy([backend], { server: { listen_sockets: 4 } });
    const plain = createServer();
    const plainPort = await freePort();
    await new Promise<void>((resolve) => plain.listen(plainPort, '127.0.0.1', resolve));
    try {
      for (const port of [first.port, plainPort]) {
        const yaml = ['server:', `  listen_port: ${port}`, '  listen_address: "127.0.0.1"', '  listen_sockets: 4', 'load_balancing:', '  upstreams:', `    - { name: b, address: 127.0.0.1, port: ${backend.port} }`].join('\n');
        const run = await runCli(['--config', writeConfig(yaml)], {}, 20_000);
        assert.equal(run.code, 1);
        assert.equal(run.stderr, `tollgate: cannot listen on 127.0.0.1:${port} for the proxy: address already in use\n`);
      }
      assert.equal(listeningSockets(first.port), REUSE_PORT ? 4 : 1, 'the first instance keeps its sockets');
      assert.equal((await request(`${first.url}/`)).status, 200);
    } finally {
      await new Promise<void>((resolve) => plain.close(() => resolve()));
      await first.close();
      await backend.close();
    }
  });

  test('a value out of range is a config error with its key path (exit 2)', async () => {
    for (const value of ['0', '257', '2.5', '"many"']) {
      const run = await runCli(['--check', '--config', writeConfig(`server:\n  listen_sockets: ${value}\n`)]);
      assert.equal(run.code, 2, value);
      assert.match(run.stderr, /proxy\.yaml:2:\d+ server\.listen_sockets: must be a whole number from 1 to 256/);
    }
  });
});
