/**
 * The long fuzz run: `npm run fuzz -- --runs 1000000 --seed 42 [--concurrency 8] [--normalizer-runs N]`.
 * With `--nginx`, the differential run instead (differential.ts): the same cases through Tollgate and nginx
 * (`--nginx-binary`, default /usr/sbin/nginx), `--concurrency` lanes (default 2), disagreements listed
 * (and each written to `--dump FILE` as a JSON line).
 * Tollgate runs as a child process (dist/cli.js, so build first), so a crash shows as its exit; after every
 * batch of 1,000 cases it must still answer /health. Cases are the same as the npm test's, from
 * fast-check with the printed seed; batch b uses seed + b, so `--from-batch b --runs 1000 --concurrency 1`
 * replays one batch with exact attribution of upstream findings.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import fc from 'fast-check';
import { caseArb, pathArb, show, targetArb } from './cases.js';
import { checkTollgateCase, fuzzConfig, sendCase, stillAnswers, tollgateRules } from './harness.js';
import { runDifferential } from './differential.js';
import { normalizerProblems } from './normalizer-properties.js';
import { startStrictUpstream } from './strict-upstream.js';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '1000000' },
    seed: { type: 'string' },
    concurrency: { type: 'string' },
    nginx: { type: 'boolean', default: false },
    'nginx-binary': { type: 'string', default: '/usr/sbin/nginx' },
    dump: { type: 'string' },
    'normalizer-runs': { type: 'string', default: '0' },
    'from-batch': { type: 'string', default: '0' },
    timeout: { type: 'string', default: '5000' },
  },
});
const runs = Number(values.runs);
const seed = values.seed === undefined ? Date.now() % 2 ** 31 : Number(values.seed);
const concurrency = Number(values.concurrency ?? (values.nginx ? 2 : 8));
const timeoutMs = Number(values.timeout);
if (values.nginx) {
  const failures = await runDifferential({ runs, seed, concurrency, timeoutMs, fromBatch: Number(values['from-batch']), nginx: values['nginx-binary'], dump: values.dump });
  process.exit(failures > 0 ? 1 : 0);
}
const BATCH = 1000;
console.log(`fuzz: seed ${seed}, ${runs} raw-socket cases, concurrency ${concurrency}, normalizer cases ${values['normalizer-runs']}`);

let failures = 0;
function fail(what: string): void {
  failures++;
  if (failures <= 30) console.log(`FAIL ${what}`);
}

// The normalizer alone, at volume.
const normalizerRuns = Number(values['normalizer-runs']);
for (let done = 0, b = 0; done < normalizerRuns; done += 10_000, b++) {
  for (const target of fc.sample(fc.oneof(pathArb, targetArb), { seed: seed + b, numRuns: Math.min(10_000, normalizerRuns - done) })) {
    for (const problem of normalizerProblems(target)) fail(`normalizer: ${problem}`);
  }
}
if (normalizerRuns > 0) console.log(`normalizer: ${normalizerRuns} cases, ${failures} failures`);

const protectedUpstream = await startStrictUpstream('protected', tollgateRules('protected'));
const publicUpstream = await startStrictUpstream('public', tollgateRules('public'));
const free = createServer().listen(0, '127.0.0.1');
await once(free, 'listening');
const port = (free.address() as { port: number }).port;
free.close();
const dir = mkdtempSync(join(tmpdir(), 'tollgate-fuzz-'));
const config = fuzzConfig(protectedUpstream.port, publicUpstream.port, port);
writeFileSync(join(dir, 'fuzz.yaml'), JSON.stringify({ ...config, logging: { level: 'error' } }));
const child = spawn(process.execPath, [resolve(import.meta.dirname, '../../dist/cli.js'), '--config', join(dir, 'fuzz.yaml')], { stdio: ['ignore', 'ignore', 'pipe'] });
let childErr = '';
child.stderr.on('data', (c: Buffer) => (childErr += c.toString()));
let exited = false;
child.on('exit', (code, signal) => {
  exited = true;
  if (!stopping) fail(`Tollgate exited (${code ?? signal}): ${childErr.slice(-2000)}`);
});
let stopping = false;
for (let i = 0; i < 100 && !(await stillAnswers(port)); i++) await new Promise((r) => setTimeout(r, 100));

const statuses = new Map<number, number>();
let sent = 0;
const started = Date.now();
const firstBatch = Number(values['from-batch']);
for (let b = firstBatch; sent < runs && !exited; b++) {
  const cases = fc.sample(caseArb, { seed: seed + b, numRuns: Math.min(BATCH, runs - sent) });
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < cases.length) {
      const i = next++;
      const c = cases[i] as (typeof cases)[number];
      const outcome = await sendCase(port, c.text, timeoutMs).catch((err: Error) => {
        fail(`batch ${b} case ${i}: ${err.message}\n  case ${show(c)}`);
        return undefined;
      });
      if (outcome === undefined) continue;
      // With several lanes the upstreams' findings are checked per batch below, not per case.
      const checked = checkTollgateCase(c.text, outcome, concurrency === 1 ? [...protectedUpstream.take().findings, ...publicUpstream.take().findings] : [], timeoutMs);
      for (const r of checked.responses) statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
      for (const problem of checked.problems) fail(`batch ${b} case ${i}: ${problem}\n  case ${show(c)}`);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, lane));
  sent += cases.length;
  for (const f of [...protectedUpstream.take().findings, ...publicUpstream.take().findings]) fail(`batch ${b}: ${f.role} upstream: ${f.problem}\n  as received: ${JSON.stringify(f.detail)}`);
  if (!(await stillAnswers(port))) fail(`batch ${b}: /health did not answer after the batch`);
  if ((b - firstBatch) % 20 === 19 || sent >= runs) {
    const s = (Date.now() - started) / 1000;
    console.log(`${sent} cases in ${s.toFixed(0)} s (${(sent / s).toFixed(0)}/s), upstream requests ${protectedUpstream.requests + publicUpstream.requests}, failures ${failures}`);
  }
}

stopping = true;
child.kill('SIGTERM');
await protectedUpstream.close();
await publicUpstream.close();
const top = [...statuses].sort((a, b) => b[1] - a[1]).map(([s, n]) => `${s}: ${n}`).join(', ');
console.log(`done: seed ${seed}, ${sent} raw-socket cases (${protectedUpstream.requests} requests reached the protected upstream, ${publicUpstream.requests} the public one), ${normalizerRuns} normalizer cases`);
console.log(`responses by status: ${top}`);
console.log(`failures: ${failures}`);
process.exit(failures > 0 ? 1 : 0);
