import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import { createServer as createTcpServer, type AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { describe, test } from 'node:test';
import { type Logger, pino } from 'pino';
import { Agent } from 'undici';
import { Backend } from '../../../src/balancing/backend.js';
import { ActiveHealthChecker, httpProbe, type Probe, type ProbeResult, tcpProbe } from '../../../src/balancing/health/active.js';
import { TLS_PORT_HINT } from '../../../src/balancing/health/tls-sniff.js';
import { configSchema, type LoadBalancingConfig } from '../../../src/config/schema.js';
import { closedPort, manualClock } from '../../helpers/servers.js';
import { startTlsUpstream } from '../../helpers/tls.js';

type Json = Record<string, unknown>;

function lbConfig(ports: number[], active: Json = {}): LoadBalancingConfig {
  return configSchema.parse({
    load_balancing: {
      upstreams: ports.map((port, i) => ({ name: `b${i}`, address: '127.0.0.1', port })),
      health_check: { active },
    },
  }).load_balancing as LoadBalancingConfig;
}

function capture(): { logger: Logger; logs: Json[] } {
  const logs: Json[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) if (line !== '') logs.push(JSON.parse(line) as Json);
      done();
    },
  });
  return { logger: pino({ level: 'info', base: null }, stream), logs };
}

/** A probe answering from a script per backend; fails the test when a script runs out. */
function scripted(scripts: Map<Backend, boolean[]>): Probe & { calls: number } {
  const probe = (async (backend: Backend) => {
    probe.calls++;
    const next = scripts.get(backend)?.shift();
    if (next === undefined) throw new Error(`no scripted result left for ${backend.name}`);
    return { passed: next, detail: next ? 'scripted pass' : `scripted failure ${probe.calls}` };
  }) as Probe & { calls: number };
  probe.calls = 0;
  return probe;
}

interface Harness {
  backends: Backend[];
  checker: ActiveHealthChecker;
  logs: Json[];
  returns: { count: number };
  clock: ReturnType<typeof manualClock>;
  /** Runs `n` rounds of checkAll. */
  rounds(n: number): Promise<void>;
  close(): Promise<void>;
}

function harness(scripts: boolean[][], active: Json = {}): Harness {
  const lb = lbConfig(
    scripts.map((_, i) => 10_001 + i),
    active,
  );
  const backends = lb.upstreams.map((u) => new Backend(u, lb));
  const map = new Map(backends.map((b, i) => [b, [...(scripts[i] as boolean[])]]));
  const { logger, logs } = capture();
  const returns = { count: 0 };
  const clock = manualClock();
  const checker = new ActiveHealthChecker(lb.health_check.active, backends, logger, clock, () => returns.count++, scripted(map));
  return {
    backends,
    checker,
    logs,
    returns,
    clock,
    rounds: async (n) => {
      for (let i = 0; i < n; i++) await checker.checkAll();
    },
    close: async () => {
      await checker.stop();
      await Promise.all(backends.map((b) => b.pool.destroy()));
    },
  };
}

const PASSED: ProbeResult = { passed: true, detail: 'connected' };
const DOWN_MSG = 'upstream unhealthy: taken out of rotation';
const UP_MSG = 'upstream healthy again: taking requests';

function messages(logs: Json[], msg: string): Json[] {
  return logs.filter((l) => l.msg === msg);
}

