/**
 * Plugins from the config (`routes[].plugins`): loaded from files relative to the config file, each
 * changing its own route only; one that throws on a request is a 500 for that request and the next works;
 * one that cannot be loaded or built is a config error naming the module, for createGateway, a reload,
 * and `tollgate --check` (exit 2). The binary serves with plugins and no hand-written main.
 */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { createGateway, type Gateway } from '../../src/index.js';
import { runCli, startCli, waitForOutput, writeConfig } from '../helpers/cli.js';
import { request } from '../helpers/http.js';
import { startBackend, type Backend } from '../helpers/servers.js';

const TENANT = `
// Adds X-Tenant upstream from the options; refuses requests without X-Api-Client when asked to.
export default function tenant(options, api) {
  if (typeof options.tenant !== 'string') throw new Error('options.tenant must be a string');
  return {
    name: 'tenant',
    newContext: () => ({ calls: 0 }),
    requestFilter(session, ctx) {
      ctx.calls++;
      if (options.require_client && session.requestHeader('x-api-client') === undefined) return api.error('unauthorized', 'X-Api-Client is required.');
      session.upstreamHeaders.set('X-Tenant', options.tenant);
    },
    responseFilter(session, ctx) {
      session.responseHeaders.set('X-Tenant-Calls', String(ctx.calls));
    },
  };
}
`;

const THROWING = `
export default () => ({
  requestFilter(session) {
    if (session.requestHeader('x-explode') === '1') throw new Error('plugin exploded');
  },
});
`;

const BROKEN_FACTORY = `export default () => { throw new Error('cannot reach the tenant database'); };`;
const NOT_A_FACTORY = `export const phases = {};`;

function configText(port: number, plugins: string): string {
  return `
server: { listen_port: 0, listen_address: 127.0.0.1 }
admin: { enabled: false }
services:
  app:
    upstreams: [{ name: app1, address: 127.0.0.1, port: ${port} }]
    health_check: { active: { enabled: false }, passive: { enabled: false } }
routes:
  - name: tenant
    match: { path_prefix: /tenant }
    service: app
    plugins:
${plugins}
  - name: plain
    match: { path_prefix: /plain }
    service: app
`;
}

const GOOD = `      - module: ./plugins/tenant.js
        options: { tenant: acme, require_client: true }
      - module: ./plugins/throwing.js`;

function writePlugins(file: string): void {
  const dir = join(dirname(file), 'plugins');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'tenant.js'), TENANT);
  writeFileSync(join(dir, 'throwing.js'), THROWING);
  writeFileSync(join(dir, 'broken.js'), BROKEN_FACTORY);
  writeFileSync(join(dir, 'nothing.js'), NOT_A_FACTORY);
}

describe('plugins from the config', () => {
  let backend: Backend;
  let file: string;
  let gateway: Gateway;
  let url: string;
  const logs: Record<string, unknown>[] = [];

  before(async () => {
    backend = await startBackend('app1');
    file = writeConfig(configText(backend.port, GOOD));
    writePlugins(file);
    const stream = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const line of chunk.toString().split('\n')) if (line !== '') logs.push(JSON.parse(line) as Record<string, unknown>);
        done();
      },
    });
    gateway = await createGateway({ configFile: file, logger: pino({ base: null }, stream) });
    url = `http://127.0.0.1:${(await gateway.listen()).port}`;
  });
  after(async () => {
    await gateway.close();
    await backend.close();
  });

  test('a plugin changes its own route only', async () => {
    const refused = await request(`${url}/tenant/x`);
    assert.equal(refused.status, 401);
    assert.equal(refused.json().message, 'X-Api-Client is required.');
    const ok = await request(`${url}/tenant/x`, { headers: { 'x-api-client': 'cli' } });
    assert.equal(ok.status, 200);
    assert.equal(ok.json<{ headers: Record<string, string> }>().headers['x-tenant'], 'acme');
    assert.equal(ok.headers['x-tenant-calls'], '1', 'one context per request');
    const plain = await request(`${url}/plain/x`);
    assert.equal(plain.status, 200);
    assert.equal(plain.json<{ headers: Record<string, string> }>().headers['x-tenant'], undefined);
    assert.equal(plain.headers['x-tenant-calls'], undefined);
  });

  test('a plugin that throws on a request: 500 for it, logged and counted; the next request works', async () => {
    const res = await request(`${url}/tenant/x`, { headers: { 'x-api-client': 'cli', 'x-explode': '1' } });
    assert.equal(res.status, 500);
    assert.equal(res.json().error, 'internal_error');
    assert.ok(logs.some((l) => l.request_id === res.headers['x-request-id'] && l.phase === 'throwing' && l.hook === 'requestFilter'));
    assert.match(await gateway.metrics.metrics(), /tollgate_phase_errors_total\{phase="throwing",hook="requestFilter"\} 1/);
    assert.equal((await request(`${url}/tenant/x`, { headers: { 'x-api-client': 'cli' } })).status, 200);
  });

  test('a reload to a plugin that cannot be built fails, names the module, and changes nothing', async () => {
    writeFileSync(file, configText(backend.port, '      - module: ./plugins/broken.js'));
    const outcome = await gateway.reload();
    assert.equal(outcome.result, 'error');
    assert.match(outcome.errors.join('\n'), /routes\[0\]\.plugins\[0\]\.module: plugin ".*plugins\/broken\.js": its factory failed: cannot reach the tenant database/);
    assert.equal((await request(`${url}/tenant/x`)).status, 401, 'the old plugins keep serving');
    writeFileSync(file, configText(backend.port, `      - module: ./plugins/tenant.js\n        options: { tenant: globex }`));
    assert.equal((await gateway.reload()).result, 'ok');
    const res = await request(`${url}/tenant/x`);
    assert.equal(res.json<{ headers: Record<string, string> }>().headers['x-tenant'], 'globex');
  });
});

