// What the stand-alone bench scripts (instructions, observability-ab, soak) share: the repo root, numeric
// command-line options, free ports, and child processes that never outlive the script.
import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const ARGS = process.argv.slice(2);

/** The number after `name` on the command line, or `dflt`. */
export function numberOption(name, dflt) {
  const i = ARGS.indexOf(name);
  return i === -1 ? dflt : Number(ARGS[i + 1]);
}

/** The text after `name` on the command line, or undefined. */
export function textOption(name) {
  const i = ARGS.indexOf(name);
  return i === -1 ? undefined : String(ARGS[i + 1]);
}

/** `n` distinct ports that were free a moment ago on 127.0.0.1. */
export async function freePorts(n) {
  const servers = await Promise.all(Array.from({ length: n }, () => new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => resolve(s));
  })));
  const ports = servers.map((s) => s.address().port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

export async function freePort() {
  return (await freePorts(1))[0];
}

const children = [];
let hooked = false;

/**
 * Starts a command in its own process group (cwd: the repo root); the whole group is killed when the script
 * exits, is interrupted or is terminated.
 */
export function launch(cmd, cmdArgs, { stdio = ['ignore', 'ignore', 'inherit'], env = process.env } = {}) {
  if (!hooked) {
    hooked = true;
    process.on('exit', () => {
      for (const c of children) {
        try {
          process.kill(-c.pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    });
    for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));
  }
  const child = spawn(cmd, cmdArgs, { cwd: ROOT, stdio, detached: true, env });
  children.push(child);
  return child;
}
