import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { request } from '../helpers/http.js';
import { samples, scrape } from '../helpers/metrics.js';
import { closedPort, startBackend, startProxy, waitFor, type Backend } from '../helpers/servers.js';

type Echo = { url: string; method: string; headers: Record<string, string | undefined> };

describe('forward auth', () => {
  let backend: Backend;
  let service: Server;
  let serviceUrl: string;
  const seen: { method: string | undefined; url: string | undefined; headers: IncomingHttpHeaders }[] = [];
  before(async () => {
    backend = await startBackend('b');
    service = createServer((req, res) => {
      seen.push({ method: req.method, url: req.url, headers: req.headers });
      const auth = req.headers.authorization;
      if (auth === 'Bearer good') {
        res.writeHead(204, { 'X-Auth-User': 'alice', 'X-Not-Copied': 'x' }).end();
      } else if (auth === 'Bearer slow') {
        setTimeout(() => res.writeHead(200).end(), 2000).unref();
      } else if (auth === 'Bearer login') {
        res.writeHead(302, { Location: 'https://login.example/?next=' + String(req.headers['x-forwarded-uri']) }).end();
      } else {
        const body = JSON.stringify({ denied: true, uri: req.headers['x-forwarded-uri'] });
        res.writeHead(401, { 'Content-Type': 'application/json', 'WWW-Authenticate': 'Bearer realm="sso"', 'X-Reason': 'no-token' }).end(body);
      }
    });
    await new Promise<void>((resolve) => service.listen(0, '127.0.0.1', resolve));
    serviceUrl = `http://127.0.0.1:${(service.address() as AddressInfo).port}/verify`;
  });
  after(async () => {
    await backend.close();
    service.closeAllConnections();
    await new Promise<void>((resolve) => service.close(() => resolve()));
  });

  function forwardAuth(extra: Record<string, unknown> = {}): Record<string, unknown> {
    return { auth: { enabled: true, auth_type: 'forward', forward: { url: serviceUrl, timeout_ms: 300, copy_request_headers: ['Authorization', 'Cookie'], copy_response_headers: ['X-Auth-User'], ...extra } } };
  }

  test('2xx lets the request through with the listed headers; the service sees method, path and chosen headers', async () => {
    const proxy = await startProxy([backend], { middleware: forwardAuth() });
    try {
      seen.length = 0;
      const res = await request(`${proxy.url}/a/../orders?id=1`, { method: 'DELETE', headers: { authorization: 'Bearer good', 'x-auth-user': 'mallory', 'x-secret': 's' } });
      assert.equal(res.status, 200);
      const up = res.json<Echo>();
      assert.equal(up.headers['x-auth-user'], 'alice', 'from the service, not the client');
      assert.equal(up.headers['x-not-copied'], undefined);
      assert.equal(up.method, 'DELETE');
      assert.equal(seen.length, 1);
      const asked = seen[0] as (typeof seen)[number];
      assert.equal(asked.method, 'DELETE');
      assert.equal(asked.url, '/verify');
      assert.equal(asked.headers['x-forwarded-uri'], '/orders?id=1');
      assert.equal(asked.headers['x-forwarded-method'], 'DELETE');
      assert.equal(asked.headers.authorization, 'Bearer good');
      assert.equal(asked.headers['x-secret'], undefined, 'only the chosen headers');
      assert.equal(asked.headers['x-forwarded-for'], '127.0.0.1');
      // Nothing cached by default: the service is asked again.
      assert.equal((await request(`${proxy.url}/x`, { headers: { authorization: 'Bearer good' } })).status, 200);
      assert.equal(seen.length, 2);
    } finally {
      await proxy.close();
    }
  });

  test('any other answer goes back to the client as it is; a timeout or a dead service is 503; all counted', async () => {
    const proxy = await startProxy([backend], { middleware: forwardAuth() });
    const dead = await startProxy([backend], { middleware: { auth: { enabled: true, auth_type: 'forward', forward: { url: `http://127.0.0.1:${await closedPort()}/` } } } });
    try {
      const denied = await request(`${proxy.url}/x`, { headers: { authorization: 'Bearer bad' } });
      assert.equal(denied.status, 401);
      assert.deepEqual(denied.json(), { denied: true, uri: '/x' });
      assert.equal(denied.headers['www-authenticate'], 'Bearer realm="sso"');
      assert.equal(denied.headers['x-reason'], 'no-token');
      assert.equal(denied.headers['content-type'], 'application/json');
      assert.ok(denied.headers['x-request-id'] !== undefined, 'Tollgate\'s own headers too');
      const redirect = await request(`${proxy.url}/app`, { headers: { authorization: 'Bearer login' } });
      assert.equal(redirect.status, 302);
      assert.equal(redirect.headers.location, 'https://login.example/?next=/app');
      const slow = await request(`${proxy.url}/x`, { headers: { authorization: 'Bearer slow' } });
      assert.equal(slow.status, 503);
      assert.equal(slow.json().error, 'auth_unavailable');
      const down = await request(`${dead.url}/x`, { headers: { authorization: 'Bearer good' } });
      assert.equal(down.status, 503);
      assert.equal(down.json().error, 'auth_unavailable');
      await waitFor(() => proxy.logs.filter((l) => l.msg === 'Request Completed').length === 3, 3000, 'logged');
      const counted = Object.fromEntries([...samples(await scrape(proxy.adminUrl), 'tollgate_auth_failures_total')].filter(([, n]) => n > 0));
      assert.deepEqual(counted, { '{reason="forward_denied"}': 2, '{reason="forward_unavailable"}': 1 });
      assert.ok(proxy.logs.some((l) => l.msg === 'Request Completed' && l.status === 302 && l.auth_failure === 'forward_denied'));
    } finally {
      await proxy.close();
      await dead.close();
    }
  });

  test('cache_ms keeps 2xx answers per credential, method, host and path; refusals are never cached', async () => {
    const proxy = await startProxy([backend], { middleware: forwardAuth({ cache_ms: 60_000 }) });
    try {
      seen.length = 0;
      for (let i = 0; i < 3; i++) {
        const res = await request(`${proxy.url}/x`, { headers: { authorization: 'Bearer good' } });
        assert.equal(res.status, 200);
        assert.equal(res.json<Echo>().headers['x-auth-user'], 'alice', 'the copied headers are cached too');
      }
      assert.equal(seen.length, 1);
      assert.equal((await request(`${proxy.url}/y`, { headers: { authorization: 'Bearer good' } })).status, 200);
      assert.equal(seen.length, 2, 'another path is asked');
      // The same credential and path on another host: the service may answer differently for it.
      assert.equal((await request(`${proxy.url}/x`, { headers: { authorization: 'Bearer good', host: 'other.example' } })).status, 200);
      assert.equal(seen.length, 3, 'another host is asked');
      assert.equal(seen[2]?.headers['x-forwarded-host'], 'other.example');
      assert.equal((await request(`${proxy.url}/x`, { headers: { authorization: 'Bearer good', host: 'other.example' } })).status, 200);
      assert.equal(seen.length, 3, 'and then cached');
      for (let i = 0; i < 2; i++) assert.equal((await request(`${proxy.url}/x`, { headers: { authorization: 'Bearer bad' } })).status, 401);
      assert.equal(seen.length, 5);
    } finally {
      await proxy.close();
    }
  });
});
