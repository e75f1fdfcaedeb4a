import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { describe, test } from 'node:test';
import type { TakeReply, TakeRequest } from '../../../src/cluster/messages.js';
import { answerTakes, IpcStore } from '../../../src/limits/ipc-store.js';
import { MemoryStore } from '../../../src/limits/memory-store.js';
import { policyFromRate } from '../../../src/limits/token-bucket.js';
import { manualClock } from '../../helpers/servers.js';

/** A worker's end of the IPC channel, wired straight to a primary-side store. */
class FakeChannel extends EventEmitter {
  sent: TakeRequest[] = [];
  failWith: Error | undefined;
  constructor(readonly primary: MemoryStore | undefined) {
    super();
  }
  send(message: TakeRequest, _handle: undefined, _options: undefined, callback: (err: Error | null) => void): boolean {
    this.sent.push(message);
    const fail = this.failWith;
    setImmediate(() => {
      if (fail !== undefined) return callback(fail);
      callback(null);
      if (this.primary !== undefined) this.emit('message', answerTakes(this.primary, message));
    });
    return true;
  }
}

describe('IpcStore (a worker asking the primary)', () => {
  test('takes in one turn of the event loop go in one message; answers are matched by id', async () => {
    const primary = new MemoryStore({ policy: policyFromRate(1, 3), maxKeys: 10, clock: manualClock() });
    const channel = new FakeChannel(primary);
    const store = new IpcStore(channel);
    try {
      const decisions = await Promise.all([store.take('a'), store.take('a'), store.take('b'), store.take('a'), store.take('a')]);
      assert.equal(channel.sent.length, 1, 'one message for the batch');
      assert.deepEqual(channel.sent[0]?.keys, ['a', 'a', 'b', 'a', 'a']);
      assert.deepEqual(
        decisions.map((d) => [d.allowed, d.remaining]),
        [
          [true, 2],
          [true, 1],
          [true, 2],
          [true, 0],
          [false, 0],
        ],
      );
      assert.equal(decisions[4]?.retryAfterMs, 60_000);
      assert.equal(store.pending, 0);
      await store.take('c');
      assert.equal(channel.sent.length, 2, 'a later turn sends a new message');
    } finally {
      store.close();
      primary.close();
    }
  });

  test('answers for unknown ids (a reply after close) are ignored; a failed send rejects the batch', async () => {
    const channel = new FakeChannel(undefined);
    const store = new IpcStore(channel);
    channel.emit('message', { type: 'tollgate:taken', ids: [99], decisions: [1, 0, 0, 0] } satisfies TakeReply);
    channel.emit('message', { type: 'something else' });
    channel.failWith = new Error('channel closed');
    await assert.rejects(Promise.all([store.take('x'), store.take('y')]), /channel closed/);
    assert.equal(store.pending, 0);
    channel.failWith = undefined;
    const waiting = store.take('z');
    store.close();
    await assert.rejects(waiting, /closed/);
  });

  test('without an IPC channel (not a forked process), takes reject', async () => {
    const emitter = new EventEmitter();
    const store = new IpcStore(emitter);
    await assert.rejects(store.take('k'), /no IPC channel/);
    store.close();
  });
});
