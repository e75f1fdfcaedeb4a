import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import { configSchema, type Config, type RateLimitConfig } from '../../../src/config/schema.js';
import { Gateway, policyKey } from '../../../src/gateway/gateway.js';
import { applicableConfig } from '../../../src/gateway/reload.js';
import type { RateLimitStore, StoreHealth } from '../../../src/limits/store.js';

type Json = Record<string, unknown>;

const upstreams = (...ports: number[]): Json[] => ports.map((port) => ({ name: `u${port}`, address: '127.0.0.1', port }));

function config(extra: Json = {}): Config {
  return configSchema.parse({
    server: { listen_port: 0, listen_address: '127.0.0.1' },
    services: { s: { upstreams: upstreams(4001, 4002), health_check: { active: { enabled: false } } } },
    routes: [
      { name: 'a', match: { path_prefix: '/a' }, service: 's', middleware: { rate_limit: { enabled: true, requests_per_minute: 60, burst_size: 5 } } },
      { name: 'b', match: { path_prefix: '/b' }, service: 's', middleware: { rate_limit: { enabled: true, requests_per_minute: 60, burst_size: 5 } } },
    ],
    ...extra,
  });
}

/** A store that only records whether it was closed. */
function fakeStores(): { made: { policy: string; closed: boolean }[]; makeStore: (c: RateLimitConfig) => RateLimitStore } {
  const made: { policy: string; closed: boolean }[] = [];
  return {
    made,
    makeStore: (c) => {
      const entry = { policy: policyKey(c), closed: false };
      made.push(entry);
      return {
        take: () => ({ allowed: true, remaining: 1, retryAfterMs: 0, resetMs: 0 }),
        close: () => {
          entry.closed = true;
        },
      };
    },
  };
}

function gateway(initial: Config, makeStore: (c: RateLimitConfig) => RateLimitStore): Gateway {
  return new Gateway(initial, { logger: pino({ level: 'silent' }), clock: () => 0, random: () => 0.5, head: [], user: [], tail: [], startedAt: 0, makeStore });
}

describe('applicableConfig', () => {
  test('listener and process keys keep their running value and are reported; the rest applies', () => {
    const running = config();
    const next = config({ server: { listen_port: 9999, listen_address: '127.0.0.1', proxy_name: 'other', max_body_bytes: 10 }, tracing: { enabled: false } });
    const { config: applied, restartNeeded } = applicableConfig(running, next);
    assert.deepEqual(restartNeeded, ['server.listen_port', 'tracing']);
    assert.equal(applied.server.listen_port, 0);
    assert.equal(applied.server.proxy_name, 'other');
    assert.equal(applied.server.max_body_bytes, 10);
    assert.deepEqual(applied.tracing, running.tracing);
    assert.deepEqual(applicableConfig(config(), config()).restartNeeded, []);
  });
});

describe('applicableConfig: server.tls', () => {
  const tls = (extra: Json = {}): Json => ({ certificates: [{ cert_file: '/c.pem', key_file: '/k.pem' }], ...extra });
  const withServer = (server: Json): Config => config({ server: { listen_port: 0, listen_address: '127.0.0.1', ...server } });

  test('certificates, min_version and the client CA file apply without a restart', () => {
    const running = withServer({ tls: tls({ client_ca_file: '/ca.pem' }) });
    const next = withServer({ tls: tls({ certificates: [{ cert_file: '/new.pem', key_file: '/new-key.pem' }], min_version: 'TLSv1.3', client_ca_file: '/ca2.pem' }) });
    const { config: applied, restartNeeded } = applicableConfig(running, next);
    assert.deepEqual(restartNeeded, []);
    assert.deepEqual(applied.server.tls, next.server.tls);
  });

  test('turning TLS on or off, or client certificates on or off, needs a restart and keeps the running value', () => {
    const plain = withServer({});
    const secure = withServer({ tls: tls() });
    assert.deepEqual(applicableConfig(plain, secure).restartNeeded, ['server.tls']);
    assert.equal(applicableConfig(plain, secure).config.server.tls, undefined);
    assert.deepEqual(applicableConfig(secure, plain).config.server.tls, secure.server.tls);

    const mtls = withServer({ tls: tls({ client_ca_file: '/ca.pem', forward_client_cert: true }) });
    const renewed = withServer({ tls: tls({ certificates: [{ cert_file: '/new.pem', key_file: '/new-key.pem' }] }) });
    const off = applicableConfig(mtls, renewed);
    assert.deepEqual(off.restartNeeded, ['server.tls.client_ca_file']);
    assert.equal(off.config.server.tls?.client_ca_file, '/ca.pem');
    assert.equal(off.config.server.tls?.forward_client_cert, true);
    assert.equal(off.config.server.tls?.certificates[0]?.cert_file, '/new.pem', 'the new certificates apply all the same');
    const on = applicableConfig(renewed, mtls);
    assert.deepEqual(on.restartNeeded, ['server.tls.client_ca_file']);
    assert.equal(on.config.server.tls?.client_ca_file, undefined);
    assert.equal(on.config.server.tls?.forward_client_cert, false);
  });

  test('redirect_http needs a restart', () => {
    const running = withServer({ tls: tls(), redirect_http: { port: 8080 } });
    assert.deepEqual(applicableConfig(running, withServer({ tls: tls(), redirect_http: { port: 8081 } })).restartNeeded, ['server.redirect_http']);
  });
});

