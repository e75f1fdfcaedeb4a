/**
 * TLS for tests: a self-signed certificate, private CAs with certificates they sign, and a small PKI for the
 * listener (CA, leaves, client and expired certificates), all made at test time with the openssl command,
 * and an https server to point upstreams at.
 */
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server, type ServerOptions } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

let made: { key: string; cert: string } | undefined;

/** A self-signed P-256 certificate for localhost, made once per process with the openssl command. */
export function selfSignedCert(): { key: string; cert: string } {
  if (made !== undefined) return made;
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-tls-'));
  try {
    const key = join(dir, 'key.pem');
    const cert = join(dir, 'cert.pem');
    const args = ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost'];
    execFileSync('openssl', args, { stdio: 'ignore' });
    made = { key: readFileSync(key, 'utf8'), cert: readFileSync(cert, 'utf8') };
    return made;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export interface TlsUpstream {
  server: Server;
  port: number;
  close(): Promise<void>;
}

/** A certificate and its key, as PEM text and as files (which live until the process exits). */
export interface IssuedCert {
  cert: string;
  key: string;
  certFile: string;
  keyFile: string;
}

export interface PrivateCa {
  /** The CA's certificate (PEM) and its file, for `ca_file`. */
  cert: string;
  certFile: string;
  /**
   * A certificate signed by this CA for `names` (DNS names and IP addresses, as subjectAltName), good for
   * both server and client authentication.
   */
  issue(names: string[], options?: { cn?: string }): IssuedCert;
}

let workDir: string | undefined;

/** A directory for this process's certificates, removed when it exits. */
function certDir(): string {
  if (workDir !== undefined) return workDir;
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-pki-'));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  workDir = dir;
  return dir;
}

let serial = 0;

function openssl(args: string[], cwd?: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

/**
 * A new private CA (P-256, valid one day) whose key stays in a temporary directory. Each call makes a CA
 * of its own, so a test can have one its upstream's certificate comes from and one that did not sign it.
 */
export function privateCa(name = 'Tollgate Test CA'): PrivateCa {
  const dir = certDir();
  const id = ++serial;
  const certFile = join(dir, `ca-${id}.pem`);
  const keyFile = join(dir, `ca-${id}.key`);
  openssl(['req', '-x509', ...EC, '-keyout', keyFile, '-out', certFile, '-days', '1', '-subj', `/CN=${name} ${id}`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  return {
    cert: readFileSync(certFile, 'utf8'),
    certFile,
    issue(names, options = {}) {
      const leaf = ++serial;
      const base = join(dir, `leaf-${leaf}`);
      const san = names.map((n) => (/^[\d.]+$|:/.test(n) ? `IP:${n}` : `DNS:${n}`)).join(',');
      writeFileSync(`${base}.ext`, `basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=${san}\n`);
      openssl(['req', ...EC, '-keyout', `${base}.key`, '-out', `${base}.csr`, '-subj', `/CN=${options.cn ?? names[0] ?? 'client'}`]);
      openssl(['x509', '-req', '-in', `${base}.csr`, '-CA', certFile, '-CAkey', keyFile, '-set_serial', String(leaf), '-out', `${base}.pem`, '-days', '1', '-extfile', `${base}.ext`]);
      return { cert: readFileSync(`${base}.pem`, 'utf8'), key: readFileSync(`${base}.key`, 'utf8'), certFile: `${base}.pem`, keyFile: `${base}.key` };
    },
  };
}

/**
 * An https server on 127.0.0.1:0. By default: the self-signed certificate, answering 200 `secure` to every
 * request. `tls` replaces its TLS options (certificate, `ca` and `requestCert` for client certificates).
 */
export async function startTlsUpstream(tls: ServerOptions = selfSignedCert(), handler: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => res.end('secure')): Promise<TlsUpstream> {
  const server = createServer(tls, handler);
  const upstream: TlsUpstream = {
    server,
    port: 0,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  upstream.port = (server.address() as AddressInfo).port;
  return upstream;
}

/** PEM files of a test PKI, written into one temporary folder. */
export interface TestPki {
  dir: string;
  /** The CA that signs the leaves and the client certificate. */
  caCert: string;
  /** A leaf for example.com and *.example.com. */
  exampleCert: string;
  exampleKey: string;
  /** A leaf for api.test (SAN), a second name for SNI. */
  apiCert: string;
  apiKey: string;
  /** A leaf with a CN and no SAN: `cn-only.test`. */
  cnOnlyCert: string;
  cnOnlyKey: string;
  /** A client certificate signed by the CA, CN=client. */
  clientCert: string;
  clientKey: string;
  /** A self-signed client certificate the CA did not sign. */
  strangerCert: string;
  strangerKey: string;
  /** A leaf signed by the CA that expired in 2020. */
  expiredCert: string;
  expiredKey: string;
  remove(): void;
}

/** A key and a CSR for `subject`, then a certificate for it signed by the CA, valid 2 days. */
function signedLeaf(dir: string, name: string, subject: string, extensions: string | undefined): void {
  openssl(['req', '-new', ...EC, '-keyout', `${name}-key.pem`, '-out', `${name}.csr`, '-subj', subject], dir);
  const ext = extensions === undefined ? [] : ['-extfile', `${name}.ext`];
  if (extensions !== undefined) writeFileSync(join(dir, `${name}.ext`), `${extensions}\n`);
  openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca-key.pem', '-CAcreateserial', '-days', '2', '-out', `${name}.pem`, ...ext], dir);
}

/**
 * Makes a test PKI with the openssl command: a CA; leaves for example.com (with *.example.com) and api.test;
 * one with only a CN; a client certificate; a self-signed stranger; and an expired leaf (made with `openssl
 * ca`, the one way OpenSSL 3.0 takes a start and end date in the past).
 */
export function makeTestPki(): TestPki {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-pki-'));
  openssl(['req', '-x509', ...EC, '-keyout', 'ca-key.pem', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=Tollgate Test CA'], dir);
  signedLeaf(dir, 'example', '/CN=example.com', 'subjectAltName=DNS:example.com,DNS:*.example.com');
  signedLeaf(dir, 'api', '/CN=api.test', 'subjectAltName=DNS:api.test');
  signedLeaf(dir, 'cn-only', '/CN=cn-only.test', undefined);
  signedLeaf(dir, 'client', '/O=Example Clients/CN=client', 'extendedKeyUsage=clientAuth');
  openssl(['req', '-x509', ...EC, '-keyout', 'stranger-key.pem', '-out', 'stranger.pem', '-days', '2', '-subj', '/CN=stranger'], dir);
  openssl(['req', '-new', ...EC, '-keyout', 'expired-key.pem', '-out', 'expired.csr', '-subj', '/CN=expired.test'], dir);
  writeFileSync(join(dir, 'index.txt'), '');
  writeFileSync(
    join(dir, 'ca.cnf'),
    '[ca]\ndefault_ca = test\n[test]\ndatabase = index.txt\nnew_certs_dir = .\nrand_serial = yes\ndefault_md = sha256\npolicy = any\n[any]\ncommonName = supplied\n',
  );
  openssl(['ca', '-batch', '-config', 'ca.cnf', '-keyfile', 'ca-key.pem', '-cert', 'ca.pem', '-in', 'expired.csr', '-out', 'expired.pem', '-startdate', '20200101000000Z', '-enddate', '20200102000000Z', '-notext'], dir);
  const at = (file: string): string => join(dir, file);
  return {
    dir,
    caCert: at('ca.pem'),
    exampleCert: at('example.pem'),
    exampleKey: at('example-key.pem'),
    apiCert: at('api.pem'),
    apiKey: at('api-key.pem'),
    cnOnlyCert: at('cn-only.pem'),
    cnOnlyKey: at('cn-only-key.pem'),
    clientCert: at('client.pem'),
    clientKey: at('client-key.pem'),
    strangerCert: at('stranger.pem'),
    strangerKey: at('stranger-key.pem'),
    expiredCert: at('expired.pem'),
    expiredKey: at('expired-key.pem'),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
