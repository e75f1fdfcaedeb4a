import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { hundredths } from '../../../src/util/format.js';

/** The text the integer formatting must reproduce. */
const viaDouble = (ms: number): string => String(Math.round(ms * 100) / 100);

describe('hundredths', () => {
  it('writes whole milliseconds without decimals and drops trailing zeros', () => {
    assert.equal(hundredths(0), '0');
    assert.equal(hundredths(7), '7');
    assert.equal(hundredths(250), '250');
    assert.equal(hundredths(1.5), '1.5');
    assert.equal(hundredths(12.3), '12.3');
  });

  it('rounds to two decimals and keeps a leading zero in the hundredths', () => {
    assert.equal(hundredths(0.42), '0.42');
    assert.equal(hundredths(0.4249), '0.42');
    assert.equal(hundredths(0.4263), '0.43');
    assert.equal(hundredths(3.07), '3.07');
    assert.equal(hundredths(0.004), '0');
    assert.equal(hundredths(0.996), '1');
    assert.equal(hundredths(1234.5678), '1234.57');
  });

  it('agrees with Math.round(ms * 100) / 100 across a million values, and beyond int32', () => {
    let seed = 42;
    const next = (): number => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed / 2147483648;
    };
    for (let i = 0; i < 1_000_000; i++) {
      const ms = next() * 10 ** Math.floor(next() * 6);
      assert.equal(hundredths(ms), viaDouble(ms), `for ${ms}`);
    }
    for (const ms of [2 ** 31 / 100 + 1, 1e12 + 0.5, -1.25]) assert.equal(hundredths(ms), viaDouble(ms));
  });
});
