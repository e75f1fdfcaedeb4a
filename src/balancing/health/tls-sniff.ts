import { isIP } from 'node:net';
import { connect } from 'node:tls';

/** What a log line adds when an upstream turns out to speak TLS. */
export const TLS_PORT_HINT = 'it completes a TLS handshake: is it an https port? Give the upstream tls: { enabled: true }';

/**
 * Whether `data` (the upstream bytes undici could not parse, as it keeps them: a string) begins with a
 * TLS record: content type alert (0x15) or handshake (0x16), then protocol major version 3.
 */
export function startsWithTlsRecord(data: unknown): boolean {
  if (typeof data !== 'string' || data.length < 2) return false;
  const type = data.charCodeAt(0);
  return (type === 0x15 || type === 0x16) && data.charCodeAt(1) === 0x03;
}

/**
 * Whether host:port completes a TLS handshake within `timeoutMs` (any certificate: this only asks whether
 * the upstream speaks TLS). Used to explain an upstream that closes plain-HTTP connections without a
 * byte, which is what a TLS server (Node's, for one) does with them. Never rejects.
 */
export function acceptsTls(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port, rejectUnauthorized: false, timeout: timeoutMs, ...(isIP(host) === 0 ? { servername: host } : {}) });
    const done = (yes: boolean): void => {
      socket.destroy();
      resolve(yes);
    };
    socket.once('secureConnect', () => done(true));
    socket.once('timeout', () => done(false));
    socket.once('error', () => done(false));
  });
}
