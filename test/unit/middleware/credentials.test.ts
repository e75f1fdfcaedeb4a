import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { authorizationParam, decodeBasic, digest, findSecret } from '../../../src/middleware/auth/credentials.js';

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

describe('digest', () => {
  test('is SHA-256: 32 bytes for any input length', () => {
    for (const input of ['', 'a', 'dev-token-123', 'x'.repeat(31), 'x'.repeat(32), 'x'.repeat(33), 'y'.repeat(100_000), '€'.repeat(50)]) {
      const d = digest(input);
      assert.ok(Buffer.isBuffer(d));
      assert.equal(d.length, 32, `digest of ${input.length} characters`);
    }
  });

  test('matches the SHA-256 test vectors', () => {
    assert.equal(digest('abc').toString('hex'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    assert.equal(digest('').toString('hex'), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  });

  test('hashes UTF-8, so different strings give different digests', () => {
    assert.notDeepEqual(digest('token'), digest('Token'));
    assert.deepEqual(digest('é'), digest('\u00e9'));
    assert.notDeepEqual(digest('é'), digest('e\u0301')); // no Unicode normalisation
  });
});

describe('findSecret', () => {
  const secrets = ['first', 'middle', 'last'].map(digest);

  test('returns the index of a match at the first, a middle and the last position', () => {
    assert.equal(findSecret(digest('first'), secrets), 0);
    assert.equal(findSecret(digest('middle'), secrets), 1);
    assert.equal(findSecret(digest('last'), secrets), 2);
  });

  test('returns -1 when nothing matches, and for no secrets', () => {
    assert.equal(findSecret(digest('other'), secrets), -1);
    assert.equal(findSecret(digest('First'), secrets), -1);
    assert.equal(findSecret(digest('first'), []), -1);
  });

  test('duplicates return the first index', () => {
    const dup = ['a', 'b', 'a', 'b'].map(digest);
    assert.equal(findSecret(digest('a'), dup), 0);
    assert.equal(findSecret(digest('b'), dup), 1);
  });

  test('reads every secret even when the first one matches (no early exit)', () => {
    const read: number[] = [];
    const watched = new Proxy(secrets, {
      get(target, prop, receiver) {
        if (typeof prop === 'string' && /^\d+$/.test(prop)) read.push(Number(prop));
        return Reflect.get(target, prop, receiver) as unknown;
      },
    });
    assert.equal(findSecret(digest('first'), watched), 0);
    assert.deepEqual(read, [0, 1, 2]);
    read.length = 0;
    assert.equal(findSecret(digest('nothing'), watched), -1);
    assert.deepEqual(read, [0, 1, 2]);
  });

  test('structure: one loop with no return or break inside it, a single return after it', () => {
    const source = findSecret.toString();
    assert.doesNotMatch(source, /return i\b/);
    assert.doesNotMatch(source, /\bbreak\b/);
    assert.doesNotMatch(source, /\bcontinue\b/);
    assert.equal(source.match(/\breturn\b/g)?.length, 1, source);
    assert.match(source, /timingSafeEqual/);
  });
});
