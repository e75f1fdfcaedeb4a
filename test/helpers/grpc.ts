/**
 * gRPC for tests: a real @grpc/grpc-js upstream serving test/fixtures/echo.proto (and the health protocol of
 * test/fixtures/health.proto), and grpc-js client calls of each kind that resolve with the call's status,
 * initial metadata and messages.
 */
import type { EventEmitter } from 'node:events';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const FIXTURES = fileURLToPath(new URL('../fixtures/', import.meta.url));
const LOAD_OPTIONS: protoLoader.Options = { keepCase: true, defaults: true, enums: Number };

export const ECHO_PROTO = protoLoader.loadSync(`${FIXTURES}echo.proto`, LOAD_OPTIONS);
export const HEALTH_PROTO = protoLoader.loadSync(`${FIXTURES}health.proto`, LOAD_OPTIONS);

export interface EchoRequest {
  text?: string;
  count?: number;
  delay_ms?: number;
}

export interface EchoReply {
  text: string;
  index: number;
}

/** The methods of one service of echo.proto (`Echo`, `Guarded`, `Limited`, `Unrouted`). */
function service(name: string): grpc.ServiceDefinition {
  return ECHO_PROTO[`tollgate.test.${name}`] as grpc.ServiceDefinition;
}

function method(serviceName: string, name: string): grpc.MethodDefinition<EchoRequest, EchoReply> {
  return service(serviceName)[name] as grpc.MethodDefinition<EchoRequest, EchoReply>;
}

export interface GrpcUpstream {
  port: number;
  server: grpc.Server;
  /** Texts of the calls the server saw cancelled (the client, or the proxy, reset the stream). */
  cancelled: string[];
  /** Calls begun, by method path. */
  calls: string[];
  /** What grpc.health.v1.Health/Check answers, by service name ('' is the server); absent: SERVICE_UNKNOWN... as NOT_FOUND. */
  health: Map<string, number>;
  close(): Promise<void>;
}

/** A trailer every call of the test upstream ends with, beside grpc-status and grpc-message. */
export const CUSTOM_TRAILER = 'x-echo-trailer';

function trailer(value: string): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set(CUSTOM_TRAILER, value);
  return md;
}

/**
 * The test upstream, on 127.0.0.1 `port` (0: a free one), without TLS (reached with `protocol: h2c`) unless
 * given a certificate (then `protocol: h2` with `tls`). Unary answers the
 * text, after `delay_ms`; the text `fail` ends the call NOT_FOUND with a message that needs percent-encoding.
 * ServerStream sends `count` replies; ClientStream joins the texts it got; Bidi answers each message as it
 * comes. Each ends with the custom trailer.
 */
export async function startGrpcUpstream(port = 0, tls?: { cert: string; key: string }): Promise<GrpcUpstream> {
  const upstream: GrpcUpstream = {
    port: 0,
    server: new grpc.Server(),
    cancelled: [],
    calls: [],
    health: new Map([['', 1]]),
    close: () => new Promise<void>((resolve) => {
      upstream.server.forceShutdown();
      resolve();
    }),
  };
  const unary: grpc.handleUnaryCall<EchoRequest, EchoReply> = (call, callback) => {
    upstream.calls.push(call.getPath());
    const text = call.request.text ?? '';
    call.on('cancelled', () => upstream.cancelled.push(text));
    if (text === 'fail') {
      callback({ code: grpc.status.NOT_FOUND, details: 'no such echo: 100% ü', metadata: trailer('failed') });
      return;
    }
    const answer = (): void => callback(null, { text, index: 0 }, trailer('unary'));
    const delay = call.request.delay_ms ?? 0;
    if (delay > 0) {
      const timer = setTimeout(answer, delay);
      call.on('cancelled', () => clearTimeout(timer));
    } else answer();
  };
  const echo: grpc.UntypedServiceImplementation = {
    Unary: unary,
    ServerStream: ((call: grpc.ServerWritableStream<EchoRequest, EchoReply>) => {
      upstream.calls.push(call.getPath());
      for (let i = 0; i < (call.request.count ?? 0); i++) call.write({ text: call.request.text ?? '', index: i });
      call.end(trailer('server-stream'));
    }) as grpc.handleServerStreamingCall<EchoRequest, EchoReply>,
    ClientStream: ((call: grpc.ServerReadableStream<EchoRequest, EchoReply>, callback: grpc.sendUnaryData<EchoReply>) => {
      upstream.calls.push(call.getPath());
      const texts: string[] = [];
      call.on('data', (m: EchoRequest) => texts.push(m.text ?? ''));
      call.on('end', () => callback(null, { text: texts.join(','), index: texts.length }, trailer('client-stream')));
    }) as grpc.handleClientStreamingCall<EchoRequest, EchoReply>,
    Bidi: ((call: grpc.ServerDuplexStream<EchoRequest, EchoReply>) => {
      upstream.calls.push(call.getPath());
      let index = 0;
      call.on('data', (m: EchoRequest) => call.write({ text: (m.text ?? '').toUpperCase(), index: index++ }));
      call.on('end', () => call.end(trailer('bidi')));
    }) as grpc.handleBidiStreamingCall<EchoRequest, EchoReply>,
  };
  upstream.server.addService(service('Echo'), echo);
  upstream.server.addService(service('Guarded'), { Unary: unary });
  upstream.server.addService(service('Limited'), { Unary: unary });
  upstream.server.addService(service('Unrouted'), { Unary: unary });
  upstream.server.addService(HEALTH_PROTO['grpc.health.v1.Health'] as grpc.ServiceDefinition, {
    Check: ((call: grpc.ServerUnaryCall<{ service: string }, { status: number }>, callback: grpc.sendUnaryData<{ status: number }>) => {
      const status = upstream.health.get(call.request.service);
      if (status === undefined) callback({ code: grpc.status.NOT_FOUND, details: 'unknown service' });
      else callback(null, { status });
    }) as grpc.handleUnaryCall<{ service: string }, { status: number }>,
  });
  upstream.port = await new Promise<number>((resolve, reject) => {
 const credentials = tls === undefined ? grpc.ServerCredentials.createInsecure() : grpc.ServerCredentials.createSsl(null, [{ cert_chain: Buffer.from(tls.cert), private_key: Buffer.from(tls.key) }]);
    upstream.server.bindAsync(`127.0.0.1:${port}`, credentials, (err, port) => (err === null ? resolve(port) : reject(err)));
  });
  return upstream;
}

