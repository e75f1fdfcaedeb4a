/**
 * Shutdown through the real CLI, whatever state its output is in: a log reader that has gone does not keep
 * the process from exiting; a second signal exits at once; requests cut off when shutdown closes their
 * connections are logged as such. Single process and cluster mode.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { describe, test } from 'node:test';
import { listeningPort, startCli, waitForOutput, writeConfig } from '../helpers/cli.js';
import { lines, stopCluster, type Cli } from '../helpers/cluster.js';
import { request } from '../helpers/http.js';
import { startBackend, waitFor, type Backend } from '../helpers/servers.js';

const config = (port: number, backendPort: number, workers: number, graceMs: number): string =>
  [
    `server: { listen_port: ${port}, listen_address: 127.0.0.1, workers: ${workers}, shutdown_grace_ms: ${graceMs} }`,
    'admin: { enabled: false }',
    `load_balancing: { upstreams: [{ name: b, address: 127.0.0.1, port: ${backendPort} }], health_check: { active: { enabled: false } } }`,
  ].join('\n');

/** Resolves with the exit code and signal, or rejects if the process is still running after `ms` (then killed). */
async function exitWithin(child: Cli, ms: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) return { code: child.exitCode, signal: child.signalCode };
  const timer = setTimeout(() => child.kill('SIGKILL'), ms);
  const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
  clearTimeout(timer);
  assert.notEqual(signal, 'SIGKILL', `still running ${ms} ms after the signal: killed. stderr: ${child.output.stderr}`);
  return { code, signal };
}

/** The test's end of the CLI's stdout pipe. */
function reader(child: Cli): Readable {
  assert.ok(child.stdout !== null);
  return child.stdout;
}

/** A backend that holds every request until the test ends it. */
async function holdingBackend(): Promise<Backend & { held: ServerResponse[] }> {
  const held: ServerResponse[] = [];
  const backend = await startBackend('b', (_req, res) => held.push(res));
  return Object.assign(backend, { held });
}

