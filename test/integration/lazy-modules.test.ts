/**
 * Optional libraries load only for the configurations that use them: pino-pretty for `format: pretty`,
 * jose for JWT auth, the native bcrypt and argon2 bindings for hashed passwords. Every process that does
 * not use them saves their memory (docs/benchmarks.md, memory). Seen through NODE_DEBUG=module,esm, which
 * makes Node name every file it loads on stderr.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, before, describe, test } from 'node:test';
import { SignJWT } from 'jose';
import { hash as argon2Hash } from '@node-rs/argon2';
import { hash as bcryptHash } from '@node-rs/bcrypt';
import { request } from '../helpers/http.js';
import { listeningPort, startCli, writeConfig } from '../helpers/cli.js';
import { startBackend, type Backend } from '../helpers/servers.js';

const OPTIONAL = ['node_modules/pino-pretty/', 'node_modules/jose/', 'node_modules/@node-rs/bcrypt', 'node_modules/@node-rs/argon2'];
const SECRET = 'a-test-secret-of-at-least-32-bytes!!';

/** Runs the CLI on `config`, sends `requests` through it, stops it and returns which optional libraries it loaded. */
async function loadedBy(config: string, requests: (port: number) => Promise<void>): Promise<string[]> {
  const child = startCli(['--config', writeConfig(config)], { NODE_DEBUG: 'module,esm', LOG_LEVEL: 'info' });
  const port = await listeningPort(child, 20_000);
  await requests(port);
  child.kill('SIGTERM');
  await once(child, 'exit');
  return OPTIONAL.filter((m) => child.output.stderr.includes(m));
}

describe('optional libraries load only when the configuration uses them', () => {
  let backend: Backend;
  before(async () => {
    backend = await startBackend('a');
  });
  after(() => backend.close());

  const head = (): string => `server: {listen_port: 0, listen_address: 127.0.0.1}\nadmin: {port: 0}\nload_balancing:\n  upstreams: [{name: a, address: 127.0.0.1, port: ${backend.port}}]\n`;

  test('bearer tokens and JSON logs: none of them', async () => {
    const config = `${head()}middleware:\n  auth: {enabled: true, auth_type: bearer, valid_tokens: [tok-1]}\n`;
    const loaded = await loadedBy(config, async (port) => {
      assert.equal((await request(`http://127.0.0.1:${port}/`, { headers: { authorization: 'Bearer tok-1' } })).status, 200);
      assert.equal((await request(`http://127.0.0.1:${port}/`, { headers: { authorization: 'Bearer nope' } })).status, 401);
    });
    assert.deepEqual(loaded, []);
  });

  test('pretty logs, JWT and hashed passwords: each of them, and they work', async () => {
    const bcrypt = await bcryptHash('pw-1', 4);
    const argonUser = await argon2Hash('pw-2');
    const config =
      `${head()}logging: {format: pretty}\nroutes:\n` +
      `  - {name: jwt, match: {path_prefix: /jwt}, service: default, middleware: {auth: {enabled: true, auth_type: jwt, jwt: {secret: "${SECRET}", algorithms: [HS256]}}}}\n` +
      `  - {name: basic, match: {path_prefix: /basic}, service: default, middleware: {auth: {enabled: true, auth_type: basic, users: [{username: b, password_hash: "${bcrypt}"}, {username: c, password_hash: "${argonUser}"}]}}}\n`;
    const token = await new SignJWT({ sub: 'u1' }).setProtectedHeader({ alg: 'HS256' }).setIssuedAt().setExpirationTime('5m').sign(new TextEncoder().encode(SECRET));
    const loaded = await loadedBy(config, async (port) => {
      assert.equal((await request(`http://127.0.0.1:${port}/jwt`, { headers: { authorization: `Bearer ${token}` } })).status, 200);
      assert.equal((await request(`http://127.0.0.1:${port}/jwt`, { headers: { authorization: `Bearer ${token}x` } })).status, 401);
      const basic = (user: string, pw: string): Record<string, string> => ({ authorization: `Basic ${Buffer.from(`${user}:${pw}`).toString('base64')}` });
      assert.equal((await request(`http://127.0.0.1:${port}/basic`, { headers: basic('b', 'pw-1') })).status, 200);
      assert.equal((await request(`http://127.0.0.1:${port}/basic`, { headers: basic('b', 'wrong') })).status, 401);
      assert.equal((await request(`http://127.0.0.1:${port}/basic`, { headers: basic('c', 'wrong') })).status, 401);
      assert.equal((await request(`http://127.0.0.1:${port}/basic`, { headers: basic('c', 'pw-2') })).status, 200);
    });
    assert.deepEqual(loaded, OPTIONAL);
  });
});
