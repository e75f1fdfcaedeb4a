/** TLS for tests: certificates made at test time (a self-signed one, and a small CA with its leaves), and an https server to point upstreams at. */
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
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

/** An https server on 127.0.0.1:0 answering 200 `secure` to every request. */
export async function startTlsUpstream(): Promise<TlsUpstream> {
  const server = createServer(selfSignedCert(), (_req, res) => res.end('secure'));
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

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

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
