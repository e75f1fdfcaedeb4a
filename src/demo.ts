/**
 * `npm run demo`: three small backends on 127.0.0.1:3000-3002, each answering with its own name, and the
 * proxy with config/proxy.yaml in front of them, in one process. Ctrl-C stops everything.
 */
import { createServer, type Server } from 'node:http';
import { createProxy } from './app.js';
import { ConfigError, loadConfigFile } from './config/load.js';
import { allUpstreams } from './config/resolve.js';
import { createLogger } from './observability/logger.js';

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

async function demo(): Promise<void> {
  const file = process.argv[2] ?? 'config/proxy.yaml';
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
  // One backend per distinct port (services of a routes config may share one).
  const byPort = new Map<number, string>();
  for (const u of allUpstreams(config)) if (!byPort.has(u.port)) byPort.set(u.port, u.name);
  const backends = await Promise.all([...byPort].map(([port, name]) => startBackend(name, port)));
  const { logger, flush } = createLogger(config.logging, { level: process.env.LOG_LEVEL, format: process.stdout.isTTY ? 'pretty' : undefined });
  const proxy = createProxy(config, { logger });
  const address = await proxy.listen();
  const url = `http://localhost:${address.port}`;
  const token = config.middleware.auth.valid_tokens[0] ?? 'dev-token-123';
  const admin = proxy.admin?.address();
  process.stderr.write(
    [
      '',
      `Tollgate demo: ${backends.length} backends, proxy on ${url}`,
      `  curl ${url}/health`,
      `  curl -i ${url}/                                   # 401 without a token`,
      `  curl -i -H "Authorization: Bearer ${token}" ${url}/`,
      `  for i in $(seq 1 15); do curl -s -o /dev/null -w "%{http_code}\\n" -H "Authorization: Bearer ${token}" ${url}/; done`,
      ...(admin === undefined ? [] : [`Dashboard: http://${admin.address}:${admin.port}/  (Prometheus: /metrics, JSON: /api/status)`]),
      'Ctrl-C to stop.',
      '',
    ].join('\n'),
  );
  const stop = (): void => {
    void proxy.close().then(() => {
      for (const b of backends) b.close();
      flush();
      process.exit(0);
    });
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

demo().catch((err: unknown) => {
  process.stderr.write(`demo: ${(err as Error).message}\n`);
  process.exit(1);
});
