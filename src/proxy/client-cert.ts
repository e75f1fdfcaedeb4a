/**
 * The client certificate of a TLS connection, as auth (`client_cert`) and `forward_client_cert` use it:
 * read from the socket once per connection, on the first request that asks, and kept with the socket.
 */
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';

export interface ClientCertificate {
  /** The subject as an RFC 4514 string (`CN=client,O=Example`), non-ASCII bytes as `\XX` escapes. */
  readonly subject: string;
  /** SHA-256 of the DER certificate, 64 lower-case hex digits. */
  readonly fingerprint: string;
}

/**
 * The headers `forward_client_cert` sends upstream: the subject and the fingerprint. Always removed from
 * the client's request, so an upstream can trust them whenever they are present.
 */
export const CLIENT_CERT_HEADERS = ['x-client-cert-subject', 'x-client-cert-fingerprint'] as const;

/** Per connection: the certificate, or null for a connection without a verified one. */
const seen = new WeakMap<Socket, ClientCertificate | null>();

/**
 * The verified client certificate of the connection, or undefined (plain HTTP, or TLS without client
 * certificates). Only a certificate the handshake verified counts (`authorized`).
 */
export function clientCertificate(socket: Socket): ClientCertificate | undefined {
  let cert = seen.get(socket);
  if (cert === undefined) {
    cert = readCertificate(socket);
    seen.set(socket, cert);
  }
  return cert ?? undefined;
}

function readCertificate(socket: Socket): ClientCertificate | null {
  const tls = socket as Partial<TLSSocket>;
  if (tls.encrypted !== true || tls.authorized !== true || tls.getPeerX509Certificate === undefined) return null;
  const x509 = tls.getPeerX509Certificate.call(socket as TLSSocket);
  if (x509 === undefined) return null;
  return { subject: rfc4514Subject(x509.subject), fingerprint: normalizeFingerprint(x509.fingerprint256) };
}

/** `AB:CD:...` (as openssl and Node print it) or plain hex, as 64 lower-case hex digits. */
export function normalizeFingerprint(fingerprint: string): string {
  return fingerprint.replaceAll(':', '').toLowerCase();
}

/**
 * Node's subject (one attribute per line, most significant first, values already escaped as RFC 2253
 * asks) as one RFC 4514 line: least significant first, joined with commas. Bytes outside printable
 * ASCII become `\XX` escapes, so the value is a valid header value.
 */
export function rfc4514Subject(subject: string): string {
  const line = subject.split('\n').filter((part) => part !== '').reverse().join(',');
  return line.replace(/[^\x20-\x7e]/gu, (ch) => [...Buffer.from(ch, 'utf8')].map((b) => `\\${b.toString(16).toUpperCase().padStart(2, '0')}`).join(''));
}
