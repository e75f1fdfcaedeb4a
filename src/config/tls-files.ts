/**
 * The files of `server.tls`, read and checked: each certificate parses, is in date and matches its key; the
 * client CA file holds certificates. Runs when a config loads (`--check`, start, reload: config/load.ts)
 * and when the listener builds its TLS contexts from them (server/tls-contexts.ts); never per request.
 */
import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import type { TlsConfig } from './schema.js';

/** One certificate of the listener, as read from its files. */
export interface CertificateFiles {
  /** PEM text: the leaf first, then any intermediates. */
  cert: string;
  key: string;
  /** The lower-case DNS names it serves: its SAN DNS names, or its CN when it has no SAN DNS name. */
  names: string[];
}

export interface TlsFiles {
  certificates: CertificateFiles[];
  /** PEM text of the CAs client certificates must be signed by; undefined: no client certificates. */
  clientCa: string | undefined;
}

/** A file of `server.tls` that cannot be used; `path` is its key (`['certificates', 1, 'key_file']`). */
export class TlsFileError extends Error {
  constructor(
    readonly path: (string | number)[],
    message: string,
  ) {
    super(message);
    this.name = 'TlsFileError';
  }
}

/** `server.tls` with each relative path taken from `dir` (the config file's folder). */
export function resolveTlsPaths(tls: TlsConfig, dir: string): TlsConfig {
  const at = (file: string): string => (isAbsolute(file) ? file : resolve(dir, file));
  return {
    ...tls,
    certificates: tls.certificates.map((c) => ({ cert_file: at(c.cert_file), key_file: at(c.key_file) })),
    ...(tls.client_ca_file === undefined ? {} : { client_ca_file: at(tls.client_ca_file) }),
  };
}

/**
 * Reads and checks every file of `tls`; throws a TlsFileError naming the first bad one. `now` (epoch ms)
 * is what "expired" is measured against.
 */
export function readTlsFiles(tls: TlsConfig, now: number = Date.now()): TlsFiles {
  const certificates = tls.certificates.map((entry, i) => {
    const certPath = ['certificates', i, 'cert_file'];
    const keyPath = ['certificates', i, 'key_file'];
    const cert = readText(entry.cert_file, certPath);
    const key = readText(entry.key_file, keyPath);
    const x509 = parseCertificate(cert, entry.cert_file, certPath);
    const notAfter = Date.parse(x509.validTo);
    if (notAfter < now) throw new TlsFileError(certPath, `${entry.cert_file}: the certificate expired on ${new Date(notAfter).toISOString()}`);
    let privateKey: KeyObject;
    try {
      privateKey = createPrivateKey(key);
    } catch (err) {
      throw new TlsFileError(keyPath, `${entry.key_file}: not a usable PEM private key (an encrypted key is not supported): ${(err as Error).message}`);
    }
    if (!x509.checkPrivateKey(privateKey)) throw new TlsFileError(keyPath, `${entry.key_file}: the key does not match the certificate ${entry.cert_file}`);
    return { cert, key, names: certificateNames(x509) };
  });
  let clientCa: string | undefined;
  if (tls.client_ca_file !== undefined) {
    const path = ['client_ca_file'];
    clientCa = readText(tls.client_ca_file, path);
    parseCertificate(clientCa, tls.client_ca_file, path);
  }
  return { certificates, clientCa };
}

function readText(file: string, path: (string | number)[]): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const reason = code === 'ENOENT' ? 'file not found' : code === 'EISDIR' ? 'is a directory' : code === 'EACCES' ? 'permission denied' : (err as Error).message;
    throw new TlsFileError(path, `cannot read ${file}: ${reason}`);
  }
}

function parseCertificate(pem: string, file: string, path: (string | number)[]): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch (err) {
    throw new TlsFileError(path, `${file}: not a PEM certificate: ${(err as Error).message}`);
  }
}

/**
 * The names a certificate serves, lower case: its SAN DNS entries (`*.example.com` kept as written), or
 * its subject's CN when it has no SAN DNS entry (RFC 6125 section 6.4.4).
 */
export function certificateNames(x509: X509Certificate): string[] {
  const names: string[] = [];
  // `DNS:a.example.com, DNS:*.example.com, IP Address:127.0.0.1`; a value with special characters is JSON-quoted.
  for (const entry of (x509.subjectAltName ?? '').split(', ')) {
    if (!entry.startsWith('DNS:')) continue;
    const value = entry.slice(4);
    names.push((value.startsWith('"') ? (JSON.parse(value) as string) : value).toLowerCase());
  }
  if (names.length > 0) return names;
  for (const line of x509.subject.split('\n')) if (line.startsWith('CN=')) names.push(line.slice(3).toLowerCase());
  return names;
}
