/** Raw-socket exchanges for protocol tests: bytes go out exactly as written. */
import { connect } from 'node:net';

export interface Exchange {
  /** Everything the server wrote, as latin1 text. */
  text: string;
  /** True when the server closed the connection (rather than the test giving up after `ms`). */
  closedByServer: boolean;
  /** Milliseconds from the first byte sent to the close. */
  elapsed: number;
}

/**
 * Writes `parts` (each after `gapMs`), then reads until the server closes or `ms` passes.
 */
export function exchange(port: number, parts: string | Buffer | (string | Buffer)[], ms = 2000, gapMs = 0): Promise<Exchange> {
  const chunks = Array.isArray(parts) ? parts : [parts];
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const socket = connect(port, '127.0.0.1');
    const received: Buffer[] = [];
    let gaveUp = false;
    const timer = setTimeout(() => {
      gaveUp = true;
      socket.destroy();
    }, ms);
    socket.on('data', (c: Buffer) => received.push(c));
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'ECONNRESET' && err.code !== 'EPIPE') reject(err);
    });
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ text: Buffer.concat(received).toString('latin1'), closedByServer: !gaveUp, elapsed: Date.now() - started });
    });
    void (async () => {
      for (const part of chunks) {
        if (socket.destroyed) return;
        socket.write(part);
        if (gapMs > 0) await new Promise((r) => setTimeout(r, gapMs));
      }
    })();
  });
}

/** The status code of the first response in `text`, or 0. */
export function statusOf(text: string): number {
  const match = /^HTTP\/1\.[01] (\d{3})/.exec(text);
  return match ? Number(match[1]) : 0;
}

/** All status codes of the responses in `text`, in order (final responses only, 1xx included). */
export function statusesOf(text: string): number[] {
  return [...text.matchAll(/(?:^|\r\n)HTTP\/1\.[01] (\d{3})/g)].map((m) => Number(m[1]));
}
