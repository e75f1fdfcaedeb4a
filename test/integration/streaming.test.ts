/**
 * Server-Sent Events and other streamed responses: each chunk reaches the client as the upstream sends it,
 * and response_timeout_ms is the longest pause between chunks, not a limit on the whole response.
 */
import assert from 'node:assert/strict';
import { request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import { connect as h2connect } from 'node:http2';
import { after, before, describe, test } from 'node:test';
import { startBackend, startProxy, type Backend, type TestProxy } from '../helpers/servers.js';

/** A promise with its resolve, for lock-step exchanges between the upstream and the test. */
function signal<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** Opens a GET through the proxy and hands over the response as soon as its head arrives. */
function open(url: string): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { agent: false, headers: { accept: 'text/event-stream' } }, resolve);
    req.on('error', reject);
    req.end();
  });
}

describe('Server-Sent Events through the proxy', () => {
  const EVENTS = 5;
  /** Resolved by the test once the client has the response head, then once per event it has received. */
  let acks: { promise: Promise<void>; resolve: () => void }[] = [];
  /** When the upstream wrote each event (performance.now()). */
  const sentAt: number[] = [];
  let backend: Backend;
  let proxy: TestProxy;
  let h2Proxy: TestProxy;
  before(async () => {
    backend = await startBackend('sse', (_req: IncomingMessage, res: ServerResponse) => {
      void (async () => {
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
        res.flushHeaders();
        // Nothing more until the client has the head through the proxy: a proxy that holds the head back
        // until the first chunk never gets one.
        await (acks[0] as { promise: Promise<void> }).promise;
        for (let i = 1; i <= EVENTS; i++) {
          sentAt[i] = performance.now();
          res.write(`id: ${i}\ndata: event ${i}\n\n`);
          // The next event only once the client has received this one through the proxy.
          await (acks[i] as { promise: Promise<void> }).promise;
        }
        res.end();
      })();
    });
    proxy = await startProxy([backend], { load_balancing: { response_timeout_ms: 5000 } });
    h2Proxy = await startProxy([backend], { server: { h2c: true }, load_balancing: { response_timeout_ms: 5000 } });
  });
  after(async () => {
    await proxy.close();
    await h2Proxy.close();
    await backend.close();
  });

  test('over HTTP/2 too: the head at once, then each event as it is sent', { timeout: 20_000 }, async () => {
    acks = Array.from({ length: EVENTS + 1 }, () => signal());
    const session = h2connect(`http://127.0.0.1:${h2Proxy.port}`);
    try {
      const stream = session.request({ ':path': '/events', accept: 'text/event-stream' });
      const head = await new Promise<Record<string, unknown>>((resolve, reject) => {
        stream.once('response', resolve);
        stream.once('error', reject);
      });
      assert.equal(head[':status'], 200);
      assert.equal(head['content-type'], 'text/event-stream');
      (acks[0] as { resolve: () => void }).resolve();
      let text = '';
      let seen = 0;
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        text += chunk.toString();
        while (text.includes('\n\n')) {
          const end = text.indexOf('\n\n');
          assert.equal(text.slice(0, end), `id: ${seen + 1}\ndata: event ${seen + 1}`);
          text = text.slice(end + 2);
          seen++;
          (acks[seen] as { resolve: () => void }).resolve();
        }
      }
      assert.equal(seen, EVENTS);
    } finally {
      session.close();
    }
  });

  test('the head at once, then each event one by one, as the upstream sends it', { timeout: 20_000 }, async () => {
    acks = Array.from({ length: EVENTS + 1 }, () => signal());
    const res = await open(`${proxy.url}/events`);
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['content-type'], 'text/event-stream');
    assert.ok(res.headers['x-request-id'] !== undefined);
    (acks[0] as { resolve: () => void }).resolve();
    const receivedAt: number[] = [];
    let text = '';
    let seen = 0;
    for await (const chunk of res as AsyncIterable<Buffer>) {
      text += chunk.toString();
      // Events end with a blank line; acknowledge each complete one as it arrives.
      while (text.includes('\n\n')) {
        const end = text.indexOf('\n\n');
        const event = text.slice(0, end);
        text = text.slice(end + 2);
        seen++;
        receivedAt[seen] = performance.now();
        assert.equal(event, `id: ${seen}\ndata: event ${seen}`);
        (acks[seen] as { resolve: () => void }).resolve();
      }
    }
    assert.equal(seen, EVENTS);
    // Each event was received before the upstream wrote the next one: none was held back.
    for (let i = 1; i < EVENTS; i++) assert.ok((receivedAt[i] as number) <= (sentAt[i + 1] as number), `event ${i} arrived before event ${i + 1} was sent`);
  });
});

describe('a long response that keeps sending', () => {
  let backend: Backend;
  let proxy: TestProxy;
  before(async () => {
    backend = await startBackend('trickle', (req, res) => {
      const pause = req.url === '/stall' ? 1500 : 100;
      const chunks = req.url === '/stall' ? 2 : 15;
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      let sent = 0;
      const next = (): void => {
        if (res.destroyed) return;
        res.write(`{"n":${sent}}\n`);
        sent++;
        if (sent === chunks) res.end();
        else setTimeout(next, pause).unref();
      };
      next();
    });
    // The whole response of /trickle takes 1.4 s, seven times response_timeout_ms; no pause reaches it.
    proxy = await startProxy([backend], { load_balancing: { response_timeout_ms: 200, retries: { max_retries: 0 } } });
  });
  after(async () => {
    await proxy.close();
    await backend.close();
  });

  test('is not cut by response_timeout_ms while chunks keep coming (the timeout is between chunks)', { timeout: 20_000 }, async () => {
    const res = await open(`${proxy.url}/trickle`);
    assert.equal(res.statusCode, 200);
    let body = '';
    for await (const chunk of res as AsyncIterable<Buffer>) body += chunk.toString();
    assert.equal(body.trim().split('\n').length, 15);
    assert.ok(res.complete, 'the response ended normally');
  });

  test('a pause longer than response_timeout_ms cuts it: the client sees an incomplete response', { timeout: 20_000 }, async () => {
    const res = await open(`${proxy.url}/stall`);
    assert.equal(res.statusCode, 200);
    let body = '';
    const ended = await new Promise<string>((resolve) => {
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve('end'));
      res.on('error', () => resolve('error'));
      res.on('aborted', () => resolve('aborted'));
    });
    assert.notEqual(ended, 'end');
    assert.equal(body, '{"n":0}\n');
  });
});