/** A grpc-js client of `target` (`127.0.0.1:port`), without TLS (h2c). */
export function grpcClient(target: string): grpc.Client {
  return new grpc.Client(target, grpc.credentials.createInsecure());
}

export interface CallResult {
  status: grpc.StatusObject;
  /** The response's initial metadata (headers), when the call had any (not for a trailers-only answer). */
  headers: grpc.Metadata | undefined;
  replies: EchoReply[];
}

export interface CallOptions {
  metadata?: grpc.Metadata;
  /** Milliseconds from now. */
  deadlineMs?: number;
}

function callOptions(options: CallOptions): grpc.CallOptions {
  return options.deadlineMs === undefined ? {} : { deadline: Date.now() + options.deadlineMs };
}

/** Resolves once the call has its status, with what it received. */
function settle(call: EventEmitter, replies: EchoReply[]): Promise<CallResult> {
  return new Promise((resolve) => {
    let headers: grpc.Metadata | undefined;
    call.on('metadata', (md: grpc.Metadata) => {
      headers = md;
    });
    call.on('data', (m: EchoReply) => replies.push(m));
    call.on('error', () => {
      // The status event carries the same error.
    });
    call.on('status', (status: grpc.StatusObject) => resolve({ status, headers, replies }));
  });
}

export function unaryCall(client: grpc.Client, serviceName: string, request: EchoRequest, options: CallOptions = {}): Promise<CallResult> {
  const m = method(serviceName, 'Unary');
  const replies: EchoReply[] = [];
  const call = client.makeUnaryRequest(m.path, m.requestSerialize, m.responseDeserialize, request, options.metadata ?? new grpc.Metadata(), callOptions(options), (_err, reply) => {
    if (reply !== undefined) replies.push(reply);
  });
  return settle(call, replies);
}

export function serverStreamCall(client: grpc.Client, request: EchoRequest, options: CallOptions = {}): Promise<CallResult> {
  const m = method('Echo', 'ServerStream');
  const call = client.makeServerStreamRequest(m.path, m.requestSerialize, m.responseDeserialize, request, options.metadata ?? new grpc.Metadata(), callOptions(options));
  return settle(call, []);
}

export function clientStreamCall(client: grpc.Client, requests: EchoRequest[], options: CallOptions = {}): Promise<CallResult> {
  const m = method('Echo', 'ClientStream');
  const replies: EchoReply[] = [];
  const call = client.makeClientStreamRequest(m.path, m.requestSerialize, m.responseDeserialize, options.metadata ?? new grpc.Metadata(), callOptions(options), (_err, reply) => {
    if (reply !== undefined) replies.push(reply);
  });
  const done = settle(call, replies);
  for (const r of requests) call.write(r);
  call.end();
  return done;
}

/**
 * A bidirectional call that writes each request only after the answer to the one before has come back,
 * so the test sees messages cross in both directions while the call is open.
 */
export function bidiCall(client: grpc.Client, requests: EchoRequest[], options: CallOptions = {}): Promise<CallResult> {
  const m = method('Echo', 'Bidi');
  const call = client.makeBidiStreamRequest(m.path, m.requestSerialize, m.responseDeserialize, options.metadata ?? new grpc.Metadata(), callOptions(options));
  const replies: EchoReply[] = [];
  const done = settle(call, replies);
  let next = 0;
  const send = (): void => {
    if (next < requests.length) call.write(requests[next++] as EchoRequest);
    else call.end();
  };
  call.on('data', send);
  send();
  return done;
}
