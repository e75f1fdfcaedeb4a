import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import type { ServerResponse } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect } from 'node:net';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { describe, test } from 'node:test';
import { request } from '../helpers/http.js';
import { ROOT, listeningPort, runCli, startCli, waitForOutput, writeConfig } from '../helpers/cli.js';
import { freePort, freePorts, startBackend, waitFor } from '../helpers/servers.js';

const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

function config(port: number, upstreamPorts: number[], extra = ''): string {
  return [
    'server:',
    `  listen_port: ${port}`,
    '  listen_address: "127.0.0.1"',
    '  shutdown_grace_ms: 5000',
    'load_balancing:',
    '  upstreams:',
    ...upstreamPorts.flatMap((p, i) => [`    - name: "b${i + 1}"`, '      address: "127.0.0.1"', `      port: ${p}`]),
    'admin:',
    '  port: 0',
    extra,
  ].join('\n');
}

/** config/proxy.yaml on free ports (the proxy and its three backends), for the demo. */
async function demoConfig(): Promise<{ proxyPort: number; text: string }> {
  const [proxyPort, p1, p2, p3] = (await freePorts(4)) as [number, number, number, number];
  const text = readFileSync(join(ROOT, 'config/proxy.yaml'), 'utf8')
    .replace('listen_port: 8080', `listen_port: ${proxyPort}\n  listen_address: "127.0.0.1"`)
    .replace('port: 3000', `port: ${p1}`)
    .replace('port: 3001', `port: ${p2}`)
    .replace('port: 3002', `port: ${p3}`)
    .concat('\nadmin:\n  port: 0\n');
  return { proxyPort, text };
}

function portIsClosed(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.on('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.on('error', () => resolve(true));
  });
}

