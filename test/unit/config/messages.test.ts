import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { ConfigError, type ConfigProblem } from '../../../src/config/errors.js';
import { loadConfigFile, parseConfig } from '../../../src/config/load.js';
import { closestKey, editDistance, knownKeys } from '../../../src/config/messages.js';
import { configSchema } from '../../../src/config/schema.js';

const EXAMPLE = fileURLToPath(new URL('../../../config/routes.example.yaml', import.meta.url));
const MINIMAL = 'load_balancing:\n  upstreams:\n    - name: a\n      address: 127.0.0.1\n      port: 3000\n';

function problemsOf(source: string): ConfigProblem[] {
  try {
    parseConfig(source, 'test.yaml', {});
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.problems;
  }
  assert.fail(`expected the config to be rejected:\n${source}`);
}

/** zod's own wording (4.x): none of it may reach a user. */
const ZOD_WORDING = /Invalid (input|option|string|key|element)|expected .+, received|Too (small|big)|Unrecognized key|must match pattern|expected one of/;

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Every path in a value, with the value there (containers included). */
function* everyPath(value: Json, path: (string | number)[] = []): Generator<[(string | number)[], Json]> {
  if (path.length > 0) yield [path, value];
  if (Array.isArray(value)) for (let i = 0; i < value.length; i++) yield* everyPath(value[i] as Json, [...path, i]);
  else if (value !== null && typeof value === 'object') for (const [k, v] of Object.entries(value)) yield* everyPath(v, [...path, k]);
}

function withValue(base: Json, path: (string | number)[], value: Json): Json {
  const copy = structuredClone(base) as Record<string | number, Json>;
  let parent = copy;
  for (const key of path.slice(0, -1)) parent = parent[key] as Record<string | number, Json>;
  parent[path[path.length - 1] as string | number] = value;
  return copy;
}

/** A value of another kind than `value`: what a typo or a wrong guess puts there. */
function wrongKind(value: Json): Json {
  if (typeof value === 'boolean') return 'yes';
  if (typeof value === 'number') return 'many';
  if (typeof value === 'string') return [1];
  if (Array.isArray(value)) return 'several';
  return 5;
}

