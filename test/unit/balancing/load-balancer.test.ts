import type { LoadBalancingConfig } from '../../../src/config/schema.js';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import type { Backend } from '../../../src/balancing/backend.js';
import { LoadBalancer } from '../../../src/balancing/load-balancer.js';
import { createConsistentHash } from '../../../src/balancing/selection/consistent-hash.js';
import { configSchema } from '../../../src/config/schema.js';
import type { RequestContext } from '../../../src/proxy/context.js';
import { ProxyError } from '../../../src/proxy/errors.js';
import type { Random } from '../../../src/util/clock.js';
import { manualClock, seededRandom } from '../../helpers/servers.js';
import { privateCa } from '../../helpers/tls.js';

type Clock = ReturnType<typeof manualClock>;
type Json = Record<string, unknown>;

interface Setup {
  balancer: LoadBalancer;
  clock: Clock;
  logs: Json[];
  b: Backend[];
}

/** A LoadBalancer over `count` upstreams (never connected), active checks off unless overridden. */
function setup(count: number, overrides: Json = {}, random: Random = seededRandom(1)): Setup {
  const logs: Json[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) if (line !== '') logs.push(JSON.parse(line) as Json);
      done();
    },
  });
  const lb = configSchema.parse({
    load_balancing: {
      upstreams: Array.from({ length: count }, (_, i) => ({ name: `b${i}`, address: `10.0.0.${i + 1}`, port: 8080 })),
      health_check: { active: { enabled: false } },
      ...overrides,
    },
  }).load_balancing as LoadBalancingConfig;
  const clock = manualClock();
  const balancer = new LoadBalancer(lb, { random, clock, logger: pino({ level: 'info', base: null }, stream) });
  return { balancer, clock, logs, b: [...balancer.backends] };
}

const NO_CTX = {} as RequestContext;

function names(picks: readonly (Backend | undefined)[]): string[] {
  return picks.map((p) => (p === undefined ? '-' : p.name));
}

function selectMany(balancer: LoadBalancer, n: number, exclude?: readonly Backend[]): string[] {
  return names(Array.from({ length: n }, () => balancer.select(NO_CTX, exclude)));
}