describe('active health: thresholds', () => {
  test('unhealthy after exactly 3 failed checks, logged once as a warning', async () => {
    const h = harness([[false, false, false, false, false]]);
    const b = h.backends[0] as Backend;
    try {
      await h.rounds(2);
      assert.equal(b.healthy, true);
      assert.equal(messages(h.logs, DOWN_MSG).length, 0);
      await h.rounds(1);
      assert.equal(b.healthy, false);
      assert.equal(b.usable(h.clock()), false);
      await h.rounds(2);
      const down = messages(h.logs, DOWN_MSG);
      assert.equal(down.length, 1);
      assert.equal(down[0]?.level, 40);
      assert.equal(down[0]?.upstream, 'b0');
      assert.equal(down[0]?.upstream_addr, '127.0.0.1:10001');
      assert.equal(down[0]?.failures, 3);
      assert.equal(down[0]?.reason, '3 tcp checks in a row failed, the last: scripted failure 3');
      assert.equal(h.returns.count, 0);
    } finally {
      await h.close();
    }
  });

  test('healthy again after exactly 2 passed checks, logged once; onReturn called; slow start from that time', async () => {
    const h = harness([[false, false, false, true, true, true, true]]);
    const b = h.backends[0] as Backend;
    try {
      await h.rounds(3);
      assert.equal(b.healthy, false);
      h.clock.advance(5_000);
      await h.rounds(1);
      assert.equal(b.healthy, false);
      assert.equal(h.returns.count, 0);
      assert.equal(messages(h.logs, UP_MSG).length, 0);
      await h.rounds(1);
      assert.equal(b.healthy, true);
      assert.equal(b.rampStart, h.clock());
      assert.equal(h.returns.count, 1);
      await h.rounds(2);
      const up = messages(h.logs, UP_MSG);
      assert.equal(up.length, 1);
      assert.equal(up[0]?.level, 30);
      assert.equal(up[0]?.upstream, 'b0');
      assert.equal(up[0]?.passes, 2);
      assert.equal(up[0]?.reason, '2 tcp checks in a row passed, the last: scripted pass');
      assert.equal(h.returns.count, 1);
      assert.equal(messages(h.logs, DOWN_MSG).length, 1);
    } finally {
      await h.close();
    }
  });

  test('a pass between failures resets the failure count', async () => {
    const h = harness([[false, false, true, false, false, false]]);
    const b = h.backends[0] as Backend;
    try {
      await h.rounds(5); // F F P F F
      assert.equal(b.healthy, true);
      await h.rounds(1); // third failure in a row
      assert.equal(b.healthy, false);
    } finally {
      await h.close();
    }
  });

  test('a failure between passes resets the pass count of a down backend', async () => {
    const h = harness([[false, false, false, true, false, true, true]]);
    const b = h.backends[0] as Backend;
    try {
      await h.rounds(5); // down, then P F
      assert.equal(b.healthy, false);
      await h.rounds(1); // P
      assert.equal(b.healthy, false);
      await h.rounds(1); // P P
      assert.equal(b.healthy, true);
    } finally {
      await h.close();
    }
  });

  test('passes of a healthy backend log nothing and call nothing', async () => {
    const h = harness([[true, true, true, true]]);
    try {
      await h.rounds(4);
      assert.equal((h.backends[0] as Backend).healthy, true);
      assert.equal(h.logs.length, 0);
      assert.equal(h.returns.count, 0);
    } finally {
      await h.close();
    }
  });

  test('onReturn is called on each return, and each change is logged once', async () => {
    const F = false;
    const P = true;
    const h = harness([[F, F, F, P, P, F, F, F, F, P, P, P]]);
    try {
      await h.rounds(12);
      assert.equal(h.returns.count, 2);
      assert.equal(messages(h.logs, DOWN_MSG).length, 2);
      assert.equal(messages(h.logs, UP_MSG).length, 2);
      assert.deepEqual(
        h.logs.map((l) => l.msg),
        [DOWN_MSG, UP_MSG, DOWN_MSG, UP_MSG],
      );
    } finally {
      await h.close();
    }
  });

  test('thresholds are configurable (1 and 4) and backends are tracked separately', async () => {
    const F = false;
    const P = true;
    const h = harness(
      [
        [F, P, P, P, P],
        [P, P, P, P, P],
      ],
      { unhealthy_threshold: 1, healthy_threshold: 4 },
    );
    const [a, b] = h.backends as [Backend, Backend];
    try {
      await h.rounds(1);
      assert.equal(a.healthy, false);
      assert.equal(b.healthy, true);
      await h.rounds(3);
      assert.equal(a.healthy, false);
      await h.rounds(1);
      assert.equal(a.healthy, true);
      assert.equal(h.returns.count, 1);
      assert.deepEqual(
        h.logs.map((l) => [l.msg, l.upstream]),
        [
          [DOWN_MSG, 'b0'],
          [UP_MSG, 'b0'],
        ],
      );
    } finally {
      await h.close();
    }
  });
});

