/**
 * An uncaught exception ends the process (logged, logs written out, exit status 1) instead of leaving it
 * serving in an unknown state; in cluster mode the primary replaces the worker and the instance keeps
 * answering. The crash comes from a test fixture preloaded with NODE_OPTIONS, not from Tollgate's code.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { ROOT, startCli, waitForOutput, writeConfig } from '../helpers/cli.js';
import { lines, startCluster, stopCluster } from '../helpers/cluster.js';
import { request } from '../helpers/http.js';
import { startBackend, waitFor } from '../helpers/servers.js';

const CRASH = { NODE_OPTIONS: `--import=${join(ROOT, 'test/fixtures/crash-on-sigusr2.mjs')}`, LOG_LEVEL: 'info' };

const config = (port: number, backendPort: number, workers: number): string =>
  [
    `server: { listen_port: ${port}, listen_address: 127.0.0.1, workers: ${workers}, shutdown_grace_ms: 2000 }`,
    'admin: { port: 0 }',
    `load_balancing: { upstreams: [{ name: b, address: 127.0.0.1, port: ${backendPort} }], health_check: { active: { enabled: false } } }`,
  ].join('\n');

describe('fatal errors', () => {
  test('a single process logs the uncaught exception, writes its logs out and exits 1', async () => {
    const backend = await startBackend('b');
    const child = startCli(['--config', writeConfig(config(0, backend.port, 1))], CRASH);
    try {
      const [, port] = (await waitForOutput(child, /listening on 127\.0\.0\.1:(\d+)/)) as RegExpMatchArray;
      assert.equal((await request(`http://127.0.0.1:${port}/before`)).status, 200);
      const exited = once(child, 'exit');
      child.kill('SIGUSR2');
      const [code] = (await exited) as [number | null];
      assert.equal(code, 1);
      const fatal = lines(child).find((l) => l.msg === 'uncaught exception (a bug: please report it): exiting');
      assert.equal(fatal?.level, 60);
      assert.match(JSON.stringify(fatal?.err), /crash requested by the test/);
      assert.ok(lines(child).some((l) => l.msg === 'Request Completed' && l.path === '/before'), 'the access log was written out first');
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      await backend.close();
    }
  });

  test('with workers: 2, the crashed worker exits 1 and is replaced; requests keep being answered', async () => {
    const backend = await startBackend('b');
    const port = 0;
    const c = await startCluster(config(port, backend.port, 2), CRASH);
    try {
      const victim = c.workerPids[0] as number;
      process.kill(victim, 'SIGUSR2');
      // Once it has exited: a connection that the primary was handing to the worker at the moment it crashed
      // is lost with it (Node's cluster module), so the requests start after the exit.
      await waitFor(() => lines(c.child).some((l) => l.msg === 'worker died; restarting it'), 10_000, 'the worker to exit');
      // Requests while it is being replaced: the other worker (and then the replacement) answers every one.
      const statuses: number[] = [];
      await waitFor(
        async () => {
          statuses.push((await request(`${c.url}/during`)).status);
          return lines(c.child).filter((l) => l.msg === 'worker started' && l.worker === 0).length === 2;
        },
        10_000,
        'the crashed worker to be replaced',
      );
      assert.ok(statuses.every((s) => s === 200), JSON.stringify(statuses));
      const died = lines(c.child).find((l) => l.msg === 'worker died; restarting it');
      assert.equal(died?.worker_pid, victim);
      assert.equal(died?.code, 1);
      assert.ok(lines(c.child).some((l) => l.msg === 'uncaught exception (a bug: please report it): exiting' && l.worker === 0));
      await waitFor(async () => (await request(`${c.url}/after`)).status === 200, 5000, 'the instance to answer');
    } finally {
      await stopCluster(c);
      await backend.close();
    }
  });

  /**
   * A library phase whose response filter throws, reached from a request filter's refusal: synchronously
   * (out of the request event: an uncaught exception) or after an async filter (an unhandled rejection).
   */
  const script = [
    `import { createProxy } from ${JSON.stringify(join(ROOT, 'src/app.ts'))};`,
    `import { configSchema } from ${JSON.stringify(join(ROOT, 'src/config/schema.ts'))};`,
    `import { createLogger, exitOnFatalErrors } from ${JSON.stringify(join(ROOT, 'src/observability/logger.ts'))};`,
    `import { ProxyError } from ${JSON.stringify(join(ROOT, 'src/proxy/errors.ts'))};`,
    "const { logger, flush, direct } = createLogger({ level: 'info', format: 'json' });",
    'exitOnFatalErrors(logger, flush);',
    'const phase = {',
    "  name: 'boom',",
    "  requestFilter: (ctx) => (ctx.req.headers['x-async'] === undefined ? new ProxyError('unauthorized') : Promise.resolve(new ProxyError('unauthorized'))),",
    "  responseFilter: () => { throw new Error('boom from a response filter'); },",
    '};',
    "const config = configSchema.parse({ server: { listen_port: 0, listen_address: '127.0.0.1' }, admin: { enabled: false }, load_balancing: { upstreams: [{ name: 'b', address: '127.0.0.1', port: 9 }], health_check: { active: { enabled: false } } } });",
    'const proxy = createProxy(config, { logger, directLog: direct, phases: [phase] });',
    "logger.info({ port: (await proxy.listen()).port }, 'test proxy listening');",
  ].join('\n');

  for (const [how, headers, message] of [
    ['synchronously', {}, 'uncaught exception (a bug: please report it): exiting'],
    ['after an async filter', { 'x-async': '1' }, 'unhandled rejection (a bug: please report it): exiting'],
  ] as const) {
    test(`an error escaping a request's handling ${how}: the fatal line names the request id`, async () => {
      const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
      const output = { stdout: '', stderr: '' };
      child.stdout.on('data', (c: Buffer) => (output.stdout += c.toString()));
      child.stderr.on('data', (c: Buffer) => (output.stderr += c.toString()));
      const exited = once(child, 'exit');
      try {
        const cli = Object.assign(child, { output });
        const [, port] = (await waitForOutput(cli, /"port":(\d+),"msg":"test proxy listening"/)) as RegExpMatchArray;
        const reply = await request(`http://127.0.0.1:${port}/x`, { headers: { 'x-request-id': `req-${headers['x-async'] === undefined ? 'sync' : 'async'}-1`, ...headers } }).catch((err: Error) => err);
        assert.ok(reply instanceof Error, 'no answer: the process ended');
        const [code] = (await exited) as [number | null];
        assert.equal(code, 1, output.stderr);
        const fatal = lines(cli).find((l) => l.msg === message);
        assert.equal(fatal?.level, 60, output.stdout);
        assert.equal(fatal?.request_id, `req-${headers['x-async'] === undefined ? 'sync' : 'async'}-1`);
        assert.match(JSON.stringify(fatal?.err), /boom from a response filter/);
      } finally {
        if (child.exitCode === null) child.kill('SIGKILL');
      }
    });
  }
});