describe('LoadBalancer.select: usable backends only', () => {
  test('round robin over 3 backends takes each in turn', async () => {
    const { balancer } = setup(3);
    try {
      assert.deepEqual(selectMany(balancer, 6), ['b0', 'b1', 'b2', 'b0', 'b1', 'b2']);
    } finally {
      await balancer.close();
    }
  });

  test('a backend set unhealthy is skipped, and taken again once healthy', async () => {
    const { balancer, b } = setup(3);
    try {
      balancer.setHealthy(b[1] as Backend, false);
      assert.equal((b[1] as Backend).healthy, false);
      const picks = selectMany(balancer, 30);
      assert.equal(picks.includes('b1'), false);
      assert.equal(picks.filter((n) => n === 'b0').length, 15);
      assert.equal(picks.filter((n) => n === 'b2').length, 15);
      balancer.setHealthy(b[1] as Backend, true);
      assert.equal(selectMany(balancer, 30).filter((n) => n === 'b1').length, 10);
    } finally {
      await balancer.close();
    }
  });

  test('5 reported failures eject a backend: skipped until the ejection ends; the ejection is logged once', async () => {
    const { balancer, clock, b, logs } = setup(3);
    const b0 = b[0] as Backend;
    try {
      for (let i = 0; i < 4; i++) balancer.reportFailure(b0);
      assert.equal(selectMany(balancer, 3).includes('b0'), true);
      balancer.reportFailure(b0);
      assert.equal(b0.usable(clock()), false);
      assert.equal(b0.healthy, true);
      assert.equal(selectMany(balancer, 30).includes('b0'), false);
      const ejected = logs.filter((l) => l.msg === 'upstream ejected after consecutive failures');
      assert.equal(ejected.length, 1);
      assert.equal(ejected[0]?.upstream, 'b0');
      assert.equal(ejected[0]?.upstream_addr, '10.0.0.1:8080');
      assert.equal(ejected[0]?.ejected_ms, 10_000);
      assert.equal(ejected[0]?.level, 40);
      clock.advance(9_999);
      assert.equal(selectMany(balancer, 30).includes('b0'), false);
      clock.advance(1);
      assert.equal(selectMany(balancer, 30).includes('b0'), true);
    } finally {
      await balancer.close();
    }
  });

  test('the ejection says why (the count and the last failure); the first success after it is logged as the return', async () => {
    const { balancer, clock, b, logs } = setup(4, { health_check: { active: { enabled: false }, passive: { include_5xx: true } } });
    const [b0, b1] = b as [Backend, Backend];
    const refused = new ProxyError('bad_gateway', { cause: Object.assign(new Error('connect ECONNREFUSED 10.0.0.1:8080'), { code: 'ECONNREFUSED' }) });
    try {
      for (let i = 0; i < 5; i++) balancer.reportFailure(b0, refused);
      for (let i = 0; i < 5; i++) balancer.reportFailure(b1, 503);
      const ejected = logs.filter((l) => l.msg === 'upstream ejected after consecutive failures');
      assert.deepEqual(
        ejected.map((l) => [l.upstream, l.failures, l.reason]),
        [
          ['b0', 5, '5 requests in a row failed, the last: connection refused'],
          ['b1', 5, '5 requests in a row failed, the last: answered 503'],
        ],
      );
      // A request sent before the ejection that succeeds during it is no return.
      balancer.reportSuccess(b0);
      clock.advance(10_000);
      balancer.reportSuccess(b0);
      balancer.reportSuccess(b0);
      const back = logs.filter((l) => l.msg === 'upstream back after ejection: taking requests');
      assert.deepEqual(
        back.map((l) => [l.upstream, l.level, l.reason]),
        [['b0', 30, 'the ejection time was over and a request succeeded']],
      );
    } finally {
      await balancer.close();
    }
  });

  test('an active check bringing back an ejected backend ends the ejection without a second return line', async () => {
    const { balancer, clock, b, logs } = setup(2);
    const b0 = b[0] as Backend;
    try {
      for (let i = 0; i < 5; i++) balancer.reportFailure(b0, new Error('reset'));
      balancer.setHealthy(b0, false);
      balancer.setHealthy(b0, true);
      assert.equal(b0.usable(clock()), true);
      balancer.reportSuccess(b0);
      assert.equal(logs.filter((l) => l.msg === 'upstream back after ejection: taking requests').length, 0);
    } finally {
      await balancer.close();
    }
  });

  test('reportSuccess resets the failure count', async () => {
    const { balancer, clock, b } = setup(3);
    const b0 = b[0] as Backend;
    try {
      for (let i = 0; i < 4; i++) balancer.reportFailure(b0);
      balancer.reportSuccess(b0);
      for (let i = 0; i < 4; i++) balancer.reportFailure(b0);
      assert.equal(b0.usable(clock()), true);
      balancer.reportFailure(b0);
      assert.equal(b0.usable(clock()), false);
    } finally {
      await balancer.close();
    }
  });

  test('with passive health off, failures never eject', async () => {
    const { balancer, clock, b } = setup(2, { health_check: { active: { enabled: false }, passive: { enabled: false } } });
    try {
      assert.equal(balancer.outliers, undefined);
      for (let i = 0; i < 20; i++) balancer.reportFailure(b[0] as Backend);
      assert.equal((b[0] as Backend).usable(clock()), true);
      assert.equal(selectMany(balancer, 4).filter((n) => n === 'b0').length, 2);
    } finally {
      await balancer.close();
    }
  });

  test('exclude skips the given backends', async () => {
    const { balancer, b } = setup(3);
    try {
      const picks = selectMany(balancer, 30, [b[0] as Backend]);
      assert.equal(picks.includes('b0'), false);
      assert.equal(picks.filter((n) => n === 'b1').length, 15);
      assert.deepEqual(selectMany(balancer, 5, [b[0] as Backend, b[2] as Backend]), ['b1', 'b1', 'b1', 'b1', 'b1']);
      assert.deepEqual(selectMany(balancer, 2, b), ['-', '-']);
      // Without exclude everyone is back.
      assert.deepEqual(new Set(selectMany(balancer, 3)), new Set(['b0', 'b1', 'b2']));
    } finally {
      await balancer.close();
    }
  });

  test('down, ejected and excluded together leave nothing: select gives undefined', async () => {
    const { balancer, b } = setup(3, { health_check: { active: { enabled: false }, passive: { max_ejection_percent: 100 } } });
    try {
      balancer.setHealthy(b[1] as Backend, false);
      for (let i = 0; i < 5; i++) balancer.reportFailure(b[0] as Backend);
      assert.deepEqual(selectMany(balancer, 3), ['b2', 'b2', 'b2']);
      assert.equal(balancer.select(NO_CTX, [b[2] as Backend]), undefined);
    } finally {
      await balancer.close();
    }
  });

  test('available is false when every backend is unusable, true again when one returns', async () => {
    const { balancer, clock, b } = setup(2, { health_check: { active: { enabled: false }, passive: { max_ejection_percent: 100 } } });
    try {
      assert.equal(balancer.available, true);
      balancer.setHealthy(b[0] as Backend, false);
      assert.equal(balancer.available, true);
      for (let i = 0; i < 5; i++) balancer.reportFailure(b[1] as Backend);
      assert.equal(balancer.available, false);
      assert.equal(balancer.select(NO_CTX), undefined);
      clock.advance(10_000);
      assert.equal(balancer.available, true);
      assert.equal(balancer.select(NO_CTX), b[1]);
      balancer.setHealthy(b[1] as Backend, false);
      assert.equal(balancer.available, false);
    } finally {
      await balancer.close();
    }
  });
});

