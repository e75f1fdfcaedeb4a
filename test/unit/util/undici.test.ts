import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { Agent, buildConnector, Pool, request } from '../../../src/util/undici.js';

const load = createRequire(import.meta.url);
const mainModule = load.resolve('undici');

describe('undici parts', () => {
  it('load without undici’s main module', () => {
    // node:test runs each file in its own process, and nothing above imports 'undici' for its values.
    assert.equal(load.cache[mainModule], undefined);
  });

  it('are the classes and functions undici’s main module exports', async () => {
    const undici = (await import('undici')).default;
    assert.equal(Pool, undici.Pool);
    assert.equal(Agent, undici.Agent);
    assert.equal(buildConnector, undici.buildConnector);
  });

  it('request sends the method, path, query and headers over the given dispatcher', async () => {
    const seen: { method: string | undefined; url: string | undefined; header: string | undefined }[] = [];
    const server = createServer((req, res) => {
      seen.push({ method: req.method, url: req.url, header: req.headers['x-probe'] as string });
      res.writeHead(203, { 'x-answer': 'yes' }).end('body');
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as AddressInfo;
    const agent = new Agent({ connections: 1 });
    try {
      const res = await request(`http://127.0.0.1:${port}/check/a?b=1&c=2`, { dispatcher: agent, method: 'HEAD', headers: { 'x-probe': 'p' } });
      assert.equal(res.statusCode, 203);
      assert.equal(res.headers['x-answer'], 'yes');
      await res.body.dump();
      const got = await request(new URL(`http://127.0.0.1:${port}/plain`), { dispatcher: agent });
      assert.equal(await got.body.text(), 'body');
      assert.deepEqual(seen, [
        { method: 'HEAD', url: '/check/a?b=1&c=2', header: 'p' },
        { method: 'GET', url: '/plain', header: undefined },
      ]);
    } finally {
      await agent.close();
      server.close();
    }
  });
});
