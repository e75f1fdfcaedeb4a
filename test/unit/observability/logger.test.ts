import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { createLogger, toRegularFile } from '../../../src/observability/logger.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-logger-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

const base = { level: 'info', format: 'json' } as const;

describe('log destination', () => {
  it('writes to a regular file synchronously: the line is in the file as soon as it is logged', () => {
    const file = path.join(dir, 'sync.log');
    const { logger, flush } = createLogger({ ...base, file });
    logger.info({ n: 1 }, 'first line');
    const text = fs.readFileSync(file, 'utf8');
    assert.match(text, /"n":1,"msg":"first line"/);
    flush();
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
      "setTimeout(() => { logger.info('more'); flush(); process.stdout.write('alive'); process.exit(0); }, 300);",
    ].join('\n');
    const run = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(run.error, undefined, 'the process ended by itself');
    assert.equal(run.status, 0, run.stderr);
    assert.equal(run.stdout, 'alive');
    assert.match(run.stderr, /cannot write the log \(ENOSPC\)/);
  });
});
