/**
 * Memory settings the proxy gives itself, so that `npx tollgate` runs lean without V8 flags on the
 * command line (docs/deployment.md#memory).
 *
 * - `--max-semi-space-size=16` (MiB): V8 sizes the young generation from the machine's memory, and on
 *   Node 24 it grows to two 64 MiB semi-spaces under load, the largest part of the process's RSS.
 *   Tollgate's per-request garbage dies young in far less: 16 MiB semi-spaces (Node 20's own limit), with
 *   the arena setting below, took the peak RSS at 200 connections from 218-222 to 133-147 MiB at no
 *   measurable CPU cost; 8 MiB took about 10 MiB more off for about 1% more CPU per request, 4 MiB none
 *   (docs/deployment.md#memory).
 * - `MALLOC_ARENA_MAX=2`: glibc gives each thread that allocates its own malloc arena (V8's helper
 *   threads, libuv's pool); two are enough for a process that allocates on its main thread.
 *
 * Both must be in force before V8 and glibc start, so the process replaces itself with `process.execve`
 * (Node 22.15 and later; same process id, same open files), with the settings added. Settings the user
 * gave (`NODE_OPTIONS`, the command line, the environment) win; `TOLLGATE_RUNTIME_SETTINGS=off` turns this
 * off. On older Node the process runs as started.
 */

/** The V8 flag and its value. */
export const SEMI_SPACE_FLAG = '--max-semi-space-size';
export const SEMI_SPACE_MIB = 16;
export const MALLOC_ARENAS = '2';

type Execve = (file: string, args: string[], env: NodeJS.ProcessEnv) => never;

/** What the process would be started with: undefined when it already runs with every setting. */
export function relaunchPlan(
  execArgv: readonly string[],
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
): { args: string[]; env: NodeJS.ProcessEnv } | undefined {
  if (env.TOLLGATE_RUNTIME_SETTINGS === 'off') return undefined;
  // A cluster worker or a child with an IPC channel: the channel's descriptor does not survive an exec,
  // and a worker inherits the primary's settings anyway.
  if (env.NODE_UNIQUE_ID !== undefined || env.NODE_CHANNEL_FD !== undefined) return undefined;
  const flags: string[] = [];
  const given = (name: string): boolean => execArgv.some((a) => a.startsWith(name)) || (env.NODE_OPTIONS ?? '').includes(name);
  if (!given(SEMI_SPACE_FLAG)) flags.push(`${SEMI_SPACE_FLAG}=${SEMI_SPACE_MIB}`);
  const arenas = env.MALLOC_ARENA_MAX === undefined;
  if (flags.length === 0 && !arenas) return undefined;
  return {
    args: [...flags, ...execArgv, ...argv.slice(1)],
    env: arenas ? { ...env, MALLOC_ARENA_MAX: MALLOC_ARENAS } : { ...env },
  };
}

/** Replaces the process with one that has the settings (see above); returns when it cannot or need not. */
export function applyRuntimeSettings(): void {
  const execve = (process as { execve?: Execve }).execve;
  if (typeof execve !== 'function') return;
  const plan = relaunchPlan(process.execArgv, process.argv, process.env);
  if (plan === undefined) return;
  try {
    execve.call(process, process.execPath, [process.execPath, ...plan.args], plan.env);
  } catch {
    // Not allowed here (a sandbox, a worker thread): run as started.
  }
}
