/**
 * HTTP/2 frames written by hand, for attack and protocol tests over a raw socket: a frame encoder, HPACK
 * literal header fields (never indexed, never Huffman-coded) and a reader that splits what the server sends
 * into frames. Only what the tests need; responses are not HPACK-decoded (tests look at frame types and
 * error codes, and use node:http2 for status and headers).
 */
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

export const FRAME = { DATA: 0, HEADERS: 1, PRIORITY: 2, RST_STREAM: 3, SETTINGS: 4, PUSH_PROMISE: 5, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 } as const;
export const FLAG = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 } as const;
export const ERROR = { NO_ERROR: 0, PROTOCOL_ERROR: 1, INTERNAL_ERROR: 2, FLOW_CONTROL_ERROR: 3, REFUSED_STREAM: 7, CANCEL: 8, COMPRESSION_ERROR: 9, ENHANCE_YOUR_CALM: 11 } as const;
export const SETTING = { HEADER_TABLE_SIZE: 1, ENABLE_PUSH: 2, MAX_CONCURRENT_STREAMS: 3, INITIAL_WINDOW_SIZE: 4, MAX_FRAME_SIZE: 5, MAX_HEADER_LIST_SIZE: 6 } as const;

export function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head.writeUInt8(type, 3);
  head.writeUInt8(flags, 4);
  head.writeUInt32BE(streamId & 0x7fffffff, 5);
  return Buffer.concat([head, payload]);
}

export function settings(entries: [number, number][] = [], ack = false): Buffer {
  const payload = Buffer.alloc(entries.length * 6);
  entries.forEach(([id, value], i) => {
    payload.writeUInt16BE(id, i * 6);
    payload.writeUInt32BE(value, i * 6 + 2);
  });
  return frame(FRAME.SETTINGS, ack ? FLAG.ACK : 0, 0, payload);
}

export function ping(ack = false, data: Buffer = Buffer.alloc(8)): Buffer {
  return frame(FRAME.PING, ack ? FLAG.ACK : 0, 0, data);
}

export function rstStream(streamId: number, code: number = ERROR.CANCEL): Buffer {
  const payload = Buffer.alloc(4);
  payload.writeUInt32BE(code);
  return frame(FRAME.RST_STREAM, 0, streamId, payload);
}

export function windowUpdate(streamId: number, increment: number): Buffer {
  const payload = Buffer.alloc(4);
  payload.writeUInt32BE(increment);
  return frame(FRAME.WINDOW_UPDATE, 0, streamId, payload);
}

export function data(streamId: number, body: Buffer | string, endStream = true): Buffer {
  return frame(FRAME.DATA, endStream ? FLAG.END_STREAM : 0, streamId, Buffer.from(body));
}

/** An HPACK integer with an N-bit prefix (RFC 7541 §5.1); `first` holds the bits above the prefix. */
function hpackInt(value: number, prefixBits: number, first = 0): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([first | value]);
  const bytes = [first | max];
  let rest = value - max;
  while (rest >= 128) {
    bytes.push((rest % 128) + 128);
    rest = Math.floor(rest / 128);
  }
  bytes.push(rest);
  return Buffer.from(bytes);
}

function hpackString(text: string): Buffer {
  const bytes = Buffer.from(text, 'latin1');
  return Buffer.concat([hpackInt(bytes.length, 7), bytes]);
}

/** A header block of literal fields without indexing (RFC 7541 §6.2.2), names sent as they are given. */
export function headerBlock(fields: [string, string][]): Buffer {
  return Buffer.concat(fields.flatMap(([name, value]) => [Buffer.from([0x00]), hpackString(name), hpackString(value)]));
}

/** One literal field with incremental indexing (RFC 7541 §6.2.1): the decoder adds it to its dynamic table. */
export function indexedLiteral(name: string, value: string): Buffer {
  return Buffer.concat([Buffer.from([0x40]), hpackString(name), hpackString(value)]);
}

/** A dynamic table size update (RFC 7541 §6.3) to put in front of a header block. */
export function tableSizeUpdate(size: number): Buffer {
  return hpackInt(size, 5, 0x20);
}

