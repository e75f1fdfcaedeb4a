#!/usr/bin/env node
// A flood of wrong Basic passwords against bcrypt users, and what it does to good requests.
//
// Tollgate (dist/cli.js, pinned to CPU 0) runs Basic auth with bcrypt users (cost 10) and the default
// password_verification (1 verification at once, a queue of 1,000, cached verified credentials). This
// script (CPU 1) holds a backend, a good client that sends one request at a time with a cached user's
// credentials, and, in the flood phase, FLOOD requests with wrong passwords sent CONCURRENCY at a time.
// It reports the good client's latency (p50, p99, max) without and with the flood, the flood's own
// duration and statuses, and the latency of one good login (not cached) made in the middle of the flood.
//
//   npm run build && node bench/auth-flood.mjs [--flood 1000] [--concurrency 50] [--concurrent-verifications 2]
import { hashSync } from '@node-rs/bcrypt';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { ROOT, freePorts, launch, numberOption } from './common.mjs';

const FLOOD = numberOption('--flood', 1000);
const CONCURRENCY = numberOption('--concurrency', 50);
const VERIFICATIONS = numberOption('--concurrent-verifications', 1);
const BASELINE_MS = 3000;

const basic = (user, password) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

function get(port, authorization, agent) {
  return new Promise((resolve) => {
    const started = performance.now();
    const req = http.get({ host: '127.0.0.1', port, path: '/', headers: { authorization }, agent }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode, ms: performance.now() - started }));
    });
    req.on('error', () => resolve({ status: 0, ms: performance.now() - started }));
  });
}

function percentile(sorted, p) {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function summary(latencies) {
  const s = [...latencies].sort((a, b) => a - b);
  return { n: s.length, p50: percentile(s, 50), p99: percentile(s, 99), max: s[s.length - 1] };
}

/** Good requests one at a time, until `done()` says stop; their latencies. */
async function goodClient(port, agent, done) {
  const out = [];
  while (!done()) {
    const r = await get(port, basic('good', 'good-password'), agent);
    if (r.status !== 200) throw new Error(`good request answered ${r.status}`);
    out.push(r.ms);
  }
  return out;
}

async function main() {
  const [proxyPort, backendPort] = await freePorts(2);
  const backend = http.createServer((_req, res) => res.end('ok')).listen(backendPort, '127.0.0.1');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-auth-flood-'));
  const users = ['good', 'fresh', 'victim'].map((u) => `    - { username: ${u}, password_hash: "${hashSync(`${u}-password`, 10)}" }`).join('\n');
  const config = path.join(tmp, 'proxy.yaml');
  fs.writeFileSync(
    config,
    `server: { listen_port: ${proxyPort}, listen_address: 127.0.0.1 }
load_balancing: { upstreams: [{ name: b, address: 127.0.0.1, port: ${backendPort} }], health_check: { active: { enabled: false } } }
logging: { level: warn }
admin: { enabled: false }
middleware:
  auth:
    enabled: true
    auth_type: basic
    password_verification: { concurrency: ${VERIFICATIONS} }
    users:
${users}
`,
  );
  const cpus = os.availableParallelism();
  const proxy = launch(cpus > 1 ? 'taskset' : process.execPath, cpus > 1 ? ['-c', '0', process.execPath, 'dist/cli.js', '--config', config] : ['dist/cli.js', '--config', config], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (cpus > 1) execFileSync('taskset', ['-p', '-c', '1', String(process.pid)], { stdio: 'ignore' });
  for (let i = 0; ; i++) {
    if ((await get(proxyPort, basic('good', 'good-password'), false)).status === 200) break;
    if (i > 100) throw new Error('the proxy did not start');
    await new Promise((r) => setTimeout(r, 100));
  }
  const goodAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });

  // Baseline: good requests alone (credentials cached after the first).
  const stopAt = performance.now() + BASELINE_MS;
  const baseline = summary(await goodClient(proxyPort, goodAgent, () => performance.now() > stopAt));

  // Flood: FLOOD wrong passwords, CONCURRENCY at a time, while the good client goes on.
  const floodAgent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  const statuses = new Map();
  let floodDone = false;
  const floodStart = performance.now();
  const flood = Promise.all(
    Array.from({ length: FLOOD }, (_, i) =>
      get(proxyPort, basic('victim', `wrong-${i}`), floodAgent).then((r) => statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1)),
    ),
  ).then(() => {
    floodDone = true;
  });
  const during = goodClient(proxyPort, goodAgent, () => floodDone);
  // One good login that is not cached yet, a second into the flood: it waits its turn in the queue.
  await new Promise((r) => setTimeout(r, 1000));
  const fresh = await get(proxyPort, basic('fresh', 'fresh-password'), false);
  await flood;
  const floodMs = performance.now() - floodStart;
  const withFlood = summary(await during);

  const fmt = (s) => `n=${s.n} p50=${s.p50.toFixed(2)} ms p99=${s.p99.toFixed(2)} ms max=${s.max.toFixed(2)} ms`;
  console.log(`concurrent verifications: ${VERIFICATIONS}; flood: ${FLOOD} wrong passwords, ${CONCURRENCY} at a time; CPUs: ${cpus}`);
  console.log(`good requests, no flood:   ${fmt(baseline)}`);
  console.log(`good requests, flood:      ${fmt(withFlood)}`);
  console.log(`added by the flood:        p50 +${(withFlood.p50 - baseline.p50).toFixed(2)} ms, p99 +${(withFlood.p99 - baseline.p99).toFixed(2)} ms`);
  console.log(`flood: ${(floodMs / 1000).toFixed(1)} s (${((FLOOD / floodMs) * 1000).toFixed(0)} wrong passwords/s), statuses ${JSON.stringify(Object.fromEntries(statuses))}`);
  console.log(`a good login not yet cached, sent 1 s into the flood: ${fresh.status} in ${fresh.ms.toFixed(0)} ms`);
  goodAgent.destroy();
  floodAgent.destroy();
  backend.close();
  proxy.kill('SIGTERM');
  fs.rmSync(tmp, { recursive: true, force: true });
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
