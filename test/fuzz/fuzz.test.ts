/**
 * Seeded property tests run by `npm test`: mutated HTTP/1.1 requests over raw sockets through an
 * in-process Tollgate (auth everywhere but under /public, credentials forwarded) in front of two strict
 * upstreams, and random paths through the normalizer. The long run is `npm run fuzz` (test/fuzz/fuzz.ts).
 * A failure prints fast-check's seed and shrunk case; the seed is fixed so every run sends the same cases.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { pino } from 'pino';
import { createProxy, type Proxy } from '../../src/app.js';
import { configSchema } from '../../src/config/schema.js';
import { caseArb, pathArb, show, targetArb } from './cases.js';
import { checkTollgateCase, fuzzConfig, sendCase, stillAnswers, tollgateRules } from './harness.js';
import { normalizerProblems } from './normalizer-properties.js';
import { startStrictUpstream, type StrictUpstream } from './strict-upstream.js';

const SEED = 20261203;
const TIMEOUT_MS = 5000;

describe('fuzz: the normalizer', () => {
  test('random paths keep every property and agree with RFC 3986 remove_dot_segments (20,000 cases)', () => {
    fc.assert(
      fc.property(fc.oneof(pathArb, targetArb), (target) => {
        assert.deepEqual(normalizerProblems(target), []);
      }),
      { seed: SEED, numRuns: 20_000 },
    );
  });
});

describe('fuzz: mutated requests through Tollgate', () => {
  let protectedUpstream: StrictUpstream;
  let publicUpstream: StrictUpstream;
  let proxy: Proxy;
  let port: number;
  const crashes: unknown[] = [];
  const onCrash = (err: unknown): void => {
    crashes.push(err);
  };

  before(async () => {
    process.on('uncaughtException', onCrash);
    process.on('unhandledRejection', onCrash);
    protectedUpstream = await startStrictUpstream('protected', tollgateRules('protected'));
    publicUpstream = await startStrictUpstream('public', tollgateRules('public'));
    proxy = createProxy(configSchema.parse(fuzzConfig(protectedUpstream.port, publicUpstream.port)), { logger: pino({ level: 'silent' }) });
    port = (await proxy.listen()).port;
  });
  after(async () => {
    process.off('uncaughtException', onCrash);
    process.off('unhandledRejection', onCrash);
    // Upstreams first: a proxy closing waits for its upstream requests, and some cases leave one waiting
    // for a body that will never come (until response_timeout_ms, 30 s).
    await protectedUpstream.close();
    await publicUpstream.close();
    await proxy.close();
  });

  test('2,000 cases: each ends in time, answers parse strictly, upstreams get only well-formed, authorized, normalized requests', async () => {
    await fc.assert(
      fc.asyncProperty(caseArb, async (c) => {
        const outcome = await sendCase(port, c.text, TIMEOUT_MS);
        const findings = [...protectedUpstream.take().findings, ...publicUpstream.take().findings];
        const checked = checkTollgateCase(c.text, outcome, findings, TIMEOUT_MS);
        assert.deepEqual(checked.problems, [], `case ${show(c)}`);
      }),
      { seed: SEED, numRuns: 2_000 },
    );
    assert.deepEqual(crashes, [], 'no uncaught exception or unhandled rejection');
    assert.ok(await stillAnswers(port), 'the proxy still answers /health');
    assert.ok(protectedUpstream.requests > 100 && publicUpstream.requests > 20, `enough cases reached the upstreams (${protectedUpstream.requests}, ${publicUpstream.requests})`);
  });
});