for (const workers of [1, 2]) {
  const mode = workers === 1 ? 'single process' : 'workers: 2';

  describe(`shutdown (${mode})`, () => {
    for (const format of ['json', 'pretty']) {
      test(`${format} logs to a pipe whose reader has gone: SIGTERM still ends the process, exit 0`, async () => {
        const backend = await startBackend('b');
        const child = startCli(['--config', writeConfig(config(0, backend.port, workers, 2_000)), '--log-format', format], { LOG_LEVEL: 'info' });
        try {
          await waitForOutput(child, /listening on 127\.0\.0\.1/, 20_000);
          // The reader of the log pipe goes away, as `tollgate | head -2` once head has its two lines. (No
          // request first: with nothing to close, shutdown ends before the failed write's EPIPE is seen, and
          // writing out the lines then met it; that is when sonic-boom's flushSync retried it forever.)
          reader(child).destroy();
          // Nothing is in flight: well within the grace period (2 s) plus the logs' flush bound (2 s). In
          // cluster mode the primary's backstop (SIGKILL for workers still running 5 s after the grace
          // period) would come later than this.
          const exited = exitWithin(child, 6_000);
          child.kill('SIGTERM');
          const { code } = await exited;
          assert.equal(code, 0, child.output.stderr);
          assert.match(child.output.stderr, /the log's reader has gone \(EPIPE\)/);
        } finally {
          if (child.exitCode === null) child.kill('SIGKILL');
          await backend.close();
        }
      });
    }

    test('a log reader that takes no lines (a full pipe): SIGTERM still ends the process, exit 0, once the logs stop waiting', async () => {
      const backend = await startBackend('b');
      const child = startCli(['--config', writeConfig(config(0, backend.port, workers, 2_000))], { LOG_LEVEL: 'debug' });
      const port = await listeningPort(child, 20_000);
      try {
        await waitForOutput(child, /listening on 127\.0\.0\.1/, 20_000);
        // The test stops reading; each request then logs its 6 KB path twice, until the pipe is full.
        reader(child).pause();
        const path = `/${'p'.repeat(6_000)}`;
        for (let i = 0; i < 100; i++) assert.equal((await request(`http://127.0.0.1:${port}${path}`)).status, 200);
        const exited = exitWithin(child, 12_000);
        child.kill('SIGTERM');
        const { code, signal } = await exited;
        assert.match(child.output.stderr, /the log's reader did not take the last lines within 2000 ms; exiting without them/);
        if (workers === 1) assert.deepEqual([code, signal], [0, null], child.output.stderr);
        // fd 1 is shared with the workers, and forking or ending one makes it blocking again: the primary's
        // last write can be blocked in the kernel, and then the primary ends itself with SIGTERM.
        else if (signal === 'SIGTERM') assert.match(child.output.stderr, /a write to it is blocked: ending with SIGTERM/);
        else assert.equal(code, 0, child.output.stderr);
      } finally {
        if (child.exitCode === null) child.kill('SIGKILL');
        await backend.close();
      }
    });

    test('a second SIGTERM while a slow upstream holds a request: exits at once with 143; the request is logged as cut off', async () => {
      const backend = await holdingBackend();
      const child = startCli(['--config', writeConfig(config(0, backend.port, workers, 60_000))], { LOG_LEVEL: 'info' });
      const port = await listeningPort(child, 20_000);
      try {
        await waitForOutput(child, /listening on 127\.0\.0\.1/, 20_000);
        const pending = request(`http://127.0.0.1:${port}/held`).catch((err: Error) => err);
        await waitFor(() => backend.held.length === 1, 5_000, 'the request to reach the backend');
        child.kill('SIGTERM');
        await waitForOutput(child, workers === 1 ? /shutting down: no longer accepting/ : /worker draining[\s\S]*worker draining/);
        assert.equal(child.exitCode, null, 'graceful shutdown waits for the held request');
        const exited = exitWithin(child, 10_000);
        child.kill('SIGTERM');
        const { code } = await exited;
        assert.equal(code, 143);
        assert.ok((await pending) instanceof Error, 'the held request was cut off');
        const all = lines(child);
        assert.ok(all.some((l) => l.level === 40 && typeof l.msg === 'string' && l.msg.startsWith('second signal')));
        const cut = all.filter((l) => l.msg === 'Request Completed' && l.path === '/held');
        assert.equal(cut.length, 1, JSON.stringify(all));
        assert.equal(cut[0]?.level, 40);
        assert.equal(cut[0]?.status, 503);
        assert.equal(cut[0]?.error, 'cut_off');
        if (workers === 2) assert.equal(typeof cut[0]?.worker, 'number');
      } finally {
        if (child.exitCode === null) child.kill('SIGKILL');
        for (const res of backend.held) res.destroy();
        await backend.close();
      }
    });

    test("the log's reader has gone and a request is held: a second SIGTERM still exits at once (143)", async () => {
      const backend = await holdingBackend();
      const child = startCli(['--config', writeConfig(config(0, backend.port, workers, 60_000))], { LOG_LEVEL: 'info' });
      const port = await listeningPort(child, 20_000);
      try {
        await waitForOutput(child, /listening on 127\.0\.0\.1/, 20_000);
        const pending = request(`http://127.0.0.1:${port}/held`).catch((err: Error) => err);
        await waitFor(() => backend.held.length === 1, 5_000, 'the request to reach the backend');
        reader(child).destroy();
        child.kill('SIGTERM');
        await waitFor(() => /EPIPE/.test(child.output.stderr), 5_000, 'the failed log write');
        assert.equal(child.exitCode, null, 'graceful shutdown waits for the held request');
        const exited = exitWithin(child, 6_000);
        child.kill('SIGTERM');
        assert.equal((await exited).code, 143);
        assert.ok((await pending) instanceof Error, 'the held request was cut off');
      } finally {
        if (child.exitCode === null) child.kill('SIGKILL');
        for (const res of backend.held) res.destroy();
        await backend.close();
      }
    });

    test('the grace period runs out: the request still in flight is logged as cut off, the process exits 0', async () => {
      const backend = await holdingBackend();
      const child = startCli(['--config', writeConfig(config(0, backend.port, workers, 300))], { LOG_LEVEL: 'info' });
      const port = await listeningPort(child, 20_000);
      try {
        await waitForOutput(child, /listening on 127\.0\.0\.1/, 20_000);
        const pending = request(`http://127.0.0.1:${port}/slow`).catch((err: Error) => err);
        await waitFor(() => backend.held.length === 1, 5_000, 'the request to reach the backend');
        const exited = exitWithin(child, 10_000);
        child.kill('SIGTERM');
        const { code } = await exited;
        assert.equal(code, 0);
        assert.ok((await pending) instanceof Error);
        const all = lines(child);
        const over = all.find((l) => l.msg === 'shutdown grace period over: closing the remaining connections');
        assert.equal(over?.requests_in_flight, 1);
        const cut = all.find((l) => l.msg === 'Request Completed' && l.path === '/slow');
        assert.deepEqual([cut?.level, cut?.status, cut?.error], [40, 503, 'cut_off']);
      } finally {
        if (child.exitCode === null) child.kill('SIGKILL');
        for (const res of backend.held) res.destroy();
        await backend.close();
      }
    });
  });
}

test('cluster mode: SIGINT twice exits 130 and leaves no worker behind', async () => {
  const backend = await holdingBackend();
  const child = startCli(['--config', writeConfig(config(0, backend.port, 2, 60_000))], { LOG_LEVEL: 'info' });
  const port = await listeningPort(child, 20_000);
  try {
    await waitForOutput(child, /listening on 127\.0\.0\.1/, 20_000);
    const pending = request(`http://127.0.0.1:${port}/held`).catch((err: Error) => err);
    await waitFor(() => backend.held.length === 1, 5_000, 'the request to reach the backend');
    child.kill('SIGINT');
    await waitForOutput(child, /worker draining[\s\S]*worker draining/);
    const exited = exitWithin(child, 10_000);
    child.kill('SIGINT');
    assert.equal((await exited).code, 130);
    await pending;
  } finally {
    for (const res of backend.held) res.destroy();
    await stopCluster({ child, url: '', port: 0, workerPids: [], adminUrl: '' });
    await backend.close();
  }
});
