/**
 * Hot reload through real sockets: POST /api/reload and SIGHUP re-read the config file; a good file becomes
 * the next generation in one step, a bad one changes nothing. Under load nothing fails and every request is
 * answered by a backend its generation allowed; balancer, health and bucket state survive a reload.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { Agent, request as undiciRequest } from 'undici';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { createProxy, type Proxy } from '../../src/app.js';
import { readConfig } from '../../src/config/load.js';
import { startCli, waitForOutput, writeConfig } from '../helpers/cli.js';
import { samples, scrape } from '../helpers/metrics.js';
import { request } from '../helpers/http.js';
import { startBackend, startHoldingBackend, waitFor, type Backend, type HoldingBackend } from '../helpers/servers.js';

type Json = Record<string, unknown>;

interface Started {
  proxy: Proxy;
  url: string;
  adminUrl: string;
  file: string;
  logs: Json[];
}

/** A proxy started from a config file (as the CLI does), admin on a free port. */
async function startFromFile(text: string): Promise<Started> {
  const file = writeConfig(text);
  const logs: Json[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) if (line !== '') logs.push(JSON.parse(line) as Json);
      done();
    },
  });
  const { config, hash } = readConfig(file);
  const proxy = createProxy(config, { logger: pino({ level: 'info', base: null }, stream), configFile: file, configHash: hash });
  const address = await proxy.listen();
  return { proxy, url: `http://127.0.0.1:${address.port}`, adminUrl: `http://127.0.0.1:${proxy.admin?.address()?.port ?? 0}`, file, logs };
}

function reload(adminUrl: string, contentType = 'application/json'): Promise<{ status: number; body: Json }> {
  return request(`${adminUrl}/api/reload`, { method: 'POST', headers: { 'content-type': contentType }, body: '{}' }).then((r) => ({ status: r.status, body: r.body === '' ? {} : r.json() }));
}

const upstream = (b: Backend): string => `{ name: ${b.name}, address: 127.0.0.1, port: ${b.port} }`;
const HEAD = 'server: { listen_port: 0, listen_address: 127.0.0.1 }\nadmin: { port: 0 }\nlogging: { level: info }\n';

