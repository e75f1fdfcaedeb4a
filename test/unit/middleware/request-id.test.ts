import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { resolveRequestId } from '../../../src/middleware/request-id/request-id.js';

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('resolveRequestId', () => {
  test('keeps a plausible client id unchanged', () => {
    for (const id of ['abc', 'A', '0', 'req-123', 'a.b_c-D', '3f1c9a2e-0b5d-4c1e-9f00-123456789abc', 'x'.repeat(128)]) {
      assert.equal(resolveRequestId(id), id);
    }
  });

  test('128 characters is kept, 129 is replaced', () => {
    assert.equal(resolveRequestId('a'.repeat(128)), 'a'.repeat(128));
    assert.match(resolveRequestId('a'.repeat(129)), UUID_V4);
  });

  test('an implausible id is replaced by a new UUID v4', () => {
    const rejected = ['', 'has space', ' leading', 'trailing ', 'tab\there', 'new\nline', 'ümlaut', '日本', 'emoji-😀', 'semi;colon', 'a/b', 'a:b', 'quote"', '<script>', 'a=b'];
    for (const id of rejected) {
      const out = resolveRequestId(id);
      assert.match(out, UUID_V4, JSON.stringify(id));
      assert.notEqual(out, id);
    }
  });

  test('an array of ids (header sent twice) is replaced by a new UUID v4', () => {
    assert.match(resolveRequestId(['abc', 'def']), UUID_V4);
    assert.match(resolveRequestId(['abc']), UUID_V4);
    assert.match(resolveRequestId([]), UUID_V4);
  });

  test('no header gives a new UUID v4', () => {
    assert.match(resolveRequestId(undefined), UUID_V4);
  });

  test('each generated id is new', () => {
    const ids = new Set(Array.from({ length: 100 }, () => resolveRequestId(undefined)));
    assert.equal(ids.size, 100);
  });
});
