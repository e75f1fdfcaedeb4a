import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { createAccessLog, probeRequests } from '../../../src/observability/access-log.js';
import { createLogger, epochTime, toRegularFile } from '../../../src/observability/logger.js';
import pino from 'pino';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-logger-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

const base = { level: 'info', format: 'json' } as const;

describe('log destination', () => {
  it('writes to a regular file synchronously: the line is in the file as soon as it is logged', async () => {
    const file = path.join(dir, 'sync.log');
    const { logger, flush } = createLogger({ ...base, file });
    logger.info({ n: 1 }, 'first line');
    const text = fs.readFileSync(file, 'utf8');
    assert.match(text, /"n":1,"msg":"first line"/);
    await flush();
  });

  it('treats a new path and an existing file as regular files', () => {
    assert.equal(toRegularFile(path.join(dir, 'not-yet.log')), true);
    const existing = path.join(dir, 'existing.log');
    fs.writeFileSync(existing, '');
    assert.equal(toRegularFile(existing), true);
  });

  it('writes asynchronously to a device or a pipe, which may stall', () => {
    assert.equal(toRegularFile('/dev/null'), false);
    const fifo = path.join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    assert.equal(toRegularFile(fifo), false);
  });

  it('looks at what stdout is when there is no file: a file, or a pipe', () => {
    const script = `import { toRegularFile } from ${JSON.stringify(path.resolve('src/observability/logger.ts'))}; process.stderr.write(String(toRegularFile(undefined)));`;
    const answer = (stdout: 'pipe' | number): string =>
      spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', stdout, 'pipe'], encoding: 'utf8' }).stderr;
    const fd = fs.openSync(path.join(dir, 'stdout.txt'), 'w');
    try {
      assert.equal(answer(fd), 'true');
    } finally {
      fs.closeSync(fd);
    }
    assert.equal(answer('pipe'), 'false');
  });

  it('survives a destination that refuses writes (ENOSPC from /dev/full): no crash, no endless flush at exit', () => {
    const script = [
      `import { createLogger } from ${JSON.stringify(path.resolve('src/observability/logger.ts'))};`,
      "const { logger, flush } = createLogger({ level: 'info', format: 'json', file: '/dev/full' });",
      "for (let i = 0; i < 50; i++) logger.info({ i }, 'line');",
      "setTimeout(async () => { logger.info('more'); await flush(); process.stdout.write('alive'); process.exit(0); }, 300);",
    ].join('\n');
    const run = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(run.error, undefined, 'the process ended by itself');
    assert.equal(run.status, 0, run.stderr);
    assert.equal(run.stdout, 'alive');
    assert.match(run.stderr, /cannot write the log \(ENOSPC\)/);
  });

  /** Runs a script that logs `lines` lines to stdout (a pipe), awaits flush(300) and exits 0. */
  function logToPipe(lines: number, format: 'json' | 'pretty') {
    const script = [
      `import { createLogger } from ${JSON.stringify(path.resolve('src/observability/logger.ts'))};`,
      `const { logger, flush } = createLogger({ level: 'info', format: '${format}' });`,
      `for (let i = 0; i < ${lines}; i++) logger.info({ i, pad: 'x'.repeat(200) }, 'line');`,
      'await flush(300);',
      "process.stderr.write('flushed');",
      'process.exit(0);',
    ].join('\n');
    return spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  }

  for (const format of ['json', 'pretty'] as const) {
    it(`${format}: flush gives up on a reader that takes no lines, and the process exits (writes do not block it)`, async () => {
      // 4 MB of lines into a pipe this test never reads: the pipe and the reader's buffer fill up.
      const child = logToPipe(20_000, format);
      let stderr = '';
      child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      const [code, signal] = (await once(child, 'exit')) as [number | null, string | null];
      clearTimeout(timer);
      assert.deepEqual([code, signal], [0, null], stderr);
      assert.match(stderr, /the log's reader did not take the last lines within 300 ms; exiting without them\nflushed$/);
      child.stdout.destroy();
    });

    it(`${format}: flush returns at once when the reader has gone (EPIPE), and the process exits`, async () => {
      const child = logToPipe(1_000, format);
      child.stdout.destroy();
      let stderr = '';
      child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      const [code, signal] = (await once(child, 'exit')) as [number | null, string | null];
      clearTimeout(timer);
      assert.deepEqual([code, signal], [0, null], stderr);
      assert.match(stderr, /the log's reader has gone \(EPIPE\)/);
      assert.doesNotMatch(stderr, /did not take the last lines/, 'no waiting for a reader that has gone');
    });
  }

  it('pretty: one line per entry, fields as JSON after the message, an error with its stack included', async () => {
    const file = path.join(dir, 'pretty.log');
    const { logger, direct, flush } = createLogger({ level: 'info', format: 'pretty', file });
    logger.info({ address: '127.0.0.1', port: 8080 }, 'listening');
    logger.error({ err: new Error('boom\nsecond line') }, 'reload failed');
    logger.warn('two\nlines');
    const accessLog = createAccessLog(logger, { direct });
    assert.equal(accessLog?.path, 'direct');
    for (const ctx of probeRequests()) accessLog.logging?.(ctx);
    accessLog.flush();
    const read = (): string[] => fs.readFileSync(file, 'utf8').split('\n').filter((l) => l !== '');
    // pino-pretty formats lines on their way through a stream: flush waits until they are written.
    await flush();
    const lines = read();
    assert.equal(lines.length, 6, lines.join('\n'));
    assert.match(lines[0] as string, /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO \(\d+\): listening \{"address":"127\.0\.0\.1","port":8080\}$/);
    assert.match(lines[1] as string, /ERROR \(\d+\): reload failed \{"err":\{"type":"Error","message":"boom\\nsecond line","stack":"Error: boom\\nsecond line\\n {4}at /);
    assert.match(lines[2] as string, /WARN \(\d+\): two lines$/);
    assert.match(lines[3] as string, /INFO \(\d+\): Request Completed \{"request_id":"probe-1",.*"status":200,/);
    assert.match(lines[4] as string, /WARN \(\d+\): Request Completed \{"request_id":"probe-2",.*"error":"bad_gateway"/);
    assert.match(lines[5] as string, /INFO \(\d+\): Request Completed \{"request_id":"probe-3",.*"status":101,.*"closed_by":"upstream_reset"\}$/s);
  });
});

describe('epochTime', () => {
  it("writes pino's epochTime field, and a new value when the millisecond changes", () => {
    let compared = 0;
    for (let i = 0; i < 1000; i++) {
      const before = Date.now();
      const ours = epochTime();
      const theirs = pino.stdTimeFunctions.epochTime();
      if (Date.now() !== before) continue; // the millisecond turned between the two calls
      assert.equal(ours, theirs);
      compared++;
    }
    assert.ok(compared > 0);
    const first = epochTime();
    const start = Date.now();
    while (Date.now() === start) {
      // wait for the next millisecond
    }
    const later = epochTime();
    assert.notEqual(later, first);
    assert.match(later, /^,"time":\d{13}$/);
    assert.ok(Number(later.slice(8)) > Number(first.slice(8)));
  });
});