describe('hot reload under load', () => {
  let b: Backend[];
  before(async () => {
    b = await Promise.all(['b1', 'b2', 'b3', 'b4'].map((n) => startBackend(n)));
  });
  after(async () => {
    await Promise.all(b.map((x) => x.close()));
  });

  /** Config A: main = b1, b2. Config B adds b3 to main, a route `extra`, and changes the rate limit. */
  const configs = (): [string, string] => {
    const [b1, b2, b3, b4] = b as [Backend, Backend, Backend, Backend];
    const common = (main: string, rpm: number, extra: string): string =>
      `${HEAD}services:\n  main: { upstreams: [${main}], health_check: { active: { enabled: false } } }\n  other: { upstreams: [${upstream(b4)}], health_check: { active: { enabled: false } } }\n` +
      `routes:\n  - { name: one, match: { path_prefix: /one }, service: main, middleware: { rate_limit: { enabled: true, requests_per_minute: ${rpm}, burst_size: 100000 } } }\n` +
      `  - { name: two, match: { path_prefix: /two }, service: other }\n${extra}`;
    return [
      common(`${upstream(b1)}, ${upstream(b2)}`, 600000, ''),
      common(`${upstream(b1)}, ${upstream(b2)}, ${upstream(b3)}`, 1200000, '  - { name: extra, match: { path_prefix: /extra }, service: other }\n'),
    ];
  };

  test('20 reloads while 4 clients send requests for at least 10 s: nothing fails, every backend was allowed by its generation', async () => {
    const [a, bConfig] = configs();
    const allowedOne = { a: new Set(['b1', 'b2']), b: new Set(['b1', 'b2', 'b3']) };
    const started = await startFromFile(a);
    const agent = new Agent({ connections: 4, keepAliveTimeout: 10_000 });
    try {
      // Generation j serves from (at the earliest) the moment its reload was sent to (at the latest) the
      // moment the next reload's answer came back.
      const generations: { from: number; until: number; allowed: Set<string> }[] = [{ from: 0, until: Infinity, allowed: allowedOne.a }];
      const results: { at: number; path: string; status: number; backend: string }[] = [];
      const failures: string[] = [];
      let stop = false;
      const client = async (n: number): Promise<void> => {
        let i = 0;
        while (!stop) {
          const path = (n + i++) % 2 === 0 ? `/one/${i}` : `/two/${i}`;
          const at = performance.now();
          try {
            const res = await undiciRequest(`${started.url}${path}`, { dispatcher: agent });
            const text = await res.body.text();
            const backend = res.statusCode === 200 ? (JSON.parse(text) as { backend: string }).backend : '';
            results.push({ at, path, status: res.statusCode, backend });
          } catch (err) {
            failures.push(`${path}: ${(err as Error).message}`);
          }
        }
      };
      const clients = [0, 1, 2, 3].map(client);
      const reloads: number[] = [];
      const deadline = performance.now() + 10_000;
      for (let r = 0; r < 20; r++) {
        await new Promise((resolve) => setTimeout(resolve, (deadline - performance.now()) / (21 - r)));
        const useB = r % 2 === 0;
        writeFileSync(started.file, useB ? bConfig : a);
        const sent = performance.now();
        const answer = await reload(started.adminUrl);
        const answered = performance.now();
        reloads.push(answer.status);
        (generations[generations.length - 1] as { until: number }).until = answered;
        generations.push({ from: sent, until: Infinity, allowed: useB ? allowedOne.b : allowedOne.a });
      }
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, deadline - performance.now())));
      stop = true;
      await Promise.all(clients);

      assert.deepEqual(reloads, new Array(20).fill(200));
      assert.deepEqual(failures, []);
      const bad = results.filter((r) => r.status !== 200);
      assert.deepEqual(bad.slice(0, 5), [], `${bad.length} requests were not answered 200`);
      assert.ok(results.length > 200, `only ${results.length} requests in 10 s`);
      for (const r of results) {
        if (r.path.startsWith('/two')) {
          assert.equal(r.backend, 'b4');
          continue;
        }
        const possible = generations.filter((g) => g.from <= r.at && r.at <= g.until);
        assert.ok(possible.some((g) => g.allowed.has(r.backend)), `${r.path} at ${r.at.toFixed(1)} ms was answered by ${r.backend}, which no generation current then allowed`);
      }
      // b3 took requests while config B served, and none once A was back for good.
      assert.ok(results.some((r) => r.backend === 'b3'));
      const status = (await request(`${started.adminUrl}/api/status`)).json<{ config: { generation: number; last_reload: { result: string } } }>();
      assert.equal(status.config.generation, 21);
      assert.equal(status.config.last_reload.result, 'ok');
      const text = await scrape(started.adminUrl);
      const metrics = samples(text, 'tollgate_config_reloads_total');
      assert.equal(metrics.get('{result="ok"}'), 20);
      assert.equal(metrics.get('{result="error"}'), 0);
      // The metrics follow the generations by name: b3 (added by B) has its series, both routes theirs.
      const selected = [...samples(text, 'tollgate_upstream_selections_total')];
      assert.ok(selected.some(([labels, n]) => labels.includes('service="main"') && labels.includes('upstream="b3"') && n > 0), JSON.stringify(selected));
      const byRoute = [...samples(text, 'tollgate_requests_total')].map(([labels]) => /route="([^"]+)"/.exec(labels)?.[1]);
      assert.ok(byRoute.includes('one') && byRoute.includes('two'));
      const topology = (await request(`${started.adminUrl}/api/status`)).json<{ routes: { name: string }[] }>();
      assert.deepEqual(topology.routes.map((r) => r.name).sort(), ['one', 'two'], 'the status lists the routes in force (A)');
    } finally {
      await agent.close();
      await started.proxy.close();
    }
  });
});

