import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ConfigError, formatPath, type ConfigProblem } from '../../../src/config/errors.js';
import { loadConfigFile, parseConfig } from '../../../src/config/load.js';
import { addressesOverlap, type Config } from '../../../src/config/schema.js';

const BRIEF = fileURLToPath(new URL('../../fixtures/brief.yaml', import.meta.url));
const PROXY_YAML = fileURLToPath(new URL('../../../config/proxy.yaml', import.meta.url));

/** One valid upstream list, indented under `load_balancing:`. */
const UPSTREAM = '  upstreams:\n    - name: a\n      address: 127.0.0.1\n      port: 3000\n';
const MINIMAL = `load_balancing:\n${UPSTREAM}`;

function parse(source: string, env: NodeJS.ProcessEnv = {}): Config {
  return parseConfig(source, 'test.yaml', env);
}

/** Parses `source`, expects a ConfigError, and returns it. */
function configError(source: string, env: NodeJS.ProcessEnv = {}): ConfigError {
  try {
    parse(source, env);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected the config to be rejected');
}

/** Expects exactly these problems, and the message built from them. */
function assertProblems(source: string, expected: ConfigProblem[], env: NodeJS.ProcessEnv = {}): void {
  const err = configError(source, env);
  assert.deepEqual(err.problems, expected);
  assert.equal(err.message, expected.map((p) => `test.yaml:${p.line}:${p.col} ${p.path}: ${p.message}`).join('\n'));
}

describe('parseConfig: valid configs', () => {
  test("the brief's config parses, with every default filled in", () => {
    const config = parse(readFileSync(BRIEF, 'utf8'));
    assert.deepEqual(config, {
      server: {
        workers: 1,
        listen_port: 8080,
        listen_address: '0.0.0.0',
        max_connections: 1000,
        listen_sockets: 64,
        keepalive_timeout_ms: 75_000,
        shutdown_grace_ms: 30_000,
        trusted_proxies: [],
        health_path: '/health',
        proxy_name: 'tollgate',
        header_timeout_ms: 10_000,
        body_timeout_ms: 30_000,
        max_header_count: 100,
        max_header_bytes: 16_384,
        max_uri_bytes: 8_192,
        max_body_bytes: 10_485_760,
        underscores_in_headers: 'drop',
        encoded_slashes: 'keep',
        http2: true,
        h2c: false,
        http2_limits: { max_concurrent_streams: 100, max_resets_per_second: 100, max_control_frames_per_second: 100, max_overhead_bytes_per_second: 1_048_576, hpack_table_size: 4096, idle_timeout_ms: 75_000, header_timeout_ms: 10_000 },
      },
      load_balancing: {
        strategy: 'round_robin',
        upstreams: [{ name: 'backend1', address: '127.0.0.1', port: 3000, weight: 1 }],
        connect_timeout_ms: 5000,
        response_timeout_ms: 30_000,
        preserve_host: true,
        total_timeout_ms: 0,
        pool: { max_connections: 128, keepalive_timeout_ms: 60_000 },
        health_check: {
          active: {
            enabled: true,
            type: 'tcp',
            interval_ms: 5000,
            timeout_ms: 2000,
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            http: { method: 'GET', path: '/', expected_status: '200-399' },
          },
          passive: { enabled: true, consecutive_failures: 5, include_5xx: false, base_ejection_ms: 10_000, max_ejection_ms: 300_000, max_ejection_percent: 50 },
        },
        retries: { max_retries: 1, budget_percent: 20, min_retries_per_window: 3, min_concurrent_retries: 3 },
        hash_key: { source: 'client_address' },
        slow_start_ms: 0,
        protocol: 'http1',
      },
      middleware: {
        auth: {
          enabled: true,
          auth_type: 'bearer',
          valid_tokens: ['dev-token-123', 'test-token-456'],
          users: [],
          api_key_header: 'X-API-Key',
          forward_credentials: false,
          realm: 'tollgate',
          password_verification: { concurrency: 1, max_queue: 1000, cache_size: 10_000, cache_ttl_ms: 300_000 },
        },
        rate_limit: { enabled: true, key: 'credential', requests_per_minute: 100, burst_size: 10, max_keys: 100_000, store: { type: 'memory', timeout_ms: 100, on_error: 'allow' } },
      },
      logging: { level: 'info', format: 'json' },
      admin: { enabled: true, address: '127.0.0.1', port: 9901 },
      metrics: { enabled: true },
      tracing: { enabled: true, sample_new_traces: true, server_timing: true },
      websocket: { enabled: true, idle_timeout_ms: 300000, max_connections: 10000 },
    });
  });

  test('config/proxy.yaml parses: three upstreams on ports 3000-3002', () => {
    const config = loadConfigFile(PROXY_YAML, {});
    assert.deepEqual(config.load_balancing?.upstreams, [
      { name: 'backend1', address: '127.0.0.1', port: 3000, weight: 1 },
      { name: 'backend2', address: '127.0.0.1', port: 3001, weight: 1 },
      { name: 'backend3', address: '127.0.0.1', port: 3002, weight: 1 },
    ]);
    assert.equal(config.load_balancing?.strategy, 'round_robin');
    assert.equal(config.server.listen_port, 8080);
    assert.deepEqual(config.middleware.auth.valid_tokens, ['dev-token-123', 'test-token-456']);
  });

  test('loadConfigFile reads the same result as parseConfig', () => {
    assert.deepEqual(loadConfigFile(BRIEF, {}), parse(readFileSync(BRIEF, 'utf8')));
  });

  test('only load_balancing.upstreams is required; everything else defaults', () => {
    const config = parse(MINIMAL);
    assert.equal(config.server.listen_port, 8080);
    assert.equal(config.load_balancing?.strategy, 'round_robin');
    assert.equal(config.middleware.auth.enabled, false);
    assert.equal(config.middleware.rate_limit.enabled, false);
    assert.deepEqual(config.load_balancing?.upstreams, [{ name: 'a', address: '127.0.0.1', port: 3000, weight: 1 }]);
  });

  test('IPv6 listen addresses are accepted', () => {
    assert.equal(parse(`server:\n  listen_address: "::"\n${MINIMAL}`).server.listen_address, '::');
    assert.equal(parse(`server:\n  listen_address: "::1"\n${MINIMAL}`).server.listen_address, '::1');
    assert.equal(parse(`server:\n  listen_address: "fe80::1:2"\n${MINIMAL}`).server.listen_address, 'fe80::1:2');
  });

  test('a host name is accepted as an upstream address', () => {
    const config = parse('load_balancing:\n  upstreams:\n    - name: api\n      address: api.internal.example\n      port: 443\n    - name: local\n      address: localhost\n      port: 80\n');
    assert.deepEqual(
      config.load_balancing?.upstreams.map((u) => u.address),
      ['api.internal.example', 'localhost'],
    );
  });

  test('IPs and CIDR blocks of both families are accepted as trusted_proxies', () => {
    const list = ['10.0.0.0/8', '192.168.1.1', '0.0.0.0/0', '::1', 'fd00::/8', '::/128'];
    const config = parse(`server:\n  trusted_proxies: ${JSON.stringify(list)}\n${MINIMAL}`);
    assert.deepEqual(config.server.trusted_proxies, list);
  });

  test('basic auth with users is accepted', () => {
    const config = parse(`${MINIMAL}middleware:\n  auth:\n    enabled: true\n    auth_type: basic\n    users:\n      - username: alice\n        password: "s3:cret"\n`);
    assert.deepEqual(config.middleware.auth.users, [{ username: 'alice', password: 's3:cret' }]);
    assert.deepEqual(config.middleware.auth.valid_tokens, []);
    assert.equal(config.middleware.auth.auth_type, 'basic');
  });

  test('auth that is disabled needs no tokens', () => {
    assert.deepEqual(parse(`${MINIMAL}middleware:\n  auth:\n    enabled: false\n`).middleware.auth.valid_tokens, []);
  });
});

describe('parseConfig: ${NAME} substitution', () => {
  test('${NAME} is replaced from the env given', () => {
    const config = parse(
      'server:\n  proxy_name: "${NAME}-${ZONE}"\nload_balancing:\n  upstreams:\n    - name: a\n      address: ${HOST}\n      port: 3000\nmiddleware:\n  auth:\n    enabled: true\n    valid_tokens:\n      - "${TOKEN}"\n      - literal\n',
      { NAME: 'edge', ZONE: 'eu-1', HOST: 'backend.internal', TOKEN: 's3cret' },
    );
    assert.equal(config.server.proxy_name, 'edge-eu-1');
    assert.equal(config.load_balancing?.upstreams[0]?.address, 'backend.internal');
    assert.deepEqual(config.middleware.auth.valid_tokens, ['s3cret', 'literal']);
  });

  test('a substituted value is used as it is: not re-substituted, not parsed as YAML', () => {
    const config = parse(`server:\n  proxy_name: "\${A}"\n${MINIMAL}middleware:\n  auth:\n    enabled: true\n    valid_tokens: ["\${T}"]\n`, {
      A: '${B}',
      B: 'never',
      T: 'a: [b, # c',
    });
    assert.equal(config.server.proxy_name, '${B}');
    assert.deepEqual(config.middleware.auth.valid_tokens, ['a: [b, # c']);
  });

  test('an unset variable is an error at its location', () => {
    assertProblems(
      `${MINIMAL}middleware:\n  auth:\n    enabled: true\n    valid_tokens:\n      - "\${TOKEN_A}"\n      - "\${TOKEN_B}"\n`,
      [{ line: 11, col: 9, path: 'middleware.auth.valid_tokens[1]', message: 'environment variable TOKEN_B is not set' }],
      { TOKEN_A: 'set' },
    );
  });

  test('an unset variable in an upstream address is reported at the address', () => {
    const err = configError('load_balancing:\n  upstreams:\n    - name: a\n      address: ${UPSTREAM_HOST}\n      port: 3000\n');
    assert.deepEqual(err.problems[0], {
      line: 4,
      col: 16,
      path: 'load_balancing.upstreams[0].address',
      message: 'environment variable UPSTREAM_HOST is not set',
    });
  });

  test('the process environment is not read when an env is given', () => {
    const name = 'TOLLGATE_TEST_SURELY_UNSET_VAR';
    assert.throws(() => parse(`server:\n  proxy_name: "\${${name}}"\n${MINIMAL}`), /environment variable TOLLGATE_TEST_SURELY_UNSET_VAR is not set/);
  });

  test('${NAME} in a comment is ignored', () => {
    assert.equal(parse(`# \${NOT_SET}\n${MINIMAL}`).server.listen_port, 8080);
  });

  test(
    '${NAME} works for a numeric key: listen_port: ${PORT} with PORT=9000 gives 9000',
    () => {
      const config = parse(`server:\n  listen_port: \${PORT}\n${MINIMAL}`, { PORT: '9000' });
      assert.equal(config.server.listen_port, 9000);
    },
  );

  test('${NAME} works in flow style, where its braces would otherwise be YAML syntax', () => {
    const config = parse('server: {listen_port: ${PORT}, listen_address: ${ADDR}}\nload_balancing:\n  upstreams: [{name: a, address: ${HOST}, port: ${UP}}]\n', {
      PORT: '8085',
      ADDR: '127.0.0.1',
      HOST: 'api.internal',
      UP: '3000',
    });
    assert.equal(config.server.listen_port, 8085);
    assert.equal(config.server.listen_address, '127.0.0.1');
    assert.deepEqual(config.load_balancing?.upstreams[0], { name: 'a', address: 'api.internal', port: 3000, weight: 1 });
  });

  test('a quoted ${NAME} is read as a number or a boolean where the key takes one', () => {
    const config = parse(
      `server:\n  listen_port: "\${PORT}"\n  workers: '\${WORKERS}'\n${MINIMAL}  preserve_host: "\${PRESERVE}"\nmiddleware:\n  auth: {enabled: "\${AUTH}", valid_tokens: ["\${TOKEN}"]}\n`,
      { PORT: '8085', WORKERS: '4', PRESERVE: 'false', AUTH: 'true', TOKEN: '12345' },
    );
    assert.equal(config.server.listen_port, 8085);
    assert.equal(config.server.workers, 4);
    assert.equal(config.load_balancing?.preserve_host, false);
    assert.equal(config.middleware.auth.enabled, true);
    // A key that takes a string keeps the variable's text, quoted or not.
    assert.deepEqual(config.middleware.auth.valid_tokens, ['12345']);
    assert.deepEqual(parse(`${MINIMAL}middleware:\n  auth:\n    enabled: true\n    valid_tokens: [\${TOKEN}]\n`, { TOKEN: '007' }).middleware.auth.valid_tokens, ['007']);
  });

  test('a value made of several variables is read as a number too, where the key takes one', () => {
    assert.equal(parse(`server:\n  listen_port: \${A}\${B}\n${MINIMAL}`, { A: '80', B: '85' }).server.listen_port, 8085);
  });

  test('an unset variable in flow style is reported at its value, with file:line:col', () => {
    assertProblems('server: {listen_port: ${PORT}}\nload_balancing:\n  upstreams: [{name: a, address: 127.0.0.1, port: 3000}]\n', [
      { line: 1, col: 23, path: 'server.listen_port', message: 'environment variable PORT is not set' },
    ]);
  });

  test('a variable that is not a number where one is wanted is shown with its name', () => {
    assertProblems(`server:\n  listen_port: "\${PORT}"\n${MINIMAL}`, [{ line: 2, col: 16, path: 'server.listen_port', message: 'must be a port number (0-65535), got "eighty" (from ${PORT})' }], {
      PORT: 'eighty',
    });
    assertProblems(`server: {listen_port: \${PORT}}\n${MINIMAL}`, [{ line: 1, col: 23, path: 'server.listen_port', message: 'must be 0-65535, got 70000 (from ${PORT})' }], { PORT: '70000' });
  });

  test('a string from the environment is not shown in a message: it may be a secret', () => {
    assertProblems(`${MINIMAL}admin:\n  token: \${ADMIN_TOKEN}\n`, [{ line: 7, col: 10, path: 'admin.token', message: 'must be at least 16 characters, got ${ADMIN_TOKEN} (value not shown)' }], {
      ADMIN_TOKEN: 'hunter2',
    });
  });

  test('"${" that is not a reference is left alone', () => {
    assert.equal(parse(`server:\n  proxy_name: "a\${b"\n${MINIMAL}`).server.proxy_name, 'a${b');
  });
});

describe('parseConfig: errors name file:line:col and the key path', () => {
  test('a YAML syntax error (tab indentation)', () => {
    assertProblems(`server:\n\tlisten_port: 8080\n${MINIMAL}`, [{ line: 2, col: 1, path: '(yaml)', message: 'Tabs are not allowed as indentation' }]);
  });

  test('a YAML syntax error (nested mapping on one line) points at the value', () => {
    assertProblems(`server:\n  listen_port: 8080: 9090\n${MINIMAL}`, [
      { line: 2, col: 16, path: '(yaml)', message: 'Nested mappings are not allowed in compact mappings' },
    ]);
  });

  test('a duplicate key is a YAML error at the second occurrence', () => {
    assertProblems(`server:\n  listen_port: 8080\n  listen_port: 8081\n${MINIMAL}`, [{ line: 3, col: 3, path: '(yaml)', message: 'Map keys must be unique' }]);
  });

  test('an unknown key points at the key, and names the known key it is nearest to', () => {
    assertProblems(`server:\n  listen_port: 8080\n  lisen_address: 0.0.0.0\n${MINIMAL}`, [{ line: 3, col: 3, path: 'server.lisen_address', message: 'unknown key, did you mean listen_address?' }]);
  });

  test('an unknown key inside an upstream and at the top level', () => {
    assertProblems(`load_balancing:\n${UPSTREAM}      wieght: 2\n`, [{ line: 6, col: 7, path: 'load_balancing.upstreams[0].wieght', message: 'unknown key, did you mean weight?' }]);
    assertProblems(`${MINIMAL}extra: 1\n`, [{ line: 6, col: 1, path: 'extra', message: 'unknown key' }]);
  });

  test('port 70000', () => {
    const source = 'load_balancing:\n  upstreams:\n    - name: a\n      address: 127.0.0.1\n      port: 3000\n    - name: b\n      address: 127.0.0.1\n      port: 70000\n';
    const err = configError(source);
    assert.equal(err.message, 'test.yaml:8:13 load_balancing.upstreams[1].port: must be 1-65535, got 70000');
    assert.equal(err.file, 'test.yaml');
    assert.equal(err.code, 'TOLLGATE_CONFIG_INVALID');
    assert.equal(err.name, 'ConfigError');
  });

  test('a port given as a string is a type error showing the string', () => {
    assertProblems('load_balancing:\n  upstreams:\n    - name: a\n      address: 127.0.0.1\n      port: "3000"\n', [
      { line: 5, col: 13, path: 'load_balancing.upstreams[0].port', message: 'must be a port number (1-65535), got "3000"' },
    ]);
  });

  test('weight outside 1-1000', () => {
    for (const weight of [0, 1001]) {
      assertProblems(`load_balancing:\n${UPSTREAM}      weight: ${weight}\n`, [
        { line: 6, col: 15, path: 'load_balancing.upstreams[0].weight', message: `must be a whole number from 1 to 1000, got ${weight}` },
      ]);
    }
  });

  test('missing upstreams points at the nearest enclosing node', () => {
    assertProblems('server:\n  listen_port: 8080\nload_balancing:\n  strategy: random\n', [{ line: 4, col: 3, path: 'load_balancing.upstreams', message: 'is required' }]);
  });

  test('missing load_balancing points at the document', () => {
    assertProblems('server:\n  listen_port: 8080\n', [{ line: 1, col: 1, path: 'load_balancing', message: 'is required' }]);
  });

  test('an empty file needs load_balancing', () => {
    assertProblems('', [{ line: 1, col: 1, path: 'load_balancing', message: 'is required' }]);
  });

  test('an empty upstreams list', () => {
    assertProblems('load_balancing:\n  upstreams: []\n', [{ line: 2, col: 14, path: 'load_balancing.upstreams', message: 'must list at least one upstream' }]);
  });

  test('upstreams that is not a list', () => {
    assertProblems('load_balancing:\n  upstreams: {}\n', [{ line: 2, col: 14, path: 'load_balancing.upstreams', message: 'must be a list of upstreams' }]);
  });

  test('duplicate upstream names point at the second name', () => {
    assertProblems('load_balancing:\n  upstreams:\n    - name: a\n      address: 127.0.0.1\n      port: 3000\n    - name: a\n      address: 127.0.0.1\n      port: 3001\n', [
      { line: 6, col: 13, path: 'load_balancing.upstreams[1].name', message: 'duplicate upstream name "a"' },
    ]);
  });

  test('an unknown strategy', () => {
    assertProblems(`load_balancing:\n  strategy: fastest\n${UPSTREAM}`, [
      { line: 2, col: 13, path: 'load_balancing.strategy', message: 'must be one of round_robin, random, least_conn, consistent_hash, p2c_ewma, got "fastest"' },
    ]);
  });

  test('a listen address that is neither an IP nor a host name', () => {
    assertProblems(`server:\n  listen_address: "not a host"\n${MINIMAL}`, [{ line: 2, col: 19, path: 'server.listen_address', message: 'must be an IP address or a host name' }]);
  });

  test('an invalid CIDR in trusted_proxies is rejected', () => {
    assertProblems(`server:\n  trusted_proxies: ["10.0.0.0/8", "10.0.0.0/33"]\n${MINIMAL}`, [
      { line: 2, col: 35, path: 'server.trusted_proxies[1]', message: 'must be an IP address or a CIDR block such as 10.0.0.0/8' },
    ]);
  });

  test('every malformed CIDR form is rejected, each at its own line', () => {
    const message = 'must be an IP address or a CIDR block such as 10.0.0.0/8';
    assertProblems(`server:\n  trusted_proxies:\n    - "10.0.0/8"\n    - "::/129"\n    - "10.0.0.0/"\n    - "10.0.0.0/8/8"\n${MINIMAL}`, [
      { line: 3, col: 7, path: 'server.trusted_proxies[0]', message },
      { line: 4, col: 7, path: 'server.trusted_proxies[1]', message },
      { line: 5, col: 7, path: 'server.trusted_proxies[2]', message },
      { line: 6, col: 7, path: 'server.trusted_proxies[3]', message },
    ]);
  });

  test('auth enabled with no tokens is rejected', () => {
    assertProblems(`${MINIMAL}middleware:\n  auth:\n    enabled: true\n`, [{ line: 8, col: 5, path: 'middleware.auth.valid_tokens', message: 'bearer auth needs at least one token' }]);
    assertProblems(`${MINIMAL}middleware:\n  auth:\n    enabled: true\n    auth_type: api_key\n    valid_tokens: []\n`, [
      { line: 10, col: 19, path: 'middleware.auth.valid_tokens', message: 'api_key auth needs at least one token' },
    ]);
  });

  test('basic auth enabled with neither users nor tokens is rejected', () => {
    assertProblems(`${MINIMAL}middleware:\n  auth:\n    enabled: true\n    auth_type: basic\n`, [{ line: 8, col: 5, path: 'middleware.auth.users', message: 'basic auth needs users, users_file or valid_tokens' }]);
  });

  test('problems lists every problem when there are several, in document order', () => {
    const source = 'server:\n  listen_port: -1\n  colour: blue\nload_balancing:\n  strategy: fastest\n  upstreams:\n    - name: a\n      address: "not a host!"\n      port: 70000\n';
    const err = configError(source);
    assert.deepEqual(err.problems, [
      { line: 2, col: 16, path: 'server.listen_port', message: 'must be 0-65535, got -1' },
      { line: 3, col: 3, path: 'server.colour', message: 'unknown key' },
      { line: 5, col: 13, path: 'load_balancing.strategy', message: 'must be one of round_robin, random, least_conn, consistent_hash, p2c_ewma, got "fastest"' },
      { line: 8, col: 16, path: 'load_balancing.upstreams[0].address', message: 'must be an IP address or a host name' },
      { line: 9, col: 13, path: 'load_balancing.upstreams[0].port', message: 'must be 1-65535, got 70000' },
    ]);
    assert.equal(err.message.split('\n').length, 5);
    assert.equal(err.message.split('\n')[4], 'test.yaml:9:13 load_balancing.upstreams[0].port: must be 1-65535, got 70000');
  });

  test('an unset variable and a schema problem are both reported', () => {
    const err = configError(`server:\n  proxy_name: "\${NAME}"\n  listen_port: 70000\n${MINIMAL}`);
    assert.deepEqual(err.problems, [
      { line: 2, col: 15, path: 'server.proxy_name', message: 'environment variable NAME is not set' },
      { line: 3, col: 16, path: 'server.listen_port', message: 'must be 0-65535, got 70000' },
    ]);
  });

  test('a missing file is a ConfigError at 1:1', () => {
    assert.throws(
      () => loadConfigFile('/nonexistent/tollgate.yaml', {}),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.equal(err.message, '/nonexistent/tollgate.yaml:1:1 (root): cannot read config: file not found');
        return true;
      },
    );
  });
});