describe('LoadBalancer: slow start', () => {
  /** Share of `backend` among 1,000 selects spread over the next second (clock +1 ms per select). */
  function shareOverNextSecond(s: Setup, backend: Backend): number {
    let hits = 0;
    for (let i = 0; i < 1_000; i++) {
      if (s.balancer.select(NO_CTX) === backend) hits++;
      s.clock.advance(1);
    }
    return hits / 1_000;
  }

  test('a backend returning at t0 gets a share growing over 10 s, then its full half', async () => {
    const s = setup(2, { slow_start_ms: 10_000 });
    const back = s.b[1] as Backend;
    try {
      s.balancer.setHealthy(back, false);
      s.balancer.setHealthy(back, true);
      assert.equal(back.rampStart, s.clock());
      const shares = Array.from({ length: 12 }, () => shareOverNextSecond(s, back));
      const detail = shares.map((x, i) => `${i}-${i + 1}s: ${x}`).join(', ');
      assert.ok((shares[0] as number) < 0.15, detail);
      assert.ok((shares[0] as number) > 0, `the returning backend is tried at once (${detail})`);
      assert.ok((shares[1] as number) < (shares[5] as number) && (shares[5] as number) < (shares[9] as number), detail);
      for (let i = 1; i < 10; i++) assert.ok((shares[i] as number) > (shares[i - 1] as number), `share fell at ${i} s: ${detail}`);
      for (const i of [10, 11]) assert.ok(Math.abs((shares[i] as number) - 0.5) <= 0.02, detail);
      assert.equal(back.weight, 1);
    } finally {
      await s.balancer.close();
    }
  });

  test('the effective weight follows elapsed / slow_start_ms with a floor of 5%', async () => {
    const s = setup(2, { slow_start_ms: 10_000 });
    const back = s.b[1] as Backend;
    try {
      s.balancer.setHealthy(back, false);
      s.balancer.setHealthy(back, true);
      s.balancer.select(NO_CTX);
      assert.equal(back.weight, 0.05);
      s.clock.advance(2_500);
      s.balancer.select(NO_CTX);
      assert.equal(back.weight, 0.25);
      s.clock.advance(5_000);
      s.balancer.select(NO_CTX);
      assert.equal(back.weight, 0.75);
      s.clock.advance(2_500);
      s.balancer.select(NO_CTX);
      assert.equal(back.weight, 1);
      assert.equal((s.b[0] as Backend).weight, 1);
    } finally {
      await s.balancer.close();
    }
  });

  test('without slow start a returning backend gets its half at once', async () => {
    const s = setup(2);
    const back = s.b[1] as Backend;
    try {
      s.balancer.setHealthy(back, false);
      s.balancer.setHealthy(back, true);
      assert.equal(shareOverNextSecond(s, back), 0.5);
    } finally {
      await s.balancer.close();
    }
  });

  test('a backend back from an ejection ramps from the end of the ejection', async () => {
    const s = setup(2, { slow_start_ms: 10_000 });
    const back = s.b[1] as Backend;
    try {
      for (let i = 0; i < 5; i++) s.balancer.reportFailure(back);
      assert.equal(shareOverNextSecond(s, back), 0);
      s.clock.advance(9_000); // the ejection (10 s) has ended
      const first = shareOverNextSecond(s, back);
      assert.ok(first > 0 && first < 0.15, `first second back: ${first}`);
      s.clock.advance(9_000);
      assert.ok(Math.abs(shareOverNextSecond(s, back) - 0.5) <= 0.02);
    } finally {
      await s.balancer.close();
    }
  });
});