describe('the tollgate command', () => {
  test('--help explains the flags; --version prints the version', async () => {
    const help = await runCli(['--help']);
    assert.equal(help.code, 0);
    for (const flag of ['--config', '--check', '--log-format', '--version', '--help', 'LOG_LEVEL', 'SIGTERM']) assert.ok(help.stdout.includes(flag), flag);
    const version = await runCli(['--version']);
    assert.equal(version.code, 0);
    assert.equal(version.stdout, `tollgate ${VERSION}\n`);
  });

  test('unknown flags and bad --log-format exit 2', async () => {
    const unknown = await runCli(['--bogus']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /bogus/);
    const format = await runCli(['--log-format', 'xml', '--check']);
    assert.equal(format.code, 2);
  });

  test('an unknown LOG_LEVEL is refused with exit 2, naming the levels', async () => {
    const run = await runCli(['--check', '--config', 'config/proxy.yaml'], { LOG_LEVEL: 'debugg' });
    assert.equal(run.code, 2);
    assert.match(run.stderr, /LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent, got "debugg"/);
    assert.equal((await runCli(['--check', '--config', 'config/proxy.yaml'], { LOG_LEVEL: 'DEBUG' })).code, 0);
  });

  test('--check accepts the brief config and the shipped config/proxy.yaml', async () => {
    const brief = await runCli(['--check', '--config', 'test/fixtures/brief.yaml']);
    assert.equal(brief.code, 0, brief.stderr);
    assert.match(brief.stdout, /is valid/);
    const shipped = await runCli(['-t']);
    assert.equal(shipped.code, 0, shipped.stderr);
    assert.match(shipped.stdout, /config\/proxy\.yaml is valid/);
  });

  test('--check accepts config/routes.example.yaml with API_KEY set, and names API_KEY without it', async () => {
    const ok = await runCli(['--check', '--config', 'config/routes.example.yaml'], { API_KEY: 'k-123' });
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /config\/routes\.example\.yaml is valid/);
    const unset = await runCli(['--check', '--config', 'config/routes.example.yaml'], { API_KEY: undefined });
    assert.equal(unset.code, 2);
    assert.match(unset.stderr, /routes\[0\]\.middleware\.auth\.valid_tokens\[0\]: environment variable API_KEY is not set/);
  });

  test('--check reads ${NAME} in flow style and quoted, as numbers and booleans where the keys take them', async () => {
    const file = writeConfig('server: {listen_port: ${PORT}, workers: "${WORKERS}"}\nload_balancing:\n  upstreams: [{name: a, address: 127.0.0.1, port: "${UP}"}]\n  preserve_host: "${PRESERVE}"\n');
    const ok = await runCli(['--check', '--config', file], { PORT: '8085', WORKERS: '2', UP: '3000', PRESERVE: 'false' });
    assert.equal(ok.code, 0, ok.stderr);
    const unset = await runCli(['--check', '--config', file], { PORT: undefined, WORKERS: '2', UP: '3000', PRESERVE: 'false' });
    assert.equal(unset.code, 2);
    assert.equal(unset.stderr, `${file}:1:23 server.listen_port: environment variable PORT is not set\ntollgate: configuration ${file} is invalid\n`);
  });

  const badConfigs: [string, string, RegExp][] = [
    ['a YAML syntax error', 'server:\n  listen_port: [8080\nload_balancing: {}\n', /proxy\.yaml:\d+:\d+ \(yaml\): /],
    ['an unknown key', 'server:\n  listen_port: 8080\n  listen_prot: 1\nload_balancing:\n  upstreams:\n    - {name: a, address: 127.0.0.1, port: 1}\n', /proxy\.yaml:3:3 server\.listen_prot: unknown key, did you mean listen_port\?/],
    [
      'port 70000',
      'load_balancing:\n  upstreams:\n    - name: a\n      address: 127.0.0.1\n      port: 3000\n    - name: b\n      address: 127.0.0.1\n      port: 70000\n',
      /proxy\.yaml:8:13 load_balancing\.upstreams\[1\]\.port: must be 1-65535, got 70000/,
    ],
    ['an admin port out of range', 'load_balancing:\n  upstreams:\n    - {name: a, address: 127.0.0.1, port: 1}\nadmin:\n  port: 70000\n', /proxy\.yaml:5:9 admin\.port: must be 0-65535, got 70000/],
    ['tracing that is not a mapping', 'load_balancing:\n  upstreams:\n    - {name: a, address: 127.0.0.1, port: 1}\ntracing: on\n', /proxy\.yaml:4:10 tracing: /],
    ['missing upstreams', 'server:\n  listen_port: 8080\nload_balancing:\n  strategy: random\n', /proxy\.yaml:4:3 load_balancing\.upstreams: is required/],
    ['an unset environment variable', 'load_balancing:\n  upstreams:\n    - {name: a, address: "${TOLLGATE_UNSET_HOST}", port: 1}\n', /proxy\.yaml:3:26 load_balancing\.upstreams\[0\]\.address: environment variable TOLLGATE_UNSET_HOST is not set/],
  ];
  for (const [what, text, expected] of badConfigs) {
    test(`a bad config (${what}) exits 2 with file:line:col and the key path, for --check and for a run`, async () => {
      const file = writeConfig(text);
      const check = await runCli(['--check', '--config', file]);
      assert.equal(check.code, 2);
      assert.match(check.stderr, expected);
      assert.ok(check.stderr.includes(file));
      const run = await runCli(['--config', file]);
      assert.equal(run.code, 2);
      assert.match(run.stderr, expected);
    });
  }

  test('the admin listener of the built CLI: its address is logged; /metrics, /api/status and the dashboard files are served from the package', async () => {
    const backend = await startBackend('b');
    const child = startCli(['--config', writeConfig(config(0, [backend.port]))]);
    try {
      const [, adminPort] = await waitForOutput(child, /admin listening on http:\/\/127\.0\.0\.1:(\d+)\//);
      const port = await listeningPort(child);
      assert.equal((await request(`http://127.0.0.1:${port}/x`)).status, 200);
      const admin = `http://127.0.0.1:${adminPort}`;
      await waitFor(() => /"msg":"Request Completed"/.test(child.output.stdout), 5000, 'the completion line');
      const metrics = await request(`${admin}/metrics`);
      assert.match(metrics.body, /^tollgate_requests_total\{status_class="2xx",method="GET",protocol="http\/1\.1",route="default",service="default",upstream="b1"\} 1$/m);
      assert.equal((await request(`${admin}/api/status`)).json<{ totals: { requests: number } }>().totals.requests, 1);
      for (const path of ['/', '/dashboard.js', '/dashboard.css', '/vendor/uPlot.iife.min.js', '/vendor/uPlot.min.css']) {
        assert.equal((await request(`${admin}${path}`)).status, 200, path);
      }
      assert.match(child.output.stdout, /"trace_id":"[0-9a-f]{32}"/, 'the completion line has the trace id');
    } finally {
      child.kill('SIGTERM');
      await once(child, 'exit');
      await backend.close();
    }
  });

  test('an admin port in use: one line naming the admin listener, exit 1, and the proxy port is released', async () => {
    const backend = await startBackend('b');
    const port = await freePort();
    try {
      const run = await runCli(['--config', writeConfig(config(port, [backend.port]).replace('  port: 0', `  port: ${backend.port}`))]);
      assert.equal(run.code, 1);
      assert.equal(run.stderr, `tollgate: cannot listen on 127.0.0.1:${backend.port} for the admin listener: address already in use\n`);
      assert.doesNotMatch(run.stdout, /EADDRINUSE|shutting down|shutdown complete/);
      assert.ok(await portIsClosed(port));
    } finally {
      await backend.close();
    }
  });

  test('a bad config for a run: nothing listens', async () => {
    const port = await freePort();
    const file = writeConfig(config(port, [1]).replace('listen_address: "127.0.0.1"', 'listen_address: "127.0.0.1"\n  bogus: true'));
    const run = await runCli(['--config', file]);
    assert.equal(run.code, 2);
    assert.ok(await portIsClosed(port));
  });

  test('a missing config file exits 2', async () => {
    const run = await runCli(['--config', '/nonexistent/tollgate.yaml']);
    assert.equal(run.code, 2);
    assert.match(run.stderr, /\/nonexistent\/tollgate\.yaml:1:1 \(root\): cannot read config: file not found/);
  });

  test('a port already in use: one line naming the proxy listener, its address and the reason; exit 1, no shutdown noise', async () => {
    const backend = await startBackend('b');
    try {
      const run = await runCli(['--config', writeConfig(config(backend.port, [backend.port]))]);
      assert.equal(run.code, 1);
      assert.equal(run.stderr, `tollgate: cannot listen on 127.0.0.1:${backend.port} for the proxy: address already in use\n`);
      assert.equal(run.stdout, '');
    } finally {
      await backend.close();
    }
  });

  test('an address of no interface of this host: the reason says so', async () => {
    // 192.0.2.0/24 is reserved for documentation (RFC 5737): never an address of a real host.
    const run = await runCli(['--config', writeConfig(config(8080, [1]).replace('listen_address: "127.0.0.1"', 'listen_address: "192.0.2.1"'))]);
    assert.equal(run.code, 1);
    assert.equal(run.stderr, 'tollgate: cannot listen on 192.0.2.1:8080 for the proxy: address not available (no interface of this host has it)\n');
  });

  test('the admin port equal to the proxy port on overlapping addresses is a config error naming both keys (exit 2); port 0 never clashes', async () => {
    const file = writeConfig('server:\n  listen_port: 8080\nload_balancing:\n  upstreams: [{name: a, address: 127.0.0.1, port: 3000}]\nadmin:\n  port: 8080\n');
    const check = await runCli(['--check', '--config', file]);
    assert.equal(check.code, 2);
    assert.equal(
      check.stderr,
      `${file}:6:9 admin.port: 8080 is server.listen_port too (${file}:2:16), and server.listen_address 0.0.0.0 overlaps admin.address 127.0.0.1: the proxy and the admin listener need different ports\ntollgate: configuration ${file} is invalid\n`,
    );
    const zero = await runCli(['--check', '--config', writeConfig('server:\n  listen_port: 0\nload_balancing:\n  upstreams: [{name: a, address: 127.0.0.1, port: 3000}]\nadmin:\n  port: 0\n')]);
    assert.equal(zero.code, 0, zero.stderr);
  });

  test('SIGTERM with requests in flight: they complete, then the process exits 0', async () => {
    const held: ServerResponse[] = [];
    const backend = await startBackend('b', (_req, res) => held.push(res));
    const child = startCli(['--config', writeConfig(config(0, [backend.port]))]);
    try {
      const port = await listeningPort(child);
      const inflight = [request(`http://127.0.0.1:${port}/one`), request(`http://127.0.0.1:${port}/two`)];
      await waitFor(() => held.length === 2, 5000, 'both requests to reach the backend');
      child.kill('SIGTERM');
      await waitForOutput(child, /shutting down/);
      assert.equal(child.exitCode, null, 'still running while requests are in flight');
      for (const res of held) res.end('finished');
      const replies = await Promise.all(inflight);
      assert.deepEqual(replies.map((r) => [r.status, r.body]), [[200, 'finished'], [200, 'finished']]);
      const [code] = (await once(child, 'exit')) as [number];
      assert.equal(code, 0);
      assert.match(child.output.stdout, /shutdown complete/);
      assert.equal((child.output.stdout.match(/"msg":"Request Completed"/g) ?? []).length, 2);
    } finally {
      child.kill('SIGKILL');
      await backend.close();
    }
  });

  test('LOG_LEVEL=debug shows the Request Start and Select Upstream lines; --log-format pretty is human-readable; logging.file is written', async () => {
    const backend = await startBackend('b');
    const file = writeConfig(config(0, [backend.port]));
    const child = startCli(['--config', file, '--log-format', 'pretty'], { LOG_LEVEL: 'debug' });
    try {
      const port = await listeningPort(child);
      const res = await request(`http://127.0.0.1:${port}/pretty`);
      await waitForOutput(child, new RegExp(`Request Start: ${res.headers['x-request-id']} /pretty`));
      await waitForOutput(child, new RegExp(`Select Upstream: ${res.headers['x-request-id']} -> 127\\.0\\.0\\.1:${backend.port}`));
      await waitForOutput(child, /INFO.*Request Completed/);
      assert.doesNotMatch(child.output.stdout, /^\{"level"/m, 'pretty output is not JSON');
      // One line per entry: the completion line carries its fields; no indented continuation lines.
      assert.match(child.output.stdout, new RegExp(`INFO \\(\\d+\\): Request Completed \\{"request_id":"${res.headers['x-request-id']}".*"status":200.*\\}$`, 'm'));
      assert.doesNotMatch(child.output.stdout, /^\s/m);
    } finally {
      child.kill('SIGTERM');
      await once(child, 'exit');
    }
    const logFile = file.replace(/proxy\.yaml$/, 'logs/tollgate.log');
    const toFile = startCli(['--config', writeConfig(`${config(0, [backend.port])}\nlogging:\n  level: info\n  file: "${logFile}"\n`)]);
    try {
      let port = 0;
      await waitFor(() => {
        try {
          port = Number(/listening on 127\.0\.0\.1:(\d+)/.exec(readFileSync(logFile, 'utf8'))?.[1] ?? 0);
          return port !== 0;
        } catch {
          return false;
        }
      }, 10_000, 'the log file');
      await request(`http://127.0.0.1:${port}/to-file`);
    } finally {
      toFile.kill('SIGTERM');
      await once(toFile, 'exit');
      await backend.close();
    }
    const lines = readFileSync(logFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.ok(lines.some((l) => l.msg === 'Request Completed' && l.path === '/to-file' && l.status === 200));
    assert.equal(toFile.output.stdout, '', 'nothing on stdout when logging to a file');
  });

  test('the demo starts three named backends and the proxy; round robin shows in the bodies and the logs', async () => {
    const { proxyPort, text } = await demoConfig();
    const demo = spawn(process.execPath, [join(ROOT, 'dist/demo.js'), writeConfig(text)], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    const output = { stdout: '', stderr: '' };
    demo.stdout.on('data', (c: Buffer) => (output.stdout += c.toString()));
    demo.stderr.on('data', (c: Buffer) => (output.stderr += c.toString()));
    try {
      await waitForOutput(Object.assign(demo, { output }), /Ctrl-C to stop/);
      const bodies: string[] = [];
      for (let i = 0; i < 3; i++) bodies.push((await request(`http://127.0.0.1:${proxyPort}/`, { headers: { authorization: 'Bearer dev-token-123' } })).body);
      assert.deepEqual(bodies.map((b) => /Hello from (backend\d)/.exec(b)?.[1]), ['backend1', 'backend2', 'backend3']);
      await waitFor(() => (output.stdout.match(/Request Completed/g) ?? []).length === 3, 5000, 'three completion lines');
    } finally {
      demo.kill('SIGTERM');
      const [code] = (await once(demo, 'exit')) as [number];
      assert.equal(code, 0);
    }
  });

  test('the demo with --tls: HTTPS with a certificate for localhost made for the run, removed when it stops', async () => {
    const { proxyPort, text } = await demoConfig();
    const demo = spawn(process.execPath, [join(ROOT, 'dist/demo.js'), '--tls', writeConfig(text)], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    const output = { stdout: '', stderr: '' };
    demo.stdout.on('data', (c: Buffer) => (output.stdout += c.toString()));
    demo.stderr.on('data', (c: Buffer) => (output.stderr += c.toString()));
    let cert = '';
    try {
      await waitForOutput(Object.assign(demo, { output }), /Ctrl-C to stop/);
      cert = /self-signed certificate for localhost: (\S+)\)/.exec(output.stderr)?.[1] ?? '';
      assert.ok(existsSync(cert), `the certificate file is named: ${output.stderr}`);
      assert.match(output.stderr, new RegExp(`curl --cacert ${cert} -i -H "Authorization: Bearer dev-token-123" https://localhost:${proxyPort}/`));
      // Verified for real: the name localhost against the run's certificate as the only trusted CA.
      const reply = await new Promise<{ status: number; body: string; protocol: string | null }>((resolve, reject) => {
        const req = httpsRequest({ host: 'localhost', port: proxyPort, path: '/', ca: readFileSync(cert), headers: { authorization: 'Bearer dev-token-123' } }, (res) => {
          let body = '';
          const protocol = (res.socket as TLSSocket).getProtocol(); // read now: the socket is let go at the end
          res.on('data', (c: Buffer) => (body += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body, protocol }));
        });
        req.on('error', reject);
        req.end();
      });
      assert.equal(reply.status, 200);
      assert.match(reply.body, /Hello from backend1/);
      assert.match(reply.protocol ?? '', /^TLSv1\.[23]$/);
    } finally {
      demo.kill('SIGTERM');
      const [code] = (await once(demo, 'exit')) as [number];
      assert.equal(code, 0);
    }
    assert.equal(existsSync(cert), false, 'the certificate is removed at the end');
  });

  test("the brief's own quick start: python3 -m http.server backends behind the CLI", async (t) => {
    const python = spawn('python3', ['-m', 'http.server', '0', '--bind', '127.0.0.1'], { cwd: join(ROOT, 'test/fixtures'), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    python.stdout.on('data', (c: Buffer) => (out += c.toString()));
    python.on('error', () => {});
    try {
      await waitFor(() => /port (\d+)/.test(out) || python.exitCode !== null, 10_000, 'python http.server to start');
    } catch {
      python.kill();
      t.skip('python3 is not available');
      return;
    }
    const upstreamPort = Number(/port (\d+)/.exec(out)?.[1]);
    const text = readFileSync(join(ROOT, 'test/fixtures/brief.yaml'), 'utf8').replace('listen_port: 8080', 'listen_port: 0').replace('port: 3000', `port: ${upstreamPort}`).concat('\nadmin:\n  port: 0\n');
    const child = startCli(['--config', writeConfig(text)]);
    try {
      const base = `http://127.0.0.1:${await listeningPort(child)}`;
      assert.equal((await request(`${base}/health`)).status, 200);
      assert.equal((await request(`${base}/`)).status, 401);
      const ok = await request(`${base}/brief.yaml`, { headers: { authorization: 'Bearer dev-token-123' } });
      assert.equal(ok.status, 200);
      assert.match(ok.body, /valid_tokens/);
      assert.ok(ok.headers['x-proxy-by'] && ok.headers['x-request-id'] && ok.headers['x-response-time']);
      const statuses: number[] = [];
      for (let i = 0; i < 14; i++) statuses.push((await request(`${base}/`, { headers: { authorization: 'Bearer dev-token-123' } })).status);
      assert.deepEqual(statuses, [...Array(9).fill(200), ...Array(5).fill(429)]);
    } finally {
      child.kill('SIGTERM');
      python.kill();
      await once(child, 'exit');
    }
  });
});