describe('validation messages are in Tollgate\'s words', () => {
  test('enabled: yes', () => {
    assert.deepEqual(problemsOf(`${MINIMAL}middleware:\n  auth:\n    enabled: yes\n`), [
      { line: 8, col: 14, path: 'middleware.auth.enabled', message: 'must be true or false, got "yes"' },
    ]);
  });

  test('numbers below a minimum, empty strings, lists and mappings of the wrong kind', () => {
    assert.deepEqual(problemsOf(`load_balancing:\n  upstreams: [{name: a, address: 127.0.0.1, port: 3000}]\n  retries: {min_retries_per_window: -1}\n  hash_key: {source: header, name: ""}\n`), [
      { line: 3, col: 37, path: 'load_balancing.retries.min_retries_per_window', message: 'must be at least 0, got -1' },
      { line: 4, col: 36, path: 'load_balancing.hash_key.name', message: 'must not be empty, got ""' },
    ]);
    assert.deepEqual(problemsOf(`${MINIMAL}server:\n  trusted_proxies: 10.0.0.0/8\n`), [{ line: 7, col: 20, path: 'server.trusted_proxies', message: 'must be a list, got "10.0.0.0/8"' }]);
    assert.deepEqual(problemsOf(`${MINIMAL}logging: debug\n`), [{ line: 6, col: 10, path: 'logging', message: 'must be a mapping (key: value), got "debug"' }]);
  });

  test('a bad name used as a key is reported at the key', () => {
    assert.deepEqual(
      problemsOf(`${MINIMAL}routes:\n  - name: r\n    service: default\n    request_headers:\n      set: {"Bad Header": x}\n`),
      [{ line: 10, col: 13, path: 'routes[0].request_headers.set.Bad Header', message: 'must be a valid header name, got key "Bad Header"' }],
    );
  });

  for (const [name, base] of [
    ['every key of the defaults', () => configSchema.parse({ load_balancing: { upstreams: [{ name: 'a', address: '127.0.0.1', port: 3000 }] } })],
    ['every key of config/routes.example.yaml', () => loadConfigFile(EXAMPLE, { API_KEY: 'k-123' })],
  ] as const) {
    test(`${name}, given a value of the wrong kind, is refused in Tollgate's words`, () => {
      const config = JSON.parse(JSON.stringify(base())) as Json;
      const paths = [...everyPath(config)];
      const check = (problems: ConfigProblem[]): void => {
        for (const problem of problems) {
          assert.doesNotMatch(problem.message, ZOD_WORDING, `${problem.path}: ${problem.message}`);
          assert.match(problem.message, /^[a-z"]/, `${problem.path}: ${problem.message}`);
        }
      };
      // Every scalar wrong at once (one parse: parsing takes milliseconds), then each list and mapping alone.
      let allWrong = config;
      for (const [path, value] of paths) if (value === null || typeof value !== 'object') allWrong = withValue(allWrong, path, wrongKind(value));
      const problems = problemsOf(stringify(allWrong));
      assert.ok(problems.length > 40, `${problems.length} problems`);
      check(problems);
      for (const [path, value] of paths) if (value !== null && typeof value === 'object') check(problemsOf(stringify(withValue(config, path, wrongKind(value)))));
    });
  }
});

describe('did you mean', () => {
  test('edit distance counts a swap of neighbours as one edit', () => {
    assert.equal(editDistance('weight', 'weight'), 0);
    assert.equal(editDistance('wieght', 'weight'), 1);
    assert.equal(editDistance('lisen_port', 'listen_port'), 1);
    assert.equal(editDistance('load_balancer', 'load_balancing'), 3);
    assert.equal(editDistance('', 'abc'), 3);
  });

  test('the nearest known key within a third of the length, ignoring case; none when nothing is near', () => {
    const server = knownKeys(configSchema, ['server'], {});
    assert.equal(closestKey('listen_prot', server), 'listen_port');
    assert.equal(closestKey('Listen_Port', server), 'listen_port');
    assert.equal(closestKey('colour', server), undefined);
    assert.equal(closestKey('load_balancer', knownKeys(configSchema, [], {})), 'load_balancing');
  });

  test('the keys at a path come from the schema, through lists, maps and unions', () => {
    assert.deepEqual(knownKeys(configSchema, ['load_balancing', 'upstreams', 0], {}), ['name', 'address', 'port', 'weight', 'tls', 'protocol']);
    assert.ok(knownKeys(configSchema, ['services', 'api', 'health_check', 'active'], {}).includes('interval_ms'));
    assert.deepEqual(knownKeys(configSchema, ['middleware', 'rate_limit', 'store'], { middleware: { rate_limit: { store: { type: 'memory' } } } }), ['type', 'timeout_ms', 'on_error']);
    assert.ok(knownKeys(configSchema, ['middleware', 'rate_limit', 'store'], { middleware: { rate_limit: { store: { type: 'redis' } } } }).includes('sentinel'));
  });

  test('in messages: unknown keys name the key they were probably meant to be', () => {
    assert.deepEqual(problemsOf(`load_balancing:\n  upstreams: [{name: a, address: 127.0.0.1, port: 3000}]\n  health_check:\n    active: {intervall_ms: 100}\n`), [
      { line: 4, col: 14, path: 'load_balancing.health_check.active.intervall_ms', message: 'unknown key, did you mean interval_ms?' },
    ]);
    // A memory store has no url: a Redis key is not suggested for it.
    assert.deepEqual(problemsOf(`${MINIMAL}middleware:\n  rate_limit:\n    store: {type: memory, url: "redis://r"}\n`), [
      { line: 8, col: 27, path: 'middleware.rate_limit.store.url', message: 'unknown key' },
    ]);
  });
});

describe('several problems', () => {
  test('are listed by line, whichever check found them', () => {
    const source = `load_balancing:\n  upstreams:\n    - {name: a, address: "\${UNSET_HOST}", port: 3000}\n  strategy: fastest\nserver:\n  listen_port: 70000\n  colour: blue\n`;
    assert.deepEqual(
      problemsOf(source).map((p) => `${p.line}:${p.col} ${p.path}`),
      ['3:26 load_balancing.upstreams[0].address', '4:13 load_balancing.strategy', '6:16 server.listen_port', '7:3 server.colour'],
    );
  });
});