describe('hot reload: what survives, what is refused', () => {
  let one: Backend;
  let two: Backend;
  let holding: HoldingBackend;
  before(async () => {
    [one, two, holding] = await Promise.all([startBackend('one'), startBackend('two'), startHoldingBackend('slow')]);
  });
  after(async () => {
    await Promise.all([one.close(), two.close(), holding.close()]);
  });

  test('a request in flight on a backend that a reload removes completes with 200, then the pool is closed', async () => {
    const withSlow = `${HEAD}load_balancing: { upstreams: [${upstream(holding)}], health_check: { active: { enabled: false } } }\n`;
    const started = await startFromFile(withSlow);
    try {
      const slow = request(`${started.url}/hold`);
      await waitFor(() => holding.held.length === 1, 5000, 'the slow request to reach its backend');
      writeFileSync(started.file, `${HEAD}load_balancing: { upstreams: [${upstream(one)}], health_check: { active: { enabled: false } } }\n`);
      const answer = await reload(started.adminUrl);
      assert.equal(answer.status, 200);
      assert.equal(answer.body.generation, 2);
      // New requests go to the new backend while the old one still holds its request.
      assert.equal((await request(`${started.url}/x`)).json().backend, 'one');
      const connections = (): Promise<number> => new Promise((resolve) => holding.server.getConnections((_e, n) => resolve(n)));
      assert.equal(await connections(), 1);
      (holding.held.shift() as { end(body: string): void }).end('done');
      const reply = await slow;
      assert.equal(reply.status, 200);
      assert.equal(reply.body, 'done');
      // Its generation had no other request: the removed backend's pool closes its connection.
      await waitFor(async () => (await connections()) === 0, 5000, 'the removed backend\'s pool to close');
    } finally {
      await started.proxy.close();
    }
  });

  test('ejection, active health, in-flight counts and buckets survive an unrelated change', async () => {
    const dead = await startBackend('dead', (req) => req.socket.destroy());
    const base = (extra: string): string =>
      `${HEAD}load_balancing:\n  strategy: round_robin\n  retries: { max_retries: 0 }\n  upstreams: [${upstream(dead)}, ${upstream(holding)}]\n` +
      `  health_check: { active: { enabled: false }, passive: { enabled: true, consecutive_failures: 1, base_ejection_ms: 600000, max_ejection_percent: 100 } }\n` +
      `middleware: { rate_limit: { enabled: true, requests_per_minute: 1, burst_size: 6 } }\n${extra}`;
    const started = await startFromFile(base(''));
    try {
      // Round robin starts at the dead backend: one reset ejects it.
      const first = await request(`${started.url}/x`);
      assert.equal(first.status, 502);
      const deadBackend = started.proxy.balancer.backends.find((x) => x.name === 'dead');
      assert.ok(deadBackend !== undefined && deadBackend.ejectedUntil > 0);
      const held = request(`${started.url}/hold`);
      await waitFor(() => holding.held.length === 1, 5000, 'the held request');
      // Two tokens of six are spent (the 502 and the held request).
      writeFileSync(started.file, base('').replace('listen_address: 127.0.0.1', 'listen_address: 127.0.0.1, proxy_name: reloaded'));
      assert.equal((await reload(started.adminUrl)).status, 200);
      const lb = started.proxy.balancer;
      assert.equal(started.proxy.generation.meta.id, 2);
      const afterDead = lb.backends.find((x) => x.name === 'dead');
      const afterSlow = lb.backends.find((x) => x.name === 'slow');
      assert.equal(afterDead, deadBackend, 'the same backend object, with its state');
      assert.ok((afterDead?.ejectedUntil ?? 0) > 0);
      assert.equal(afterSlow?.inflight, 1);
      // Still ejected: every new request goes to the other backend; the new proxy_name applies.
      const next = await request(`${started.url}/y`);
      assert.equal(next.status, 200);
      assert.equal(next.headers['x-proxy-by'], 'reloaded');
      (holding.held.shift() as { end(): void }).end();
      assert.equal((await held).status, 200);
      await waitFor(() => afterSlow?.inflight === 0, 5000, 'the in-flight count to return to 0');
      // Tokens: 6 - 3 spent = 3 left (the bucket kept its count across the reload).
      const codes: number[] = [];
      for (let i = 0; i < 4; i++) codes.push((await request(`${started.url}/z`)).status);
      assert.deepEqual(codes, [200, 200, 200, 429]);
      // A changed policy is a new bucket.
      writeFileSync(started.file, base('').replace('burst_size: 6', 'burst_size: 2'));
      assert.equal((await reload(started.adminUrl)).status, 200);
      assert.deepEqual([(await request(`${started.url}/z`)).status, (await request(`${started.url}/z`)).status, (await request(`${started.url}/z`)).status], [200, 200, 429]);
    } finally {
      for (const res of holding.held.splice(0)) res.end();
      await started.proxy.close();
      await dead.close();
    }
  });

  test('an actively-down backend stays down across a reload', async () => {
    // The second config needs 3 failed checks to take a backend down: only carried-over state keeps it down at once.
    const config = (name: string, unhealthy: number): string =>
      `${HEAD.replace('listen_address: 127.0.0.1', `listen_address: 127.0.0.1, proxy_name: ${name}`)}load_balancing:\n  upstreams: [${upstream(one)}, { name: gone, address: 127.0.0.1, port: 1 }]\n` +
      `  health_check: { active: { enabled: true, interval_ms: 100, unhealthy_threshold: ${unhealthy}, healthy_threshold: 1 } }\n`;
    const started = await startFromFile(config('a', 1));
    try {
      const gone = (): boolean | undefined => started.proxy.balancer.backends.find((x) => x.name === 'gone')?.healthy;
      await waitFor(() => gone() === false, 5000, 'the active check to take "gone" down');
      writeFileSync(started.file, config('b', 3));
      assert.equal((await reload(started.adminUrl)).status, 200);
      assert.equal(gone(), false);
      for (let i = 0; i < 6; i++) assert.equal((await request(`${started.url}/x`)).json().backend, 'one');
    } finally {
      await started.proxy.close();
    }
  });

  test('a bad file (YAML syntax, unknown key, route tie) changes nothing and answers 400 with its errors', async () => {
    const good = `${HEAD}load_balancing: { upstreams: [${upstream(one)}], health_check: { active: { enabled: false } } }\n`;
    const started = await startFromFile(good);
    try {
      const bad: [string, RegExp][] = [
        [`${good}middleware: { auth: [\n`, /proxy\.yaml:\d+:\d+ \(yaml\)/],
        [`${good}load_balancer: {}\n`, /proxy\.yaml:5:1 load_balancer: unknown key/],
        [
          `${HEAD}services:\n  s: { upstreams: [${upstream(two)}] }\nroutes:\n  - { name: r1, match: { path_prefix: /a }, service: s }\n  - { name: r2, match: { path_prefix: /a/ }, service: s }\n`,
          /proxy\.yaml:\d+:\d+ routes\[0\]: .*"r2"/,
        ],
      ];
      for (const [text, message] of bad) {
        writeFileSync(started.file, text);
        const answer = await reload(started.adminUrl);
        assert.equal(answer.status, 400, text);
        assert.equal(answer.body.result, 'error');
        assert.ok((answer.body.errors as string[]).some((line) => message.test(line)), `${JSON.stringify(answer.body.errors)} should match ${message}`);
        assert.equal((await request(`${started.url}/x`)).json().backend, 'one', 'the old config keeps serving');
      }
      const status = (await request(`${started.adminUrl}/api/status`)).json<{ config: { generation: number; last_reload: { result: string; errors: string[] } } }>();
      assert.equal(status.config.generation, 1);
      assert.equal(status.config.last_reload.result, 'error');
      assert.equal(samples(await scrape(started.adminUrl), 'tollgate_config_reloads_total').get('{result="error"}'), 3);
      assert.ok(started.logs.some((l) => l.msg === 'config reload failed: the previous config keeps serving' && JSON.stringify(l.errors).includes('proxy.yaml:')));
    } finally {
      await started.proxy.close();
    }
  });

  test('keys that need a restart are reported and keep their value; the rest applies', async () => {
    const config = (port: number, name: string, sockets: number): string =>
      `server: { listen_port: ${port}, listen_address: 127.0.0.1, proxy_name: ${name}, listen_sockets: ${sockets} }\nadmin: { port: 0 }\nload_balancing: { upstreams: [${upstream(one)}], health_check: { active: { enabled: false } } }\n`;
    const started = await startFromFile(config(0, 'first', 2));
    try {
      writeFileSync(started.file, config(1, 'second', 3));
      const answer = await reload(started.adminUrl);
      assert.equal(answer.status, 200);
      assert.deepEqual(answer.body.restart_needed, ['server.listen_port', 'server.listen_sockets']);
      assert.equal(started.proxy.config.server.listen_sockets, 2);
      const reply = await request(`${started.url}/x`);
      assert.equal(reply.headers['x-proxy-by'], 'second');
      assert.equal(started.proxy.config.server.listen_port, 0);
      assert.ok(started.logs.some((l) => typeof l.msg === 'string' && l.msg.includes('server.listen_port, server.listen_sockets changed and need a restart')));
    } finally {
      await started.proxy.close();
    }
  });

  test('the reload endpoint takes POST with Content-Type: application/json only', async () => {
    const started = await startFromFile(`${HEAD}load_balancing: { upstreams: [${upstream(one)}], health_check: { active: { enabled: false } } }\n`);
    try {
      assert.equal((await reload(started.adminUrl, 'application/x-www-form-urlencoded')).status, 415);
      assert.equal((await reload(started.adminUrl, 'text/plain')).status, 415);
      const get = await request(`${started.adminUrl}/api/reload`);
      assert.equal(get.status, 405);
      assert.equal(get.headers.allow, 'POST');
      assert.equal(started.proxy.generation.meta.id, 1);
      assert.equal((await reload(started.adminUrl, 'application/json; charset=utf-8')).status, 200);
      assert.equal(started.proxy.generation.meta.id, 2);
    } finally {
      await started.proxy.close();
    }
  });
});

