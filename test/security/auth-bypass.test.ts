/**
 * Paths that try to dodge the auth rule. The path is normalized once, and that one string is authorized,
 * rate-limited, logged and forwarded. Only the exact path `/health` (with any query) skips auth.
 * The constant-time structure of credential comparison is asserted in test/unit/middleware/credentials.test.ts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { exchange, statusOf } from '../helpers/raw.js';
import { startBackend, startProxy, type Backend, type TestProxy } from '../helpers/servers.js';

function bodyOf(text: string): { url: string } {
  return JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) as { url: string };
}

describe('auth bypass through path tricks', () => {
  let backend: Backend;
  let proxy: TestProxy;
  before(async () => {
    backend = await startBackend('b');
    proxy = await startProxy([backend], { middleware: { auth: { enabled: true, valid_tokens: ['t'] } } });
  });
  after(async () => {
    await proxy.close();
    await backend.close();
  });

  const get = (path: string, auth = false): Promise<{ text: string }> =>
    exchange(proxy.port, `GET ${path} HTTP/1.1\r\nHost: x\r\n${auth ? 'Authorization: Bearer t\r\n' : ''}Connection: close\r\n\r\n`);

  test('only /health itself (and /health?query) skips auth', async () => {
    assert.equal(statusOf((await get('/health')).text), 200);
    assert.equal(statusOf((await get('/health?x')).text), 200);
    const hits = backend.hits;
    for (const path of ['/health/../x', '/%2e%2e/x', '/health%2F..%2Fx', '/health;/../x', '//health', '/HEALTH', '/health/', '/health/.', '/./health', '/%68ealth', '/health%3F', '/x/../health']) {
      const reply = await get(path);
      assert.equal(statusOf(reply.text), 401, path);
    }
    assert.equal(backend.hits, hits, 'none of them reached the upstream');
  });

  test('the normalized path is what is forwarded', async () => {
    const cases: [string, string][] = [
      ['/health/../x', '/x'],
      ['/%2e%2e/x', '/x'],
      ['/a/%2E/b/%2e%2E/c', '/a/c'],
      ['//a///b', '/a/b'],
      ['/health;/../x', '/x'],
      ['/../../etc/passwd', '/etc/passwd'],
      ['/x/../health', '/health'],
      ['/a/b/?q=/../..', '/a/b/?q=/../..'],
      ['/health%2F..%2Fx', '/health%2F..%2Fx'],
      ['/%61/%7Eb/%2D%5F', '/a/~b/-_'],
      ['/a%2e%2E/b', '/a../b'],
      ['/a%20b/%3B', '/a%20b/%3B'],
      ['/a%5Cb', '/a%5Cb'],
    ];
    for (const [sent, forwarded] of cases) {
      const reply = await get(sent, true);
      assert.equal(statusOf(reply.text), 200, sent);
      assert.equal(bodyOf(reply.text).url, forwarded, sent);
    }
    const line = proxy.logs.filter((l) => l.msg === 'Request Completed').at(-1);
    assert.equal(line?.path, '/a%5Cb');
  });

  test('%00 is refused with 400; %2F and %5C are refused when encoded_slashes is reject', async () => {
    assert.equal(statusOf((await get('/a%00/b', true)).text), 400);
    const strict = await startProxy([backend], { server: { encoded_slashes: 'reject' } });
    try {
      for (const path of ['/a%2Fb', '/a%2fb', '/a%5Cb', '/a%5cb']) {
        const reply = await exchange(strict.port, `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
        assert.equal(statusOf(reply.text), 400, path);
      }
      assert.equal(statusOf((await exchange(strict.port, 'GET /a/b?x=%2F HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')).text), 200, 'the query is not checked');
    } finally {
      await strict.close();
    }
  });

  test('escaped letters, fragments, backslashes and bad escapes cannot dodge a route with auth (found by fuzzing)', async () => {
    const split = await startProxy([backend], {
      routes: [
        { name: 'admin', match: { path_prefix: '/admin' }, service: 'default', middleware: { auth: { enabled: true, valid_tokens: ['t'] } } },
        { name: 'rest', match: { path_prefix: '/' }, service: 'default' },
      ],
    });
    try {
      const hits = backend.hits;
      // An upstream that decodes %61 or cuts at '#' or reads '\\' as '/' would serve /admin for each of these.
      const cases: [string, number][] = [
        ['/%61dmin', 401],
        ['/adm%69n/x', 401],
        ['/x/..%2F%61dmin', 200], // %2F is never a separator: this is the path /x/..%2Fadmin, not under /admin
        ['/admin#', 400],
        ['/x#/../admin', 400],
        ['/x/..\\admin', 400],
        ['/%zz/../admin', 400],
        ['/admin%', 400],
      ];
      for (const [path, status] of cases) {
        const reply = await exchange(split.port, `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
        assert.equal(statusOf(reply.text), status, path);
        if (status === 200) assert.equal(bodyOf(reply.text).url, '/x/..%2Fadmin', path);
      }
      assert.equal(backend.hits, hits + 1, 'only the %2F case reached the upstream');
    } finally {
      await split.close();
    }
  });
});
