/**
 * A request with two credentials. Node keeps the first Authorization line in `req.headers` (and joins the
 * lines of an unknown name such as X-API-Key), so auth checks one credential while an upstream that reads
 * the last line would act on another, never checked. Such requests are refused with 400 before any filter
 * runs, as nginx refuses a repeated Authorization; a single line whose value has a comma is not a repeat.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { exchange, statusOf } from '../helpers/raw.js';
import { startBackend, startProxy, type Backend, type TestProxy } from '../helpers/servers.js';

function bodyOf(text: string): Record<string, unknown> {
  return JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) as Record<string, unknown>;
}

function send(port: number, headers: string): Promise<{ text: string; closedByServer: boolean }> {
  return exchange(port, `GET /x HTTP/1.1\r\nHost: x\r\n${headers}Connection: close\r\n\r\n`);
}

describe('duplicate credentials', () => {
  let backend: Backend;
  const proxies = new Map<string, TestProxy>();
  before(async () => {
    backend = await startBackend('b');
    const tokens = ['good', 'other'];
    for (const forward of [true, false]) {
      proxies.set(`bearer ${forward}`, await startProxy([backend], { middleware: { auth: { enabled: true, valid_tokens: tokens, forward_credentials: forward } } }));
      proxies.set(
        `api_key ${forward}`,
        await startProxy([backend], { middleware: { auth: { enabled: true, auth_type: 'api_key', api_key_header: 'X-Key', valid_tokens: tokens, forward_credentials: forward } } }),
      );
    }
    proxies.set('off', await startProxy([backend]));
  });
  after(async () => {
    for (const p of proxies.values()) await p.close();
    await backend.close();
  });

  const port = (name: string): number => (proxies.get(name) as TestProxy).port;

  for (const forward of [true, false]) {
    test(`two Authorization lines are 400 and reach no upstream (bearer, forward_credentials: ${forward})`, async () => {
      assert.equal(statusOf((await send(port(`bearer ${forward}`), 'Authorization: Bearer good\r\n')).text), 200, 'one valid line passes');
      const hits = backend.hits;
      for (const lines of [
        'Authorization: Bearer good\r\nAuthorization: Bearer other\r\n',
        'Authorization: Bearer good\r\nauthorization: Bearer evil\r\n',
        'AUTHORIZATION: Bearer evil\r\nAuthorization: Bearer good\r\n',
        'Authorization: Bearer good\r\nX-A: 1\r\nAuthorization: Bearer good\r\n',
      ]) {
        const reply = await send(port(`bearer ${forward}`), lines);
        assert.equal(statusOf(reply.text), 400, lines);
        assert.equal(reply.closedByServer, true);
        const body = bodyOf(reply.text);
        assert.equal(body.error, 'bad_request');
        assert.equal(body.message, 'A request may carry only one Authorization header.');
      }
      assert.equal(backend.hits, hits, 'the upstream received nothing');
    });

    test(`two API-key lines are 400 and reach no upstream (api_key, forward_credentials: ${forward})`, async () => {
      assert.equal(statusOf((await send(port(`api_key ${forward}`), 'X-Key: good\r\n')).text), 200, 'one valid line passes');
      const hits = backend.hits;
      for (const lines of ['X-Key: good\r\nX-Key: other\r\n', 'X-Key: good\r\nx-key: evil\r\n', 'x-KEY: evil\r\nX-Key: good\r\n']) {
        const reply = await send(port(`api_key ${forward}`), lines);
        assert.equal(statusOf(reply.text), 400, lines);
        const body = bodyOf(reply.text);
        assert.equal(body.error, 'bad_request');
        assert.equal(body.message, 'A request may carry only one x-key header.');
      }
      // Authorization is counted on an api_key route too.
      const reply = await send(port(`api_key ${forward}`), 'X-Key: good\r\nAuthorization: a\r\nAuthorization: b\r\n');
      assert.equal(statusOf(reply.text), 400);
      assert.equal(backend.hits, hits, 'the upstream received nothing');
    });
  }

  test('a single line whose value has a comma is not a repeat: it is checked (and refused) as one credential', async () => {
    const hits = backend.hits;
    assert.equal(statusOf((await send(port('bearer true'), 'Authorization: Bearer good, Bearer other\r\n')).text), 401);
    assert.equal(statusOf((await send(port('api_key true'), 'X-Key: good, other\r\n')).text), 401);
    assert.equal(backend.hits, hits);
  });

  test('with auth off, two Authorization lines are still 400; a repeated X-API-Key is forwarded (nothing checks it)', async () => {
    const hits = backend.hits;
    const reply = await send(port('off'), 'Authorization: Bearer a\r\nAuthorization: Bearer b\r\n');
    assert.equal(statusOf(reply.text), 400);
    assert.equal(bodyOf(reply.text).message, 'A request may carry only one Authorization header.');
    assert.equal(backend.hits, hits, 'the upstream received nothing');
    const single = await send(port('off'), 'Authorization: Bearer a\r\n');
    assert.equal(statusOf(single.text), 200);
    assert.equal((bodyOf(single.text).headers as Record<string, string>).authorization, 'Bearer a');
    const keys = await send(port('off'), 'X-API-Key: a\r\nX-API-Key: b\r\n');
    assert.equal(statusOf(keys.text), 200);
    assert.equal((bodyOf(keys.text).headers as Record<string, string>)['x-api-key'], 'a, b');
  });

  test('on a bearer route a repeated API-key header is not counted', async () => {
    const reply = await send(port('bearer true'), 'Authorization: Bearer good\r\nX-Key: a\r\nX-Key: b\r\n');
    assert.equal(statusOf(reply.text), 200);
  });
});