describe('formatPath', () => {
  test('joins keys with dots and indexes with brackets', () => {
    assert.equal(formatPath(['load_balancing', 'upstreams', 1, 'port']), 'load_balancing.upstreams[1].port');
    assert.equal(formatPath(['server']), 'server');
    assert.equal(formatPath([0, 'a']), '[0].a');
    assert.equal(formatPath([]), '(root)');
  });
});

describe('parseConfig: server.workers and rate_limit.store', () => {
  const store = (lines: string): string => `${MINIMAL}middleware:\n  rate_limit:\n    enabled: true\n    store:\n${lines}`;

  test('workers defaults to 1 and takes auto or a number', () => {
    assert.equal(parse(MINIMAL).server.workers, 1);
    assert.equal(parse(`server:\n  workers: auto\n${MINIMAL}`).server.workers, 'auto');
    assert.equal(parse(`server:\n  workers: 4\n${MINIMAL}`).server.workers, 4);
  });

  test('bad workers values are errors at the value', () => {
    assertProblems(`server:\n  workers: 0\n${MINIMAL}`, [{ line: 2, col: 12, path: 'server.workers', message: 'must be auto or a whole number from 1 to 256, got 0' }]);
    assertProblems(`server:\n  workers: "all"\n${MINIMAL}`, [{ line: 2, col: 12, path: 'server.workers', message: 'must be auto or a whole number from 1 to 256, got "all"' }]);
    assertProblems(`server:\n  workers: 1.5\n${MINIMAL}`, [{ line: 2, col: 12, path: 'server.workers', message: 'must be auto or a whole number from 1 to 256, got 1.5' }]);
  });

  test('max_connections below workers is an error: every worker needs a share', () => {
    assertProblems(`server:\n  workers: 4\n  max_connections: 3\n${MINIMAL}`, [
      { line: 3, col: 20, path: 'server.max_connections', message: 'must be at least server.workers (4): each worker gets a share' },
    ]);
  });

  test('the store defaults to memory', () => {
    assert.deepEqual(parse(MINIMAL).middleware.rate_limit.store, { type: 'memory', timeout_ms: 100, on_error: 'allow' });
  });

  test('a redis store gets its defaults; ${REDIS_URL} is substituted', () => {
    assert.deepEqual(parse(store('      type: redis\n      url: ${REDIS_URL}\n'), { REDIS_URL: 'redis://10.0.0.5:6380/2' }).middleware.rate_limit.store, {
      type: 'redis',
      url: 'redis://10.0.0.5:6380/2',
      key_prefix: 'tollgate:',
      timeout_ms: 100,
      on_error: 'allow',
    });
  });

  test('a memory store takes timeout_ms and on_error (for cluster workers), with the same checks as Redis', () => {
    assert.deepEqual(parse(store('      type: memory\n      timeout_ms: 250\n      on_error: deny\n')).middleware.rate_limit.store, {
      type: 'memory',
      timeout_ms: 250,
      on_error: 'deny',
    });
    assertProblems(store('      type: memory\n      timeout_ms: 0\n      on_error: maybe\n'), [
      { line: 11, col: 19, path: 'middleware.rate_limit.store.timeout_ms', message: 'must be a whole number of milliseconds from 5 to 60000, got 0' },
      { line: 12, col: 17, path: 'middleware.rate_limit.store.on_error', message: 'must be allow or deny, got "maybe"' },
    ]);
  });

  test('cluster and sentinel topologies', () => {
    const cluster = parse(store('      type: redis\n      cluster:\n        nodes: ["redis://a:7000", "redis://b:7000"]\n')).middleware.rate_limit.store;
    assert.deepEqual(cluster.type === 'redis' ? cluster.cluster : undefined, { nodes: ['redis://a:7000', 'redis://b:7000'] });
    const sentinel = parse(store('      type: redis\n      sentinel: { name: mymaster, nodes: ["redis://s1:26379"] }\n')).middleware.rate_limit.store;
    assert.deepEqual(sentinel.type === 'redis' ? sentinel.sentinel : undefined, { name: 'mymaster', nodes: ['redis://s1:26379'], db: 0 });
  });

  test('bad store values are errors at the value, with the key path', () => {
    assertProblems(store('      type: mongo\n'), [{ line: 10, col: 13, path: 'middleware.rate_limit.store.type', message: 'must be memory or redis, got "mongo"' }]);
    assertProblems(store('      type: redis\n      url: "http://127.0.0.1:6379"\n      on_error: maybe\n'), [
      { line: 11, col: 12, path: 'middleware.rate_limit.store.url', message: 'must be a redis:// or rediss:// URL such as redis://127.0.0.1:6379/0' },
      { line: 12, col: 17, path: 'middleware.rate_limit.store.on_error', message: 'must be allow or deny, got "maybe"' },
    ]);
    assertProblems(store('      type: redis\n      url: redis://r\n      timeout_ms: 0\n'), [
      { line: 12, col: 19, path: 'middleware.rate_limit.store.timeout_ms', message: 'must be a whole number of milliseconds from 5 to 60000, got 0' },
    ]);
    assertProblems(store('      type: redis\n'), [{ line: 10, col: 7, path: 'middleware.rate_limit.store.url', message: 'is required (or cluster, or sentinel)' }]);
    assertProblems(store('      type: redis\n      url: redis://r\n      cluster: { nodes: ["redis://c"] }\n'), [
      { line: 12, col: 16, path: 'middleware.rate_limit.store.cluster', message: 'give only one of url, cluster or sentinel' },
    ]);
    assertProblems(store('      type: memory\n      url: redis://r\n'), [{ line: 11, col: 7, path: 'middleware.rate_limit.store.url', message: 'unknown key' }]);
  });
});

