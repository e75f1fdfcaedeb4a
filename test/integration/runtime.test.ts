import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { listeningPort, startCli, writeConfig } from '../helpers/cli.js';
import { freePort, startBackend } from '../helpers/servers.js';

/** process.execve: Node 22.15 and later. Where it is missing the CLI runs as started. */
const CAN_EXEC = typeof (process as { execve?: unknown }).execve === 'function';

/** The command line and MALLOC_ARENA_MAX of a running process, from /proc. */
function processOf(pid: number): { args: string[]; arenas: string | undefined } {
  const args = readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0').filter(Boolean);
  const env = readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0');
  return { args, arenas: env.find((e) => e.startsWith('MALLOC_ARENA_MAX='))?.slice('MALLOC_ARENA_MAX='.length) };
}

async function started(env: NodeJS.ProcessEnv): Promise<{ args: string[]; arenas: string | undefined; pid: number }> {
  const backend = await startBackend('b1');
  const port = await freePort();
  const file = writeConfig(`server: { listen_port: ${port}, listen_address: "127.0.0.1" }\nload_balancing:\n  upstreams: [{ name: b1, address: "127.0.0.1", port: ${backend.port} }]\nadmin: { enabled: false }\n`);
  const child = startCli(['--config', file], { MALLOC_ARENA_MAX: undefined, NODE_OPTIONS: undefined, ...env });
  try {
    await listeningPort(child);
    const res = await fetch(`http://127.0.0.1:${port}/`);
    assert.equal(res.status, 200);
    await res.arrayBuffer();
    return { ...processOf(child.pid as number), pid: child.pid as number };
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    await backend.close();
  }
}

describe('the CLI puts its memory settings in force itself', () => {
  test(CAN_EXEC ? 'the serving process (same pid) runs with --max-semi-space-size=16 and MALLOC_ARENA_MAX=2' : 'Node without process.execve: the process runs as started', async () => {
    const p = await started({});
    if (CAN_EXEC) {
      assert.equal(p.args[1], '--max-semi-space-size=16', p.args.join(' '));
      assert.equal(p.arenas, '2');
    } else {
      assert.ok(!p.args.includes('--max-semi-space-size=16'), p.args.join(' '));
      assert.equal(p.arenas, undefined);
    }
  });

  test("the user's own settings win, and TOLLGATE_RUNTIME_SETTINGS=off leaves the process alone", async () => {
    const own = await started({ NODE_OPTIONS: '--max-semi-space-size=32', MALLOC_ARENA_MAX: '4' });
    assert.ok(!own.args.includes('--max-semi-space-size=16'), own.args.join(' '));
    assert.equal(own.arenas, '4');
    const off = await started({ TOLLGATE_RUNTIME_SETTINGS: 'off' });
    assert.ok(!off.args.includes('--max-semi-space-size=16'), off.args.join(' '));
    assert.equal(off.arenas, undefined);
  });
});
