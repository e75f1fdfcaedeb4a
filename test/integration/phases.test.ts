/**
 * The upstream_peer and fail_to_proxy hooks of a library phase, through real sockets: a phase picks the
 * service or one backend by name, an unknown choice is a 500, and fail_to_proxy can replace the error or
 * add headers to it. In-flight counts return to zero whichever way the request went.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ProxyError } from '../../src/proxy/errors.js';
import type { Phases } from '../../src/proxy/phases.js';
import { request } from '../helpers/http.js';
import { closedPort, startBackend, startProxy, waitFor, type Backend, type TestProxy } from '../helpers/servers.js';

describe('library phases: upstreamPeer and failToProxy', () => {
  let a1: Backend;
  let a2: Backend;
  let b1: Backend;
  let proxy: TestProxy;
  const failures: string[] = [];

  const chooser: Phases = {
    name: 'tenant-router',
    // X-Tenant: b sends to the service b; X-Pin: a2 to that one backend of the route's service a.
    upstreamPeer(ctx) {
      const tenant = ctx.req.headers['x-tenant'];
      const pin = ctx.req.headers['x-pin'];
      if (tenant === 'b') return { service: 'b' };
      if (tenant === 'nowhere') return { service: 'nowhere' };
      if (typeof pin === 'string') return { service: 'a', upstream: pin };
      return undefined;
    },
    failToProxy(ctx, error) {
      failures.push(error.code);
      ctx.responseHeaders.push('X-Failure-Seen', error.code);
      if (error.code === 'bad_gateway' && ctx.req.headers['x-soften'] === '1') {
        return new ProxyError('no_upstream', { message: 'The tenant backend is down; try again later.' });
      }
      return undefined;
    },
  };

  before(async () => {
    [a1, a2, b1] = await Promise.all([startBackend('a1'), startBackend('a2'), startBackend('b1')]);
    const dead = await closedPort();
    const noHealth = { active: { enabled: false }, passive: { enabled: false } };
    proxy = await startProxy(
      [a1],
      {
        services: {
          a: { upstreams: [{ name: 'a1', address: '127.0.0.1', port: a1.port }, { name: 'a2', address: '127.0.0.1', port: a2.port }], health_check: noHealth },
          b: { upstreams: [{ name: 'b1', address: '127.0.0.1', port: b1.port }], health_check: noHealth },
          down: { upstreams: [{ name: 'gone', address: '127.0.0.1', port: dead }], health_check: noHealth, retries: { max_retries: 0 } },
        },
        routes: [
          { name: 'app', match: { path_prefix: '/app' }, service: 'a' },
          { name: 'broken', match: { path_prefix: '/broken' }, service: 'down' },
        ],
        load_balancing: { health_check: noHealth },
      },
      { phases: [chooser] },
    );
  });
  after(async () => {
    await proxy.close();
    await Promise.all([a1.close(), a2.close(), b1.close()]);
  });

  const backends = () => [...proxy.proxy.generation.services.values()].flatMap((s) => s.backends);

  test('without a choice the route\'s service balances; a phase may pick another service', async () => {
    const seen = new Set<string>();
    for (let i = 0; i < 4; i++) seen.add((await request(`${proxy.url}/app/x`)).json().backend as string);
    assert.deepEqual([...seen].sort(), ['a1', 'a2']);
    for (let i = 0; i < 3; i++) assert.equal((await request(`${proxy.url}/app/x`, { headers: { 'x-tenant': 'b' } })).json().backend, 'b1');
  });

  test('a phase may pick one backend by name', async () => {
    for (let i = 0; i < 4; i++) assert.equal((await request(`${proxy.url}/app/x`, { headers: { 'x-pin': 'a2' } })).json().backend, 'a2');
    await waitFor(() => backends().every((b) => b.inflight === 0), 2000, 'in-flight counts back to 0');
  });

  test('a choice the config does not have is a 500 with the request id, not a crash', async () => {
    const service = await request(`${proxy.url}/app/x`, { headers: { 'x-tenant': 'nowhere' } });
    assert.equal(service.status, 500);
    assert.equal(service.json().error, 'internal_error');
    assert.equal(service.json().request_id, service.headers['x-request-id']);
    const upstream = await request(`${proxy.url}/app/x`, { headers: { 'x-pin': 'a9' } });
    assert.equal(upstream.status, 500);
    assert.ok(proxy.logs.some((l) => l.request_id === upstream.headers['x-request-id'] && l.status === 500));
    assert.equal((await request(`${proxy.url}/app/x`)).status, 200, 'the proxy keeps serving');
  });

  test('failToProxy sees the error, may add headers, and may answer with another error', async () => {
    failures.length = 0;
    const plain = await request(`${proxy.url}/broken/x`);
    assert.equal(plain.status, 502);
    assert.equal(plain.headers['x-failure-seen'], 'bad_gateway');
    const softened = await request(`${proxy.url}/broken/x`, { headers: { 'x-soften': '1' } });
    assert.equal(softened.status, 503);
    assert.equal(softened.json().error, 'no_upstream');
    assert.equal(softened.json().message, 'The tenant backend is down; try again later.');
    assert.deepEqual(failures, ['bad_gateway', 'bad_gateway']);
    // A 404 of no route does not reach it: the route `none` runs no library phases.
    assert.equal((await request(`${proxy.url}/elsewhere`)).status, 404);
    assert.deepEqual(failures, ['bad_gateway', 'bad_gateway']);
    await waitFor(() => backends().every((b) => b.inflight === 0), 2000, 'in-flight counts back to 0');
  });
});
