/**
 * The public API (`createGateway`, `Phases<Ctx>`, the Session helpers) through real sockets: per-phase
 * contexts, the documented order of gateway and route phases, header edits both ways, answers and choices,
 * and a user hook that throws or rejects, which is a 500 for that request only, logged and counted.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { createGateway, definePhases, ProxyError, type Gateway, type Phases } from '../../src/index.js';
import { request } from '../helpers/http.js';
import { samples } from '../helpers/metrics.js';
import { closedPort, startBackend, waitFor, type Backend } from '../helpers/servers.js';

describe('createGateway with phases', () => {
  let a: Backend;
  let b: Backend;
  let gateway: Gateway;
  let url: string;
  const logs: Record<string, unknown>[] = [];
  const order: string[] = [];
  const logged: { route: string; status: number; hooks: string[]; identity: string | undefined }[] = [];

  // One context per request for this phase: the hooks it ran, in order.
  const recorder = definePhases({
    name: 'recorder',
    newContext: () => ({ hooks: [] as string[] }),
    requestFilter(session, ctx) {
      ctx.hooks.push('requestFilter');
      order.push(`gateway:${session.route.name}`);
      if (session.path.startsWith('/app/refuse')) return session.refuse('forbidden', 'Not for you.');
      if (session.path.startsWith('/app/json')) return session.json(202, { hello: session.requestHeader('x-name') ?? 'nobody' }, { 'X-Answered-By': 'recorder' });
      if (session.path.startsWith('/app/text')) return session.text(418, 'short and stout');
      session.upstreamHeaders.set('X-From-Filter', 'yes');
      session.upstreamHeaders.delete('x-secret');
      session.responseHeaders.set('X-Early', 'set in requestFilter');
      return undefined;
    },
    upstreamPeer(session, ctx) {
      ctx.hooks.push('upstreamPeer');
      if (session.cookie('variant') === 'b') return session.choose('b');
      return undefined;
    },
    upstreamRequestFilter(session, ctx) {
      ctx.hooks.push('upstreamRequestFilter');
      session.upstreamHeaders.set('X-Upstream-Name', session.upstream?.name ?? '');
    },
    responseFilter(session, ctx) {
      ctx.hooks.push('responseFilter');
      session.responseHeaders.set('X-Status-Seen', String(session.status));
      session.responseHeaders.delete('x-backend-private');
    },
    logging(session, ctx) {
      ctx.hooks.push('logging');
      logged.push({ route: session.route.name, status: session.status, hooks: ctx.hooks, identity: session.identity });
    },
  });

  // A route's own phase, typed with an annotation instead of definePhases.
  const failing: Phases<{ seen: number }> = {
    name: 'failing',
    newContext: () => ({ seen: 0 }),
    async requestFilter(session, ctx) {
      ctx.seen++;
      order.push(`route:${session.route.name}`);
      const mode = session.requestHeader('x-fail');
      if (mode === 'throw') throw new Error('boom in requestFilter');
      if (mode === 'reject') {
        await Promise.resolve();
        throw new Error('rejected in requestFilter');
      }
      if (mode === 'catalogue') return new ProxyError('not_found', { message: 'No such tenant.' });
      if (mode === 'true') return true; // claims to have answered, but has not
      return undefined;
    },
    upstreamPeer(session) {
      if (session.requestHeader('x-fail') === 'peer') throw new Error('boom in upstreamPeer');
      if (session.requestHeader('x-fail') === 'unknown-service') return session.choose('nowhere');
      return undefined;
    },
    upstreamRequestFilter(session) {
      if (session.requestHeader('x-fail') === 'upstream-filter') session.upstreamHeaders.set('bad header', 'x');
    },
    responseFilter(session) {
      if (session.requestHeader('x-fail') === 'response') throw new Error('boom in responseFilter');
    },
    failToProxy(session, _ctx, error) {
      session.responseHeaders.set('X-Failed-With', error.code);
      return undefined;
    },
  };

  before(async () => {
    [a, b] = await Promise.all([
      startBackend('a', (req, res) => {
        res.writeHead(200, { 'content-type': 'application/json', 'x-backend-private': '1' });
        res.end(JSON.stringify({ backend: 'a', headers: req.headers }));
      }),
      startBackend('b'),
    ]);
    const stream = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const line of chunk.toString().split('\n')) if (line !== '') logs.push(JSON.parse(line) as Record<string, unknown>);
        done();
      },
    });
    const noHealth = { active: { enabled: false }, passive: { enabled: false } };
    gateway = await createGateway({
      config: {
        server: { listen_port: 0, listen_address: '127.0.0.1' },
        admin: { enabled: false },
        services: {
          a: { upstreams: [{ name: 'a1', address: '127.0.0.1', port: a.port }], health_check: noHealth },
          b: { upstreams: [{ name: 'b1', address: '127.0.0.1', port: b.port }], health_check: noHealth },
        },
        routes: [
          { name: 'app', match: { path_prefix: '/app' }, service: 'a' },
          { name: 'other', match: { path_prefix: '/other' }, service: 'a', middleware: { auth: { enabled: true, auth_type: 'bearer', valid_tokens: ['t0ken-for-tests'] } } },
        ],
      },
      phases: [recorder],
      routes: { app: [failing] },
      logger: pino({ level: 'info', base: null }, stream),
    });
    assert.equal(gateway.address, undefined);
    const address = await gateway.listen();
    assert.ok(address.port > 0, 'listen_port 0 picks a free port');
    assert.deepEqual(gateway.address, address);
    url = `http://127.0.0.1:${address.port}`;
  });
  after(async () => {
    await gateway.close();
    await Promise.all([a.close(), b.close()]);
  });

  test('every hook runs in order with its own context; header edits reach the upstream and the client', async () => {
    logged.length = 0;
    const res = await request(`${url}/app/x`, { headers: { 'x-secret': 'hidden' } });
    assert.equal(res.status, 200);
    const seen = res.json<{ headers: Record<string, string> }>().headers;
    assert.equal(seen['x-from-filter'], 'yes');
    assert.equal(seen['x-secret'], undefined);
    assert.equal(seen['x-upstream-name'], 'a1');
    assert.equal(res.headers['x-early'], 'set in requestFilter');
    assert.equal(res.headers['x-status-seen'], '200');
    assert.equal(res.headers['x-backend-private'], undefined);
    await waitFor(() => logged.length === 1, 2000, 'logging ran');
    assert.deepEqual(logged[0], { route: 'app', status: 200, hooks: ['requestFilter', 'upstreamPeer', 'upstreamRequestFilter', 'responseFilter', 'logging'], identity: undefined });
  });

  test('gateway phases run before the route\'s own, and only the route\'s own route runs them', async () => {
    order.length = 0;
    await request(`${url}/app/x`);
    await request(`${url}/other/x`, { headers: { authorization: 'Bearer t0ken-for-tests' } });
    assert.deepEqual(order, ['gateway:app', 'route:app', 'gateway:other']);
  });

  test('the identity from auth, and upstreamPeer choosing a service by cookie', async () => {
    logged.length = 0;
    const res = await request(`${url}/other/x`, { headers: { authorization: 'Bearer t0ken-for-tests', cookie: 'theme=dark; variant=b' } });
    assert.equal(res.json().backend, 'b');
    await waitFor(() => logged.length === 1, 2000, 'logging ran');
    assert.match(logged[0]?.identity ?? '', /^cred:[0-9a-f]{16}$/);
  });

  test('answers from requestFilter: a catalogue error, JSON, text', async () => {
    const refused = await request(`${url}/app/refuse`);
    assert.equal(refused.status, 403);
    assert.equal(refused.json().error, 'forbidden');
    assert.equal(refused.json().message, 'Not for you.');
    assert.equal(refused.headers['x-failed-with'], 'forbidden', 'failToProxy ran');
    const json = await request(`${url}/app/json`, { headers: { 'x-name': 'ada' } });
    assert.equal(json.status, 202);
    assert.deepEqual(json.json(), { hello: 'ada' });
    assert.equal(json.headers['x-answered-by'], 'recorder');
    assert.ok(json.headers['x-request-id'] !== undefined, "Tollgate's own headers are on it");
    const text = await request(`${url}/app/text`);
    assert.equal(text.status, 418);
    assert.equal(text.headers['content-type'], 'text/plain; charset=utf-8');
    assert.equal(text.body, 'short and stout');
    const tenant = await request(`${url}/app/x`, { headers: { 'x-fail': 'catalogue' } });
    assert.equal(tenant.status, 404);
    assert.equal(tenant.json().message, 'No such tenant.');
  });

  for (const mode of ['throw', 'reject', 'true', 'peer', 'unknown-service', 'upstream-filter', 'response']) {
    test(`a phase failing (${mode}) is a 500 for that request; the next request works`, async () => {
      const before = await count();
      const res = await request(`${url}/app/x`, { headers: { 'x-fail': mode } });
      assert.equal(res.status, 500);
      assert.equal(res.json().error, 'internal_error');
      assert.equal(res.json().request_id, res.headers['x-request-id']);
      assert.equal((await request(`${url}/app/x`)).status, 200);
      // A service the config does not have is the core's 500 (not a phase failure): not counted.
      if (mode !== 'unknown-service') {
        assert.equal(await count(), before + 1, 'counted in tollgate_phase_errors_total');
        assert.ok(logs.some((l) => l.request_id === res.headers['x-request-id'] && l.phase === 'failing' && l.level === 50), 'logged with the phase name');
      }
    });
  }

  async function count(): Promise<number> {
    const text = await gateway.metrics.metrics();
    let sum = 0;
    for (const value of samples(text, 'tollgate_phase_errors_total').values()) sum += value;
    return sum;
  }

  test('reload(config) swaps the config and keeps the phases; a bad config changes nothing', async () => {
    const bad = await gateway.reload({ server: { listen_port: 'x' } });
    assert.equal(bad.result, 'error');
    assert.ok(bad.errors.some((e) => e.includes('server.listen_port')), bad.errors.join('\n'));
    const noHealth = { active: { enabled: false }, passive: { enabled: false } };
    const ok = await gateway.reload({
      server: { listen_port: 0, listen_address: '127.0.0.1' },
      admin: { enabled: false },
      services: { b: { upstreams: [{ name: 'b1', address: '127.0.0.1', port: b.port }], health_check: noHealth } },
      routes: [{ name: 'app', match: { path_prefix: '/app' }, service: 'b' }],
    });
    assert.equal(ok.result, 'ok', ok.errors.join('\n'));
    const res = await request(`${url}/app/x`);
    assert.equal(res.json().backend, 'b');
    assert.equal(res.headers['x-status-seen'], '200', 'the gateway phase still runs');
    assert.equal((await request(`${url}/app/x`, { headers: { 'x-fail': 'throw' } })).status, 500, "the route's phase still runs");
  });
});

describe('header edits of user phases and retries', () => {
  test('edits made before and at dispatch are sent once on every attempt, a retry included', async () => {
    const good = await startBackend('good');
    const dead = await closedPort();
    const editor = definePhases({
      requestFilter(session) {
        session.upstreamHeaders.delete('x-secret');
        session.upstreamHeaders.set('X-From-Filter', 'yes');
      },
      upstreamRequestFilter(session) {
        session.upstreamHeaders.append('X-Attempt', session.upstream?.name ?? '');
        session.upstreamHeaders.delete('x-forwarded-host');
      },
    });
    const noHealth = { active: { enabled: false }, passive: { enabled: false } };
    const gateway = await createGateway({
      config: {
        server: { listen_port: 0, listen_address: '127.0.0.1' },
        admin: { enabled: false },
        logging: { level: 'silent' },
        load_balancing: { upstreams: [{ name: 'dead', address: '127.0.0.1', port: dead }, { name: 'good', address: '127.0.0.1', port: good.port }], health_check: noHealth, retries: { max_retries: 1 } },
      },
      phases: [editor],
    });
    try {
      const { port } = await gateway.listen();
      for (let i = 0; i < 4; i++) {
        const res = await request(`http://127.0.0.1:${port}/x`, { headers: { 'x-secret': 's', 'x-keep': 'k' } });
        assert.equal(res.status, 200);
        const seen = res.json<{ headers: Record<string, string> }>().headers;
        assert.equal(seen['x-secret'], undefined);
        assert.equal(seen['x-keep'], 'k');
        assert.equal(seen['x-from-filter'], 'yes');
        assert.equal(seen['x-attempt'], 'good', 'only the attempt that was sent is named');
        assert.equal(seen['x-forwarded-host'], undefined);
        assert.equal(seen['x-forwarded-for'], '127.0.0.1', 'Tollgate\'s own headers once');
      }
      assert.equal(good.hits, 4);
      // Round robin over [dead, good]: about half the requests went to `dead` first and were retried.
      let retries = 0;
      for (const value of samples(await gateway.metrics.metrics(), 'tollgate_retries_total').values()) retries += value;
      assert.ok(retries >= 1, `some requests were retried (${retries})`);
    } finally {
      await gateway.close();
      await good.close();
    }
  });
});

describe('createGateway refuses what it cannot run', () => {
  test('a phases object with an unknown hook, and a route name the config lacks', async () => {
    const config = { load_balancing: { upstreams: [{ name: 'x', address: '127.0.0.1', port: 1 }] }, admin: { enabled: false } };
    await assert.rejects(createGateway({ config, phases: [{ requestFiltre() {} } as never] }), /phases\[0\]: unknown hook "requestFiltre"/);
    await assert.rejects(createGateway({ config, routes: { nope: [] } }), /"nope", which the config does not have/);
    await assert.rejects(createGateway({ config: { load_balancing: {} } }), (err: Error) => err.name === 'ConfigError' && err.message.includes('load_balancing.upstreams'));
  });
});
