/** TLS for tests: a self-signed certificate made at test time, and an https server to point upstreams at. */
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
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
