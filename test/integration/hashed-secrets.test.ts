import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { hash as argon2Hash } from '@node-rs/argon2';
import { hashSync as bcryptHash } from '@node-rs/bcrypt';
import { ConfigError } from '../../src/config/errors.js';
import { loadConfigFile } from '../../src/config/load.js';
import { tokenMatcher, tokenPrincipal } from '../../src/middleware/auth/auth.js';
import { runCli } from '../helpers/cli.js';
import { request } from '../helpers/http.js';
import { samples, scrape } from '../helpers/metrics.js';
import { startBackend, startProxy, waitFor, type Backend } from '../helpers/servers.js';

const ROOT = resolve(import.meta.dirname, '../..');
const basic = (user: string, password: string): Record<string, string> => ({ authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` });
const sha256 = (s: string): string => `sha256:${createHash('sha256').update(s).digest('hex')}`;

/** Runs `tollgate hash-secret` (from source) with `input` on stdin. */
async function hashSecretCli(input: string, args: string[] = []): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src/cli.ts'), 'hash-secret', ...args], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  child.stdin.end(input);
  const [code] = (await once(child, 'exit')) as [number | null];
  return { code, stdout, stderr };
}

describe('hashed secrets', () => {
  let backend: Backend;
  before(async () => {
    backend = await startBackend('b');
  });
  after(() => backend.close());

  test('sha256: tokens for bearer and api_key; the principal is the one the plain token has', async () => {
    assert.equal(tokenMatcher([sha256('s3cret-token')])('s3cret-token'), tokenPrincipal('s3cret-token'), 'same bucket, hashed or not');
    assert.equal(tokenMatcher(['a', sha256('s3cret-token')])(sha256('s3cret-token')), undefined, 'the digest itself is no credential');
    const bearer = await startProxy([backend], { middleware: { auth: { enabled: true, valid_tokens: [sha256('s3cret-token'), 'plain-token'] } } });
    try {
      assert.equal((await request(`${bearer.url}/`, { headers: { authorization: 'Bearer s3cret-token' } })).status, 200);
      assert.equal((await request(`${bearer.url}/`, { headers: { authorization: 'Bearer plain-token' } })).status, 200);
      for (const wrong of ['s3cret-tokeN', sha256('s3cret-token'), sha256('s3cret-token').slice(7)]) {
        assert.equal((await request(`${bearer.url}/`, { headers: { authorization: `Bearer ${wrong}` } })).status, 401, wrong);
      }
    } finally {
      await bearer.close();
    }
    const apiKey = await startProxy([backend], { middleware: { auth: { enabled: true, auth_type: 'api_key', valid_tokens: [sha256('k-1')] } } });
    try {
      assert.equal((await request(`${apiKey.url}/`, { headers: { 'x-api-key': 'k-1' } })).status, 200);
      assert.equal((await request(`${apiKey.url}/`, { headers: { 'x-api-key': 'k-2' } })).status, 401);
    } finally {
      await apiKey.close();
    }
  });

  test('Basic users with bcrypt ($2a$, $2b$, $2y$) and argon2id hashes; wrong passwords and unknown users are 401', async () => {
    const b = bcryptHash('bcrypt-pw', 4);
    const proxy = await startProxy([backend], {
      middleware: {
        auth: {
          enabled: true,
          auth_type: 'basic',
          users: [
            { username: 'b2b', password_hash: b },
            { username: 'b2y', password_hash: b.replace('$2b$', '$2y$') },
            { username: 'b2a', password_hash: b.replace('$2b$', '$2a$') },
            { username: 'argon', password_hash: await argon2Hash('argon-pw') },
            { username: 'plain', password: 'plain-pw' },
          ],
        },
      },
    });
    try {
      for (const user of ['b2b', 'b2y', 'b2a']) {
        const res = await request(`${proxy.url}/`, { headers: basic(user, 'bcrypt-pw') });
        assert.equal(res.status, 200, user);
        assert.equal(res.json<{ headers: Record<string, string> }>().headers.authorization, undefined);
      }
      assert.equal((await request(`${proxy.url}/`, { headers: basic('argon', 'argon-pw') })).status, 200);
      assert.equal((await request(`${proxy.url}/`, { headers: basic('plain', 'plain-pw') })).status, 200);
      for (const [user, pw] of [['b2b', 'wrong'], ['argon', 'bcrypt-pw'], ['nobody', 'bcrypt-pw'], ['plain', 'bcrypt-pw']] as const) {
        const res = await request(`${proxy.url}/`, { headers: basic(user, pw) });
        assert.equal(res.status, 401, `${user}:${pw}`);
        assert.equal(res.headers['www-authenticate'], 'Basic realm="tollgate", charset="UTF-8"');
      }
      // Verified once, then answered from the cache (the cached answer is the same).
      assert.equal((await request(`${proxy.url}/`, { headers: basic('b2b', 'bcrypt-pw') })).status, 200);
      await waitFor(() => proxy.logs.filter((l) => l.msg === 'Request Completed').length === 10, 3000, 'logged');
      assert.equal(samples(await scrape(proxy.adminUrl), 'tollgate_auth_failures_total').get('{reason="invalid"}'), 4);
    } finally {
      await proxy.close();
    }
  });

  test('users_file: an htpasswd file with bcrypt and {SHA} lines', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-htpasswd-'));
    const file = join(dir, 'users.htpasswd');
    const sha = `{SHA}${createHash('sha1').update('sha-pw').digest('base64')}`;
    writeFileSync(file, `# users\nalice:${bcryptHash('alice-pw', 4).replace('$2b$', '$2y$')}\n\nbob:${sha}\n`);
    const proxy = await startProxy([backend], { middleware: { auth: { enabled: true, auth_type: 'basic', users_file: file } } });
    try {
      assert.equal((await request(`${proxy.url}/`, { headers: basic('alice', 'alice-pw') })).status, 200);
      assert.equal((await request(`${proxy.url}/`, { headers: basic('bob', 'sha-pw') })).status, 200);
      assert.equal((await request(`${proxy.url}/`, { headers: basic('bob', 'alice-pw') })).status, 401);
      assert.equal((await request(`${proxy.url}/`, { headers: basic('alice', 'sha-pw') })).status, 401);
    } finally {
      await proxy.close();
    }
  });

  test('config errors: an MD5-crypt htpasswd line, a bad password_hash, a bad sha256: token, each at its key with file:line:col', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-htpasswd-config-'));
    writeFileSync(join(dir, 'users.htpasswd'), 'alice:$2y$05$abcdefghijklmnopqrstuuSmYFVR3Lmq3pXbxHpPA56ZP2QzR9F8u\nbob:$apr1$abc$0123456789abcdefghijkl\n');
    const load = (auth: string): string => {
      const file = join(dir, 'proxy.yaml');
      writeFileSync(file, `load_balancing:\n  upstreams: [{ name: a, address: 127.0.0.1, port: 3000 }]\nmiddleware:\n  auth:\n    enabled: true\n${auth}`);
      try {
        loadConfigFile(file, {});
        return '';
      } catch (err) {
        assert.ok(err instanceof ConfigError);
        return err.message.replaceAll(`${dir}/`, '');
      }
    };
    assert.equal(
      load('    auth_type: basic\n    users_file: users.htpasswd\n'),
      'proxy.yaml:7:17 middleware.auth.users_file: users.htpasswd:2: user "bob": MD5-crypt ($apr1$) is not supported: it is fast to brute-force; re-create the entry with htpasswd -B (bcrypt)',
    );
    assert.match(load('    auth_type: basic\n    users: [{ username: a, password_hash: "$1$abc$def" }]\n'), /^proxy.yaml:7:43 middleware.auth.users\[0\].password_hash: must be a bcrypt/);
    assert.match(load('    auth_type: basic\n    users: [{ username: a }]\n'), /middleware.auth.users\[0\].password: give password or password_hash \(exactly one\)/);
    assert.match(load('    valid_tokens: ["sha256:abc"]\n'), /^proxy.yaml:6:20 middleware.auth.valid_tokens\[0\]: sha256: must be followed by 64 hex digits/);
  });

  test('tollgate --check exits 2 with file:line:col for an MD5 htpasswd line and for "none" in jwt.algorithms', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-auth-check-'));
    writeFileSync(join(dir, 'users.htpasswd'), 'bob:$apr1$abc$0123456789abcdefghijkl\n');
    const file = join(dir, 'proxy.yaml');
    const head = 'load_balancing:\n  upstreams: [{ name: a, address: 127.0.0.1, port: 3000 }]\nmiddleware:\n  auth:\n    enabled: true\n';
    writeFileSync(file, `${head}    auth_type: basic\n    users_file: users.htpasswd\n`);
    const md5 = await runCli(['--check', '--config', file]);
    assert.equal(md5.code, 2);
    assert.match(md5.stderr, new RegExp(`${file.replaceAll('/', '\\/')}:7:17 middleware.auth.users_file: users.htpasswd:1: user "bob": MD5-crypt`));
    writeFileSync(file, `${head}    auth_type: jwt\n    jwt: { secret: "0123456789abcdef0123456789abcdef", algorithms: [HS256, none] }\n`);
    const none = await runCli(['--check', '--config', file]);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /proxy.yaml:7:\d+ middleware.auth.jwt.algorithms\[1\]: "none" is never allowed/);
  });

  test('tollgate hash-secret prints a hash of the secret on stdin that the proxy accepts', async () => {
    const bcrypt = await hashSecretCli('pw-from-stdin\n');
    assert.equal(bcrypt.code, 0, bcrypt.stderr);
    assert.match(bcrypt.stdout, /^\$2b\$10\$[./A-Za-z0-9]{53}\n$/);
    const argon = await hashSecretCli('pw-from-stdin', ['--algorithm', 'argon2id']);
    assert.match(argon.stdout, /^\$argon2id\$/);
    const token = await hashSecretCli('tok\n', ['-a', 'sha256']);
    assert.equal(token.stdout, `${sha256('tok')}\n`);
    const empty = await hashSecretCli('');
    assert.equal(empty.code, 2);
    assert.match(empty.stderr, /no secret on standard input/);
    const proxy = await startProxy([backend], {
      middleware: { auth: { enabled: true, auth_type: 'basic', users: [{ username: 'u', password_hash: bcrypt.stdout.trim() }, { username: 'v', password_hash: argon.stdout.trim() }] } },
    });
    try {
      assert.equal((await request(`${proxy.url}/`, { headers: basic('u', 'pw-from-stdin') })).status, 200);
      assert.equal((await request(`${proxy.url}/`, { headers: basic('v', 'pw-from-stdin') })).status, 200);
      assert.equal((await request(`${proxy.url}/`, { headers: basic('u', 'pw-from-stdin\n') })).status, 401, 'the newline was dropped');
    } finally {
      await proxy.close();
    }
  });
});
