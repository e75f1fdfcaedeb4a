import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { hashSync } from '@node-rs/bcrypt';
import { DUMMY_BCRYPT, readHtpasswd, SlowVerifier } from '../../../src/middleware/auth/hashed.js';
import { BCRYPT_HASH, passwordHashKind } from '../../../src/middleware/auth/secret-formats.js';

const HASH = hashSync('right', 4);

function verifier(options: Partial<{ concurrency: number; maxQueue: number; cacheSize: number; cacheTtlMs: number }> = {}): { v: SlowVerifier; clock: { now: number } } {
  const clock = { now: 0 };
  return { v: new SlowVerifier({ concurrency: 1, maxQueue: 10, cacheSize: 10, cacheTtlMs: 1000, ...options, now: () => clock.now }), clock };
}

describe('SlowVerifier', () => {
  test('a verified credential is answered from the cache until its TTL; wrong passwords are never cached', async () => {
    const { v, clock } = verifier();
    assert.equal(await v.check('u', 'right', HASH), 'ok');
    assert.equal(v.check('u', 'right', HASH), 'ok', 'cached: answered synchronously');
    assert.equal(v.verifications, 1);
    assert.equal(await v.check('u', 'wrong', HASH), 'invalid');
    assert.equal(await v.check('u', 'wrong', HASH), 'invalid');
    assert.equal(v.verifications, 3);
    clock.now = 1000;
    assert.equal(await v.check('u', 'right', HASH), 'ok');
    assert.equal(v.verifications, 4, 'expired: verified again');
  });

  test('the cache holds at most cacheSize entries, the oldest going first', async () => {
    const { v } = verifier({ cacheSize: 2 });
    for (const u of ['a', 'b', 'c']) assert.equal(await v.check(u, 'right', HASH), 'ok');
    assert.equal(v.check('c', 'right', HASH), 'ok');
    assert.equal(v.check('b', 'right', HASH), 'ok');
    assert.ok(v.check('a', 'right', HASH) instanceof Promise, 'a was dropped');
  });

  test('at most `concurrency` verifications run at once; past maxQueue waiting, a check is refused at once', async () => {
    const { v } = verifier({ concurrency: 2, maxQueue: 3 });
    const checks = Array.from({ length: 6 }, (_, i) => v.check('u', `wrong${i}`, HASH));
    assert.equal(checks[5], 'busy', '2 running + 3 waiting');
    assert.ok(checks.slice(0, 5).every((c) => c instanceof Promise));
    assert.deepEqual(await Promise.all(checks.slice(0, 5)), Array(5).fill('invalid'));
    assert.equal(v.verifications, 5);
    assert.equal(await v.check('u', 'right', HASH), 'ok', 'the queue drained');
  });
});

describe('password hash formats and htpasswd', () => {
  test('kinds', () => {
    assert.equal(passwordHashKind(HASH), 'bcrypt');
    assert.ok(BCRYPT_HASH.test(DUMMY_BCRYPT));
    assert.equal(passwordHashKind(`{SHA}${createHash('sha1').update('x').digest('base64')}`), 'sha1');
    assert.match((passwordHashKind('$apr1$abc$def') as { error: string }).error, /MD5-crypt/);
    assert.match((passwordHashKind('$6$abc$def') as { error: string }).error, /crypt\(3\)/);
    assert.match((passwordHashKind('plaintext') as { error: string }).error, /not a supported hash/);
    assert.match((passwordHashKind('$argon2i$v=19$m=1,t=1,p=1$a$b') as { error: string }).error, /only argon2id/);
  });

  test('readHtpasswd names the file and line of the first bad entry', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-htpasswd-'));
    const file = join(dir, 'h');
    writeFileSync(file, `# c\n\nalice:${HASH}\nalice:${HASH}\n`);
    assert.throws(() => readHtpasswd(file, 'h'), { message: 'h:4: user "alice" is listed twice' });
    writeFileSync(file, 'no-colon\n');
    assert.throws(() => readHtpasswd(file, 'h'), { message: 'h:1: not a "name:hash" line' });
    writeFileSync(file, '# only a comment\n');
    assert.throws(() => readHtpasswd(file, 'h'), { message: 'h: lists no user' });
    writeFileSync(file, `alice:${HASH}\r\n`);
    assert.deepEqual(readHtpasswd(file), [{ username: 'alice', password_hash: HASH }]);
  });
});
