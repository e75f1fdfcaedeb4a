/**
 * An upstream that answers before it has read the request body (a redirect, an error, a sink that does not
 * care): the client connection must not be left waiting for the rest of a body nobody reads any more. Found
 * by bench/big-body.mjs: with nginx's `return 200` as the upstream, every keep-alive connection served one
 * upload and then hung.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { exchange, statusesOf } from '../helpers/raw.js';
import { startBackend, startProxy } from '../helpers/servers.js';

describe('an upstream that answers before the request body is read', () => {
  test('the client connection answers its next request or says Connection: close and closes; it never hangs', async () => {
    // Answers at once and never reads the body (Node discards it afterwards).
    const backend = await startBackend('early', (req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '3' });
      res.end('ok\n');
    });
    const proxy = await startProxy([backend], { server: { max_body_bytes: 8 * 1024 * 1024 } });
    try {
      const size = 2 * 1024 * 1024;
      const piece = Buffer.alloc(64 * 1024, 'y');
      const parts: (string | Buffer)[] = [`POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: ${size}\r\n\r\n`];
      for (let sent = 0; sent < size; sent += piece.length) parts.push(piece);
      parts.push('GET /second HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      const reply = await exchange(proxy.port, parts, 10_000, 5);
      assert.ok(reply.closedByServer, `the connection ended (it hung: ${JSON.stringify(reply.text.slice(0, 300))})`);
      const statuses = statusesOf(reply.text);
      assert.equal(statuses[0], 200, 'the upload got the upstream answer');
      if (statuses.length === 1) assert.match(reply.text, /\r\nConnection: close\r\n/i, 'one response only when it said it closes');
      else assert.deepEqual(statuses, [200, 200], 'the next request on the connection was answered');
    } finally {
      await proxy.close();
      await backend.close();
    }
  });
});
