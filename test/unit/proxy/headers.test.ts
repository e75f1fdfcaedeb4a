import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { upstreamResponseHeaders } from '../../../src/proxy/forward.js';
import { HOP_BY_HOP, connectionTokens, formatMs, hopByHop } from '../../../src/proxy/headers.js';

/** undici's raw header form: name, value, name, value, ... as latin1 buffers. */
function raw(...pairs: [string, string][]): Buffer[] {
  return pairs.flatMap(([name, value]) => [Buffer.from(name, 'latin1'), Buffer.from(value, 'latin1')]);
}

describe('HOP_BY_HOP', () => {
  test('lists the RFC 9110 hop-by-hop headers plus Keep-Alive and Proxy-Connection, lower-case', () => {
    assert.deepEqual([...HOP_BY_HOP].sort(), ['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade']);
  });
});

describe('hopByHop', () => {
  test('names each hop-by-hop header in any case, lower-cased', () => {
    for (const name of HOP_BY_HOP) {
      assert.equal(hopByHop(name), name);
      assert.equal(hopByHop(name.toUpperCase()), name);
      assert.equal(hopByHop(name.replace(/(^|-)([a-z])/g, (m) => m.toUpperCase())), name);
    }
  });

  test('undefined for other names, of the same lengths as hop-by-hop ones or not', () => {
    for (const name of ['User-Agent', 'Keep-Alivx', 'tf', 'Referer', 'Trailex', 'Proxy-Connectiox', 'Transfer-Encodinx', 'Content-Type', 'X-Connection', 'Connectio', 'Trailers', '', 'x']) {
      assert.equal(hopByHop(name), undefined, name);
    }
  });
});

describe('connectionTokens', () => {
  test('undefined for no header', () => {
    assert.equal(connectionTokens(undefined), undefined);
  });

  test('undefined for only keep-alive and/or close, in any case', () => {
    for (const value of ['keep-alive', 'close', 'Keep-Alive', 'CLOSE', 'keep-alive, close', ' Close ,  keep-alive ', '', ',', ' , , ']) {
      assert.equal(connectionTokens(value), undefined, JSON.stringify(value));
    }
  });

  test('lower-cases and trims the listed names', () => {
    assert.deepEqual(connectionTokens('X-Internal'), new Set(['x-internal']));
    assert.deepEqual(connectionTokens('  X-Foo ,Upgrade,\tX-Bar\t'), new Set(['x-foo', 'upgrade', 'x-bar']));
  });

  test('skips keep-alive, close and empty items among other names', () => {
    assert.deepEqual(connectionTokens('keep-alive, X-A, close,, x-b'), new Set(['x-a', 'x-b']));
  });

  test('a name listed twice appears once', () => {
    assert.deepEqual(connectionTokens('X-A, x-a, X-A'), new Set(['x-a']));
  });
});

describe('formatMs', () => {
  test('whole milliseconds have no decimals', () => {
    assert.equal(formatMs(1), '1ms');
    assert.equal(formatMs(0), '0ms');
    assert.equal(formatMs(250), '250ms');
  });

  test('fractions keep at most two decimals, rounded', () => {
    assert.equal(formatMs(0.42), '0.42ms');
    assert.equal(formatMs(0.4249), '0.42ms');
    assert.equal(formatMs(0.4263), '0.43ms');
    assert.equal(formatMs(12.3456), '12.35ms');
    assert.equal(formatMs(1234.5678), '1234.57ms');
    assert.equal(formatMs(1.5), '1.5ms');
  });

  test('trailing zeros are dropped and tiny values round to 0', () => {
    assert.equal(formatMs(1.004), '1ms');
    assert.equal(formatMs(2.1), '2.1ms');
    assert.equal(formatMs(0.001), '0ms');
    assert.equal(formatMs(0.996), '1ms');
  });
});

describe('upstreamResponseHeaders', () => {
  test('passes ordinary headers through as a flat name/value list, names as sent', () => {
    assert.deepEqual(upstreamResponseHeaders(raw(['Content-Type', 'text/plain'], ['content-length', '5'], ['X-Custom', 'a b'])), [
      'Content-Type',
      'text/plain',
      'content-length',
      '5',
      'X-Custom',
      'a b',
    ]);
  });

  test('drops every hop-by-hop header, in any case', () => {
    const out = upstreamResponseHeaders(
      raw(
        ['Connection', 'keep-alive'],
        ['Keep-Alive', 'timeout=5'],
        ['Proxy-Connection', 'keep-alive'],
        ['TE', 'trailers'],
        ['Trailer', 'X-Checksum'],
        ['Transfer-Encoding', 'chunked'],
        ['UPGRADE', 'websocket'],
        ['Content-Type', 'application/json'],
      ),
    );
    assert.deepEqual(out, ['Content-Type', 'application/json']);
  });

  test('drops headers named in Connection, case-insensitively, wherever they appear', () => {
    const out = upstreamResponseHeaders(
      raw(['X-Internal', 'secret'], ['Date', 'Mon, 01 Jan 2024 00:00:00 GMT'], ['Connection', 'close, x-INTERNAL, X-Debug'], ['x-debug', '1'], ['X-Public', 'yes']),
    );
    assert.deepEqual(out, ['Date', 'Mon, 01 Jan 2024 00:00:00 GMT', 'X-Public', 'yes']);
  });

  test('Connection naming only keep-alive/close drops nothing else', () => {
    assert.deepEqual(upstreamResponseHeaders(raw(['Connection', 'Keep-Alive'], ['X-A', '1'])), ['X-A', '1']);
  });

  test(
    'headers named in each of several Connection lines are all dropped',
    () => {
      const out = upstreamResponseHeaders(raw(['Connection', 'X-A'], ['Connection', 'X-B'], ['X-A', 'a'], ['X-B', 'b'], ['X-C', 'c']));
      assert.deepEqual(out, ['X-C', 'c']);
    },
  );

  test('keeps repeated Set-Cookie headers, each separately and in order', () => {
    const out = upstreamResponseHeaders(
      raw(['Set-Cookie', 'a=1; Path=/'], ['Content-Type', 'text/html'], ['Set-Cookie', 'b=2; HttpOnly'], ['Connection', 'close'], ['set-cookie', 'c=3, d=4']),
    );
    assert.deepEqual(out, ['Set-Cookie', 'a=1; Path=/', 'Content-Type', 'text/html', 'Set-Cookie', 'b=2; HttpOnly', 'set-cookie', 'c=3, d=4']);
  });

  test('repeated Set-Cookie survives when Connection also names other headers', () => {
    const out = upstreamResponseHeaders(raw(['Set-Cookie', 'a=1'], ['Connection', 'X-Hop'], ['X-Hop', 'x'], ['Set-Cookie', 'b=2']));
    assert.deepEqual(out, ['Set-Cookie', 'a=1', 'Set-Cookie', 'b=2']);
  });

  test('values are decoded as latin1, byte for byte', () => {
    const out = upstreamResponseHeaders([Buffer.from('X-Name'), Buffer.from([0x63, 0x61, 0x66, 0xe9])]);
    assert.deepEqual(out, ['X-Name', 'caf\u00e9']);
  });

  test('no headers give an empty list', () => {
    assert.deepEqual(upstreamResponseHeaders([]), []);
  });
});
