import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { request } from '../helpers/http.js';
import { startBackend, startProxy, type Backend } from '../helpers/servers.js';

const b64 = (s: string): string => Buffer.from(s).toString('base64');

describe('authentication', () => {
  let backend: Backend;
  before(async () => {
    backend = await startBackend('b');
  });
  after(() => backend.close());

  test('api_key: the configured header carries the token; wrong, missing or empty is 401, repeated is 400', async () => {
    const proxy = await startProxy([backend], { middleware: { auth: { enabled: true, auth_type: 'api_key', valid_tokens: ['dev-token-123'] } } });
    try {
      const ok = await request(`${proxy.url}/`, { headers: { 'x-api-key': 'dev-token-123' } });
      assert.equal(ok.status, 200);
      assert.equal(ok.json<{ headers: Record<string, string> }>().headers['x-api-key'], undefined, 'the key is not sent upstream');
      for (const headers of [{}, { 'x-api-key': 'nope' }, { 'x-api-key': '' }, { authorization: 'Bearer dev-token-123' }]) {
        const res = await request(`${proxy.url}/`, { headers });
        assert.equal(res.status, 401, JSON.stringify(headers));
        assert.equal(res.headers['www-authenticate'], 'ApiKey header="X-API-Key"');
        assert.equal(res.json().error, 'unauthorized');
      }
      // Two lines of the header are refused before auth runs (test/security/duplicate-credentials.test.ts).
      const repeated = await request(`${proxy.url}/`, { headers: { 'x-api-key': ['dev-token-123', 'dev-token-123'] } });
      assert.equal(repeated.status, 400);
      assert.equal(repeated.json().error, 'bad_request');
    } finally {
      await proxy.close();
    }
  });

  test('api_key with a custom header name', async () => {
    const proxy = await startProxy([backend], { middleware: { auth: { enabled: true, auth_type: 'api_key', api_key_header: 'X-Token', valid_tokens: ['k1'] } } });
    try {
      assert.equal((await request(`${proxy.url}/`, { headers: { 'x-token': 'k1' } })).status, 200);
      const res = await request(`${proxy.url}/`, { headers: { 'x-api-key': 'k1' } });
      assert.equal(res.status, 401);
      assert.equal(res.headers['www-authenticate'], 'ApiKey header="X-Token"');
    } finally {
      await proxy.close();
    }
  });

  test('basic: RFC 7617 user:password and the raw-token form both work; bad ones are 401', async () => {
    const proxy = await startProxy([backend], {
      middleware: { auth: { enabled: true, auth_type: 'basic', users: [{ username: 'alice', password: 's3:cret' }], valid_tokens: ['dev-token-123'] } },
    });
    try {
      assert.equal((await request(`${proxy.url}/`, { headers: { authorization: `Basic ${b64('alice:s3:cret')}` } })).status, 200);
      assert.equal((await request(`${proxy.url}/`, { headers: { authorization: 'basic ' + b64('alice:s3:cret') } })).status, 200, 'scheme is case-insensitive');
      assert.equal((await request(`${proxy.url}/`, { headers: { authorization: 'Basic dev-token-123' } })).status, 200);
      const bad = [
        `Basic ${b64('alice:wrong')}`,
        `Basic ${b64('bob:s3:cret')}`,
        'Basic',
        'Basic ',
        'Basic %%%',
        'Basic a b',
        `Bearer dev-token-123`,
        'Basic test-token-456',
        '\u00e9\u00e9',
      ];
      for (const authorization of bad) {
        const res = await request(`${proxy.url}/`, { headers: { authorization } });
        assert.equal(res.status, 401, authorization);
        assert.equal(res.headers['www-authenticate'], 'Basic realm="tollgate", charset="UTF-8"');
      }
    } finally {
      await proxy.close();
    }
  });

  test('bearer: wrong token gets error="invalid_token"; malformed headers are 401, never 500', async () => {
    const proxy = await startProxy([backend], { middleware: { auth: { enabled: true, valid_tokens: ['dev-token-123'] } } });
    try {
      const wrong = await request(`${proxy.url}/`, { headers: { authorization: 'Bearer dev-token-124' } });
      assert.equal(wrong.status, 401);
      assert.equal(wrong.headers['www-authenticate'], 'Bearer realm="tollgate", error="invalid_token"');
      for (const authorization of ['Bearer', 'Bearer ', 'Bearerdev-token-123', 'Bearer dev token', 'Token dev-token-123', 'x'.repeat(8000), 'Bearer \u00ff\u00fe']) {
        const res = await request(`${proxy.url}/`, { headers: { authorization } });
        assert.equal(res.status, 401, authorization.slice(0, 40));
      }
      assert.equal((await request(`${proxy.url}/`, { headers: { authorization: 'bearer  dev-token-123' } })).status, 200);
    } finally {
      await proxy.close();
    }
  });

  test('credentials are forwarded only when forward_credentials is true', async () => {
    const hidden = await startProxy([backend], { middleware: { auth: { enabled: true, valid_tokens: ['t'] } } });
    const shown = await startProxy([backend], { middleware: { auth: { enabled: true, valid_tokens: ['t'], forward_credentials: true } } });
    try {
      const a = await request(`${hidden.url}/`, { headers: { authorization: 'Bearer t' } });
      assert.equal(a.json<{ headers: Record<string, string> }>().headers.authorization, undefined);
      const b = await request(`${shown.url}/`, { headers: { authorization: 'Bearer t' } });
      assert.equal(b.json<{ headers: Record<string, string> }>().headers.authorization, 'Bearer t');
    } finally {
      await hidden.close();
      await shown.close();
    }
  });

  test('/health bypasses auth by exact path only', async () => {
    const proxy = await startProxy([backend], { middleware: { auth: { enabled: true, valid_tokens: ['t'] } } });
    try {
      const hitsBefore = backend.hits;
      assert.equal((await request(`${proxy.url}/health`)).status, 200);
      assert.equal((await request(`${proxy.url}/health?verbose=1`)).status, 200);
      for (const path of ['/health/', '/healthz', '/health/x', '/HEALTH', '//health', '/x/health']) {
        assert.equal((await request(`${proxy.url}${path}`)).status, 401, path);
      }
      assert.equal(backend.hits, hitsBefore, 'none of them reached the upstream');
    } finally {
      await proxy.close();
    }
  });

  test('a custom health_path moves the endpoint; the old path is proxied like any other', async () => {
    const proxy = await startProxy([backend], { server: { health_path: '/_tollgate/health' } });
    try {
      assert.equal((await request(`${proxy.url}/_tollgate/health`)).json().status, 'ok');
      assert.equal((await request(`${proxy.url}/health`)).json().backend, 'b');
    } finally {
      await proxy.close();
    }
  });

  test('failed authentication is charged to the address, so token guessing is throttled', async () => {
    const proxy = await startProxy([backend], {
      middleware: { auth: { enabled: true, valid_tokens: ['good'] }, rate_limit: { enabled: true, requests_per_minute: 1, burst_size: 3 } },
    });
    try {
      const guesses: number[] = [];
      for (let i = 0; i < 5; i++) guesses.push((await request(`${proxy.url}/`, { headers: { authorization: `Bearer guess-${i}` } })).status);
      assert.deepEqual(guesses, [401, 401, 401, 429, 429]);
      // A valid credential has its own bucket, independent of the address's.
      assert.equal((await request(`${proxy.url}/`, { headers: { authorization: 'Bearer good' } })).status, 200);
    } finally {
      await proxy.close();
    }
  });

  test('rate limit keys on the client address when auth is off; X-Forwarded-For only from trusted proxies', async () => {
    const untrusted = await startProxy([backend], { middleware: { rate_limit: { enabled: true, requests_per_minute: 1, burst_size: 1 } } });
    const trusted = await startProxy([backend], {
      server: { trusted_proxies: ['127.0.0.0/8'] },
      middleware: { rate_limit: { enabled: true, requests_per_minute: 1, burst_size: 1 } },
    });
    try {
      // Untrusted peer: a spoofed X-Forwarded-For changes nothing; both requests share 127.0.0.1's bucket.
      assert.equal((await request(`${untrusted.url}/`, { headers: { 'x-forwarded-for': '203.0.113.1' } })).status, 200);
      assert.equal((await request(`${untrusted.url}/`, { headers: { 'x-forwarded-for': '203.0.113.2' } })).status, 429);
      // Trusted peer: each forwarded client has its own bucket.
      assert.equal((await request(`${trusted.url}/`, { headers: { 'x-forwarded-for': '203.0.113.1' } })).status, 200);
      assert.equal((await request(`${trusted.url}/`, { headers: { 'x-forwarded-for': '203.0.113.2' } })).status, 200);
      assert.equal((await request(`${trusted.url}/`, { headers: { 'x-forwarded-for': '198.51.100.7, 203.0.113.1' } })).status, 429);
      const line = trusted.logs.filter((l) => l.msg === 'Request Completed').at(-1);
      assert.equal(line?.client, '203.0.113.1');
    } finally {
      await untrusted.close();
      await trusted.close();
    }
  });
});
