import assert from 'node:assert/strict';
import { once } from 'node:events';
import { Agent, request as httpRequest, type ServerResponse } from 'node:http';
import { connect, type Socket } from 'node:net';
import { describe, test } from 'node:test';
import { raw, request, type Reply } from '../helpers/http.js';
import { samples } from '../helpers/metrics.js';
import { startBackend, startProxy, waitFor } from '../helpers/servers.js';

function viaAgent(url: string, agent: Agent): Promise<Reply> {
  return new Promise((resolve, reject) => {
    httpRequest(url, { agent }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, json: () => JSON.parse(body) }));
    })
      .on('error', reject)
      .end();
  });
}

describe('the downstream server', () => {
  test('max_connections: connections past the limit are closed right after accept, counted in the logs; the others are served', async () => {
    const backend = await startBackend('b');
    const p = await startProxy([backend], { server: { max_connections: 2 } });
    const sockets: Socket[] = [];
    try {
      for (let i = 0; i < 2; i++) {
        const s = connect(p.port, '127.0.0.1');
        await once(s, 'connect');
        sockets.push(s);
      }
      const extra = connect(p.port, '127.0.0.1');
      extra.on('error', () => {});
      extra.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
      let got = '';
      extra.on('data', (c: Buffer) => (got += c.toString()));
      await once(extra, 'close');
      assert.equal(got, '', 'the extra connection got no response');
      await waitFor(() => p.proxy.server.refusedConnections === 1, 2000, 'the refusal to be counted');
      const line = p.logs.find((l) => l.msg === 'connection refused: max_connections reached');
      assert.equal(line?.refused_total, 1);
      assert.equal(line?.max_connections, 2);
      // The two held connections still work.
      for (const s of sockets) {
        s.write('GET /ok HTTP/1.1\r\nHost: x\r\n\r\n');
        const [chunk] = (await once(s, 'data')) as [Buffer];
        assert.match(chunk.toString(), /^HTTP\/1\.1 200/);
      }
    } finally {
      for (const s of sockets) s.destroy();
      await p.close();
      await backend.close();
    }
  });

  test('requests Node cannot parse get a JSON 400 (431 for a huge head) with the usual headers, are logged, and the connection closes', async () => {
    const backend = await startBackend('b');
    const p = await startProxy([backend], {});
    try {
      const bad = await raw(p.port, 'GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n');
      assert.match(bad, /^HTTP\/1\.1 400 Bad Request\r\n/);
      assert.match(bad, /\r\nConnection: close\r\n/);
      assert.match(bad, /\r\nX-Proxy-By: tollgate\r\n/);
      const id = /\r\nX-Request-ID: ([0-9a-f-]{36})\r\n/.exec(bad)?.[1];
      assert.ok(id);
      const body = JSON.parse(bad.slice(bad.indexOf('\r\n\r\n') + 4)) as Record<string, unknown>;
      assert.deepEqual(body, { error: 'bad_request', message: 'The request is malformed HTTP.', status: 400, request_id: id });
      assert.ok(p.logs.some((l) => l.request_id === id && l.status === 400 && l.error === 'bad_request'));

      const huge = await raw(p.port, `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
      assert.match(huge, /^HTTP\/1\.1 431 /);
      assert.match(huge, /"error":"headers_too_large"/);
      assert.equal(backend.hits, 0, 'nothing was forwarded');
      assert.equal((await request(`${p.url}/health`)).status, 200);
    } finally {
      await p.close();
      await backend.close();
    }
  });

  test('keep-alive timeout defaults to 75 s and is announced', async () => {
    const backend = await startBackend('b');
    const p = await startProxy([backend], {});
    try {
      assert.equal(p.proxy.server.server.keepAliveTimeout, 75_000);
      const reply = await raw(p.port, 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n', 300);
      assert.match(reply, /\r\nKeep-Alive: timeout=75\r\n/);
    } finally {
      await p.close();
      await backend.close();
    }
  });

  test('graceful shutdown: in-flight requests finish, new requests on kept-alive connections get 503 + Connection: close, idle ones close', async () => {
    const held: ServerResponse[] = [];
    const backend = await startBackend('b', (req, res) => {
      if (req.url === '/slow') held.push(res);
      else res.end('fast');
    });
    const p = await startProxy([backend], { server: { shutdown_grace_ms: 10_000 } });
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const idle = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      // Two kept-alive connections: one will be busy with a slow request at shutdown, one idle.
      assert.equal((await viaAgent(`${p.url}/warm`, agent)).body, 'fast');
      assert.equal((await viaAgent(`${p.url}/warm`, idle)).body, 'fast');
      const idleSocket = Object.values(idle.freeSockets)[0]![0]!;
      const idleClosed = once(idleSocket, 'close');

      const slow = request(`${p.url}/slow`);
      await waitFor(() => held.length === 1, 5000, 'the slow request to reach the backend');
      // A kept-alive connection whose next request is arriving (headers half sent) when shutdown begins.
      const keptSocket = connect(p.port, '127.0.0.1');
      await once(keptSocket, 'connect');
      keptSocket.write('GET /warm HTTP/1.1\r\nHost: x\r\n\r\n');
      await once(keptSocket, 'data');
      keptSocket.write('GET /after HTTP/1.1\r\nHost: x\r\n');
      await new Promise((r) => setTimeout(r, 50));

      const closing = p.close();
      await idleClosed; // idle kept-alive connections are closed at once
      let reply = '';
      keptSocket.on('data', (c: Buffer) => (reply += c.toString()));
      keptSocket.write('\r\n');
      await once(keptSocket, 'close');
      assert.match(reply, /^HTTP\/1\.1 503/);
      assert.match(reply, /\r\nConnection: close\r\n/i);
      assert.match(reply, /"error":"shutting_down"/);

      // The in-flight request completes normally.
      held[0]!.end('slow done');
      const done = await slow;
      assert.equal(done.status, 200);
      assert.equal(done.body, 'slow done');
      assert.equal(done.headers.connection, 'close');
      await closing;
      assert.ok(p.logs.some((l) => l.msg === 'shutdown complete'));
      assert.equal(p.proxy.server.server.listening, false);
    } finally {
      agent.destroy();
      idle.destroy();
      await backend.close();
    }
  });

  test('shutdown grace period: what is still open when it runs out is closed; each request in flight is logged and counted as cut off', async () => {
    const backend = await startBackend('b', (req, res) => {
      // /streaming sends its head and part of its body; anything else never answers.
      if (req.url === '/streaming') {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('part');
      }
    });
    const p = await startProxy([backend], { server: { shutdown_grace_ms: 200 } });
    try {
      const stuck = request(`${p.url}/stuck`).catch((err: Error) => err);
      let headReceived = false;
      const streaming = new Promise<Error | undefined>((resolve) => {
        httpRequest(`${p.url}/streaming`, { agent: false }, (res) => {
          headReceived = true;
          res.on('error', resolve);
          res.on('end', () => resolve(undefined));
          res.resume();
        })
          .on('error', resolve)
          .end();
      });
      await waitFor(() => backend.hits === 2 && headReceived, 5000, 'both requests to reach the backend, one answered in part');
      await p.close();
      assert.ok((await stuck) instanceof Error, 'the stuck request was cut off');
      assert.ok((await streaming) instanceof Error, 'the streaming response was cut off');
      const over = p.logs.find((l) => l.msg === 'shutdown grace period over: closing the remaining connections');
      assert.deepEqual([over?.level, over?.open_connections, over?.requests_in_flight], [40, 2, 2]);
      const completion = (path: string): unknown[] => {
        const line = p.logs.find((l) => l.msg === 'Request Completed' && l.path === path);
        return [line?.level, line?.status, line?.error];
      };
      // Nothing sent: 503. The head sent: its status stays, the error says the body was cut off.
      assert.deepEqual(completion('/stuck'), [40, 503, 'cut_off']);
      assert.deepEqual(completion('/streaming'), [40, 200, 'cut_off']);
      const counted = samples(await p.proxy.metrics.scrape(), 'tollgate_requests_total');
      assert.equal(counted.get('{status_class="5xx",method="GET",protocol="http/1.1",route="default",service="default",upstream="b"}'), 1);
      assert.equal(counted.get('{status_class="2xx",method="GET",protocol="http/1.1",route="default",service="default",upstream="b"}'), 1);
      await waitFor(() => p.proxy.balancer.backends[0]!.inflight === 0, 2000, 'in-flight to return to zero');
    } finally {
      await backend.close();
    }
  });

  test('an IPv6 listen address works', async () => {
    const backend = await startBackend('b');
    const p = await startProxy([backend], { server: { listen_address: '::1' } }).catch((err: Error) => err);
    if (p instanceof Error) {
      // Only when the machine has no IPv6 loopback at all.
      assert.match(p.message, /EADDRNOTAVAIL|EAFNOSUPPORT/);
      await backend.close();
      return;
    }
    try {
      const res = await request(`http://[::1]:${p.port}/`);
      assert.equal(res.json().backend, 'b');
      assert.equal(res.json<{ headers: Record<string, string> }>().headers['x-forwarded-for'], '::1');
    } finally {
      await p.close();
      await backend.close();
    }
  });
});
