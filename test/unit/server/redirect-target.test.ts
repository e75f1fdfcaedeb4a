import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { normalizeFingerprint, rfc4514Subject } from '../../../src/proxy/client-cert.js';
import { redirectTarget } from '../../../src/server/proxy-server.js';

describe('redirectTarget', () => {
  test('the Host without its port, lower case, and the target as sent', () => {
    assert.deepEqual(redirectTarget('Example.COM:8080', '/a/b?x=1'), { host: 'example.com', path: '/a/b?x=1' });
    assert.deepEqual(redirectTarget('[::1]:80', '/'), { host: '[::1]', path: '/' });
    assert.deepEqual(redirectTarget('10.0.0.1', '/x'), { host: '10.0.0.1', path: '/x' });
  });

  test('an absolute-form target gives its own host and path', () => {
    assert.deepEqual(redirectTarget('ignored', 'http://api.example.com:81/p?q=1'), { host: 'api.example.com', path: '/p?q=1' });
  });

  test('no usable host: undefined', () => {
    assert.equal(redirectTarget(undefined, '/'), undefined);
    assert.equal(redirectTarget('', '/'), undefined);
    assert.equal(redirectTarget('evil.com/path', '/'), undefined);
    assert.equal(redirectTarget('a b', '/'), undefined);
    assert.equal(redirectTarget('x', '*'), undefined);
    assert.equal(redirectTarget('x', 'ftp://x/'), undefined);
  });
});

describe('client certificate formats', () => {
  test('the subject as RFC 4514: least significant first, non-ASCII bytes escaped', () => {
    assert.equal(rfc4514Subject('C=DE\nO=Example\\, Inc.\nCN=client'), 'CN=client,O=Example\\, Inc.,C=DE');
    assert.equal(rfc4514Subject('CN=Jürgen'), 'CN=J\\C3\\BCrgen');
  });

  test('fingerprints in either form compare equal', () => {
    assert.equal(normalizeFingerprint('AB:CD:EF'), 'abcdef');
    assert.equal(normalizeFingerprint('abcdef'), 'abcdef');
  });
});
