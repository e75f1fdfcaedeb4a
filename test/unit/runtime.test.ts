import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { relaunchPlan } from '../../src/runtime.js';

const ARGV = ['/usr/bin/node', '/app/dist/cli.js', '--config', 'proxy.yaml'];

describe('runtime settings (relaunchPlan)', () => {
  test('adds the semi-space flag before the script and MALLOC_ARENA_MAX to the environment', () => {
    const plan = relaunchPlan(['--enable-source-maps'], ARGV, { PATH: '/bin' });
    assert.deepEqual(plan, {
      args: ['--max-semi-space-size=16', '--enable-source-maps', '/app/dist/cli.js', '--config', 'proxy.yaml'],
      env: { PATH: '/bin', MALLOC_ARENA_MAX: '2' },
    });
  });

  test('keeps what the user gave: a flag on the command line or in NODE_OPTIONS, MALLOC_ARENA_MAX', () => {
    assert.deepEqual(relaunchPlan(['--max-semi-space-size=32'], ARGV, {}), { args: ['--max-semi-space-size=32', ...ARGV.slice(1)], env: { MALLOC_ARENA_MAX: '2' } });
    assert.deepEqual(relaunchPlan([], ARGV, { NODE_OPTIONS: '--max-semi-space-size=2', MALLOC_ARENA_MAX: '1' }), undefined);
    assert.deepEqual(relaunchPlan([], ARGV, { MALLOC_ARENA_MAX: '4' })?.env, { MALLOC_ARENA_MAX: '4' });
  });

  test('a process that has every setting runs as it is (no second exec)', () => {
    assert.equal(relaunchPlan(['--max-semi-space-size=16'], ARGV, { MALLOC_ARENA_MAX: '2' }), undefined);
  });

  test('off when asked, and never in a cluster worker or a child with an IPC channel', () => {
    assert.equal(relaunchPlan([], ARGV, { TOLLGATE_RUNTIME_SETTINGS: 'off' }), undefined);
    assert.equal(relaunchPlan([], ARGV, { NODE_UNIQUE_ID: '1' }), undefined);
    assert.equal(relaunchPlan([], ARGV, { NODE_CHANNEL_FD: '3' }), undefined);
  });
});
