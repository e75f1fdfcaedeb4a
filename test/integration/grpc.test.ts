/**
 * gRPC through Tollgate with real @grpc/grpc-js clients and servers (test/fixtures/echo.proto): the client
 * speaks h2c to the proxy, the proxy h2c to the upstream (`protocol: h2c`). Every kind of call passes with
 * its messages, metadata and trailers (grpc-status, grpc-message, a custom trailer); grpc-timeout is the
 * call's deadline; each refusal or failure of Tollgate's own reaches the client as its gRPC status with the
 * request id in the trailers; a gRPC health check takes a backend out and brings it back.
 */
import assert from 'node:assert/strict';
import { connect, constants, createServer, type ClientHttp2Session, type Http2Server, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { bidiCall, clientStreamCall, CUSTOM_TRAILER, grpcClient, serverStreamCall, startGrpcUpstream, unaryCall, type GrpcUpstream } from '../helpers/grpc.js';
import { request } from '../helpers/http.js';
import { closedPort, startProxy, waitFor, type TestProxy } from '../helpers/servers.js';
import { privateCa } from '../helpers/tls.js';

const unhandled: unknown[] = [];
process.on('unhandledRejection', (reason) => unhandled.push(reason));

const NO_HEALTH = { active: { enabled: false }, passive: { enabled: false } };
const TOKEN = 'grpc-token-1';

const ROUTES = [
  { name: 'echo', match: { path_prefix: '/tollgate.test.Echo/' }, service: 'default' },
  { name: 'guarded', match: { path_prefix: '/tollgate.test.Guarded/' }, service: 'default', middleware: { auth: { enabled: true, auth_type: 'bearer', valid_tokens: [TOKEN] } } },
  { name: 'limited', match: { path_prefix: '/tollgate.test.Limited/' }, service: 'default', middleware: { rate_limit: { enabled: true, requests_per_minute: 1, burst_size: 1 } } },
];

function bearer(token: string): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${token}`);
  return md;
}

/** The request id a status carries in its trailers, checked against the completion log line with it. */
function requestIdOf(status: grpc.StatusObject): string {
  const ids = status.metadata.get('x-request-id');
  assert.equal(ids.length, 1, `one x-request-id in the trailers, got ${JSON.stringify(ids)}`);
  return String(ids[0]);
}

function logLine(proxy: TestProxy, requestId: string): Record<string, unknown> {
  const line = proxy.logs.find((l) => l.request_id === requestId && l.msg === 'Request Completed');
  assert.ok(line, `a completion line for ${requestId}`);
  return line;
}

describe('gRPC calls through the proxy (h2c both ways)', () => {
  let upstream: GrpcUpstream;
  let proxy: TestProxy;
  let client: grpc.Client;
  before(async () => {
    upstream = await startGrpcUpstream();
    proxy = await startProxy([{ name: 'g1', port: upstream.port }], { server: { h2c: true }, load_balancing: { protocol: 'h2c', health_check: NO_HEALTH }, routes: ROUTES });
    client = grpcClient(`127.0.0.1:${proxy.port}`);
  });
  after(async () => {
    client.close();
    await proxy.close();
    await upstream.close();
    assert.deepEqual(unhandled, []);
  });

  test('unary: the reply, the response headers and the trailers (grpc-status, grpc-message, a custom one)', async () => {
    const result = await unaryCall(client, 'Echo', { text: 'hello' });
    assert.equal(result.status.code, grpc.status.OK);
    assert.equal(result.status.details, 'OK');
    assert.deepEqual(result.status.metadata.get(CUSTOM_TRAILER), ['unary']);
    assert.deepEqual(result.replies, [{ text: 'hello', index: 0 }]);
    const id = String(result.headers?.get('x-request-id')[0]);
    assert.match(id, /^[\w.-]+$/);
    assert.equal(logLine(proxy, id).grpc_status, 0);
    assert.equal(logLine(proxy, id).status, 200);
  });

  test('unary ending in an error status: code, percent-encoded message and trailer arrive (the upstream answers trailers-only)', async () => {
    const result = await unaryCall(client, 'Echo', { text: 'fail' });
    assert.equal(result.status.code, grpc.status.NOT_FOUND);
    assert.equal(result.status.details, 'no such echo: 100% ü');
    assert.deepEqual(result.status.metadata.get(CUSTOM_TRAILER), ['failed']);
    assert.equal(logLine(proxy, requestIdOf(result.status)).grpc_status, grpc.status.NOT_FOUND);
  });

  test('server streaming: every message in order, then the trailers', async () => {
    const result = await serverStreamCall(client, { text: 's', count: 5 });
    assert.equal(result.status.code, grpc.status.OK);
    assert.deepEqual(result.replies.map((r) => r.index), [0, 1, 2, 3, 4]);
    assert.deepEqual(result.status.metadata.get(CUSTOM_TRAILER), ['server-stream']);
  });

  test('client streaming: every message reaches the upstream, its reply and trailers come back', async () => {
    const result = await clientStreamCall(client, [{ text: 'a' }, { text: 'b' }, { text: 'c' }]);
    assert.equal(result.status.code, grpc.status.OK);
    assert.deepEqual(result.replies, [{ text: 'a,b,c', index: 3 }]);
    assert.deepEqual(result.status.metadata.get(CUSTOM_TRAILER), ['client-stream']);
  });

  test('bidirectional streaming: each message is answered while the call is open, then the trailers', async () => {
    // bidiCall sends the next message only once the answer to the last one is back: a proxy that held
    // either direction until the other ended would hang here.
    const result = await bidiCall(client, [{ text: 'x' }, { text: 'y' }, { text: 'z' }]);
    assert.equal(result.status.code, grpc.status.OK);
    assert.deepEqual(result.replies, [{ text: 'X', index: 0 }, { text: 'Y', index: 1 }, { text: 'Z', index: 2 }]);
    assert.deepEqual(result.status.metadata.get(CUSTOM_TRAILER), ['bidi']);
  });

  test('large messages both ways go through flow control whole (6.4 MB down, 640 KB up)', async () => {
    const big = 'x'.repeat(64 * 1024);
    const down = await serverStreamCall(client, { text: big, count: 100 });
    assert.equal(down.status.code, grpc.status.OK);
    assert.equal(down.replies.length, 100);
    assert.ok(down.replies.every((r) => r.text === big));
    const up = await clientStreamCall(client, Array.from({ length: 10 }, () => ({ text: big })));
    assert.equal(up.status.code, grpc.status.OK);
    assert.equal(up.replies[0]?.index, 10);
    assert.equal(up.replies[0]?.text.length, 10 * big.length + 9);
  });

  test('many calls at once share the upstream connection as streams', async () => {
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => unaryCall(client, 'Echo', { text: `m${i}`, delay_ms: 50 })));
    assert.deepEqual(results.map((r) => r.status.code), Array.from({ length: 20 }, () => grpc.status.OK));
  });

  test('bearer auth refuses a call without a valid token: UNAUTHENTICATED, with the request id; a valid token passes', async () => {
    for (const metadata of [new grpc.Metadata(), bearer('wrong')]) {
      const result = await unaryCall(client, 'Guarded', { text: 'g' }, { metadata });
      assert.equal(result.status.code, grpc.status.UNAUTHENTICATED);
      assert.equal(result.status.details, 'Missing or invalid credentials.');
      const line = logLine(proxy, requestIdOf(result.status));
      assert.equal(line.error, 'unauthorized');
      assert.equal(line.grpc_status, grpc.status.UNAUTHENTICATED);
    }
    const ok = await unaryCall(client, 'Guarded', { text: 'g' }, { metadata: bearer(TOKEN) });
    assert.equal(ok.status.code, grpc.status.OK);
  });

  test('the rate limit: RESOURCE_EXHAUSTED once the bucket is empty, with the request id', async () => {
    const first = await unaryCall(client, 'Limited', { text: 'l' });
    assert.equal(first.status.code, grpc.status.OK);
    const second = await unaryCall(client, 'Limited', { text: 'l' });
    assert.equal(second.status.code, grpc.status.RESOURCE_EXHAUSTED);
    assert.equal(logLine(proxy, requestIdOf(second.status)).error, 'rate_limited');
    assert.ok(second.status.metadata.get('retry-after').length === 1, 'Retry-After is among the trailers');
  });

  test('a service no route matches: UNIMPLEMENTED from the proxy, the upstream never called', async () => {
    const result = await unaryCall(client, 'Unrouted', { text: 'u' });
    assert.equal(result.status.code, grpc.status.UNIMPLEMENTED);
    assert.equal(result.status.details, 'No route matches the request.');
    assert.equal(logLine(proxy, requestIdOf(result.status)).error, 'no_route');
    assert.ok(!upstream.calls.includes('/tollgate.test.Unrouted/Unary'));
  });

  test('over HTTP/1.1 (gRPC-Web) a refusal takes the same form: 200, the status in the headers, no body', async () => {
    const res = await request(`${proxy.url}/tollgate.test.Unrouted/Unary`, { method: 'POST', headers: { 'content-type': 'application/grpc-web+proto' }, body: Buffer.alloc(5) });
    assert.equal(res.status, 200);
    assert.equal(res.headers['grpc-status'], String(grpc.status.UNIMPLEMENTED));
    assert.equal(res.headers['grpc-message'], 'No route matches the request.');
    assert.equal(res.headers['content-type'], 'application/grpc');
    assert.equal(res.headers['content-length'], '0');
    assert.equal(res.body, '');
    assert.equal(logLine(proxy, String(res.headers['x-request-id'])).grpc_status, grpc.status.UNIMPLEMENTED);
  });

  test('a request that is not gRPC still gets the JSON error', async () => {
    const res = await request(`${proxy.url}/tollgate.test.Unrouted/Unary`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    assert.equal(res.status, 404);
    assert.equal(res.json().error, 'no_route');
  });

  test('a client deadline: DEADLINE_EXCEEDED at the deadline, and the upstream call is cancelled', async () => {
    const result = await unaryCall(client, 'Echo', { text: 'slow-1', delay_ms: 10_000 }, { deadlineMs: 300 });
    assert.equal(result.status.code, grpc.status.DEADLINE_EXCEEDED);
    await waitFor(() => upstream.cancelled.includes('slow-1'), 5000, 'the upstream call cancelled');
  });
});

/** A raw HTTP/2 request to the proxy; resolves with the head, the body, the trailers and the stream's close code. */
function rawCall(session: ClientHttp2Session, headers: Record<string, string>): Promise<{ head: IncomingHttpHeaders; flags: number; trailers: IncomingHttpHeaders | undefined; rstCode: number }> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':method': 'POST', 'content-type': 'application/grpc', te: 'trailers', ...headers });
    let head: IncomingHttpHeaders = {};
    let flags = 0;
    let trailers: IncomingHttpHeaders | undefined;
    stream.on('response', (h, f) => {
      head = h;
      flags = f;
    });
    stream.on('trailers', (t) => {
      trailers = t;
    });
    stream.on('error', reject);
    stream.on('close', () => resolve({ head, flags, trailers, rstCode: stream.rstCode ?? 0 }));
    stream.resume();
    // An empty message (the 5-byte gRPC prefix, length 0), then the end of the request.
    stream.end(Buffer.alloc(5));
  });
}

describe('grpc-timeout is the deadline of the upstream call', () => {
  let hanging: Http2Server;
  let upstreamStreams: ServerHttp2Stream[];
  /** Streams that closed before the upstream ended them: reset from the proxy's side. */
  let aborted: Set<ServerHttp2Stream>;
  /** The request trailers each stream brought. */
  let requestTrailers: Map<ServerHttp2Stream, IncomingHttpHeaders>;
  let proxy: TestProxy;
  let session: ClientHttp2Session;
  before(async () => {
    // An h2c upstream that never answers: only the proxy can end these calls.
    upstreamStreams = [];
    aborted = new Set();
    requestTrailers = new Map();
    hanging = createServer();
    hanging.on('stream', (stream) => {
      upstreamStreams.push(stream);
      stream.on('aborted', () => aborted.add(stream));
      stream.on('trailers', (trailers) => requestTrailers.set(stream, trailers));
      stream.resume();
      stream.on('error', () => {});
    });
    hanging.listen(0, '127.0.0.1');
    await once(hanging, 'listening');
    proxy = await startProxy([{ name: 'hang', port: (hanging.address() as AddressInfo).port }], { server: { h2c: true }, load_balancing: { protocol: 'h2c', health_check: NO_HEALTH } });
    session = connect(proxy.url);
  });
  after(async () => {
    session.close();
    await proxy.close();
    hanging.close();
    assert.deepEqual(unhandled, []);
  });

  test('a client that does not enforce its own deadline gets DEADLINE_EXCEEDED from the proxy, and the upstream stream is reset', async () => {
    const call = await rawCall(session, { ':path': '/pkg.Svc/Slow', 'grpc-timeout': '300m' });
    assert.equal(call.head[':status'], 200);
    // Trailers-only: one HEADERS frame with END_STREAM.
    assert.equal(call.flags & constants.NGHTTP2_FLAG_END_STREAM, constants.NGHTTP2_FLAG_END_STREAM);
    assert.equal(call.head['grpc-status'], String(grpc.status.DEADLINE_EXCEEDED));
    assert.equal(call.head['content-type'], 'application/grpc');
    assert.equal(call.head['grpc-message'], 'The deadline the client set (grpc-timeout) passed.');
    const id = String(call.head['x-request-id']);
    assert.equal(upstreamStreams.length, 1);
    const upstreamStream = upstreamStreams[0] as ServerHttp2Stream;
    assert.equal(upstreamStream.headersSent, false, 'the upstream never answered');
    await waitFor(() => aborted.has(upstreamStream), 5000, 'the upstream stream reset by the proxy');
    const line = logLine(proxy, id);
    assert.equal(line.error, 'upstream_timeout');
    assert.equal(line.grpc_status, grpc.status.DEADLINE_EXCEEDED);
    assert.equal(line.status, 200);
  });

  test('the deadline after the response has begun: the status comes in the trailers', async () => {
    const before = upstreamStreams.length;
    const pending = rawCall(session, { ':path': '/pkg.Svc/Stream', 'grpc-timeout': '1S' });
    await waitFor(() => upstreamStreams.length > before, 5000, 'the call upstream');
    const upstreamStream = upstreamStreams[before] as ServerHttp2Stream;
    upstreamStream.respond({ ':status': 200, 'content-type': 'application/grpc' });
    upstreamStream.write(Buffer.from([0, 0, 0, 0, 0]));
    const call = await pending;
    assert.equal(call.head['grpc-status'], undefined);
    assert.equal(call.trailers?.['grpc-status'], String(grpc.status.DEADLINE_EXCEEDED));
    assert.match(String(call.trailers?.['x-request-id']), /^[\w.-]+$/);
    assert.equal(call.rstCode, constants.NGHTTP2_NO_ERROR);
    await waitFor(() => aborted.has(upstreamStream), 5000, 'the upstream stream reset by the proxy');
  });

  test('an upstream connection that drops mid-response: the call ends UNAVAILABLE in the trailers, with the request id', async () => {
    const before = upstreamStreams.length;
    const pending = rawCall(session, { ':path': '/pkg.Svc/Reset' });
    await waitFor(() => upstreamStreams.length > before, 5000, 'the call upstream');
    const upstreamStream = upstreamStreams[before] as ServerHttp2Stream;
    upstreamStream.respond({ ':status': 200, 'content-type': 'application/grpc' });
    upstreamStream.write(Buffer.from([0, 0, 0, 0, 0]), () => upstreamStream.session?.destroy());
    const call = await pending;
    assert.equal(call.head[':status'], 200);
    assert.equal(call.trailers?.['grpc-status'], String(grpc.status.UNAVAILABLE));
    const id = String(call.trailers?.['x-request-id']);
    assert.equal(logLine(proxy, id).error, 'bad_gateway');
  });

  test('request trailers reach the upstream after the body', async () => {
    const before = upstreamStreams.length;
    const stream = session.request({ ':method': 'POST', ':path': '/pkg.Svc/Trailers', 'content-type': 'application/grpc', te: 'trailers' }, { waitForTrailers: true });
    stream.on('wantTrailers', () => stream.sendTrailers({ 'x-client-trailer': 'sent-last' }));
    stream.on('error', () => {});
    stream.end(Buffer.from([0, 0, 0, 0, 0]));
    await waitFor(() => upstreamStreams.length > before, 5000, 'the call upstream');
    const upstreamStream = upstreamStreams[before] as ServerHttp2Stream;
    await waitFor(() => requestTrailers.has(upstreamStream), 5000, 'the trailers upstream');
    assert.equal(requestTrailers.get(upstreamStream)?.['x-client-trailer'], 'sent-last');
    stream.resume();
    upstreamStream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '0' }, { endStream: true });
    await once(stream, 'close');
  });

  test('a grpc-timeout gRPC does not send (a unit it has not, 9 digits) is no deadline: the call waits for the upstream', async () => {
    const before = upstreamStreams.length;
    const pending = rawCall(session, { ':path': '/pkg.Svc/Other', 'grpc-timeout': '123456789m' });
    await waitFor(() => upstreamStreams.length > before, 5000, 'the call upstream');
    const upstreamStream = upstreamStreams[before] as ServerHttp2Stream;
    assert.equal(upstreamStream.headersSent, false);
    upstreamStream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '0' }, { endStream: true });
    const call = await pending;
    assert.equal(call.head['grpc-status'], '0');
  });
});

describe('a gRPC upstream over TLS (protocol: h2)', () => {
  test('unary and server streaming calls with their trailers, and a refusal, through undici\'s HTTP/2 pool', async () => {
    const ca = privateCa();
    const upstream = await startGrpcUpstream(0, ca.issue(['127.0.0.1']));
    const proxy = await startProxy([{ name: 'tls1', port: upstream.port }], { server: { h2c: true }, load_balancing: { protocol: 'h2', tls: { ca_file: ca.certFile }, health_check: NO_HEALTH }, routes: ROUTES });
    const client = grpcClient(`127.0.0.1:${proxy.port}`);
    try {
      const unary = await unaryCall(client, 'Echo', { text: 'over tls' });
      assert.equal(unary.status.code, grpc.status.OK);
      assert.deepEqual(unary.replies, [{ text: 'over tls', index: 0 }]);
      assert.deepEqual(unary.status.metadata.get(CUSTOM_TRAILER), ['unary']);
      const failed = await unaryCall(client, 'Echo', { text: 'fail' });
      assert.equal(failed.status.code, grpc.status.NOT_FOUND);
      assert.deepEqual(failed.status.metadata.get(CUSTOM_TRAILER), ['failed']);
      const stream = await serverStreamCall(client, { text: 's', count: 3 });
      assert.equal(stream.status.code, grpc.status.OK);
      assert.equal(stream.replies.length, 3);
      assert.deepEqual(stream.status.metadata.get(CUSTOM_TRAILER), ['server-stream']);
      const refused = await unaryCall(client, 'Guarded', { text: 'g' });
      assert.equal(refused.status.code, grpc.status.UNAUTHENTICATED);
    } finally {
      client.close();
      await proxy.close();
      await upstream.close();
    }
  });
});

describe('gRPC answers of the proxy when the upstream fails', () => {
  test('one upstream of two down: every call is retried on the other (nothing was sent), all OK', async () => {
    const upstream = await startGrpcUpstream();
    const port = await closedPort();
    const proxy = await startProxy([{ name: 'down', port }, { name: 'up', port: upstream.port }], { server: { h2c: true }, load_balancing: { protocol: 'h2c', health_check: NO_HEALTH } });
    const client = grpcClient(`127.0.0.1:${proxy.port}`);
    try {
      for (let i = 0; i < 4; i++) assert.equal((await unaryCall(client, 'Echo', { text: `r${i}` })).status.code, grpc.status.OK);
      assert.ok(proxy.logs.some((l) => l.msg === 'Request Completed' && l.retries === 1 && l.upstream === 'up'));
    } finally {
      client.close();
      await proxy.close();
      await upstream.close();
    }
  });

  test('an upstream that restarts: calls go on over a new connection', async () => {
    let upstream = await startGrpcUpstream();
    const proxy = await startProxy([{ name: 'g1', port: upstream.port }], { server: { h2c: true }, load_balancing: { protocol: 'h2c', health_check: NO_HEALTH } });
    const client = grpcClient(`127.0.0.1:${proxy.port}`);
    try {
      assert.equal((await unaryCall(client, 'Echo', { text: 'before' })).status.code, grpc.status.OK);
      const port = upstream.port;
      await upstream.close();
      upstream = await startGrpcUpstream(port);
      // A call may still meet the old connection before its close is seen; the next ones use a new one.
      await waitFor(async () => (await unaryCall(client, 'Echo', { text: 'after' })).status.code === grpc.status.OK, 5000, 'a call OK after the restart');
      assert.ok(upstream.calls.includes('/tollgate.test.Echo/Unary'));
    } finally {
      client.close();
      await proxy.close();
      await upstream.close();
    }
  });

  test('an upstream that is down: UNAVAILABLE, with the request id', async () => {
    const port = await closedPort();
    const proxy = await startProxy([{ name: 'down', port }], { server: { h2c: true }, load_balancing: { protocol: 'h2c', health_check: NO_HEALTH } });
    const client = grpcClient(`127.0.0.1:${proxy.port}`);
    try {
      const result = await unaryCall(client, 'Echo', { text: 'x' });
      assert.equal(result.status.code, grpc.status.UNAVAILABLE);
      assert.equal(result.status.details, 'The upstream could not be reached or failed while answering.');
      assert.equal(logLine(proxy, requestIdOf(result.status)).error, 'bad_gateway');
    } finally {
      client.close();
      await proxy.close();
    }
  });
});

describe('gRPC health checks (type: grpc)', () => {
  test('a backend answering NOT_SERVING is taken out, and brought back when it answers SERVING', async () => {
    const upstream = await startGrpcUpstream();
    upstream.health.set('tollgate.test.Echo', 1);
    const health = { active: { type: 'grpc', interval_ms: 100, timeout_ms: 1000, healthy_threshold: 1, unhealthy_threshold: 1, grpc: { service: 'tollgate.test.Echo' } }, passive: { enabled: false } };
    const proxy = await startProxy([{ name: 'g1', port: upstream.port }], { server: { h2c: true }, load_balancing: { protocol: 'h2c', health_check: health }, routes: ROUTES });
    const healthy = async (): Promise<boolean> => {
      const res = await request(`${proxy.url}/health`);
      return (res.json().upstreams as { healthy: boolean }[])[0]?.healthy === true;
    };
    const client = grpcClient(`127.0.0.1:${proxy.port}`);
    try {
      upstream.health.set('tollgate.test.Echo', 2);
      await waitFor(async () => !(await healthy()), 5000, 'the backend taken out');
      const down = proxy.logs.find((l) => l.msg === 'upstream unhealthy: taken out of rotation');
      assert.match(String(down?.reason), /grpc check.*NOT_SERVING/);
      const refused = await unaryCall(client, 'Echo', { text: 'x' });
      assert.equal(refused.status.code, grpc.status.UNAVAILABLE);
      assert.equal(logLine(proxy, requestIdOf(refused.status)).error, 'no_upstream');
      upstream.health.set('tollgate.test.Echo', 1);
      await waitFor(healthy, 5000, 'the backend back');
      assert.equal((await unaryCall(client, 'Echo', { text: 'x' })).status.code, grpc.status.OK);
      // A service the server does not know is a failed check too (grpc-status NOT_FOUND).
      upstream.health.delete('tollgate.test.Echo');
      await waitFor(async () => !(await healthy()), 5000, 'the backend taken out again');
      assert.ok(proxy.logs.some((l) => /grpc-status 5 \(unknown service\)/.test(String(l.reason))));
    } finally {
      client.close();
      await proxy.close();
      await upstream.close();
    }
  });
});
