import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { healthCheckFrame, servingStatus } from '../../../src/balancing/health/active.js';
import { ERROR_CATALOGUE, GRPC_STATUS, grpcMessage, grpcStatusOf, type ErrorCode } from '../../../src/proxy/errors.js';
import { grpcStatusIn, isGrpcContentType, parseGrpcTimeout } from '../../../src/proxy/grpc.js';

describe('grpc-timeout', () => {
  test('each unit, rounded up to whole milliseconds', () => {
    assert.equal(parseGrpcTimeout('2H'), 7_200_000);
    assert.equal(parseGrpcTimeout('3M'), 180_000);
    assert.equal(parseGrpcTimeout('5S'), 5_000);
    assert.equal(parseGrpcTimeout('250m'), 250);
    assert.equal(parseGrpcTimeout('1500u'), 2);
    assert.equal(parseGrpcTimeout('1n'), 1);
    assert.equal(parseGrpcTimeout('0m'), 0);
    assert.equal(parseGrpcTimeout('99999999S'), 99_999_999_000);
  });

  test('what gRPC never sends is no deadline', () => {
    for (const value of [undefined, '', '10', 'm', '123456789m', '10s', '-1S', '1.5S', ' 1S', '1S ', ['1S', '2S']]) assert.equal(parseGrpcTimeout(value), -1, String(value));
  });
});

describe('recognizing gRPC', () => {
  test('application/grpc and its subtypes; nothing else', () => {
    for (const type of ['application/grpc', 'application/grpc+proto', 'application/grpc+json', 'application/grpc-web', 'application/grpc-web+proto']) assert.ok(isGrpcContentType(type), type);
    for (const type of [undefined, '', 'application/json', 'text/grpc', 'application/gr']) assert.ok(!isGrpcContentType(type), String(type));
  });

  test('grpc-status among header lines, any case; -1 when absent or not a status', () => {
    assert.equal(grpcStatusIn(['content-type', 'application/grpc', 'Grpc-Status', '14']), 14);
    assert.equal(grpcStatusIn(['content-type', 'application/grpc']), -1);
    assert.equal(grpcStatusIn(['grpc-status', 'x']), -1);
  });
});

describe('grpc-message', () => {
  test('printable ASCII but % as it is; % and everything else percent-encoded as UTF-8', () => {
    assert.equal(grpcMessage('No route matches the request.'), 'No route matches the request.');
    assert.equal(grpcMessage('100% ü\n'), '100%25 %C3%BC%0A');
    assert.equal(decodeURIComponent(grpcMessage('100% ü\n')), '100% ü\n');
  });
});

const DOC = readFileSync(fileURLToPath(new URL('../../../docs/errors.md', import.meta.url)), 'utf8');

/** The rows of docs/errors.md's gRPC table: `| \`code\` | 16 UNAUTHENTICATED |`. */
function documentedGrpcStatuses(): Map<string, [number, string]> {
  const section = DOC.slice(DOC.indexOf('## gRPC requests'));
  const rows = new Map<string, [number, string]>();
  for (const line of section.split('\n')) {
    const match = /^\|\s*`([a-z_]+)`\s*\|\s*(\d+) ([A-Z_]+)\s*\|/.exec(line);
    if (match !== null) rows.set(match[1] as string, [Number(match[2]), match[3] as string]);
  }
  return rows;
}

describe('the gRPC status of each catalogue code', () => {
  test('the issue\'s cases', () => {
    assert.equal(grpcStatusOf('unauthorized'), GRPC_STATUS.UNAUTHENTICATED);
    assert.equal(grpcStatusOf('rate_limited'), GRPC_STATUS.RESOURCE_EXHAUSTED);
    assert.equal(grpcStatusOf('no_route'), GRPC_STATUS.UNIMPLEMENTED);
    assert.equal(grpcStatusOf('bad_gateway'), GRPC_STATUS.UNAVAILABLE);
    assert.equal(grpcStatusOf('no_upstream'), GRPC_STATUS.UNAVAILABLE);
    assert.equal(grpcStatusOf('upstream_timeout'), GRPC_STATUS.DEADLINE_EXCEEDED);
  });

  test('docs/errors.md lists every code with its gRPC status, by number and name', () => {
    const doc = documentedGrpcStatuses();
    const names = new Map<number, string>(Object.entries(GRPC_STATUS).map(([name, n]) => [n, name]));
    for (const code of Object.keys(ERROR_CATALOGUE) as ErrorCode[]) {
      const status = grpcStatusOf(code);
      assert.deepEqual(doc.get(code), [status, names.get(status)], `docs/errors.md gRPC row for ${code}`);
    }
    assert.equal(doc.size, Object.keys(ERROR_CATALOGUE).length);
  });
});

describe('the gRPC health protocol messages', () => {
  test('HealthCheckRequest: the 5-byte prefix, and the service as field 1', () => {
    assert.deepEqual([...healthCheckFrame('')], [0, 0, 0, 0, 0]);
    assert.deepEqual([...healthCheckFrame('a.B')], [0, 0, 0, 0, 5, 0x0a, 3, 0x61, 0x2e, 0x42]);
    const long = healthCheckFrame('x'.repeat(200));
    assert.deepEqual([...long.subarray(0, 8)], [0, 0, 0, 0, 203, 0x0a, 0xc8, 0x01]);
  });

  test('HealthCheckResponse: the status field; absent is UNKNOWN; not a frame is -1', () => {
    assert.equal(servingStatus(Buffer.from([0, 0, 0, 0, 2, 0x08, 1])), 1);
    assert.equal(servingStatus(Buffer.from([0, 0, 0, 0, 2, 0x08, 2])), 2);
    assert.equal(servingStatus(Buffer.from([0, 0, 0, 0, 0])), 0);
    assert.equal(servingStatus(Buffer.from([0, 0, 0, 0, 3, 0x08, 1])), -1); // length disagrees
    assert.equal(servingStatus(Buffer.from([1, 0, 0, 0, 2, 0x08, 1])), -1); // compressed
    assert.equal(servingStatus(Buffer.from([0, 0, 0, 0, 2, 0x08, 0x80])), -1); // varint cut short
    assert.equal(servingStatus(Buffer.from([0, 0])), -1);
  });
});
