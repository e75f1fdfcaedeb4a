import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isIP, type Socket } from 'node:net';
import { createSecureContext } from 'node:tls';
import type { buildConnector as BuildConnector } from 'undici';
import { buildConnector } from '../util/undici.js';
import type { UpstreamTls } from '../config/resolve.js';

/**
 * An upstream's TLS settings with its files read: what its pool connects with. Made when the config is
 * loaded (each backend of a new generation reads its files again, so a reload picks up rotated
 * certificates).
 */
export interface TlsMaterial {
  /** Sent as SNI and checked against the certificate; undefined for an IP address without `servername`. */
  sni: string | undefined;
  /** `servername`, else the address: what undici is told on each request, so it never reconnects on a new Host. */
  name: string;
  verify: boolean;
  ca: string | undefined;
  cert: string | undefined;
  key: string | undefined;
  /** The settings and the files' contents as one comparable string (a change makes another backend). */
  id: string;
}

/** A TLS file that cannot be used; `key` names the setting (`ca_file`, `cert_file`, `key_file`). */
export class TlsFileError extends Error {
  constructor(
    readonly key: 'ca_file' | 'cert_file' | 'key_file',
    message: string,
  ) {
    super(message);
    this.name = 'TlsFileError';
  }
}

function readPem(key: 'ca_file' | 'cert_file' | 'key_file', file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const reason = code === 'ENOENT' ? 'file not found' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'is a directory' : (err as Error).message;
    throw new TlsFileError(key, `cannot read ${file}: ${reason}`);
  }
}

/** Whether `pem` holds at least one certificate OpenSSL can parse. */
function checkCertificate(key: 'ca_file' | 'cert_file', file: string, pem: string): void {
  try {
    new X509Certificate(pem);
  } catch {
    throw new TlsFileError(key, `${file} holds no PEM certificate`);
  }
}

/**
 * Reads and checks the files of `tls` (relative paths from the working directory): the CA file must hold
 * a certificate, the client certificate and key must load and belong together. Throws TlsFileError.
 * Runs when the config is loaded, never per request.
 */
export function tlsMaterial(tls: UpstreamTls, address: string): TlsMaterial {
  const ca = tls.ca_file === undefined ? undefined : readPem('ca_file', tls.ca_file);
  if (ca !== undefined) checkCertificate('ca_file', tls.ca_file as string, ca);
  const cert = tls.cert_file === undefined ? undefined : readPem('cert_file', tls.cert_file);
  const key = tls.key_file === undefined ? undefined : readPem('key_file', tls.key_file);
  if (cert !== undefined && key !== undefined) {
    checkCertificate('cert_file', tls.cert_file as string, cert);
    try {
      createSecureContext({ cert, key });
    } catch (err) {
      const reason = (err as { code?: string }).code === 'ERR_OSSL_X509_KEY_VALUES_MISMATCH' ? `does not belong to the certificate in ${tls.cert_file as string}` : `cannot be loaded: ${(err as Error).message}`;
      throw new TlsFileError('key_file', `${tls.key_file as string} ${reason}`);
    }
  }
  const sni = tls.servername ?? (isIP(address) === 0 ? address : undefined);
  const digest = createHash('sha256');
  for (const pem of [ca, cert, key]) digest.update(pem ?? '').update('\u0000');
  const id = JSON.stringify([tls.servername, tls.verify, tls.ca_file, tls.cert_file, tls.key_file, digest.digest('hex')]);
  return { sni, name: tls.servername ?? address, verify: tls.verify, ca, cert, key, id };
}

/** undici's connect function for one upstream. */
export type Connector = BuildConnector.connector;

/**
 * The connect function of an upstream's pool: TLS with its CA, client certificate and verification, and
 * always its own SNI name. (Undici would otherwise take SNI and the name checked from each request's Host,
 * which with `preserve_host` is the client's.)
 */
export function tlsConnector(material: TlsMaterial, options: { timeoutMs: number; allowH2: boolean }): Connector {
  const connect = buildConnector({
    timeout: options.timeoutMs,
    allowH2: options.allowH2,
    rejectUnauthorized: material.verify,
    ...(material.ca === undefined ? {} : { ca: material.ca }),
    ...(material.cert === undefined ? {} : { cert: material.cert }),
    ...(material.key === undefined ? {} : { key: material.key }),
  });
  const sni = material.sni;
  return function connectTls(opts, callback) {
    // Runs once per new connection. `servername` '' makes undici fall back to the origin's host (none for an IP).
    connect({ ...opts, servername: sni ?? '' }, (err, socket) => {
      if (socket) keepTlsAlert(socket); // undefined after a failed connect
      (callback as (err: Error | null, socket: Socket | null | undefined) => void)(err, socket);
    });
  };
}

/**
 * With TLS 1.3 the upstream checks the client certificate after the handshake has completed on the proxy's
 * side: its refusal (an alert, `ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED`) arrives as a socket error that
 * undici then replaces with "other side closed" when the upstream's end follows (undici 7.30). Ending the
 * socket with the alert when the end comes keeps the alert as the request's error.
 */
function keepTlsAlert(socket: Socket): void {
  let alert: Error | undefined;
  socket.prependListener('error', (err: Error) => {
    const code = (err as { code?: unknown }).code;
    if (alert === undefined && typeof code === 'string' && code.startsWith('ERR_SSL_')) alert = err;
  });
  socket.prependListener('end', () => {
    if (alert !== undefined && !socket.destroyed) socket.destroy(alert);
  });
}