describe('LoadBalancer: consistent_hash key sources', () => {
  function hashSetup(hashKey: Json): Setup {
    return setup(5, { strategy: 'consistent_hash', hash_key: hashKey });
  }

  /** Where the ring over these backends sends `key` (what the balancer should pick when the key is read right). */
  function owner(backends: readonly Backend[], key: string): Backend | undefined {
    return createConsistentHash(backends).select(() => true, key);
  }

  const withHeaders = (headers: Record<string, string | string[]>, extra: Json = {}): RequestContext =>
    ({ req: { headers }, ...extra }) as unknown as RequestContext;

  const VALUES = Array.from({ length: 50 }, (_, i) => `user-${i}`);

  test('header: the same value always goes to the same backend, the one the ring gives for that value', async () => {
    const { balancer, b } = hashSetup({ source: 'header', name: 'X-User' });
    try {
      const used = new Set<string>();
      for (const v of VALUES) {
        const expected = owner(b, v);
        for (let i = 0; i < 3; i++) assert.equal(balancer.select(withHeaders({ 'x-user': v })), expected, v);
        used.add((expected as Backend).name);
      }
      assert.ok(used.size >= 3, `50 values used only ${[...used].join(',')}`);
    } finally {
      await balancer.close();
    }
  });

  test('header: other headers do not matter; repeated values are joined with ","; a missing header falls back to the client address', async () => {
    const { balancer, b } = hashSetup({ source: 'header', name: 'X-User' });
    try {
      assert.equal(balancer.select(withHeaders({ 'x-user': 'alice', 'x-other': 'zzz' })), owner(b, 'alice'));
      for (let i = 0; i + 1 < VALUES.length; i += 2) {
        const pair = [VALUES[i] as string, VALUES[i + 1] as string];
        assert.equal(balancer.select(withHeaders({ 'x-user': pair })), owner(b, pair.join(',')), pair.join(','));
      }
      // Different clients without the header spread over the ring instead of all landing on owner(b, '').
      const spread = new Set<string>();
      for (let i = 0; i < 30; i++) {
        const address = `203.0.113.${i}`;
        const chosen = balancer.select(withHeaders({}, { clientAddress: address }));
        assert.equal(chosen, owner(b, address), address);
        spread.add((chosen as Backend).name);
      }
      assert.ok(spread.size >= 3, `30 clients used only ${[...spread].join(',')}`);
    } finally {
      await balancer.close();
    }
  });

  test('header: a balancer built again (restart) sends each value to the same backend', async () => {
    const one = hashSetup({ source: 'header', name: 'x-user' });
    const two = hashSetup({ source: 'header', name: 'x-user' });
    try {
      for (const v of VALUES) assert.equal(one.balancer.select(withHeaders({ 'x-user': v }))?.name, two.balancer.select(withHeaders({ 'x-user': v }))?.name, v);
    } finally {
      await one.balancer.close();
      await two.balancer.close();
    }
  });

  test('cookie: the named cookie\'s value is the key, wherever it is in the header', async () => {
    const { balancer, b } = hashSetup({ source: 'cookie', name: 'session' });
    try {
      for (const v of VALUES) {
        const expected = owner(b, v);
        assert.equal(balancer.select(withHeaders({ cookie: `session=${v}` })), expected, v);
        assert.equal(balancer.select(withHeaders({ cookie: `a=1; session=${v}; b=2` })), expected, v);
        assert.equal(balancer.select(withHeaders({ cookie: `xsession=nope;session=${v}` })), expected, v);
      }
      assert.equal(balancer.select(withHeaders({}, { clientAddress: '198.51.100.4' })), owner(b, '198.51.100.4'));
      assert.equal(balancer.select(withHeaders({ cookie: 'other=1' }, { clientAddress: '198.51.100.5' })), owner(b, '198.51.100.5'));
    } finally {
      await balancer.close();
    }
  });

  test('path: the path without its query is the key', async () => {
    const { balancer, b } = hashSetup({ source: 'path' });
    try {
      for (const v of VALUES) {
        const expected = owner(b, `/users/${v}`);
        assert.equal(balancer.select(withHeaders({}, { path: `/users/${v}` })), expected, v);
        assert.equal(balancer.select(withHeaders({}, { path: `/users/${v}?page=2` })), expected, v);
        assert.equal(balancer.select(withHeaders({}, { path: `/users/${v}?x=1&y=2` })), expected, v);
      }
    } finally {
      await balancer.close();
    }
  });

  test('client_address (the default source): the client address is the key', async () => {
    const { balancer, b } = hashSetup({});
    try {
      const used = new Set<string>();
      for (let i = 0; i < 50; i++) {
        const address = `203.0.113.${i}`;
        const ctx = { clientAddress: address } as unknown as RequestContext;
        const expected = owner(b, address);
        assert.equal(balancer.select(ctx), expected, address);
        assert.equal(balancer.select(ctx), expected, address);
        used.add((expected as Backend).name);
      }
      assert.ok(used.size >= 3);
    } finally {
      await balancer.close();
    }
  });

  test('when a key\'s backend is down the key goes elsewhere, and comes back when it returns', async () => {
    const { balancer, b } = hashSetup({ source: 'header', name: 'x-user' });
    try {
      const ctx = withHeaders({ 'x-user': 'alice' });
      const home = balancer.select(ctx) as Backend;
      balancer.setHealthy(home, false);
      const away = balancer.select(ctx);
      assert.ok(away !== undefined && away !== home);
      assert.equal(balancer.select(ctx), away);
      assert.equal(balancer.select(ctx, [away]) !== away, true);
      balancer.setHealthy(home, true);
      assert.equal(balancer.select(ctx), home);
      assert.equal(b.includes(home), true);
    } finally {
      await balancer.close();
    }
  });
});

