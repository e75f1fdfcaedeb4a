/**
 * The proxies the long fuzz run talks to, as child processes: Tollgate (dist/cli.js, so build first) and,
 * for the differential run, a throwaway nginx with its own prefix directory, configured like `fuzzConfig`.
 * Neither touches a system config or a port other than the ones it is given on 127.0.0.1.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { freePorts } from '../helpers/servers.js';
import { TOKEN } from './cases.js';
import { fuzzConfig, stillAnswers } from './harness.js';

export interface ProxyProcess {
  port: number;
  child: ChildProcess;
  /** What the process wrote on stderr (its last 4 KiB), for a report when it exits. */
  stderr(): string;
  /** Stops the process and removes its directory. */
  stop(): Promise<void>;
}

async function waitUntilAnswering(port: number, child: ChildProcess, name: string, stderr: () => string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null || child.signalCode !== null) break;
    if (await stillAnswers(port)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${name} did not start answering on port ${port}: ${stderr()}`);
}

function run(command: string, args: string[], dir: string): { child: ChildProcess; stderr: () => string; stop: () => Promise<void> } {
  const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr?.on('data', (c: Buffer) => (err = (err + c.toString()).slice(-4096)));
  return {
    child,
    stderr: () => err,
    stop: async () => {
      // SIGTERM, not SIGKILL: an nginx master killed outright leaves its worker behind.
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        await once(child, 'exit');
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Tollgate with `fuzzConfig` in front of the two upstreams. */
export async function startTollgate(protectedPort: number, publicPort: number): Promise<ProxyProcess> {
  const [port] = (await freePorts(1)) as [number];
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-fuzz-'));
  const config = fuzzConfig(protectedPort, publicPort, port);
  writeFileSync(join(dir, 'fuzz.yaml'), JSON.stringify({ ...config, logging: { level: 'error' } }));
  const proc = run(process.execPath, [resolve(import.meta.dirname, '../../dist/cli.js'), '--config', join(dir, 'fuzz.yaml')], dir);
  await waitUntilAnswering(port, proc.child, 'Tollgate', proc.stderr);
  return { port, ...proc };
}

/** One nginx `server` per pair of upstreams, each the equivalent of a Tollgate with `fuzzConfig`. */
export interface NginxLane {
  protectedPort: number;
  publicPort: number;
}

/**
 * nginx's equivalent of `fuzzConfig`: the same timeouts and body limit; `/health` (exactly, query allowed,
 * before any normalization, as Tollgate matches it) answered by the proxy itself; `/public` and everything
 * under `/public/` to the public upstream without auth; everything else to the protected upstream when
 * `Authorization` is `Bearer TOKEN` (scheme in any case, spaces or tabs between), else 401. Credentials and
 * the client's `Host` are forwarded, `X-Forwarded-For` is the client address (no proxy is trusted), and
 * upstream connections are HTTP/1.1 keep-alive. Everything else is nginx's default.
 */
export function nginxConfig(dir: string, lanes: (NginxLane & { port: number })[]): string {
  const servers = lanes.map(
    (lane, i) => `
  upstream protected${i} { server 127.0.0.1:${lane.protectedPort}; keepalive 4; }
  upstream public${i} { server 127.0.0.1:${lane.publicPort}; keepalive 4; }
  server {
    listen 127.0.0.1:${lane.port};
    if ($request_uri ~ "^/health(\\?|$)") { return 200 "ok\\n"; }
    location = /public { proxy_pass http://public${i}; }
    location /public/ { proxy_pass http://public${i}; }
    location / {
      if ($fuzz_authorized = 0) { return 401; }
      proxy_pass http://protected${i};
    }
  }`,
  );
  return `worker_processes 1;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  client_max_body_size 1k;
  client_header_timeout 1s;
  client_body_timeout 500ms;
  keepalive_timeout 500ms;
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Host $host;
  proxy_set_header X-Forwarded-For $remote_addr;
  proxy_next_upstream off;
  map $http_authorization $fuzz_authorized {
    "~^(?i:bearer)[\\x20\\x09]+${TOKEN}$" 1;
    default 0;
  }
${servers.join('\n')}
}
`;
}

/** A throwaway nginx (`nginx -p DIR -c DIR/nginx.conf`, no daemon) serving one port per lane. */
export async function startNginx(lanes: NginxLane[], binary = '/usr/sbin/nginx'): Promise<{ ports: number[]; stderr: () => string; errorLog: () => string; stop: () => Promise<void>; child: ChildProcess }> {
  const ports = await freePorts(lanes.length);
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-fuzz-nginx-'));
  mkdirSync(join(dir, 'logs'));
  writeFileSync(join(dir, 'nginx.conf'), nginxConfig(dir, lanes.map((lane, i) => ({ ...lane, port: ports[i] as number }))));
  const proc = run(binary, ['-p', dir, '-c', join(dir, 'nginx.conf'), '-g', `daemon off; pid ${dir}/nginx.pid; error_log ${dir}/error.log;`], dir);
  const errorLog = (): string => {
    try {
      return readFileSync(join(dir, 'error.log'), 'utf8').slice(-4096);
    } catch {
      return '';
    }
  };
  for (const port of ports) await waitUntilAnswering(port, proc.child, 'nginx', () => proc.stderr() + errorLog());
  return { ports, errorLog, ...proc };
}
