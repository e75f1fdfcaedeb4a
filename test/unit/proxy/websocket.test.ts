import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { describe, test } from 'node:test';
import { ConfigError } from '../../../src/config/errors.js';
import { parseConfig } from '../../../src/config/load.js';
import { routesOf } from '../../../src/config/resolve.js';
import { acceptFor, isWebSocketUpgrade, WebSocketRegistry } from '../../../src/proxy/websocket.js';

function req(method: string, headers: Record<string, string>, version = '1.1'): IncomingMessage {
  const [major, minor] = version.split('.').map(Number);
  return { method, headers, httpVersionMajor: major, httpVersionMinor: minor } as unknown as IncomingMessage;
}

describe('which upgrade requests are WebSocket handshakes', () => {
  test('GET over HTTP/1.1 with websocket among the Upgrade tokens, any case, no body', () => {
    assert.equal(isWebSocketUpgrade(req('GET', { upgrade: 'websocket' })), true);
    assert.equal(isWebSocketUpgrade(req('GET', { upgrade: 'WebSocket' })), true);
    assert.equal(isWebSocketUpgrade(req('GET', { upgrade: 'foo, websocket' })), true);
    assert.equal(isWebSocketUpgrade(req('GET', { upgrade: 'websocket', 'content-length': '0' })), true);
  });

  test('anything else stays an ordinary request: h2c, another method, HTTP/1.0, a body', () => {
    assert.equal(isWebSocketUpgrade(req('GET', { upgrade: 'h2c' })), false);
    assert.equal(isWebSocketUpgrade(req('GET', { upgrade: 'websocketx' })), false);
    assert.equal(isWebSocketUpgrade(req('POST', { upgrade: 'websocket' })), false);
    assert.equal(isWebSocketUpgrade(req('GET', { upgrade: 'websocket' }, '1.0')), false);
    assert.equal(isWebSocketUpgrade(req('GET', { upgrade: 'websocket', 'content-length': '5' })), false);
    assert.equal(isWebSocketUpgrade(req('GET', { upgrade: 'websocket', 'transfer-encoding': 'chunked' })), false);
    assert.equal(isWebSocketUpgrade(req('GET', {})), false);
  });

  test('Sec-WebSocket-Accept for the RFC 6455 example key', () => {
    assert.equal(acceptFor('dGhlIHNhbXBsZSBub25jZQ=='), 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=');
  });
});

describe('the caps', () => {
  test('the instance cap and each route\'s own; a place given back is free again', () => {
    const registry = new WebSocketRegistry();
    assert.equal(registry.reserve('chat', 2, 3), true);
    assert.equal(registry.reserve('chat', 2, 3), true);
    assert.equal(registry.reserve('chat', 2, 3), false, 'the route cap');
    assert.equal(registry.reserve('feed', undefined, 3), true);
    assert.equal(registry.reserve('feed', undefined, 3), false, 'the instance cap');
    registry.release('chat');
    assert.equal(registry.reserve('feed', undefined, 3), true);
    assert.equal(registry.reserve('chat', 2, 4), true);
    assert.equal(registry.reserve('chat', 2, 5), false);
  });
});

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

describe('the websocket keys', () => {
  test('defaults: on, 5 minutes idle, 10,000 open; the implicit route takes them', () => {
    const config = parseConfig(MINIMAL, 'proxy.yaml', {});
    assert.deepEqual(config.websocket, { enabled: true, idle_timeout_ms: 300_000, max_connections: 10_000 });
    assert.deepEqual(routesOf(config)[0]?.websocket, { idleTimeoutMs: 300_000, maxConnections: undefined });
  });

  test('a route: false turns it off, keys replace the top-level ones, true keeps them', () => {
    const routes = [
      '  - { name: off, match: { path: /off }, service: default, websocket: false }',
      '  - { name: own, match: { path: /own }, service: default, websocket: { idle_timeout_ms: 60000, max_connections: 5 } }',
      '  - { name: on, match: { path: /on }, service: default, websocket: true }',
      '  - { name: plain, match: { path: /plain }, service: default }',
    ].join('\n');
    const config = parseConfig(`${MINIMAL}websocket: { enabled: false, idle_timeout_ms: 2000 }\nroutes:\n${routes}\n`, 'proxy.yaml', {});
    const byName = Object.fromEntries(routesOf(config).map((r) => [r.config.name, r.websocket]));
    assert.deepEqual(byName, {
      off: undefined,
      own: undefined, // enabled: false at the top level, and the route does not say enabled
      on: { idleTimeoutMs: 2000, maxConnections: undefined },
      plain: undefined,
    });
    const enabledOwn = parseConfig(`${MINIMAL}routes:\n  - { name: own, service: default, websocket: { idle_timeout_ms: 60000, max_connections: 5 } }\n`, 'proxy.yaml', {});
    assert.deepEqual(routesOf(enabledOwn)[0]?.websocket, { idleTimeoutMs: 60_000, maxConnections: 5 });
  });

  test('bad values are refused at their line', () => {
    assert.match(messageOf(`${MINIMAL}websocket:\n  idle_timeout_ms: 500\n`), /proxy\.yaml:7:20 websocket\.idle_timeout_ms: must be at least 1000 milliseconds/);
    assert.match(messageOf(`${MINIMAL}websocket:\n  max_connections: 0\n`), /websocket\.max_connections: must be a whole number of at least 1/);
    assert.match(messageOf(`${MINIMAL}websocket:\n  idle: 5\n`), /websocket\.idle: unknown key/);
    assert.match(messageOf(`${MINIMAL}routes:\n  - { name: r, service: default, websocket: "yes" }\n`), /routes\[0\]\.websocket: must be true, false or \{ enabled, idle_timeout_ms, max_connections \}/);
  });
});
