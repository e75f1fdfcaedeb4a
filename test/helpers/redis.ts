/**
 * A real Redis for tests: `redis-server` (Debian's redis-server package; .ci/run installs it) started on a
 * free port with no persistence, or the server named by REDIS_URL when that is set. A server this helper
 * started can be stopped and started again on the same port (outage tests) and is always killed when the
 * test process exits, even after a failure.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './servers.js';

export interface TestRedis {
  /** `redis://127.0.0.1:PORT` (or REDIS_URL). */
  readonly url: string;
  readonly port: number;
  /** True when this helper started the server, so that it can stop and restart it. */
  readonly owned: boolean;
  /**
   * Stops the server and waits for the exit: clients see the connection close and refused reconnects.
   * SIGTERM by default (Redis shuts down cleanly); SIGKILL for a crash.
   */
  stop(signal?: 'SIGTERM' | 'SIGKILL'): Promise<void>;
  /** Starts it again on the same port, empty. */
  restart(): Promise<void>;
  /** Stops it for good and removes its folder. */
  close(): Promise<void>;
  /** The pid of the server process (owned servers only). */
  readonly pid: number | undefined;
}

const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/** The redis-server binary: REDIS_SERVER, or redis-server on the PATH (or /usr/bin), or undefined. */
export function redisServerBinary(): string | undefined {
  const candidates = [process.env.REDIS_SERVER, 'redis-server', '/usr/bin/redis-server'].filter((c): c is string => c !== undefined && c !== '');
  for (const bin of candidates) {
    const probe = spawnSync(bin, ['--version'], { stdio: 'ignore' });
    if (probe.status === 0) return bin;
  }
  return undefined;
}

/** Answers true once something on the port replies +PONG to PING. */
function ping(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, host);
    let reply = '';
    const timer = setTimeout(() => finish(false), 500);
    function finish(ok: boolean): void {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    }
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (c: Buffer) => {
      reply += c.toString();
      if (reply.includes('\r\n')) finish(reply.startsWith('+PONG'));
    });
    socket.on('error', () => finish(false));
  });
}

async function waitForPing(port: number, child: ChildProcess | undefined, output: () => string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await ping(port))) {
    if (child !== undefined && child.exitCode !== null) throw new Error(`redis-server exited (${child.exitCode}): ${output()}`);
    if (Date.now() > deadline) throw new Error(`redis-server on port ${port} did not answer PING within ${ms} ms: ${output()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export interface StartRedisOptions {
  /** Always start a server of our own, even when REDIS_URL is set (outage tests need to stop it). */
  own?: boolean;
  /** Extra redis-server arguments (`--cluster-enabled yes`, ...). */
  args?: string[];
}

/** Starts a Redis for one test file or test; call `close()` in `after`. */
export async function startRedis(options: StartRedisOptions = {}): Promise<TestRedis> {
  const external = process.env.REDIS_URL;
  if (external !== undefined && external !== '' && options.own !== true && options.args === undefined) {
    const url = new URL(external);
    const notOwned = (): Promise<void> => Promise.reject(new Error('REDIS_URL is not started by the tests; it cannot be stopped'));
    return { url: external, port: Number(url.port || 6379), owned: false, pid: undefined, stop: notOwned, restart: notOwned, close: async () => {} };
  }
  const bin = redisServerBinary();
  if (bin === undefined) throw new Error('redis-server not found: install it (apt-get install -y redis-server), set REDIS_SERVER to the binary, or set REDIS_URL');
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-redis-'));
  const port = await freePort();
  let child: ChildProcess | undefined;
  let output = '';

  async function start(): Promise<void> {
    output = '';
    const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--daemonize', 'no', '--loglevel', 'warning', ...(options.args ?? [])];
    const proc = spawn(bin as string, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    running.add(proc);
    proc.once('exit', () => running.delete(proc));
    proc.stdout?.on('data', (c: Buffer) => (output += c.toString()));
    proc.stderr?.on('data', (c: Buffer) => (output += c.toString()));
    child = proc;
    await waitForPing(port, proc, () => output);
  }

  async function stop(signal: 'SIGTERM' | 'SIGKILL' = 'SIGTERM'): Promise<void> {
    const proc = child;
    child = undefined;
    if (proc === undefined || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = once(proc, 'exit');
    proc.kill(signal);
    const timer = setTimeout(() => proc.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  }

  await start();
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    owned: true,
    get pid() {
      return child?.pid;
    },
    stop,
    restart: start,
    close: async () => {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A one-node Redis Cluster: a server with cluster mode on that owns all 16384 slots. Enough to run the
 * store through ioredis' Cluster client (slot map, MOVED handling) against a real cluster.
 */
export async function startRedisCluster(): Promise<TestRedis> {
  const redis = await startRedis({ args: ['--cluster-enabled', 'yes', '--cluster-announce-ip', '127.0.0.1', '--cluster-config-file', `nodes-${process.pid}-${Date.now()}.conf`] });
  await resp(redis.port, ['CLUSTER', 'ADDSLOTSRANGE', '0', '16383']);
  const deadline = Date.now() + 10_000;
  while (!(await resp(redis.port, ['CLUSTER', 'INFO'])).includes('cluster_state:ok')) {
    if (Date.now() > deadline) throw new Error('the one-node cluster did not reach cluster_state:ok');
    await new Promise((r) => setTimeout(r, 50));
  }
  return redis;
}

/**
 * Redis Sentinel in front of a master: a master server, and one sentinel (redis-server --sentinel) that
 * monitors it as `name`. Returns the sentinel's port with the master.
 */
export async function startRedisSentinel(name = 'tollgate-test'): Promise<{ master: TestRedis; sentinelPort: number; close(): Promise<void> }> {
  const master = await startRedis({ own: true });
  const bin = redisServerBinary() as string;
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-sentinel-'));
  const sentinelPort = await freePort();
  const conf = join(dir, 'sentinel.conf');
  writeFileSync(conf, `port ${sentinelPort}\nbind 127.0.0.1\ndir ${dir}\nsentinel monitor ${name} 127.0.0.1 ${master.port} 1\n`);
  const proc = spawn(bin, [conf, '--sentinel'], { stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(proc);
  proc.once('exit', () => running.delete(proc));
  let output = '';
  proc.stdout?.on('data', (c: Buffer) => (output += c.toString()));
  proc.stderr?.on('data', (c: Buffer) => (output += c.toString()));
  await waitForPing(sentinelPort, proc, () => output);
  return {
    master,
    sentinelPort,
    close: async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        const exited = once(proc, 'exit');
        proc.kill('SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
      await master.close();
    },
  };
}

/** Sends one command in RESP and returns the raw reply text (enough for admin commands in tests). */
export function resp(port: number, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let reply = '';
    socket.on('connect', () => socket.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`));
    socket.on('data', (c: Buffer) => {
      reply += c.toString();
      // A simple reply ends at its first CRLF; a bulk reply ($n) once n bytes and the CRLF have arrived.
      const bulk = /^\$(\d+)\r\n/.exec(reply);
      if (bulk === null ? reply.includes('\r\n') : reply.length >= bulk[0].length + Number(bulk[1]) + 2) {
        socket.destroy();
        if (reply.startsWith('-')) reject(new Error(reply.trim()));
        else resolve(reply);
      }
    });
    socket.on('error', reject);
  });
}
