import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ERROR_CATALOGUE, ProxyError, fromUpstreamError, type ErrorCode } from '../../../src/proxy/errors.js';

const DOC = readFileSync(fileURLToPath(new URL('../../../docs/errors.md', import.meta.url)), 'utf8');

/** Rows of the doc's table: `| \`code\` | 401 | ... |`. */
function documentedCodes(): Map<string, number> {
  const rows = new Map<string, number>();
  for (const line of DOC.split('\n')) {
    const match = /^\|\s*`([a-z_]+)`\s*\|\s*(\d{3})\s*\|/.exec(line);
    if (match === null) continue;
    const [, code, status] = match as unknown as [string, string, string];
    assert.equal(rows.has(code), false, `docs/errors.md lists ${code} twice`);
    rows.set(code, Number(status));
  }
  return rows;
}

const catalogueCodes = Object.keys(ERROR_CATALOGUE) as ErrorCode[];

describe('docs/errors.md and ERROR_CATALOGUE', () => {
  test('the doc table has rows (the parser finds them)', () => {
    assert.ok(documentedCodes().size >= 9, `found ${documentedCodes().size} rows`);
  });

  test('every catalogue code is in the doc table with its status', () => {
    const doc = documentedCodes();
    for (const code of catalogueCodes) {
      assert.equal(doc.get(code), ERROR_CATALOGUE[code].status, `docs/errors.md row for ${code}`);
    }
  });

  test('every code in the doc table is in the catalogue', () => {
    for (const code of documentedCodes().keys()) {
      assert.ok(Object.hasOwn(ERROR_CATALOGUE, code), `docs/errors.md lists ${code}, which is not in ERROR_CATALOGUE`);
    }
  });

  test('the two list exactly the same codes, in the same order', () => {
    assert.deepEqual([...documentedCodes().keys()], catalogueCodes);
  });
});

describe('ERROR_CATALOGUE', () => {
  test('statuses and retryability', () => {
    assert.deepEqual(
      Object.fromEntries(catalogueCodes.map((c) => [c, [ERROR_CATALOGUE[c].status, ERROR_CATALOGUE[c].source, ERROR_CATALOGUE[c].retryable]])),
      {
        bad_request: [400, 'downstream', false],
        unauthorized: [401, 'downstream', false],
        forbidden: [403, 'downstream', false],
        not_found: [404, 'downstream', false],
        no_route: [404, 'downstream', false],
        request_timeout: [408, 'downstream', false],
        payload_too_large: [413, 'downstream', false],
        uri_too_long: [414, 'downstream', false],
        headers_too_large: [431, 'downstream', false],
        rate_limited: [429, 'downstream', false],
        internal_error: [500, 'internal', false],
        not_implemented: [501, 'downstream', false],
        bad_gateway: [502, 'upstream', true],
        upstream_tls: [502, 'upstream', true],
        no_upstream: [503, 'internal', false],
        auth_unavailable: [503, 'internal', false],
        rate_limit_unavailable: [503, 'internal', false],
        shutting_down: [503, 'internal', false],
        too_many_websockets: [503, 'internal', false],
        cut_off: [503, 'internal', false],
        upstream_timeout: [504, 'upstream', false],
      },
    );
  });
});

describe('ProxyError', () => {
  test('takes status, source, retryable and message from the catalogue', () => {
    const err = new ProxyError('rate_limited');
    assert.ok(err instanceof Error);
    assert.equal(err.name, 'ProxyError');
    assert.equal(err.code, 'rate_limited');
    assert.equal(err.status, 429);
    assert.equal(err.source, 'downstream');
    assert.equal(err.retryable, false);
    assert.equal(err.message, 'Too many requests; retry after the time in Retry-After.');
    assert.equal(err.cause, undefined);
  });

  test('options override message and retryable, and keep the cause', () => {
    const cause = new Error('boom');
    const err = new ProxyError('bad_gateway', { message: 'custom', cause, retryable: false });
    assert.equal(err.message, 'custom');
    assert.equal(err.retryable, false);
    assert.equal(err.cause, cause);
    assert.equal(err.status, 502);
  });
});

describe('fromUpstreamError', () => {
  function coded(code: string): Error {
    return Object.assign(new Error(code), { code });
  }

  const cases: [string, ErrorCode, number, boolean][] = [
    ['ECONNREFUSED', 'bad_gateway', 502, true],
    ['ENOTFOUND', 'bad_gateway', 502, true],
    ['EAI_AGAIN', 'bad_gateway', 502, true],
    ['EHOSTUNREACH', 'bad_gateway', 502, true],
    ['ENETUNREACH', 'bad_gateway', 502, true],
    ['ECONNRESET', 'bad_gateway', 502, false],
    ['EPIPE', 'bad_gateway', 502, false],
    ['UND_ERR_SOCKET', 'bad_gateway', 502, false],
    ['UND_ERR_CONNECT_TIMEOUT', 'upstream_timeout', 504, true],
    ['UND_ERR_HEADERS_TIMEOUT', 'upstream_timeout', 504, false],
    ['UND_ERR_BODY_TIMEOUT', 'upstream_timeout', 504, false],
    ['ETIMEDOUT', 'upstream_timeout', 504, false],
    ['UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'upstream_tls', 502, true],
    ['DEPTH_ZERO_SELF_SIGNED_CERT', 'upstream_tls', 502, true],
    ['CERT_HAS_EXPIRED', 'upstream_tls', 502, true],
    ['ERR_TLS_CERT_ALTNAME_INVALID', 'upstream_tls', 502, true],
    ['ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED', 'upstream_tls', 502, true],
  ];

  for (const [code, expected, status, retryable] of cases) {
    test(`${code} -> ${expected} ${status}, ${retryable ? 'retryable' : 'not retryable'}`, () => {
      const cause = coded(code);
      const err = fromUpstreamError(cause);
      assert.ok(err instanceof ProxyError);
      assert.equal(err.code, expected);
      assert.equal(err.status, status);
      assert.equal(err.retryable, retryable);
      assert.equal(err.source, 'upstream');
      assert.equal(err.cause, cause);
    });
  }

  test('an error with no code, null and a string are a non-retryable bad_gateway', () => {
    for (const input of [new Error('x'), null, undefined, 'text', 42]) {
      const err = fromUpstreamError(input);
      assert.equal(err.code, 'bad_gateway');
      assert.equal(err.status, 502);
      assert.equal(err.retryable, false);
    }
  });

  test('a ProxyError is returned unchanged', () => {
    const original = new ProxyError('no_upstream');
    assert.equal(fromUpstreamError(original), original);
  });
});
