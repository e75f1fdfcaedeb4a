/**
 * The published package, as a user gets it: `npm pack` of the built tree holds only dist/, ui/, the README,
 * the licence and the docs the README links; a project in a temporary folder installs the tarball,
 * type-checks a phase file against the published types (a wrong hook signature and a deep import do not
 * compile), and runs it against a real upstream.
 *
 * Installing: `npm install --offline <tarball>` needs the registry's metadata of every dependency in the
 * npm cache, which a machine that installed with `npm ci` does not have, so the tarball is unpacked into
 * the project's node_modules and its dependencies are this repository's node_modules (a symlink). What is
 * tested is the tarball's contents, its `exports` and its types.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ROOT } from '../helpers/cli.js';

const TSC = join(ROOT, 'node_modules/typescript/bin/tsc');

const GOOD = `
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createGateway, definePhases, ProxyError, type Phases } from 'tollgate';

// A phase with its own typed context.
const stamp = definePhases({
  name: 'stamp',
  newContext: () => ({ requests: 0, tenant: '' }),
  requestFilter(session, ctx) {
    ctx.requests++;
    ctx.tenant = session.requestHeader('x-tenant') ?? 'none';
    if (ctx.tenant === 'blocked') return session.refuse('forbidden');
    session.upstreamHeaders.set('X-Tenant', ctx.tenant);
    return undefined;
  },
  responseFilter(session, ctx) {
    session.responseHeaders.set('X-Stamp', \`\${session.route.name}:\${ctx.tenant}:\${ctx.requests}\`);
  },
});
const failures: Phases = {
  failToProxy(_session, _ctx, error) {
    return error.code === 'forbidden' ? new ProxyError('not_found') : undefined;
  },
};

const upstream = createServer((req, res) => res.end(String(req.headers['x-tenant'])));
await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
const gateway = await createGateway({
  config: {
    server: { listen_port: 0, listen_address: '127.0.0.1' },
    admin: { enabled: false },
    logging: { level: 'silent' },
    load_balancing: { upstreams: [{ name: 'u1', address: '127.0.0.1', port: (upstream.address() as AddressInfo).port }] },
  },
  phases: [stamp, failures],
});
const { port } = await gateway.listen();
const ok = await fetch(\`http://127.0.0.1:\${port}/\`, { headers: { 'x-tenant': 'acme' } });
const blocked = await fetch(\`http://127.0.0.1:\${port}/\`, { headers: { 'x-tenant': 'blocked' } });
console.log(JSON.stringify({ status: ok.status, body: await ok.text(), stamp: ok.headers.get('x-stamp'), blocked: blocked.status }));
await gateway.close();
upstream.close();
`;

// Pre-API shape: (ctx, headers) instead of (session, ctx), and a context the phase does not make.
const WRONG_SIGNATURE = `
import { definePhases } from 'tollgate';
export const wrong = definePhases({
  newContext: () => ({ count: 0 }),
  responseFilter(ctx: { count: string }, headers: string[]) {
    headers.push('x-count', ctx.count);
  },
});
`;

const DEEP_IMPORT = `
import { createProxy } from 'tollgate/dist/app.js';
export const internal = createProxy;
`;

const TSCONFIG = {
  compilerOptions: {
    target: 'ES2022',
    module: 'NodeNext',
    moduleResolution: 'NodeNext',
    strict: true,
    exactOptionalPropertyTypes: true,
    noUncheckedIndexedAccess: true,
    types: ['node'],
    typeRoots: [join(ROOT, 'node_modules/@types')],
    outDir: 'out',
    skipLibCheck: true,
  },
};

describe('the npm package', () => {
  let dir: string;
  let files: string[];

  before(() => {
    assert.ok(existsSync(join(ROOT, 'dist/index.d.ts')), 'dist/ is built (npm run build)');
    dir = mkdtempSync(join(tmpdir(), 'tollgate-pack-'));
    // --ignore-scripts: `prepare` would build again; the tree under test is the one built already.
    const packed = JSON.parse(execFileSync('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], { cwd: ROOT, encoding: 'utf8' })) as { filename: string; files: { path: string }[] }[];
    const pack = packed[0] as { filename: string; files: { path: string }[] };
    files = pack.files.map((f) => f.path);
    const project = join(dir, 'project');
    mkdirSync(join(project, 'node_modules'), { recursive: true });
    execFileSync('tar', ['-xzf', join(dir, pack.filename), '-C', dir]);
    renameSync(join(dir, 'package'), join(project, 'node_modules/tollgate'));
    symlinkSync(join(ROOT, 'node_modules'), join(project, 'node_modules/tollgate/node_modules'), 'dir');
    writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'project', private: true, type: 'module' }));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('holds only dist/, ui/, the README, the licence and docs the README links', () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    for (const file of files) {
      if (file === 'package.json' || file === 'README.md' || file === 'LICENSE') continue;
      if (file.startsWith('dist/')) {
        assert.ok(!file.endsWith('.map'), `${file}: source maps point at src/, which is not published`);
        continue;
      }
      if (file.startsWith('ui/')) continue;
      assert.ok(file.startsWith('docs/') && readme.includes(`](${file}`), `${file} is not expected in the package`);
    }
    for (const needed of ['dist/index.js', 'dist/index.d.ts', 'dist/cli.js', 'LICENSE', 'README.md', 'docs/library.md']) assert.ok(files.includes(needed), `${needed} is published`);
  });

  test('a phase file type-checks against the published types and runs', () => {
    const project = join(dir, 'project');
    writeFileSync(join(project, 'main.ts'), GOOD);
    writeFileSync(join(project, 'tsconfig.json'), JSON.stringify({ ...TSCONFIG, files: ['main.ts'] }));
    const check = spawnSync(process.execPath, [TSC, '-p', '.', '--noEmit'], { cwd: project, encoding: 'utf8' });
    assert.equal(check.status, 0, check.stdout + check.stderr);
    const build = spawnSync(process.execPath, [TSC, '-p', '.'], { cwd: project, encoding: 'utf8' });
    assert.equal(build.status, 0, build.stdout + build.stderr);
    const run = spawnSync(process.execPath, ['out/main.js'], { cwd: project, encoding: 'utf8', timeout: 30_000 });
    assert.equal(run.status, 0, run.stderr);
    assert.deepEqual(JSON.parse(run.stdout.trim().split('\n').at(-1) as string), { status: 200, body: 'acme', stamp: 'default:acme:1', blocked: 404 });
  });

  test('a wrong hook signature does not compile', () => {
    const project = join(dir, 'project');
    writeFileSync(join(project, 'wrong.ts'), WRONG_SIGNATURE);
    writeFileSync(join(project, 'tsconfig.wrong.json'), JSON.stringify({ ...TSCONFIG, files: ['wrong.ts'] }));
    const check = spawnSync(process.execPath, [TSC, '-p', 'tsconfig.wrong.json', '--noEmit'], { cwd: project, encoding: 'utf8' });
    assert.notEqual(check.status, 0);
    assert.match(check.stdout, /wrong\.ts\(\d+,\d+\): error TS\d+/);
  });

  test('internals are not exported: a deep import fails to compile and to load', () => {
    const project = join(dir, 'project');
    writeFileSync(join(project, 'deep.ts'), DEEP_IMPORT);
    writeFileSync(join(project, 'tsconfig.deep.json'), JSON.stringify({ ...TSCONFIG, files: ['deep.ts'] }));
    const check = spawnSync(process.execPath, [TSC, '-p', 'tsconfig.deep.json', '--noEmit'], { cwd: project, encoding: 'utf8' });
    assert.notEqual(check.status, 0);
    assert.match(check.stdout, /deep\.ts\(2,\d+\): error TS2307/);
    const run = spawnSync(process.execPath, ['--input-type=module', '-e', "await import('tollgate/dist/app.js')"], { cwd: project, encoding: 'utf8' });
    assert.match(run.stderr, /ERR_PACKAGE_PATH_NOT_EXPORTED/);
  });
});
