import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { authorizationParam, decodeBasic, equalsSecret, findSecret } from '../../../src/middleware/auth/credentials.js';

const b64 = (text: string): string => Buffer.from(text, 'utf8').toString('base64');

describe('authorizationParam', () => {
  test('returns the credentials of the named scheme', () => {
    assert.equal(authorizationParam('Bearer dev-token-123', 'bearer'), 'dev-token-123');
    assert.equal(authorizationParam('Basic dXNlcjpwYXNz', 'basic'), 'dXNlcjpwYXNz');
  });

  test('the scheme is compared case-insensitively', () => {
    assert.equal(authorizationParam('bearer tok', 'bearer'), 'tok');
    assert.equal(authorizationParam('BEARER tok', 'bearer'), 'tok');
    assert.equal(authorizationParam('BeArEr tok', 'bearer'), 'tok');
    assert.equal(authorizationParam('BASIC abcd', 'basic'), 'abcd');
  });

  test('the credentials keep their case', () => {
    assert.equal(authorizationParam('Bearer AbC.dEf', 'bearer'), 'AbC.dEf');
  });

  test('extra spaces around the credentials are allowed', () => {
    assert.equal(authorizationParam('Bearer  tok', 'bearer'), 'tok');
    assert.equal(authorizationParam('Bearer     tok', 'bearer'), 'tok');
    assert.equal(authorizationParam('Bearer tok   ', 'bearer'), 'tok');
  });

  test('a tab separates scheme and credentials too', () => {
    assert.equal(authorizationParam('Bearer\ttok', 'bearer'), 'tok');
    assert.equal(authorizationParam('Bearer\t tok', 'bearer'), 'tok');
  });

  test('token68 characters are kept as they are', () => {
    assert.equal(authorizationParam('Bearer a-b.c_d~e+f/g==', 'bearer'), 'a-b.c_d~e+f/g==');
  });

  test('missing header or missing credentials give undefined', () => {
    assert.equal(authorizationParam(undefined, 'bearer'), undefined);
    assert.equal(authorizationParam('', 'bearer'), undefined);
    assert.equal(authorizationParam('Bearer', 'bearer'), undefined);
    assert.equal(authorizationParam('Bearer ', 'bearer'), undefined);
    assert.equal(authorizationParam('Bearer     ', 'bearer'), undefined);
    assert.equal(authorizationParam('Bearer \t ', 'bearer'), undefined);
  });

  test('credentials with inner whitespace give undefined', () => {
    assert.equal(authorizationParam('Bearer to k', 'bearer'), undefined);
    assert.equal(authorizationParam('Bearer tok\tmore', 'bearer'), undefined);
    assert.equal(authorizationParam('Bearer tok\nmore', 'bearer'), undefined);
  });

  test('another scheme gives undefined', () => {
    assert.equal(authorizationParam('Basic dXNlcjpwYXNz', 'bearer'), undefined);
    assert.equal(authorizationParam('Bearer tok', 'basic'), undefined);
    assert.equal(authorizationParam('Digest username="x"', 'bearer'), undefined);
  });

  test('the scheme must be followed by a space or tab, not run into the credentials', () => {
    assert.equal(authorizationParam('Bearertok', 'bearer'), undefined);
    assert.equal(authorizationParam('Bearers tok', 'bearer'), undefined);
    assert.equal(authorizationParam('Bearer:tok', 'bearer'), undefined);
    assert.equal(authorizationParam('Bearer\ntok', 'bearer'), undefined);
  });

  test('a scheme name that only prefixes the header does not match', () => {
    assert.equal(authorizationParam('Bear tok', 'bearer'), undefined);
    assert.equal(authorizationParam(' Bearer tok', 'bearer'), undefined);
  });
});

