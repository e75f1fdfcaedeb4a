/**
 * A listener on 127.0.0.1 that never accepts and whose accept queue is full, so a connection to it neither
 * opens nor fails: the kernel drops its SYNs and the client's connect timeout decides. Node accepts every
 * connection as soon as its event loop runs, so the listener lives in a worker thread whose loop is blocked
 * (Atomics.wait) right after listening. Linux queues backlog + 1 connections; the helper opens that many
 * itself, each awaited until connected, so the queue is full before the test's first connection (with
 * net.ipv4.tcp_abort_on_overflow = 1, the kernel's non-default, further connections are reset instead).
 */
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { Worker } from 'node:worker_threads';

const BACKLOG = 1;

export interface UnacceptingListener {
  port: number;
  close(): Promise<void>;
}

export async function startUnacceptingListener(): Promise<UnacceptingListener> {
  const release = new Int32Array(new SharedArrayBuffer(4));
  const worker = new Worker(
    `const { parentPort, workerData } = require('node:worker_threads');
     const server = require('node:net').createServer();
     server.listen({ port: 0, host: '127.0.0.1', backlog: ${BACKLOG} }, () => {
       parentPort.postMessage(server.address().port);
       Atomics.wait(workerData, 0, 0);
       server.close();
     });`,
    { eval: true, workerData: release },
  );
  const [port] = (await once(worker, 'message')) as [number];
  const fillers: Socket[] = [];
  for (let i = 0; i < BACKLOG + 1; i++) {
    const socket = connect(port, '127.0.0.1');
    fillers.push(socket);
    await once(socket, 'connect');
  }
  return {
    port,
    close: async () => {
      for (const socket of fillers) socket.destroy();
      Atomics.store(release, 0, 1);
      Atomics.notify(release, 0);
      await once(worker, 'exit');
    },
  };
}
