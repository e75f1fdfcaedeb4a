import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { pino } from 'pino';
import type { Backend } from '../../../src/balancing/backend.js';
import type { LoadBalancer } from '../../../src/balancing/load-balancer.js';
import { createAccessLog, probeRequests } from '../../../src/observability/access-log.js';
import { createLogger, type DirectLog } from '../../../src/observability/logger.js';
import { RequestContext } from '../../../src/proxy/context.js';
import { ERROR_CATALOGUE, ProxyError, type ErrorCode } from '../../../src/proxy/errors.js';
import type { Phases } from '../../../src/proxy/phases.js';
import { Route } from '../../../src/routing/route.js';

/** A logger made by createLogger writing to a string, as a cluster worker's is (with its slot bound). */
function captured(): { out: { text: string }; handle: ReturnType<typeof createLogger> } {
  const out = { text: '' };
  const handle = createLogger({ level: 'info', format: 'json' }, { stream: { write: (s: string) => void (out.text += s) }, bindings: { worker: 3 } });
  return { out, handle };
}

/** Runs the logging hook for each request and writes out the batch. */
function log(phase: (Phases & { flush(): void }) | undefined, requests: RequestContext[]): void {
  assert.ok(phase !== undefined, 'the access log is installed');
  for (const ctx of requests) phase.logging?.(ctx);
  phase.flush();
}

const noTime = (text: string): string => text.replace(/"time":\d+/g, '"time":0');
const fixedNow = (): number => 1234.5678;