describe('Gateway.reload', () => {
  test('routes with one policy share a store; an unchanged policy keeps it; a dropped one is closed once idle', async () => {
    const { made, makeStore } = fakeStores();
    const g = gateway(config(), makeStore);
    try {
      assert.equal(made.length, 1, 'routes a and b share one store');
      const first = g.current;
      const same = await g.reload(config({ server: { listen_port: 0, listen_address: '127.0.0.1', proxy_name: 'x' } }));
      assert.equal(same.result, 'ok');
      assert.equal(same.generation, 2);
      assert.notEqual(g.current, first);
      assert.equal(made.length, 1, 'the unchanged policy kept its store');
      const changed = config();
      (changed.routes?.[1] as { middleware: { rate_limit: RateLimitConfig } }).middleware.rate_limit = { ...(changed.routes?.[1]?.middleware.rate_limit as RateLimitConfig), burst_size: 50 };
      (changed.routes?.[0] as { middleware: { rate_limit: RateLimitConfig } }).middleware.rate_limit = { ...(changed.routes?.[0]?.middleware.rate_limit as RateLimitConfig), burst_size: 50 };
      assert.equal((await g.reload(changed)).result, 'ok');
      assert.equal(made.length, 2);
      // The old generations had no requests: once retired, the old policy's store is closed.
      await new Promise((resolve) => setTimeout(resolve, 10));
      assert.deepEqual(made.map((m) => m.closed), [true, false]);
    } finally {
      await g.close();
    }
    assert.deepEqual(made.map((m) => m.closed), [true, true]);
  });

  test('backends with the same service, name, address and port are the same objects in the next generation', async () => {
    const { makeStore } = fakeStores();
    const g = gateway(config(), makeStore);
    try {
      const [u1, u2] = g.current.services.get('s')?.backends ?? [];
      u1!.inflight = 3;
      const next = config({ services: { s: { upstreams: upstreams(4001, 4003), health_check: { active: { enabled: false } } } } });
      assert.equal((await g.reload(next)).result, 'ok');
      const [n1, n3] = g.current.services.get('s')?.backends ?? [];
      assert.equal(n1, u1);
      assert.equal(n1?.inflight, 3);
      assert.notEqual(n3, u2);
      assert.equal(n3?.name, 'u4003');
      // Another pool size: a new object that takes over the old one's state.
      u1!.ejectedUntil = 12345;
      const bigger = config({ services: { s: { upstreams: upstreams(4001), pool: { max_connections: 7 }, health_check: { active: { enabled: false } } } } });
      assert.equal((await g.reload(bigger)).result, 'ok');
      const [m1] = g.current.services.get('s')?.backends ?? [];
      assert.notEqual(m1, u1);
      assert.equal(m1?.ejectedUntil, 12345);
      u1!.inflight = 0;
    } finally {
      await g.close();
    }
  });

  test('a config object with a route tie changes nothing; nor does a reload while draining', async () => {
    const { makeStore } = fakeStores();
    const g = gateway(config(), makeStore);
    try {
      const tie = config({ routes: [{ name: 'x', match: { path_prefix: '/x' }, service: 's' }, { name: 'y', match: { path_prefix: '/x/' }, service: 's' }] });
      const current = g.current;
      const outcome = await g.reload(tie);
      assert.equal(outcome.result, 'error');
      assert.match(outcome.errors[0] ?? '', /routes "x" and "y" match the same requests/);
      assert.equal(g.current, current);
      assert.equal(g.info().last_reload?.result, 'error');
      g.startDraining();
      const draining = await g.reload(config());
      assert.equal(draining.result, 'error');
      assert.equal(g.current, current);
    } finally {
      await g.close();
    }
  });
});

