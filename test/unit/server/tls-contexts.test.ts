import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { SniTable } from '../../../src/server/tls-contexts.js';

describe('SniTable', () => {
  const table = new SniTable([
    { names: ['example.com', '*.example.com'], value: 'example' },
    { names: ['api.example.com'], value: 'api' },
    { names: ['*.test', 'example.com'], value: 'test' },
  ]);

  test('an exact name wins over a wildcard, whatever the order', () => {
    assert.equal(table.lookup('api.example.com'), 'api');
    assert.equal(table.lookup('www.example.com'), 'example');
  });

  test('names are compared without case and without a trailing dot', () => {
    assert.equal(table.lookup('API.Example.COM.'), 'api');
  });

  test('a wildcard covers exactly one label', () => {
    assert.equal(table.lookup('a.b.example.com'), undefined);
    assert.equal(table.lookup('x.test'), 'test');
    assert.equal(table.lookup('test'), undefined);
    assert.equal(table.lookup('.test'), undefined);
  });

  test('the earlier entry keeps a name two entries give', () => {
    assert.equal(table.lookup('example.com'), 'example');
  });

  test('an unknown name has no entry (the default certificate serves it)', () => {
    assert.equal(table.lookup('other.org'), undefined);
    assert.equal(table.lookup(''), undefined);
  });
});
