import assert from 'node:assert/strict';
import { connect, createServer, type AddressInfo, type Server } from 'node:net';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import { createProxy } from '../../../src/app.js';
import { configSchema } from '../../../src/config/schema.js';
import { ListenError } from '../../../src/server/listen-error.js';
import { freePort } from '../../helpers/servers.js';

/** A port held by a plain TCP server on 127.0.0.1 (what "already in use" means). */
async function takenPort(): Promise<{ port: number; server: Server }> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as AddressInfo).port, server };
}

function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.on('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.on('error', () => resolve(true));
  });
}

function proxyConfig(port: number, adminPort: number) {
  return configSchema.parse({
    server: { listen_port: port, listen_address: '127.0.0.1' },
    load_balancing: { upstreams: [{ name: 'a', address: '127.0.0.1', port: 1 }], health_check: { active: { enabled: false } } },
    admin: { port: adminPort },
  });
}

describe('ListenError', () => {
  test('names the listener, the address and port (IPv6 in brackets) and the reason in words', () => {
    const inUse = Object.assign(new Error('listen EADDRINUSE: address already in use ::1:8080'), { code: 'EADDRINUSE' });
    const err = new ListenError('proxy', '::1', 8080, inUse);
    assert.equal(err.message, 'cannot listen on [::1]:8080 for the proxy: address already in use');
    assert.equal(err.code, 'TOLLGATE_LISTEN_FAILED');
    assert.equal(err.errno, 'EADDRINUSE');
    assert.equal(err.cause, inUse);
    const denied = (port: number): string => new ListenError('admin listener', '0.0.0.0', port, { code: 'EACCES', message: 'x' }).message;
    assert.equal(denied(80), 'cannot listen on 0.0.0.0:80 for the admin listener: permission denied (ports below 1024 need privileges)');
    assert.equal(denied(8080), 'cannot listen on 0.0.0.0:8080 for the admin listener: permission denied');
    assert.equal(new ListenError('proxy', 'nowhere.invalid', 80, { code: 'ENOTFOUND' }).message, 'cannot listen on nowhere.invalid:80 for the proxy: host name not found');
    // A code without words of its own keeps the system's message.
    assert.equal(new ListenError('proxy', '10.0.0.1', 1, new Error('something odd')).message, 'cannot listen on 10.0.0.1:1 for the proxy: something odd');
  });

  test('createProxy: a taken proxy port rejects with a ListenError for the proxy', async () => {
    const taken = await takenPort();
    const proxy = createProxy(proxyConfig(taken.port, 0), { logger: pino({ level: 'silent' }) });
    try {
      await assert.rejects(proxy.listen(), (err: unknown) => {
        assert.ok(err instanceof ListenError);
        assert.equal(err.listener, 'proxy');
        assert.equal(err.message, `cannot listen on 127.0.0.1:${taken.port} for the proxy: address already in use`);
        return true;
      });
    } finally {
      await proxy.gateway.close();
      taken.server.close();
    }
  });

  test('createProxy: a taken admin port rejects with a ListenError for the admin listener, and the proxy port is released', async () => {
    const taken = await takenPort();
    const port = await freePort();
    const proxy = createProxy(proxyConfig(port, taken.port), { logger: pino({ level: 'silent' }) });
    try {
      await assert.rejects(proxy.listen(), (err: unknown) => err instanceof ListenError && err.listener === 'admin listener' && err.port === taken.port);
      assert.equal(proxy.server.server.listening, false);
      assert.ok(await refused(port));
    } finally {
      if (proxy.server.server.listening) proxy.server.server.close();
      await proxy.gateway.close();
      taken.server.close();
    }
  });
});
