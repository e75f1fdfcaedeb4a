/** Runs the built CLI (dist/cli.js) as a child process, the way users run `npx tollgate`. */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export const ROOT = resolve(import.meta.dirname, '../..');
export const CLI = join(ROOT, 'dist/cli.js');

export interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** CLI processes still running; killed when the test process exits, even after a failure. */
const running = new Set<ChildProcess>();
process.on('exit', () => {
  // Cluster workers exit by themselves once their primary is gone (the IPC channel closes).
  for (const child of running) child.kill('SIGKILL');
});

export function startCli(args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess & { output: { stdout: string; stderr: string } } {
  const child = spawn(process.execPath, [CLI, ...args], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  child.once('exit', () => running.delete(child));
  const output = { stdout: '', stderr: '' };
  child.stdout.on('data', (c: Buffer) => (output.stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (output.stderr += c.toString()));
  return Object.assign(child, { output });
}

export async function runCli(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 15_000): Promise<Run> {
  const child = startCli(args, env);
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
  clearTimeout(timer);
  return { code, signal, ...child.output };
}

/** Writes a config file into a fresh temporary folder and returns its path. */
export function writeConfig(text: string, name = 'proxy.yaml'): string {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-test-'));
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
}

/** Waits until the child's output contains `pattern`. */
export async function waitForOutput(child: ChildProcess & { output: { stdout: string; stderr: string } }, pattern: RegExp, ms = 10_000): Promise<RegExpMatchArray> {
  const deadline = Date.now() + ms;
  for (;;) {
    const match = (child.output.stdout + child.output.stderr).match(pattern);
    if (match) return match;
    if (child.exitCode !== null) throw new Error(`process exited (${child.exitCode}) before printing ${pattern}: ${child.output.stderr}${child.output.stdout}`);
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${pattern}; output so far: ${child.output.stdout}${child.output.stderr}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Waits for the proxy's listening line and returns the port it names (configs listen on port 0). */
export async function listeningPort(child: ChildProcess & { output: { stdout: string; stderr: string } }, ms?: number): Promise<number> {
  const [, port] = await waitForOutput(child, /Tollgate \S+ listening on \S+:(\d+)/, ms);
  return Number(port);
}