describe('access log', () => {
  test('a logger made by createLogger: lines come from the template (the start-time check passes) and are pino JSON lines', () => {
    const { out, handle } = captured();
    const accessLog = createAccessLog(handle.logger, { direct: handle.direct, now: fixedNow });
    assert.equal(accessLog?.path, 'direct');
    assert.equal(out.text, '', 'no warning: the template matches pino');
    log(accessLog, probeRequests());
    const lines = out.text.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.equal(lines.length, 3);
    assert.deepEqual(
      lines.map((l) => [l.level, l.worker, l.request_id, l.status, l.duration_ms, l.msg]),
      [
        [30, 3, 'probe-1', 200, 1234.57, 'Request Completed'],
        [40, 3, 'probe-2', 502, 1234.57, 'Request Completed'],
        [30, 3, 'probe-3', 101, 1234.57, 'Request Completed'],
      ],
    );
    // A WebSocket's line: bytes each way and who closed, after the usual fields.
    assert.deepEqual([lines[2]?.bytes, lines[2]?.bytes_received, lines[2]?.closed_by], [12, 34, 'upstream_reset']);
    assert.equal(lines[0]?.path, '/probe?q="x"&b=\\&c=\u00fc\u{1f600}');
    assert.equal(lines[1]?.cause, 'ECONNREFUSED: connect "refused"\n');
  });

  test('property: the template writes byte for byte the line pino writes for the same request (seeded)', () => {
    const { out, handle } = captured();
    const direct = createAccessLog(handle.logger, { direct: handle.direct, now: fixedNow });
    const viaPino = createAccessLog(handle.logger, { now: fixedNow });
    assert.equal(direct?.path, 'direct');
    assert.equal(viaPino?.path, 'pino');
    const text = fc.string({ unit: 'binary', maxLength: 30 });
    const codes = Object.keys(ERROR_CATALOGUE) as ErrorCode[];
    const request = fc.record({
      method: fc.constantFrom('GET', 'POST', 'PURGE', 'M-SEARCH'),
      path: text.map((s) => `/${s}`),
      ua: fc.option(text, { nil: undefined }),
      traced: fc.boolean(),
      route: fc.option(fc.tuple(text, fc.option(text, { nil: undefined })), { nil: undefined }),
      backend: fc.option(fc.tuple(text, text), { nil: undefined }),
      status: fc.integer({ min: 100, max: 599 }),
      bytes: fc.nat(),
      retries: fc.nat({ max: 5 }),
      error: fc.option(fc.tuple(fc.constantFrom(...codes), fc.option(fc.oneof(text, text.map((m) => new Error(m)), text.map((m) => Object.assign(new Error(m), { code: 'ECONNRESET' }))), { nil: undefined })), { nil: undefined }),
    });
    fc.assert(
      fc.property(request, (r) => {
        const headers = r.ua === undefined ? {} : { 'user-agent': r.ua };
        const req = { method: r.method, url: '/', headers, socket: { remoteAddress: '10.0.0.1' } } as unknown as IncomingMessage;
        const ctx = new RequestContext(req, {} as ServerResponse, 0);
        ctx.requestId = 'a1b2c3.d-e_f';
        if (r.traced) ctx.traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
        ctx.path = r.path;
        if (r.route !== undefined) {
          const [name, service] = r.route;
          ctx.route = new Route({ name, service: service === undefined ? undefined : ({ name: service } as LoadBalancer), phases: [], dropRequestHeaders: new Set() });
        }
        if (r.backend !== undefined) ctx.backend = { name: r.backend[0], address: r.backend[1] } as Backend;
        ctx.status = r.status;
        ctx.bytesSent = r.bytes;
        ctx.retries = r.retries;
        if (r.error !== undefined) ctx.error = new ProxyError(r.error[0], r.error[1] === undefined ? undefined : { cause: r.error[1] });
        out.text = '';
        log(direct, [ctx]);
        const fromTemplate = out.text;
        out.text = '';
        log(viaPino, [ctx]);
        assert.equal(noTime(fromTemplate), noTime(out.text));
        JSON.parse(fromTemplate);
      }),
      { seed: 20261203, numRuns: 400 },
    );
  });

  test('fallback forced: a template that does not match what pino writes is not used; lines go through pino with the same content', () => {
    const { out, handle } = captured();
    // As a pino release that wrote its bindings differently would look to the check.
    const wrong: DirectLog = {
      ...handle.direct,
      twin(sink) {
        const twin = handle.direct.twin(sink);
        return { logger: twin.logger, direct: { ...twin.direct, bindings: `${twin.direct.bindings},"hostname":"x"` } };
      },
    };
    const accessLog = createAccessLog(handle.logger, { direct: wrong, now: fixedNow });
    assert.equal(accessLog?.path, 'pino');
    const warning = JSON.parse(out.text) as Record<string, unknown>;
    assert.equal(warning.level, 40);
    assert.match(String(warning.msg), /does not match what pino writes/);
    assert.match(String(warning.template), /"hostname":"x"/);
    out.text = '';
    log(accessLog, probeRequests());
    const viaFallback = out.text;
    out.text = '';
    log(createAccessLog(handle.logger, { direct: handle.direct, now: fixedNow }), probeRequests());
    assert.equal(noTime(viaFallback), noTime(out.text));
    assert.equal(viaFallback.split('\n').length, 4);
  });

  test('a logger not made by createLogger is written to through pino', () => {
    let text = '';
    const logger = pino({ level: 'info', base: null }, { write: (s: string) => void (text += s) });
    const accessLog = createAccessLog(logger, { now: fixedNow });
    assert.equal(accessLog?.path, 'pino');
    log(accessLog, probeRequests().slice(0, 1));
    assert.match(text, /^\{"level":30,"time":\d+,"request_id":"probe-1",/);
  });

  test('at level warn only the warn lines (5xx of the proxy, cut off) are written, either way; none above warn', () => {
    for (const direct of [true, false]) {
      const out = { text: '' };
      const handle = createLogger({ level: 'warn', format: 'json' }, { stream: { write: (s: string) => void (out.text += s) } });
      const accessLog = createAccessLog(handle.logger, { direct: direct ? handle.direct : undefined, now: fixedNow });
      assert.equal(accessLog?.path, direct ? 'direct' : 'pino');
      log(accessLog, probeRequests());
      assert.deepEqual(
        out.text.trim().split('\n').map((l) => (JSON.parse(l) as { request_id: string; level: number }).request_id),
        ['probe-2'],
      );
    }
    assert.equal(createAccessLog(pino({ level: 'error' }), {}), undefined);
  });
});
