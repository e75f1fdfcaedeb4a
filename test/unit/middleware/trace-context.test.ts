import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { IdSource, TRACESTATE_MAX, boundTracestate, parseTraceparent } from '../../../src/middleware/trace-context/trace-context.js';

const VALID = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

describe('parseTraceparent (W3C Trace Context level 1)', () => {
  test('a valid version-00 header', () => {
    assert.deepEqual(parseTraceparent(VALID), { traceId: '4bf92f3577b34da6a3ce929d0e0e4736', parentId: '00f067aa0ba902b7', flags: '01' });
    assert.equal(parseTraceparent(VALID.replace(/-01$/, '-00'))?.flags, '00');
  });

  const invalid: [string, string | string[] | undefined][] = [
    ['absent', undefined],
    ['empty', ''],
    ['upper-case hex', VALID.toUpperCase()],
    ['all-zero trace id', `00-${'0'.repeat(32)}-00f067aa0ba902b7-01`],
    ['all-zero parent id', `00-4bf92f3577b34da6a3ce929d0e0e4736-${'0'.repeat(16)}-01`],
    ['version ff', VALID.replace(/^00/, 'ff')],
    ['version 00 with more after it', `${VALID}-extra`],
    ['short trace id', '00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01'],
    ['non-hex flags', VALID.replace(/-01$/, '-0g')],
    ['wrong separators', VALID.replace(/-/g, '_')],
    ['two headers joined by Node', `${VALID}, ${VALID}`],
    ['an array', [VALID, VALID]],
    ['non-hex version', VALID.replace(/^00/, 'zz')],
  ];
  for (const [what, value] of invalid) {
    test(`invalid: ${what}`, () => assert.equal(parseTraceparent(value), undefined));
  }

  test('a higher version is read by its version-00 prefix when a "-" follows it', () => {
    assert.equal(parseTraceparent(VALID.replace(/^00/, '01'))?.traceId, '4bf92f3577b34da6a3ce929d0e0e4736');
    assert.equal(parseTraceparent(`${VALID.replace(/^00/, '01')}-future`)?.parentId, '00f067aa0ba902b7');
    assert.equal(parseTraceparent(`${VALID.replace(/^00/, '01')}future`), undefined);
  });
});

describe('boundTracestate', () => {
  test('valid lists pass, trimmed; several headers are one list', () => {
    assert.equal(boundTracestate('congo=t61rcWkgMzE'), 'congo=t61rcWkgMzE');
    assert.equal(boundTracestate(' rojo=00f067aa0ba902b7 , congo=t61rcWkgMzE ,'), 'rojo=00f067aa0ba902b7,congo=t61rcWkgMzE');
    assert.equal(boundTracestate(['a=1', 'tenant@vendor=x y']), 'a=1,tenant@vendor=x y');
  });

  test('a malformed member, an empty list or more than 32 members drop the header', () => {
    for (const bad of ['', ' , ', 'Upper=1', 'a', 'a=', 'a=b,=c', 'a=has,comma=x=y', '1abc=x']) {
      assert.equal(boundTracestate(bad), undefined, bad);
    }
    const many = Array.from({ length: 33 }, (_v, i) => `k${i}=v`).join(',');
    assert.equal(boundTracestate(many), undefined);
    assert.ok(boundTracestate(Array.from({ length: 32 }, (_v, i) => `k${i}=v`).join(',')) !== undefined);
  });

  test(`over ${TRACESTATE_MAX} characters: members over 128 characters go first, then members from the end`, () => {
    const big = `big=${'x'.repeat(200)}`;
    const small = Array.from({ length: 20 }, (_v, i) => `key${i}=${'v'.repeat(20)}`);
    const bounded = boundTracestate([small[0] as string, big, ...small.slice(1)].join(',')) as string;
    assert.ok(bounded.length <= TRACESTATE_MAX);
    assert.ok(!bounded.includes('big='), 'the long member was removed first');
    assert.ok(bounded.startsWith('key0=') && bounded.includes('key1='), 'members at the front are kept');
    assert.ok(!bounded.includes('key19='), 'members at the end were removed');
  });
});

describe('IdSource', () => {
  test('ids are lower-case hex of the right length, drawn from one pooled fill per 4 KiB', () => {
    let fills = 0;
    const ids = new IdSource((buf) => {
      fills++;
      for (let i = 0; i < buf.length; i++) buf[i] = (i * 7 + fills) & 0xff;
    });
    const span = ids.hex(8);
    const trace = ids.hex(16);
    assert.match(span, /^[0-9a-f]{16}$/);
    assert.match(trace, /^[0-9a-f]{32}$/);
    for (let i = 0; i < 600; i++) ids.hex(8);
    assert.equal(fills, 2, '4096 bytes hold 512 span ids');
  });

  test('an all-zero id is never returned', () => {
    let calls = 0;
    const ids = new IdSource((buf) => {
      calls++;
      buf.fill(calls === 1 ? 0 : 0xab);
    });
    assert.equal(ids.hex(8), 'abababababababab');
  });
});