describe('active health: rounds', () => {
  test('checkAll probes every backend once per round', async () => {
    const lb = lbConfig([1, 2, 3]);
    const backends = lb.upstreams.map((u) => new Backend(u, lb));
    const probed: string[] = [];
    const probe: Probe = async (b) => {
      probed.push(b.name);
      return { passed: true, detail: 'connected' };
    };
    const checker = new ActiveHealthChecker(lb.health_check.active, backends, pino({ level: 'silent' }), manualClock(), () => {}, probe);
    try {
      await checker.checkAll();
      assert.deepEqual(probed.sort(), ['b0', 'b1', 'b2']);
      await checker.checkAll();
      assert.equal(probed.length, 6);
    } finally {
      await checker.stop();
      await Promise.all(backends.map((b) => b.pool.destroy()));
    }
  });

  test('a round asked for while one is running is the running one (no second probe)', async () => {
    const lb = lbConfig([1]);
    const backends = lb.upstreams.map((u) => new Backend(u, lb));
    let calls = 0;
    let release: (result: ProbeResult) => void = () => {};
    const probe: Probe = () => {
      calls++;
      return new Promise<ProbeResult>((resolve) => {
        release = resolve;
      });
    };
    const checker = new ActiveHealthChecker(lb.health_check.active, backends, pino({ level: 'silent' }), manualClock(), () => {}, probe);
    try {
      const first = checker.checkAll();
      const second = checker.checkAll();
      assert.equal(second, first);
      assert.equal(calls, 1);
      release(PASSED);
      await first;
      const third = checker.checkAll();
      assert.notEqual(third, first);
      assert.equal(calls, 2);
      release(PASSED);
      await third;
    } finally {
      await checker.stop();
      await Promise.all(backends.map((b) => b.pool.destroy()));
    }
  });

  test('stop() resolves, also while a round is running (after it ends)', async () => {
    const lb = lbConfig([1]);
    const backends = lb.upstreams.map((u) => new Backend(u, lb));
    let release: (result: ProbeResult) => void = () => {};
    const probe: Probe = () =>
      new Promise<ProbeResult>((resolve) => {
        release = resolve;
      });
    const checker = new ActiveHealthChecker(lb.health_check.active, backends, pino({ level: 'silent' }), manualClock(), () => {}, probe);
    try {
      const round = checker.checkAll();
      let stopped = false;
      const stopping = checker.stop().then(() => {
        stopped = true;
      });
      await Promise.resolve();
      assert.equal(stopped, false);
      release(PASSED);
      await round;
      await stopping;
      assert.equal(stopped, true);
      assert.equal(await checker.stop(), undefined);
    } finally {
      await Promise.all(backends.map((b) => b.pool.destroy()));
    }
  });
});