export function headers(streamId: number, block: Buffer | [string, string][], options: { endStream?: boolean; endHeaders?: boolean } = {}): Buffer {
  const payload = Array.isArray(block) ? headerBlock(block) : block;
  const flags = (options.endStream === false ? 0 : FLAG.END_STREAM) | (options.endHeaders === false ? 0 : FLAG.END_HEADERS);
  return frame(FRAME.HEADERS, flags, streamId, payload);
}

export function continuation(streamId: number, block: Buffer, endHeaders: boolean): Buffer {
  return frame(FRAME.CONTINUATION, endHeaders ? FLAG.END_HEADERS : 0, streamId, block);
}

/** The request pseudo-headers of a GET, then `extra`. */
export function request(path: string, extra: [string, string][] = [], method = 'GET', authority = 'localhost'): [string, string][] {
  return [[':method', method], [':scheme', 'http'], [':authority', authority], [':path', path], ...extra];
}

export interface Frame {
  type: number;
  flags: number;
  streamId: number;
  payload: Buffer;
}

/** The error code of a RST_STREAM or GOAWAY frame. */
export function errorCode(f: Frame): number {
  return f.type === FRAME.GOAWAY ? f.payload.readUInt32BE(4) : f.payload.readUInt32BE(0);
}

/**
 * A raw HTTP/2 connection: writes bytes as given, splits what comes back into frames, and tells when the
 * server closed. The client's SETTINGS are acknowledged by nobody: tests send what they mean to.
 */
export class RawH2 {
  readonly socket: Socket;
  readonly frames: Frame[] = [];
  closed = false;
  #buffer = Buffer.alloc(0);
  #waiters: (() => void)[] = [];

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.#buffer = Buffer.concat([this.#buffer, chunk]);
      while (this.#buffer.length >= 9) {
        const length = this.#buffer.readUIntBE(0, 3);
        if (this.#buffer.length < 9 + length) break;
        this.frames.push({ type: this.#buffer[3] as number, flags: this.#buffer[4] as number, streamId: this.#buffer.readUInt32BE(5) & 0x7fffffff, payload: this.#buffer.subarray(9, 9 + length) });
        this.#buffer = this.#buffer.subarray(9 + length);
      }
      this.#wake();
    });
    // The server may reset the connection after its GOAWAY; what counts is that it ended it.
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.closed = true;
      this.#wake();
    });
  }

  /** Connects over cleartext (h2c prior knowledge) and sends the preface and an empty SETTINGS. */
  static async cleartext(port: number, initial: Buffer = Buffer.concat([PREFACE, settings()])): Promise<RawH2> {
    const socket = netConnect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const h2 = new RawH2(socket);
    socket.write(initial);
    return h2;
  }

  /** Connects over TLS with ALPN h2 (any certificate accepted) and sends the preface and an empty SETTINGS. */
  static async tls(port: number): Promise<RawH2> {
    const socket = tlsConnect({ host: '127.0.0.1', port, ALPNProtocols: ['h2'], rejectUnauthorized: false, servername: 'localhost' });
    await new Promise<void>((resolve, reject) => {
      socket.once('secureConnect', resolve);
      socket.once('error', reject);
    });
    if (socket.alpnProtocol !== 'h2') throw new Error(`ALPN gave ${String(socket.alpnProtocol)}, not h2`);
    const h2 = new RawH2(socket);
    socket.write(Buffer.concat([PREFACE, settings()]));
    return h2;
  }

  write(bytes: Buffer | Buffer[]): boolean {
    if (this.socket.destroyed) return false;
    return this.socket.write(Array.isArray(bytes) ? Buffer.concat(bytes) : bytes);
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  /** Resolves with the first frame matching `test`, or undefined once the connection closed or `ms` passed. */
  async waitFor(test: (f: Frame) => boolean, ms = 5000): Promise<Frame | undefined> {
    const deadline = Date.now() + ms;
    for (;;) {
      const found = this.frames.find(test);
      if (found !== undefined) return found;
      if (this.closed || Date.now() >= deadline) return undefined;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Resolves true once the server closed the connection, false if it is still open after `ms`. */
  async waitClosed(ms = 5000): Promise<boolean> {
    await this.waitFor(() => false, ms);
    return this.closed;
  }

  goaway(): Frame | undefined {
    return this.frames.find((f) => f.type === FRAME.GOAWAY);
  }

  close(): void {
    this.socket.destroy();
  }
}