describe('TLS settings and the identity of a backend across generations', () => {
  const logger = pino({ level: 'silent' });
  const deps = { random: seededRandom(1), clock: manualClock(), logger };
  function service(tls: Json | undefined, protocol = 'http1'): LoadBalancingConfig {
    return configSchema.parse({
      load_balancing: { upstreams: [{ name: 'a', address: '10.0.0.1', port: 8443 }], health_check: { active: { enabled: false } }, ...(tls === undefined ? {} : { tls }), protocol },
    }).load_balancing as LoadBalancingConfig;
  }

  test('same settings: the same backend; another protocol: a new pool with the state kept; another CA or plain HTTP: another backend', async () => {
    const ca = privateCa();
    const other = privateCa();
    const first = new LoadBalancer(service({ ca_file: ca.certFile }), deps);
    const a = first.backends[0] as Backend;
    assert.equal(a.origin, 'https://10.0.0.1:8443');
    assert.equal(a.servername, '10.0.0.1');
    a.setHealthy(false);
    const same = new LoadBalancer(service({ ca_file: ca.certFile }), { ...deps, previous: first });
    assert.equal(same.backends[0], a);
    const h2 = new LoadBalancer(service({ ca_file: ca.certFile }, 'h2'), { ...deps, previous: same });
    assert.notEqual(h2.backends[0], a);
    assert.equal(h2.backends[0]?.allowH2, true);
    assert.equal(h2.backends[0]?.healthy, false, 'health carried to the new pool');
    const otherCa = new LoadBalancer(service({ ca_file: other.certFile }, 'h2'), { ...deps, previous: h2 });
    assert.notEqual(otherCa.backends[0], h2.backends[0]);
    assert.equal(otherCa.backends[0]?.healthy, true, 'another backend starts afresh');
    const plain = new LoadBalancer(service(undefined), { ...deps, previous: otherCa });
    assert.notEqual(plain.backends[0], otherCa.backends[0]);
    assert.equal(plain.backends[0]?.origin, 'http://10.0.0.1:8443');
    assert.equal(plain.backends[0]?.servername, undefined);
    await Promise.all([first, h2, otherCa, plain].map((lb) => lb.close()));
  });
});

describe('TLS files of a config given as an object', () => {
  test('a missing ca_file fails the build with the service, the upstream and the key', () => {
    const lb = configSchema.parse({
      load_balancing: { upstreams: [{ name: 'a', address: '10.0.0.1', port: 8443 }], tls: { ca_file: '/nonexistent/ca.pem' } },
    }).load_balancing as LoadBalancingConfig;
    assert.throws(
      () => new LoadBalancer(lb, { random: seededRandom(1), clock: manualClock(), logger: pino({ level: 'silent' }), name: 'api' }),
      { name: 'TlsFileError', message: 'service "api", upstream "a": tls.ca_file: cannot read /nonexistent/ca.pem: file not found' },
    );
  });
});