describe('active health: tcp probe', () => {
  test('passes against a listening server, fails against a closed port', async () => {
    const server = createTcpServer((socket) => socket.destroy());
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const open = (server.address() as AddressInfo).port;
    const closed = await closedPort();
    const lb = lbConfig([open, closed]);
    const [up, down] = lb.upstreams.map((u) => new Backend(u, lb)) as [Backend, Backend];
    try {
      const probe = tcpProbe(2_000);
      assert.deepEqual(await probe(up), { passed: true, detail: 'connected' });
      assert.deepEqual(await probe(down), { passed: false, detail: 'connection refused' });
    } finally {
      await Promise.all([up.pool.destroy(), down.pool.destroy()]);
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  test('the checker uses the tcp probe by default and takes a closed port out after 3 rounds', async () => {
    const closed = await closedPort();
    const lb = lbConfig([closed]);
    const backends = lb.upstreams.map((u) => new Backend(u, lb));
    const { logger, logs } = capture();
    const checker = new ActiveHealthChecker(lb.health_check.active, backends, logger, manualClock(), () => {});
    try {
      for (let i = 0; i < 3; i++) await checker.checkAll();
      assert.equal((backends[0] as Backend).healthy, false);
      assert.equal(messages(logs, DOWN_MSG).length, 1);
      assert.equal(messages(logs, DOWN_MSG)[0]?.reason, '3 tcp checks in a row failed, the last: connection refused');
    } finally {
      await checker.stop();
      await Promise.all(backends.map((b) => b.pool.destroy()));
    }
  });
});

describe('active health: http probe', () => {
  interface Seen {
    method: string | undefined;
    url: string | undefined;
    headers: IncomingHttpHeaders;
  }

  /** A server answering each request with the status in its path (`/status/204`); records requests. */
  async function statusServer(): Promise<{ port: number; seen: Seen[]; close(): Promise<void> }> {
    const seen: Seen[] = [];
    const server = createServer((req, res) => {
      seen.push({ method: req.method, url: req.url, headers: req.headers });
      const status = Number(/^\/status\/(\d{3})/.exec(req.url ?? '')?.[1] ?? 200);
      res.writeHead(status, { 'content-type': 'text/plain' });
      res.end(status === 204 ? undefined : `status ${status}`);
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return {
      port: (server.address() as AddressInfo).port,
      seen,
      close: async () => {
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      },
    };
  }

  async function probeStatus(port: number, status: number, expected: string): Promise<ProbeResult> {
    const lb = lbConfig([port], { type: 'http', timeout_ms: 2_000, http: { path: `/status/${status}`, expected_status: expected } });
    const backend = new Backend(lb.upstreams[0] as LoadBalancingConfig['upstreams'][number], lb);
    const agent = new Agent();
    try {
      return await httpProbe(lb.health_check.active, agent)(backend);
    } finally {
      await agent.close();
      await backend.pool.destroy();
    }
  }

  test('with expected_status 200-399: 200 and 204 pass, 500 fails', async () => {
    const server = await statusServer();
    try {
      assert.equal((await probeStatus(server.port, 200, '200-399')).passed, true);
      assert.equal((await probeStatus(server.port, 204, '200-399')).passed, true);
      assert.equal((await probeStatus(server.port, 399, '200-399')).passed, true);
      assert.equal((await probeStatus(server.port, 500, '200-399')).passed, false);
      assert.equal((await probeStatus(server.port, 404, '200-399')).passed, false);
      assert.deepEqual(await probeStatus(server.port, 500, '200-399'), { passed: false, detail: 'got 500, expected 200-399' });
      assert.deepEqual(await probeStatus(server.port, 204, '200-399'), { passed: true, detail: 'got 204' });
      assert.equal(server.seen.length, 7);
    } finally {
      await server.close();
    }
  });

  test('a single expected status: 200 passes, 204 fails', async () => {
    const server = await statusServer();
    try {
      assert.equal((await probeStatus(server.port, 200, '200')).passed, true);
      assert.deepEqual(await probeStatus(server.port, 204, '200'), { passed: false, detail: 'got 204, expected 200' });
    } finally {
      await server.close();
    }
  });

  test('a closed port fails', async () => {
    assert.deepEqual(await probeStatus(await closedPort(), 200, '200-399'), { passed: false, detail: 'connection refused' });
  });

  test('an upstream that accepts and never answers fails with the timeout', async () => {
    const silent = createTcpServer((socket) => socket.on('error', () => {}));
    silent.listen(0, '127.0.0.1');
    await once(silent, 'listening');
    const port = (silent.address() as AddressInfo).port;
    const lb = lbConfig([port], { type: 'http', timeout_ms: 150 });
    const backend = new Backend(lb.upstreams[0] as LoadBalancingConfig['upstreams'][number], lb);
    const agent = new Agent();
    try {
      assert.deepEqual(await httpProbe(lb.health_check.active, agent)(backend), { passed: false, detail: 'timed out after 150 ms' });
    } finally {
      await agent.destroy();
      await backend.pool.destroy();
      silent.close();
    }
  });

  test('sends the configured method and path, the backend address as Host, and a health-check user agent', async () => {
    const server = await statusServer();
    try {
      const lb = lbConfig([server.port], { type: 'http', http: { method: 'HEAD', path: '/status/200?deep=1' } });
      const backend = new Backend(lb.upstreams[0] as LoadBalancingConfig['upstreams'][number], lb);
      const agent = new Agent();
      try {
        assert.deepEqual(await httpProbe(lb.health_check.active, agent)(backend), { passed: true, detail: 'got 200' });
      } finally {
        await agent.close();
        await backend.pool.destroy();
      }
      assert.equal(server.seen[0]?.method, 'HEAD');
      assert.equal(server.seen[0]?.url, '/status/200?deep=1');
      assert.equal(server.seen[0]?.headers.host, `127.0.0.1:${server.port}`);
      assert.equal(server.seen[0]?.headers['user-agent'], 'tollgate-health-check');
    } finally {
      await server.close();
    }
  });

  test('an http check against an https server: taken out with a reason that says it speaks TLS', async () => {
    const tls = await startTlsUpstream();
    const lb = lbConfig([tls.port], { type: 'http', unhealthy_threshold: 1 });
    const backends = lb.upstreams.map((u) => new Backend(u, lb));
    const { logger, logs } = capture();
    const checker = new ActiveHealthChecker(lb.health_check.active, backends, logger, manualClock(), () => {});
    try {
      await checker.checkAll();
      assert.equal((backends[0] as Backend).healthy, false);
      assert.deepEqual(
        messages(logs, DOWN_MSG).map((l) => l.reason),
        [`1 http check in a row failed, the last: connection closed by the upstream before the response was complete; ${TLS_PORT_HINT}`],
      );
    } finally {
      await checker.stop();
      await Promise.all(backends.map((b) => b.pool.destroy()));
      await tls.close();
    }
  });

  test('the checker of type http (own agent) takes a 500 backend out after 3 rounds; stop() resolves', async () => {
    const server = await statusServer();
    const lb = lbConfig([server.port], { type: 'http', http: { path: '/status/500' } });
    const backends = lb.upstreams.map((u) => new Backend(u, lb));
    const { logger, logs } = capture();
    const checker = new ActiveHealthChecker(lb.health_check.active, backends, logger, manualClock(), () => {});
    try {
      for (let i = 0; i < 2; i++) await checker.checkAll();
      assert.equal((backends[0] as Backend).healthy, true);
      await checker.checkAll();
      assert.equal((backends[0] as Backend).healthy, false);
      assert.equal(messages(logs, DOWN_MSG).length, 1);
      assert.equal(messages(logs, DOWN_MSG)[0]?.reason, '3 http checks in a row failed, the last: got 500, expected 200-399');
      assert.equal(server.seen.length, 3);
      assert.equal(await checker.stop(), undefined);
    } finally {
      await Promise.all(backends.map((b) => b.pool.destroy()));
      await server.close();
    }
  });
});
