import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ThrottledLog } from '../../../src/util/throttled-log.js';
import { manualClock } from '../../helpers/servers.js';

describe('ThrottledLog', () => {
  test('the first event is written at once; later ones are summed into one line per interval', () => {
    const clock = manualClock(0);
    const log = new ThrottledLog(5_000, clock);
    const lines: number[] = [];
    const write = (n: number): void => {
      lines.push(n);
    };
    assert.equal(log.event(write), true);
    for (let i = 0; i < 99; i++) assert.equal(log.event(write), false);
    clock.advance(4_999);
    log.event(write);
    assert.deepEqual(lines, [1]);
    clock.advance(1);
    log.event(write);
    assert.deepEqual(lines, [1, 101], '99 + 1 + this one');
  });

  test('reset returns what was not written and makes the next event write at once', () => {
    const clock = manualClock(0);
    const log = new ThrottledLog(5_000, clock);
    const lines: number[] = [];
    log.event((n) => lines.push(n));
    log.event((n) => lines.push(n));
    log.event((n) => lines.push(n));
    assert.equal(log.reset(), 2);
    log.event((n) => lines.push(n), 5);
    log.event((n) => lines.push(n), 3);
    assert.equal(log.reset(), 3, 'the 5 were written at once, the 3 wait');
    log.event((n) => lines.push(n));
    assert.deepEqual(lines, [1, 5, 1]);
  });
});