describe('parseConfig: durations have sane minimums', () => {
  /** Each duration key: where it goes, its minimum, and what 0 means when 0 is allowed. */
  const keys: { path: string; min: number; off?: string }[] = [
    { path: 'server.keepalive_timeout_ms', min: 100 },
    { path: 'server.header_timeout_ms', min: 1000 },
    { path: 'server.body_timeout_ms', min: 100 },
    { path: 'load_balancing.connect_timeout_ms', min: 100 },
    { path: 'load_balancing.response_timeout_ms', min: 100, off: 'no limit' },
    { path: 'load_balancing.total_timeout_ms', min: 100, off: 'no limit' },
    { path: 'load_balancing.slow_start_ms', min: 100, off: 'off' },
    { path: 'load_balancing.pool.keepalive_timeout_ms', min: 100 },
    { path: 'load_balancing.health_check.active.interval_ms', min: 100 },
    { path: 'load_balancing.health_check.active.timeout_ms', min: 100 },
    { path: 'load_balancing.health_check.passive.base_ejection_ms', min: 100 },
    { path: 'load_balancing.health_check.passive.max_ejection_ms', min: 100 },
  ];

  /** A config with `value` at `path` (flow style, so the line of the value is always 1 or 2). */
  function withDuration(path: string, value: number): string {
    const parts = path.split('.');
    const leaf = parts.pop() as string;
    let inner = `{${leaf}: ${value}}`;
    for (const part of parts.slice(1).reverse()) inner = `{${part}: ${inner}}`;
    if (parts[0] === 'server') return `server: ${inner}\n${MINIMAL}`;
    return `load_balancing: ${inner.slice(0, -1)}, upstreams: [{name: a, address: 127.0.0.1, port: 3000}]}\n`;
  }

  for (const { path, min, off } of keys) {
    test(`${path}: at least ${min}${off === undefined ? '' : `, or 0 (${off})`}`, () => {
      const message = off === undefined ? `must be at least ${min} milliseconds` : `must be 0 (${off}) or at least ${min} milliseconds`;
      for (const tooSmall of off === undefined ? [0, 5, min - 1] : [5, min - 1]) {
        const err = configError(withDuration(path, tooSmall));
        assert.deepEqual(
          err.problems.map((p) => `${p.path}: ${p.message}`),
          [`${path}: ${message}, got ${tooSmall}`],
        );
      }
      const at = (config: Config): unknown => path.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown>)[k], config);
      assert.equal(at(parse(withDuration(path, min))), min);
      if (off !== undefined) assert.equal(at(parse(withDuration(path, 0))), 0);
      assert.match(configError(withDuration(path, 2 ** 31)).message, /must be at most 2147483647 milliseconds \(about 24 days\), got 2147483648/);
    });
  }

  test('shutdown_grace_ms may be 0: the connections still open are cut at once', () => {
    assert.equal(parse(`server:\n  shutdown_grace_ms: 0\n${MINIMAL}`).server.shutdown_grace_ms, 0);
  });

  test('a shared store waits at least 5 ms', () => {
    const store = (ms: number): string => `${MINIMAL}middleware:\n  rate_limit:\n    store: {type: memory, timeout_ms: ${ms}}\n`;
    assert.equal(parse(store(5)).middleware.rate_limit.store.timeout_ms, 5);
    assert.deepEqual(configError(store(4)).problems, [
      { line: 8, col: 39, path: 'middleware.rate_limit.store.timeout_ms', message: 'must be a whole number of milliseconds from 5 to 60000, got 4' },
    ]);
  });

  test('the brief example: interval_ms: 5 is refused, naming the minimum', () => {
    assertProblems(`load_balancing:\n${UPSTREAM}  health_check:\n    active:\n      interval_ms: 5\n`, [
      { line: 8, col: 20, path: 'load_balancing.health_check.active.interval_ms', message: 'must be at least 100 milliseconds, got 5' },
    ]);
  });
});