describe('Gateway.storeStatus', () => {
  test('one row per store the current generation uses, with its routes in order; a store that cannot tell its state is left out', async () => {
    const states = new Map<string, StoreHealth>();
    const makeStore = (c: RateLimitConfig): RateLimitStore => {
      const health = c.burst_size === 7 ? undefined : { store: 'memory' as const, target: null, state: 'ready' as const, last_error: null };
      if (health !== undefined) states.set(policyKey(c), health);
      return { take: () => ({ allowed: true, remaining: 1, retryAfterMs: 0, resetMs: 0 }), close: () => {}, ...(health === undefined ? {} : { health: () => health }) };
    };
    const limit = (burst: number): Json => ({ rate_limit: { enabled: true, requests_per_minute: 60, burst_size: burst } });
    const routes = (bursts: (number | undefined)[]): Json[] =>
      bursts.map((burst, i) => ({ name: `r${i}`, match: { path_prefix: `/r${i}` }, service: 's', ...(burst === undefined ? {} : { middleware: limit(burst) }) }));
    const g = gateway(config({ routes: routes([5, undefined, 9, 5, 7]) }), makeStore);
    try {
      assert.deepEqual(g.storeStatus(), [
        { store: 'memory', target: null, state: 'ready', last_error: null, routes: ['r0', 'r3'] },
        { store: 'memory', target: null, state: 'ready', last_error: null, routes: ['r2'] },
      ]);
      // The state is read when asked.
      const [first] = states.values();
      (first as { state: string }).state = 'down';
      assert.equal(g.storeStatus()[0]?.state, 'down');
      // After a reload, the rows of the generation serving now.
      assert.equal((await g.reload(config({ routes: routes([9]) }))).result, 'ok');
      assert.deepEqual(g.storeStatus().map((r) => r.routes), [['r0']]);
      assert.equal((await g.reload(config({ routes: routes([undefined]) }))).result, 'ok');
      assert.deepEqual(g.storeStatus(), []);
    } finally {
      await g.close();
    }
  });
});

describe('Generation: what routes share', () => {
  test('routes that inherit the auth block share its phases and one drop set; a route with its own block gets its own; phases shared by every route are bound once', async () => {
    const { makeStore } = fakeStores();
    const auth = { enabled: true, auth_type: 'bearer', valid_tokens: ['t1'] };
    const cfg = configSchema.parse({
      server: { listen_port: 0, listen_address: '127.0.0.1' },
      services: { s: { upstreams: upstreams(4001), health_check: { active: { enabled: false } } } },
      middleware: { auth },
      routes: [
        { name: 'a', match: { path_prefix: '/a' }, service: 's' },
        { name: 'b', match: { path_prefix: '/b' }, service: 's' },
        { name: 'c', match: { path_prefix: '/c' }, service: 's', middleware: { auth: { ...auth, valid_tokens: ['t2'] } } },
        { name: 'd', match: { path_prefix: '/d' }, service: 's', middleware: { auth: { enabled: false } } },
      ],
    });
    const head = { name: 'head', requestFilter: () => false as const, logging: () => undefined };
    const g = new Gateway(cfg, { logger: pino({ level: 'silent' }), clock: () => 0, random: () => 0.5, head: [head], user: [], tail: [], startedAt: 0, makeStore });
    try {
      const [a, b, c, d] = g.current.routes;
      // requestFilters: the head phase, then authenticate, then enforce (no rate limit here).
      assert.equal(a?.requestFilters.length, 3);
      assert.equal(d?.requestFilters.length, 1);
      assert.equal(a?.requestFilters[1], b?.requestFilters[1], 'a and b run one authenticate hook');
      assert.equal(a?.requestFilters[2], b?.requestFilters[2], 'a and b run one enforce hook');
      assert.notEqual(c?.requestFilters[1], a?.requestFilters[1], 'c has auth of its own');
      for (const r of [b, c, d]) {
        assert.equal(r?.requestFilters[0], a?.requestFilters[0], 'the head phase is bound once');
        assert.equal(r?.loggingHooks[0], a?.loggingHooks[0]);
      }
      assert.equal(a?.dropRequestHeaders, b?.dropRequestHeaders);
      assert.equal(c?.dropRequestHeaders, a?.dropRequestHeaders, 'c drops the same headers');
      assert.ok(a?.dropRequestHeaders.has('authorization'));
      assert.ok(!d?.dropRequestHeaders.has('authorization'), 'd, without auth, forwards Authorization');
      const reloaded = await g.reload(cfg);
      assert.equal(reloaded.result, 'ok');
      assert.equal(g.current.routes[0]?.requestFilters[0], a?.requestFilters[0], 'the same phase object keeps its bound hook across generations');
    } finally {
      await g.close();
    }
  });
});