describe('plugins that cannot be used are config errors', () => {
  const cases: [string, string, RegExp][] = [
    ['missing file', '      - module: ./plugins/missing.js', /plugins\/missing\.js": cannot load it: file not found/],
    ['factory throws', '      - module: ./plugins/broken.js', /plugins\/broken\.js": its factory failed: cannot reach the tenant database/],
    ['no default export', '      - module: ./plugins/nothing.js', /has no default export that is a function/],
    ['bad options', '      - module: ./plugins/tenant.js\n        options: { tenant: 7 }', /options\.tenant must be a string/],
    ['a name nobody registered', '      - module: tenant-plugin', /"tenant-plugin": is not a file path .* and no plugin of that name is registered/],
  ];
  for (const [what, plugins, message] of cases) {
    test(`${what}: tollgate --check exits 2 naming the module with its line`, async () => {
      const file = writeConfig(configText(1, plugins));
      writePlugins(file);
      const run = await runCli(['--check', '--config', file]);
      assert.equal(run.code, 2, run.stderr);
      assert.match(run.stderr, message);
      assert.match(run.stderr, new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:13:17 routes\\[0\\]\\.plugins\\[0\\]\\.module: `));
      assert.match(run.stderr, /is invalid/);
      await assert.rejects(createGateway({ configFile: file, logger: pino({ level: 'silent' }) }), message);
    });
  }

  test('a misspelt key of a plugin entry is refused by the schema', async () => {
    const file = writeConfig(configText(1, '      - modul: ./plugins/tenant.js'));
    const run = await runCli(['--check', '--config', file]);
    assert.equal(run.code, 2, run.stderr);
    assert.match(run.stderr, /routes\[0\]\.plugins\[0\]\.modul: unknown key, did you mean module\?/);
  });

  test('--check runs the factories of good plugins and passes', async () => {
    const file = writeConfig(configText(1, GOOD));
    writePlugins(file);
    const run = await runCli(['--check', '--config', file]);
    assert.equal(run.code, 0, run.stderr);
  });
});

describe('the binary with plugins', () => {
  for (const workers of [1, 2]) test(`serves a plugin from the config without a hand-written main (workers: ${workers})`, async () => {
    const backend = await startBackend('app1');
    const file = writeConfig(configText(backend.port, GOOD).replace('listen_port: 0,', `workers: ${workers}, listen_port: 0,`));
    writePlugins(file);
    const child = startCli(['--config', file]);
    try {
      const [, port] = await waitForOutput(child, /listening on 127\.0\.0\.1:(\d+)/);
      const res = await request(`http://127.0.0.1:${port}/tenant/x`, { headers: { 'x-api-client': 'cli' } });
      assert.equal(res.json<{ headers: Record<string, string> }>().headers['x-tenant'], 'acme');
      assert.equal((await request(`http://127.0.0.1:${port}/tenant/x`, { headers: { 'x-api-client': 'cli', 'x-explode': '1' } })).status, 500);
      assert.equal((await request(`http://127.0.0.1:${port}/plain/x`)).status, 200);
    } finally {
      child.kill('SIGTERM');
      await new Promise((resolve) => child.once('exit', resolve));
      await backend.close();
    }
  });
});