describe('parseConfig: the admin listener and the proxy on one port', () => {
  test('the same port on overlapping addresses is an error at the later key, naming the other with file:line:col', () => {
    assertProblems(`server:\n  listen_port: 8080\n  listen_address: 127.0.0.1\n${MINIMAL}admin:\n  port: 8080\n`, [
      {
        line: 10,
        col: 9,
        path: 'admin.port',
        message: '8080 is server.listen_port too (test.yaml:2:16), both on 127.0.0.1: the proxy and the admin listener need different ports',
      },
    ]);
    assertProblems(`admin:\n  port: 8080\nserver:\n  listen_port: 8080\n${MINIMAL}`, [
      {
        line: 4,
        col: 16,
        path: 'server.listen_port',
        message: '8080 is admin.port too (test.yaml:2:9), and server.listen_address 0.0.0.0 overlaps admin.address 127.0.0.1: the proxy and the admin listener need different ports',
      },
    ]);
  });

  test('a key left at its default is named as the default', () => {
    assertProblems(`server:\n  listen_port: 9901\n${MINIMAL}`, [
      {
        line: 2,
        col: 16,
        path: 'server.listen_port',
        message: '9901 is admin.port too (its default), and server.listen_address 0.0.0.0 overlaps admin.address 127.0.0.1: the proxy and the admin listener need different ports',
      },
    ]);
    assertProblems(`admin: {address: "::1", port: 8080}\nserver: {listen_address: "::"}\n${MINIMAL}`, [
      {
        line: 1,
        col: 31,
        path: 'admin.port',
        message: '8080 is server.listen_port too (its default), and server.listen_address :: overlaps admin.address ::1: the proxy and the admin listener need different ports',
      },
    ]);
  });

  test('port 0, a disabled admin listener and addresses that do not overlap never clash', () => {
    assert.equal(parse(`server: {listen_port: 0}\n${MINIMAL}admin: {port: 0}\n`).admin.port, 0);
    assert.equal(parse(`server: {listen_port: 9901}\n${MINIMAL}admin: {enabled: false}\n`).server.listen_port, 9901);
    assert.equal(parse(`server: {listen_port: 9901, listen_address: 127.0.0.2}\n${MINIMAL}`).server.listen_port, 9901);
    assert.equal(parse(`server: {listen_port: 9901}\n${MINIMAL}admin: {address: "::1"}\n`).server.listen_port, 9901);
  });

  test('which addresses overlap (as binding both on Linux shows)', () => {
    const overlapping: [string, string][] = [
      ['127.0.0.1', '127.0.0.1'],
      ['0.0.0.0', '127.0.0.1'],
      ['::', '127.0.0.1'],
      ['::', '::1'],
      ['::', '0.0.0.0'],
      ['0:0::1', '::1'],
      ['::ffff:127.0.0.1', '127.0.0.1'],
      ['localhost', '127.0.0.1'],
      ['localhost', '::1'],
      ['0.0.0.0', 'proxy.internal'],
      ['Proxy.Internal.', 'proxy.internal'],
    ];
    const apart: [string, string][] = [
      ['127.0.0.1', '127.0.0.2'],
      ['0.0.0.0', '::1'],
      ['localhost', '127.0.0.2'],
      ['proxy.internal', '127.0.0.1'],
    ];
    for (const [a, b] of overlapping) {
      assert.equal(addressesOverlap(a, b), true, `${a} ${b}`);
      assert.equal(addressesOverlap(b, a), true, `${b} ${a}`);
    }
    for (const [a, b] of apart) {
      assert.equal(addressesOverlap(a, b), false, `${a} ${b}`);
      assert.equal(addressesOverlap(b, a), false, `${b} ${a}`);
    }
  });
});
