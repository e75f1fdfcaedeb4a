/** The real CLI in cluster mode (`server.workers` > 1): start it, read its JSON log lines, stop it. */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { startCli, waitForOutput, writeConfig } from './cli.js';
import { waitFor } from './servers.js';

export type Cli = ReturnType<typeof startCli>;
export type Line = Record<string, unknown>;

/** The JSON lines the primary and its workers wrote to stdout so far. */
export function lines(child: Cli): Line[] {
  return child.output.stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Line);
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export interface Cluster {
  child: Cli;
  url: string;
  /** The port the workers listen on (configs here use \`listen_port: 0\`; the primary's line says which). */
  port: number;
  /** Worker pids from the primary's listening line. */
  workerPids: number[];
  /** The primary's admin listener ('' when `admin.enabled` is false). */
  adminUrl: string;
}

/**
 * Starts `tollgate --config F` for a config with `workers: 2` and waits for the primary's listening line,
 * which gives the port (a port picked by the test and released could be taken by another test file before
 * the workers bind it, so configs here listen on port 0); the admin URL comes from the primary's `admin listening` line (configs here use `admin.port: 0`).
 */
export async function startCluster(text: string, env: NodeJS.ProcessEnv = { LOG_LEVEL: 'info' }): Promise<Cluster> {
  const child = startCli(['--config', writeConfig(text)], env);
  await waitForOutput(child, /listening on 127\.0\.0\.1:\d+/, 20_000);
  const all = lines(child);
  const listening = all.find((l) => typeof l.msg === 'string' && l.msg.startsWith('Tollgate') && l.msg.includes('listening on'));
  assert.equal(listening?.workers, 2);
  const port = listening.port as number;
  const admin = all.find((l) => typeof l.msg === 'string' && l.msg.startsWith('admin listening on'));
  return {
    child,
    url: `http://127.0.0.1:${port}`,
    port,
    workerPids: listening?.worker_pids as number[],
    adminUrl: admin === undefined ? '' : `http://127.0.0.1:${String(admin.admin_port)}`,
  };
}

/** Stops the primary (SIGKILL unless it has exited) and waits until its workers are gone too. */
export async function stopCluster(c: Cluster): Promise<void> {
  if (c.child.exitCode === null && c.child.signalCode === null) {
    const exited = once(c.child, 'exit');
    c.child.kill('SIGKILL');
    await exited;
  }
  const pids = lines(c.child)
    .filter((l) => l.msg === 'worker started')
    .map((l) => l.worker_pid as number);
  await waitFor(() => pids.every((p) => !alive(p)), 10_000, 'the workers to exit with their primary');
}

/** pids of the workers that wrote completion lines for this path. */
export function servedBy(child: Cli, path: string): Set<number> {
  return new Set(lines(child).filter((l) => l.msg === 'Request Completed' && l.path === path).map((l) => l.pid as number));
}
