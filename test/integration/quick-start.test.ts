/**
 * The brief's quick start, against a real proxy and real backends: health without credentials, 401 without
 * a token, 200 with one, the three X- headers, and the token bucket (burst 10, 100 per minute).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { request } from '../helpers/http.js';
import { manualClock, startBackend, startProxy, type Backend, type TestProxy } from '../helpers/servers.js';

const BRIEF_MIDDLEWARE = {
  auth: { enabled: true, auth_type: 'bearer', valid_tokens: ['dev-token-123', 'test-token-456'] },
  rate_limit: { enabled: true, requests_per_minute: 100, burst_size: 10 },
};
const TOKEN = { authorization: 'Bearer dev-token-123' };

describe('quick start from the brief', () => {
  let backends: Backend[];
  let proxy: TestProxy;
  const clock = manualClock();

  before(async () => {
    backends = await Promise.all(['backend1', 'backend2', 'backend3'].map((n) => startBackend(n)));
    proxy = await startProxy(backends, { middleware: BRIEF_MIDDLEWARE }, { clock });
  });
  after(async () => {
    await proxy.close();
    await Promise.all(backends.map((b) => b.close()));
  });

  test('/health answers 200 without credentials and is not rate limited', async () => {
    for (let i = 0; i < 15; i++) {
      const res = await request(`${proxy.url}/health`);
      assert.equal(res.status, 200);
      assert.equal(res.headers['ratelimit'], undefined);
    }
    const body = (await request(`${proxy.url}/health`)).json<{ status: string; uptime_s: number; upstreams: { name: string; inflight: number }[] }>();
    assert.equal(body.status, 'ok');
    assert.equal(typeof body.uptime_s, 'number');
    assert.deepEqual(body.upstreams.map((u) => [u.name, u.inflight]), [['backend1', 0], ['backend2', 0], ['backend3', 0]]);
    assert.doesNotMatch(JSON.stringify(body), /127\.0\.0\.1/, 'no upstream addresses on the public port');
  });

  test('/ without a token is 401 with a challenge and a JSON error', async () => {
    const res = await request(`${proxy.url}/`);
    assert.equal(res.status, 401);
    assert.equal(res.headers['www-authenticate'], 'Bearer realm="tollgate"');
    assert.equal(res.headers['x-proxy-by'], 'tollgate');
    assert.match(String(res.headers['x-request-id']), /^[0-9a-f-]{36}$/);
    assert.match(String(res.headers['x-response-time']), /^\d+(\.\d+)?ms$/);
    const body = res.json();
    assert.deepEqual(Object.keys(body).sort(), ['error', 'message', 'request_id', 'status']);
    assert.equal(body.error, 'unauthorized');
    assert.equal(body.status, 401);
    assert.equal(body.request_id, res.headers['x-request-id']);
    assert.equal(backends.reduce((n, b) => n + b.hits, 0), 0, 'nothing was forwarded');
  });

  test('with Bearer dev-token-123: 200, the backend body and the three X- headers', async () => {
    const res = await request(`${proxy.url}/`, { headers: TOKEN });
    assert.equal(res.status, 200);
    assert.equal(res.json().backend, 'backend1');
    assert.equal(res.headers['x-proxy-by'], 'tollgate');
    assert.match(String(res.headers['x-request-id']), /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.match(String(res.headers['x-response-time']), /^\d+(\.\d+)?ms$/);
    assert.equal(res.headers['ratelimit-policy'], '"default";q=100;w=60');
    assert.equal(res.headers['ratelimit'], '"default";r=9;t=1');
  });

  test('15 rapid requests with burst 10: 10 pass, then 429 with Retry-After and RateLimit; one token back after 600 ms', async () => {
    const statuses: number[] = [];
    let last;
    // The previous test spent one token of this credential's bucket; the clock has not moved since.
    for (let i = 0; i < 15; i++) {
      last = await request(`${proxy.url}/`, { headers: { authorization: 'Bearer test-token-456' } });
      statuses.push(last.status);
    }
    assert.deepEqual(statuses, [...Array(10).fill(200), ...Array(5).fill(429)]);
    assert.ok(last);
    assert.equal(last.headers['retry-after'], '1');
    assert.equal(last.headers['ratelimit-policy'], '"default";q=100;w=60');
    assert.equal(last.headers['ratelimit'], '"default";r=0;t=6');
    assert.equal(last.json().error, 'rate_limited');

    clock.advance(599);
    assert.equal((await request(`${proxy.url}/`, { headers: { authorization: 'Bearer test-token-456' } })).status, 429);
    clock.advance(1);
    const refilled = await request(`${proxy.url}/`, { headers: { authorization: 'Bearer test-token-456' } });
    assert.equal(refilled.status, 200, 'one token is back after 60/100 s');
    assert.equal((await request(`${proxy.url}/`, { headers: { authorization: 'Bearer test-token-456' } })).status, 429);
  });

  test('Retry-After counts the seconds until a token is free, rounded up', async () => {
    const slow = await startProxy(backends, {
      middleware: { rate_limit: { enabled: true, requests_per_minute: 6, burst_size: 1 } },
    }, { clock: manualClock() });
    try {
      assert.equal((await request(`${slow.url}/`)).status, 200);
      const limited = await request(`${slow.url}/`);
      assert.equal(limited.status, 429);
      assert.equal(limited.headers['retry-after'], '10');
      assert.equal(limited.headers['ratelimit'], '"default";r=0;t=10');
    } finally {
      await slow.close();
    }
  });

  test('the completion line is logged at info with the request fields; Start and Select at debug', async () => {
    const res = await request(`${proxy.url}/logged?x=1`, { headers: { ...TOKEN, 'user-agent': 'qs-test', 'x-request-id': 'trace-abc.1' } });
    assert.equal(res.headers['x-request-id'], 'trace-abc.1');
    const done = proxy.logs.find((l) => l.msg === 'Request Completed' && l.request_id === 'trace-abc.1');
    assert.ok(done, 'completion line present');
    assert.equal(done.level, 30);
    assert.equal(done.client, '127.0.0.1');
    assert.equal(done.method, 'GET');
    assert.equal(done.path, '/logged?x=1');
    assert.match(String(done.upstream), /^backend[123]$/);
    assert.match(String(done.upstream_addr), /^127\.0\.0\.1:\d+$/);
    assert.equal(done.status, 200);
    assert.equal(done.bytes, Buffer.byteLength(res.body));
    assert.equal(typeof done.duration_ms, 'number');
    assert.equal(done.user_agent, 'qs-test');
    assert.ok(proxy.logs.some((l) => l.level === 20 && l.msg === 'Request Start: trace-abc.1 /logged?x=1'));
    assert.ok(proxy.logs.some((l) => l.level === 20 && typeof l.msg === 'string' && /^Select Upstream: trace-abc\.1 -> 127\.0\.0\.1:\d+$/.test(l.msg)));
  });
});