describe('SIGHUP reloads the CLI', () => {
  test('a route added to the file serves after SIGHUP; a bad file is logged and changes nothing', async () => {
    const backend = await startBackend('hup');
    const base = `server: { listen_port: 0, listen_address: 127.0.0.1 }\nadmin: { enabled: false }\nservices:\n  s: { upstreams: [${upstream(backend)}], health_check: { active: { enabled: false } } }\nroutes:\n  - { name: a, match: { path_prefix: /a }, service: s }\n`;
    const file = writeConfig(base);
    const child = startCli(['--config', file]);
    try {
      const [, port] = (await waitForOutput(child, /listening on 127\.0\.0\.1:(\d+)/)) as RegExpMatchArray;
      const url = `http://127.0.0.1:${port}`;
      assert.equal((await request(`${url}/b/1`)).status, 404);
      writeFileSync(file, `${base}  - { name: b, match: { path_prefix: /b }, service: s }\n`);
      child.kill('SIGHUP');
      await waitForOutput(child, /config reloaded: generation 2 serving/);
      assert.equal((await request(`${url}/b/1`)).json().backend, 'hup');
      writeFileSync(file, `${base}  - { name: b, match: { path_prefix: /b }, service: nowhere }\n`);
      child.kill('SIGHUP');
      await waitForOutput(child, /config reload failed/);
      assert.match(child.output.stdout, /routes\[1\]\.service: no service named \\"nowhere\\"/);
      assert.equal((await request(`${url}/b/1`)).json().backend, 'hup');
      assert.equal(child.exitCode, null, 'still running');
    } finally {
      child.kill('SIGTERM');
      await new Promise((resolve) => child.once('exit', resolve));
      await backend.close();
    }
  });
});
