import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, test } from 'node:test';
import { type Logger, pino } from 'pino';
import type { Backend } from '../../../src/balancing/backend.js';
import { startsWithTlsRecord } from '../../../src/balancing/health/tls-sniff.js';
import { ProxyError } from '../../../src/proxy/errors.js';
import { HINT_MSG, TlsHint } from '../../../src/proxy/tls-hint.js';
import { manualClock } from '../../helpers/servers.js';

type Json = Record<string, unknown>;

function capture(): { logger: Logger; logs: Json[] } {
  const logs: Json[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) if (line !== '') logs.push(JSON.parse(line) as Json);
      done();
    },
  });
  return { logger: pino({ level: 'info', base: null }, stream), logs };
}

function backend(name: string, answered = false): Backend {
  return { name, address: `${name}:443`, host: name, port: 443, answered, tlsCheckedAt: -Infinity } as Backend;
}

function failure(cause: object): ProxyError {
  return new ProxyError('bad_gateway', { cause });
}

const CLOSED = failure(Object.assign(new Error('other side closed'), { code: 'UND_ERR_SOCKET' }));
const TLS_ALERT = failure(Object.assign(new Error('Response does not match the HTTP/1.1 protocol'), { name: 'HTTPParserError', data: '\u0015\u0003\u0003\u0000\u0002\u0002F' }));

/** A TlsHint whose handshakes are answered by `speaksTls`, counted, and settled when the test says. */
function setup(speaksTls: boolean): { hint: TlsHint; logs: Json[]; sniffs: string[]; clock: ReturnType<typeof manualClock>; settled(): Promise<void> } {
  const { logger, logs } = capture();
  const sniffs: string[] = [];
  const pending: Promise<boolean>[] = [];
  const clock = manualClock();
  const hint = new TlsHint(logger, {
    clock,
    intervalMs: 60_000,
    sniff: (b) => {
      sniffs.push(b.name);
      const answer = Promise.resolve(speaksTls);
      pending.push(answer);
      return answer;
    },
  });
  return { hint, logs, sniffs, clock, settled: async () => void (await Promise.all(pending)) };
}

describe('startsWithTlsRecord', () => {
  test('an alert or handshake record of TLS 1.0-1.3 is one; HTTP, garbage and short data are not', () => {
    for (const data of ['\u0015\u0003\u0003', '\u0016\u0003\u0001\u0002\u0000', '\u0015\u0003']) assert.equal(startsWithTlsRecord(data), true, JSON.stringify(data));
    for (const data of ['HTTP/1.1 200 OK', 'this is not HTTP', '\u0016', '\u0017\u0003\u0003', '\u0016\u0002', '', undefined, 42]) assert.equal(startsWithTlsRecord(data), false, JSON.stringify(data));
  });
});

describe('TlsHint', () => {
  test('TLS bytes in the answer: the hint at once, without a handshake, then not again for a minute', () => {
    const s = setup(true);
    const b = backend('a', true);
    s.hint.check(b, TLS_ALERT, 'req-1');
    s.hint.check(b, TLS_ALERT, 'req-2');
    assert.deepEqual(
      s.logs.map((l) => [l.msg, l.level, l.request_id, l.upstream, l.upstream_addr, l.reason]),
      [[HINT_MSG, 40, 'req-1', 'a', 'a:443', 'the first bytes of its answer were a TLS record']],
    );
    assert.deepEqual(s.sniffs, []);
    s.clock.advance(60_000);
    s.hint.check(b, TLS_ALERT, 'req-3');
    assert.equal(s.logs.length, 2);
    assert.equal(s.logs[1]?.request_id, 'req-3');
  });

  test('closed without a byte by a backend that never answered: one handshake, and the hint when it completes', async () => {
    const s = setup(true);
    const b = backend('a');
    s.hint.check(b, CLOSED, 'req-1');
    s.hint.check(b, CLOSED, 'req-2');
    s.hint.check(backend('b'), CLOSED, 'req-3');
    assert.deepEqual(s.sniffs, ['a', 'b'], 'one handshake per backend per minute');
    await s.settled();
    assert.deepEqual(
      s.logs.map((l) => [l.request_id, l.upstream, l.reason]),
      [
        ['req-1', 'a', 'it closed the connection without answering, and it completes a TLS handshake'],
        ['req-3', 'b', 'it closed the connection without answering, and it completes a TLS handshake'],
      ],
    );
  });

  test('no hint when the handshake fails, when the backend has answered before, or for other failures', async () => {
    const s = setup(false);
    s.hint.check(backend('plain'), CLOSED, 'req-1');
    s.hint.check(backend('known', true), CLOSED, 'req-2');
    s.hint.check(backend('refused'), failure(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' })), 'req-3');
    s.hint.check(backend('garbage'), failure(Object.assign(new Error('Expected HTTP/'), { name: 'HTTPParserError', data: 'this is not HTTP' })), 'req-4');
    s.hint.check(backend('timeout'), new ProxyError('bad_gateway'), 'req-5');
    assert.deepEqual(s.sniffs, ['plain']);
    await s.settled();
    assert.deepEqual(s.logs, []);
  });

  test('never for an upstream reached over TLS (tls: { enabled: true }): its failures say what they are', async () => {
    const s = setup(true);
    const tls = { ...backend('secure'), tls: { name: 'secure' } } as unknown as Backend;
    s.hint.check(tls, CLOSED, 'req-1');
    s.hint.check(tls, TLS_ALERT, 'req-2');
    await s.settled();
    assert.deepEqual(s.sniffs, []);
    assert.deepEqual(s.logs, []);
    // The same failures from a plain upstream do give the hint (the setup is not what keeps it quiet).
    s.hint.check(backend('plain'), TLS_ALERT, 'req-3');
    assert.equal(s.logs.length, 1);
    assert.match(HINT_MSG, /tls: \{ enabled: true \}/);
  });
});