describe('decodeBasic', () => {
  test('decodes user:pass', () => {
    assert.deepEqual(decodeBasic('dXNlcjpwYXNz'), { username: 'user', password: 'pass' });
    assert.deepEqual(decodeBasic(b64('alice:s3cret')), { username: 'alice', password: 's3cret' });
  });

  test('a password may contain ":"; only the first colon splits', () => {
    assert.deepEqual(decodeBasic(b64('user:pa:ss')), { username: 'user', password: 'pa:ss' });
    assert.deepEqual(decodeBasic(b64('user::')), { username: 'user', password: ':' });
  });

  test('an empty password is allowed', () => {
    assert.deepEqual(decodeBasic(b64('user:')), { username: 'user', password: '' });
  });

  test('decodes UTF-8', () => {
    assert.deepEqual(decodeBasic(b64('jöe:pässwörd€')), { username: 'jöe', password: 'pässwörd€' });
  });

  test('no colon gives undefined', () => {
    assert.equal(decodeBasic(b64('userpass')), undefined);
    assert.equal(decodeBasic(b64('user')), undefined);
  });

  test('an empty username gives undefined', () => {
    assert.equal(decodeBasic(b64(':pass')), undefined);
    assert.equal(decodeBasic(b64(':')), undefined);
  });

  test('invalid base64 gives undefined', () => {
    assert.equal(decodeBasic('not base64!'), undefined);
    assert.equal(decodeBasic('dXNl*jpw'), undefined);
    assert.equal(decodeBasic('dXNlcjpwYXNz='), undefined); // length not a multiple of 4
    assert.equal(decodeBasic('dXNlcjpwYXM'), undefined); // unpadded
    assert.equal(decodeBasic('===='), undefined);
    assert.equal(decodeBasic('dX=lcjpw'), undefined); // padding in the middle
    assert.equal(decodeBasic('dXNlcjpw YXNz'), undefined);
    assert.equal(decodeBasic('dXNlcjpwYXNz\n'), undefined);
    assert.equal(decodeBasic(''), undefined);
  });

  test('base64url characters are not base64', () => {
    // Standard base64 of these has "+" and "/"; base64url would use "-" and "_" instead.
    const standard = b64('user:pa?>'); // dXNlcjpwYT8+
    assert.equal(standard, 'dXNlcjpwYT8+');
    assert.deepEqual(decodeBasic(standard), { username: 'user', password: 'pa?>' });
    assert.equal(decodeBasic(standard.replace('+', '-')), undefined);
    const slash = b64('user:???'); // dXNlcjo/Pz8=
    assert.equal(slash, 'dXNlcjo/Pz8=');
    assert.deepEqual(decodeBasic(slash), { username: 'user', password: '???' });
    assert.equal(decodeBasic(slash.replace('/', '_')), undefined);
  });
});

describe('equalsSecret', () => {
  test('equal strings only: case, length, prefixes and non-ASCII all matter', () => {
    assert.equal(equalsSecret('dev-token-123', 'dev-token-123'), true);
    assert.equal(equalsSecret('', ''), true);
    assert.equal(equalsSecret('é', '\u00e9'), true);
    for (const [candidate, secret] of [
      ['dev-token-12', 'dev-token-123'],
      ['dev-token-1234', 'dev-token-123'],
      ['Dev-token-123', 'dev-token-123'],
      ['', 'dev-token-123'],
      ['dev-token-123', ''],
      ['e\u0301', '\u00e9'], // no Unicode normalisation
      ['\u0000', ''],
      ['a\u0000', 'a'],
      ['\u0100', '\u0000'], // code units compared whole, not as bytes
    ] as const) {
      assert.equal(equalsSecret(candidate, secret), false, `${JSON.stringify(candidate)} vs ${JSON.stringify(secret)}`);
    }
  });

  test('reads every code unit of the secret, whatever the candidate (no early exit)', () => {
    const secret = 'dev-token-123';
    const reads: number[] = [];
    const original = String.prototype.charCodeAt;
    const counting = function (this: string, i: number): number {
      if (this === secret) reads.push(i);
      return original.call(this, i);
    };
    String.prototype.charCodeAt = counting;
    try {
      for (const candidate of ['', 'x', 'dev-token-123', 'dev-token-124', 'y'.repeat(8000)]) {
        reads.length = 0;
        equalsSecret(candidate, secret);
        // (an equal candidate is the same string, so its reads are counted too)
        assert.deepEqual([...new Set(reads)], [...secret].map((_, i) => i), `candidate of ${candidate.length} characters`);
      }
    } finally {
      String.prototype.charCodeAt = original;
    }
  });
});

describe('findSecret', () => {
  const secrets = ['first', 'middle', 'last'];

  test('returns the index of a match at the first, a middle and the last position', () => {
    assert.equal(findSecret('first', secrets), 0);
    assert.equal(findSecret('middle', secrets), 1);
    assert.equal(findSecret('last', secrets), 2);
  });

  test('returns -1 when nothing matches, and for no secrets', () => {
    assert.equal(findSecret('other', secrets), -1);
    assert.equal(findSecret('First', secrets), -1);
    assert.equal(findSecret('first', []), -1);
  });

  test('duplicates return the first index', () => {
    const dup = ['a', 'b', 'a', 'b'];
    assert.equal(findSecret('a', dup), 0);
    assert.equal(findSecret('b', dup), 1);
  });

  test('reads every secret even when the first one matches (no early exit)', () => {
    const read: number[] = [];
    const watched = new Proxy(secrets, {
      get(target, prop, receiver) {
        if (typeof prop === 'string' && /^\d+$/.test(prop)) read.push(Number(prop));
        return Reflect.get(target, prop, receiver) as unknown;
      },
    });
    assert.equal(findSecret('first', watched), 0);
    assert.deepEqual(read, [0, 1, 2]);
    read.length = 0;
    assert.equal(findSecret('nothing', watched), -1);
    assert.deepEqual(read, [0, 1, 2]);
  });

  test('structure: one loop with no return or break inside it, a single return after it', () => {
    const source = findSecret.toString();
    assert.doesNotMatch(source, /return i\b/);
    assert.doesNotMatch(source, /\bbreak\b/);
    assert.doesNotMatch(source, /\bcontinue\b/);
    assert.equal(source.match(/\breturn\b/g)?.length, 1, source);
    assert.match(source, /equalsSecret/);
  });
});
