/**
 * `npm run demo`: a small backend on each port the config names (127.0.0.1:3000-3002 for
 * config/proxy.yaml), each answering with its name and the request it got, and the proxy in front of them,
 * in one process; then curl commands that fit the config. `--config FILE` (or a bare FILE) runs another
 * config, such as config/routes.example.yaml. `--tls` serves the proxy over HTTPS instead, with a self-signed
 * certificate for localhost made for the run (by openssl) and removed at the end. Ctrl-C stops everything.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createProxy } from './app.js';
import { ConfigError } from './config/errors.js';
import { loadConfigFile } from './config/load.js';
import { allUpstreams, routesOf, type ResolvedRoute } from './config/resolve.js';
import type { AuthConfig, Config } from './config/schema.js';
import { createLogger } from './observability/logger.js';
import { createServer } from './util/http.js';

function startBackend(name: string, port: number): Promise<Server> {
  const server = createServer((req, res) => {
    const body = `Hello from ${name} (port ${port}): ${req.method} ${req.url}\n`;
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

/** The curl options that pass a route's auth, with its first credential. */
function credentials(auth: AuthConfig): string {
  if (!auth.enabled) return '';
  const token = auth.valid_tokens[0] ?? '';
  if (auth.auth_type === 'api_key') return ` -H "${auth.api_key_header}: ${token}"`;
  if (auth.auth_type === 'bearer') return ` -H "Authorization: Bearer ${token}"`;
  const user = auth.users[0];
  return user === undefined ? ` -H "Authorization: Basic ${token}"` : ` -u "${user.username}:${user.password}"`;
}

/** One request that this route serves: its host, path, method and headers, with its credentials. */
function curlFor(route: ResolvedRoute, url: string): string {
  const { match } = route.config;
  const host = match.hosts?.[0]?.replace(/^\*\./, 'eu.');
  const prefix = match.path_prefix?.replace(/\/+$/, '');
  const path = match.path ?? (prefix === undefined || prefix === '' ? '/' : `${prefix}/users?id=7`);
  const method = match.methods === undefined || match.methods.includes('GET') ? '' : ` -X ${match.methods[0] as string}`;
  const headers = Object.entries(match.headers ?? {})
    .map(([name, value]) => ` -H "${name}: ${value}"`)
    .join('');
  const target = route.config.redirect === undefined ? `service ${route.config.service ?? ''}` : `redirect ${route.config.redirect.status}`;
  return `  curl -i${method}${host === undefined ? '' : ` -H "Host: ${host}"`}${headers}${credentials(route.auth)} "${url}${path}"   # route ${route.config.name} → ${target}`;
}

/** What to try with this config: one request per route, and a loop that runs into a rate limit. */
function examples(config: Config, url: string): string[] {
  const lines = [`  curl ${url}/health`];
  if (config.routes === undefined) {
    // A file without routes: one route; its auth and limit apply to every path.
    const auth = config.middleware.auth;
    if (auth.enabled) lines.push(`  curl -i ${url}/                                   # 401 without credentials`);
    lines.push(`  curl -i${credentials(auth)} ${url}/`);
    const limit = config.middleware.rate_limit;
    if (limit.enabled) {
      lines.push(`  for i in $(seq 1 ${limit.burst_size + 5}); do curl -s -o /dev/null -w "%{http_code}\\n"${credentials(auth)} ${url}/; done`);
    }
    return lines;
  }
  const routes = routesOf(config);
  for (const route of routes) lines.push(curlFor(route, url));
  // The route with the smallest burst, run past it: the last few answers are 429.
  const limited = routes.filter((r) => r.rateLimit.enabled).sort((a, b) => a.rateLimit.burst_size - b.rateLimit.burst_size)[0];
  if (limited !== undefined) {
    const one = curlFor(limited, url).replace(/^ {2}curl -i/, 'curl -s -o /dev/null -w "%{http_code}\\n"').replace(/ {3}# .*$/, '');
    lines.push(`  for i in $(seq 1 ${limited.rateLimit.burst_size + 3}); do ${one}; done   # route ${limited.config.name}: 429 once its burst of ${limited.rateLimit.burst_size} is spent`);
  }
  return lines;
}

/**
 * A self-signed certificate for localhost and 127.0.0.1 (P-256, valid for 30 days), made by openssl in a
 * fresh temporary folder; a user trusts it for the run with `curl --cacert`.
 */
function selfSignedCertificate(): { dir: string; cert: string; key: string } {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-demo-tls-'));
  const cert = join(dir, 'localhost.pem');
  const key = join(dir, 'localhost-key.pem');
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '30',
      '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-keyout', key, '-out', cert], { stdio: 'pipe' });
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
    throw new Error(missing ? '--tls makes its certificate with openssl, which is not on the PATH (Debian: apt-get install openssl)' : `openssl could not make the certificate: ${String((err as { stderr?: Buffer }).stderr ?? err).trim()}`, { cause: err });
  }
  return { dir, cert, key };
}

async function demo(): Promise<void> {
  const { values, positionals } = parseArgs({ options: { config: { type: 'string', short: 'c' }, tls: { type: 'boolean', default: false } }, allowPositionals: true });
  const file = values.config ?? positionals[0] ?? 'config/proxy.yaml';
  // config/routes.example.yaml takes the API key from the environment; the demo has one of its own.
  process.env.API_KEY ??= 'demo-api-key';
  let config;
  try {
    config = loadConfigFile(file);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const tls = values.tls ? selfSignedCertificate() : undefined;
  if (tls !== undefined) {
    config.server.tls = { certificates: [{ cert_file: tls.cert, key_file: tls.key }], min_version: 'TLSv1.2', forward_client_cert: false };
    delete config.server.redirect_http;
  }
  // One backend per distinct port (services of a routes config may share one).
  const byPort = new Map<number, string>();
  for (const u of allUpstreams(config)) if (!byPort.has(u.port)) byPort.set(u.port, u.name);
  const backends = await Promise.all([...byPort].map(([port, name]) => startBackend(name, port)));
  const { logger, flush, direct } = createLogger(config.logging, { level: process.env.LOG_LEVEL, format: process.stdout.isTTY ? 'pretty' : undefined });
  const proxy = createProxy(config, { logger, directLog: direct });
  const address = await proxy.listen();
  const url = `${tls === undefined ? 'http' : 'https'}://localhost:${address.port}`;
  const admin = proxy.admin?.address();
  // With --tls, every example trusts the run's certificate.
  const tried = examples(config, url).map((line) => (tls === undefined ? line : line.replaceAll('curl ', `curl --cacert ${tls.cert} `)));
  process.stderr.write(
    [
      '',
      `Tollgate demo: ${backends.length} backends, proxy on ${url} with ${file}${tls === undefined ? '' : ` (self-signed certificate for localhost: ${tls.cert})`}`,
      ...tried,
      ...(admin === undefined ? [] : [`Dashboard: http://${admin.address}:${admin.port}/  (Prometheus: /metrics, JSON: /api/status)`]),
      'Ctrl-C to stop.',
      '',
    ].join('\n'),
  );
  const stop = (): void => {
    void proxy
      .close()
      .then(() => {
        for (const b of backends) b.close();
        if (tls !== undefined) rmSync(tls.dir, { recursive: true, force: true });
        return flush();
      })
      .then(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

demo().catch((err: unknown) => {
  process.stderr.write(`demo: ${(err as Error).message}\n`);
  process.exit(1);
});
