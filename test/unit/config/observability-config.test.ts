import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ConfigError } from '../../../src/config/errors.js';
import { parseConfig } from '../../../src/config/load.js';

const MINIMAL = 'load_balancing:\n  upstreams:\n    - name: a\n      address: 127.0.0.1\n      port: 3000\n';

function messageOf(source: string): string {
  try {
    parseConfig(source, 'proxy.yaml', {});
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    return err.message;
  }
  assert.fail('expected the config to be rejected');
}

describe('admin, metrics and tracing keys', () => {
  test('defaults: admin on 127.0.0.1:9901, metrics and tracing on', () => {
    const config = parseConfig(MINIMAL, 'proxy.yaml', {});
    assert.deepEqual(config.admin, { enabled: true, address: '127.0.0.1', port: 9901 });
    assert.deepEqual(config.metrics, { enabled: true });
    assert.deepEqual(config.tracing, { enabled: true, sample_new_traces: true, server_timing: true });
  });

  test('each can be turned off; port 0 and IPv6 addresses are accepted', () => {
    const config = parseConfig(
      `${MINIMAL}admin:\n  enabled: false\n  address: "::1"\n  port: 0\nmetrics:\n  enabled: false\ntracing:\n  enabled: false\n  sample_new_traces: false\n  server_timing: false\n`,
      'proxy.yaml',
      {},
    );
    assert.deepEqual(config.admin, { enabled: false, address: '::1', port: 0 });
    assert.equal(config.metrics.enabled, false);
    assert.deepEqual(config.tracing, { enabled: false, sample_new_traces: false, server_timing: false });
  });

  test('bad values are reported with file:line:col and the key path', () => {
    assert.equal(messageOf(`${MINIMAL}admin:\n  port: 70000\n`), 'proxy.yaml:7:9 admin.port: must be 0-65535, got 70000');
    assert.equal(messageOf(`${MINIMAL}admin:\n  address: localhost\n`), 'proxy.yaml:7:12 admin.address: must be an IP address such as "127.0.0.1" or "::1"');
    assert.equal(messageOf(`${MINIMAL}admin:\n  enabled: "yes"\n`), 'proxy.yaml:7:12 admin.enabled: must be true or false, got "yes"');
    assert.equal(messageOf(`${MINIMAL}tracing:\n  sampled: true\n`), 'proxy.yaml:7:3 tracing.sampled: unknown key');
    assert.equal(messageOf(`${MINIMAL}metrics: true\n`), 'proxy.yaml:6:10 metrics: must be a mapping (key: value), got true');
  });
});
