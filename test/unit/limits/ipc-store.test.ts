import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { after, before, describe, test } from 'node:test';
import type { Logger } from 'pino';
import type { TakeReply, TakeRequest } from '../../../src/cluster/messages.js';
import { answerTakes, IpcStore, parsePolicyKey, policyKey, PolicyStores } from '../../../src/limits/ipc-store.js';
import { manualClock } from '../../helpers/servers.js';

/** A worker's end of the IPC channel, wired straight to the primary's stores. */
class FakeChannel extends EventEmitter {
  sent: TakeRequest[] = [];
  failWith: Error | undefined;
  constructor(readonly primary: PolicyStores | undefined) {
    super();
  }
  send(message: TakeRequest, _handle: undefined, _options: undefined, callback: (err: Error | null) => void): boolean {
    // Recorded as sent (the real channel serializes at once); answered from the message itself, later, so
    // a store that refilled the arrays of a message it had sent would get wrong answers.
    this.sent.push(structuredClone(message));
    const fail = this.failWith;
    setImmediate(() => {
      if (fail !== undefined) return callback(fail);
      callback(null);
      if (this.primary !== undefined) this.emit('message', answerTakes(this.primary, message));
    });
    return true;
  }
}

/** Collects what IpcStore logs (warn and info are all it uses). */
class FakeLogger {
  warns: Record<string, unknown>[] = [];
  infos: Record<string, unknown>[] = [];
  readonly logger = {
    warn: (obj: Record<string, unknown>) => this.warns.push(obj),
    info: (obj: Record<string, unknown>) => this.infos.push(obj),
  } as unknown as Logger;
}

const SLOW_3 = { requests_per_minute: 1, burst_size: 3, max_keys: 10 };
const SLOW_5 = { requests_per_minute: 1, burst_size: 5, max_keys: 10 };

describe('IpcStore (a worker asking the primary)', () => {
  // The store's timers are unref'd (in a worker, the sockets of the waiting requests keep it alive): here
  // something else must, or a test awaiting a timeout would end with the event loop.
  let hold: NodeJS.Timeout | undefined;
  before(() => {
    hold = setInterval(() => {}, 1_000);
  });
  after(() => clearInterval(hold));

  test('takes in one turn of the event loop go in one message; answers are matched by id', async () => {
    const primary = new PolicyStores(manualClock());
    const channel = new FakeChannel(primary);
    const ipc = new IpcStore(channel);
    const store = ipc.view(SLOW_3);
    try {
      const decisions = await Promise.all([store.take('a'), store.take('a'), store.take('b'), store.take('a'), store.take('a')]);
      assert.equal(channel.sent.length, 1, 'one message for the batch');
      assert.deepEqual(channel.sent[0]?.groups, [{ policy: '1/3/10', ids: [1, 2, 3, 4, 5], keys: ['a', 'a', 'b', 'a', 'a'] }]);
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
      assert.equal(ipc.pending, 0);
      await store.take('c');
      assert.equal(channel.sent.length, 2, 'a later turn sends a new message');
      assert.deepEqual(channel.sent[1]?.groups, [{ policy: '1/3/10', ids: [6], keys: ['c'] }]);
    } finally {
      ipc.close();
      primary.close();
    }
  });

  test('two policies: one message, each policy named once, and separate buckets with their own burst', async () => {
    const primary = new PolicyStores(manualClock());
    const channel = new FakeChannel(primary);
    const ipc = new IpcStore(channel);
    const three = ipc.view(SLOW_3);
    const five = ipc.view(SLOW_5);
    assert.equal(ipc.view({ ...SLOW_3 }), three, 'one view per policy');
    try {
      // The same key under both policies, interleaved: the primary keeps a bucket for each.
      const takes: Promise<{ allowed: boolean }>[] = [];
      for (let i = 0; i < 7; i++) takes.push(three.take('k'), five.take('k'));
      const decisions = await Promise.all(takes);
      assert.equal(channel.sent.length, 1);
      const groups = channel.sent[0]?.groups ?? [];
      assert.deepEqual(
        groups.map((g) => [g.policy, g.keys.length]),
        [
          ['1/3/10', 7],
          ['1/5/10', 7],
        ],
      );
      const allowed = (from: number) => decisions.filter((_, i) => i % 2 === from && decisions[i]?.allowed === true).length;
      assert.equal(allowed(0), 3, 'burst 3');
      assert.equal(allowed(1), 5, 'burst 5');
      assert.equal(primary.size, 2, 'one store per policy in the primary');
      // Another max_keys is another policy too.
      await ipc.view({ ...SLOW_3, max_keys: 11 }).take('k');
      assert.equal(primary.size, 3);
    } finally {
      ipc.close();
      primary.close();
    }
  });

  test('answers for unknown ids (a reply after close) are ignored; a failed send rejects the batch', async () => {
    const channel = new FakeChannel(undefined);
    const ipc = new IpcStore(channel);
    const store = ipc.view(SLOW_3);
    const other = ipc.view(SLOW_5);
    channel.emit('message', { type: 'tollgate:taken', ids: [99], decisions: [1, 0, 0, 0] } satisfies TakeReply);
    channel.emit('message', { type: 'something else' });
    channel.failWith = new Error('channel closed');
    await Promise.all([assert.rejects(store.take('x'), /channel closed/), assert.rejects(other.take('y'), /channel closed/)]);
    assert.equal(ipc.pending, 0);
    channel.failWith = undefined;
    const waiting = store.take('z');
    ipc.close();
    await assert.rejects(waiting, /closed/);
  });

  test('a policy the primary cannot read: those takes reject, the rest of the batch is answered', async () => {
    const primary = new PolicyStores(manualClock());
    const request: TakeRequest = {
      type: 'tollgate:take',
      groups: [
        { policy: 'nonsense', ids: [1, 2], keys: ['a', 'b'] },
        { policy: '1/3/10', ids: [3], keys: ['a'] },
      ],
    };
    const reply = answerTakes(primary, request);
    assert.deepEqual(reply.ids, [3]);
    assert.deepEqual(reply.failed, [1, 2]);
    assert.equal(primary.size, 1);
    primary.close();

    const channel = new FakeChannel(undefined);
    const ipc = new IpcStore(channel);
    const store = ipc.view(SLOW_3);
    const [bad, good] = [store.take('a'), store.take('b')];
    await new Promise((r) => setImmediate(r));
    channel.emit('message', { type: 'tollgate:taken', ids: [2], decisions: [1, 2, 0, 20_000], failed: [1] } satisfies TakeReply);
    await assert.rejects(bad, /cannot read the rate-limit policy/);
    assert.deepEqual(await good, { allowed: true, remaining: 2, retryAfterMs: 0, resetMs: 20_000 });
    ipc.close();
  });

  test('a take the primary does not answer within timeout_ms rejects; a late answer is ignored; counted and logged', { timeout: 5_000 }, async () => {
    const channel = new FakeChannel(undefined);
    const log = new FakeLogger();
    const ipc = new IpcStore(channel, { logger: log.logger });
    const store = ipc.view(SLOW_3, 20);
    try {
      const [first, second] = [store.take('a'), store.take('b')];
      await Promise.all([assert.rejects(first, /did not answer within 20 ms/), assert.rejects(second, /did not answer within 20 ms/)]);
      assert.equal(ipc.pending, 0);
      assert.deepEqual([ipc.failures, ipc.timeouts], [2, 2]);
      assert.equal(log.warns.length, 1, 'one line for the failures so far');
      assert.equal(log.warns[0]?.failed, 2);

      // The primary wakes up and answers the timed-out ids: nobody is waiting, nothing changes.
      channel.emit('message', { type: 'tollgate:taken', ids: [1, 2], decisions: [1, 2, 0, 0, 1, 2, 0, 0] } satisfies TakeReply);
      assert.deepEqual([ipc.failures, ipc.timeouts, ipc.pending], [2, 2, 0]);
      assert.equal(log.infos.length, 0, 'a late answer is not a recovery');

      // The next take that is answered in time resolves, and the recovery is logged.
      const third = store.take('c');
      await new Promise((r) => setImmediate(r));
      channel.emit('message', { type: 'tollgate:taken', ids: [3], decisions: [1, 2, 0, 20_000] } satisfies TakeReply);
      assert.deepEqual(await third, { allowed: true, remaining: 2, retryAfterMs: 0, resetMs: 20_000 });
      assert.equal(log.infos.length, 1);
      assert.equal(log.infos[0]?.failed, 2);
    } finally {
      ipc.close();
    }
  });

  test('in one message, answered takes resolve and only the unanswered one times out', { timeout: 5_000 }, async () => {
    const channel = new FakeChannel(undefined);
    const ipc = new IpcStore(channel);
    const store = ipc.view(SLOW_3, 20);
    try {
      const [answered, unanswered] = [store.take('a'), store.take('b')];
      await new Promise((r) => setImmediate(r));
      assert.equal(channel.sent.length, 1);
      channel.emit('message', { type: 'tollgate:taken', ids: [1], decisions: [1, 2, 0, 20_000] } satisfies TakeReply);
      assert.deepEqual(await answered, { allowed: true, remaining: 2, retryAfterMs: 0, resetMs: 20_000 });
      await assert.rejects(unanswered, /did not answer within 20 ms/);
      assert.deepEqual([ipc.failures, ipc.timeouts], [1, 1]);
    } finally {
      ipc.close();
    }
  });

  test('answered takes are unaffected by the timeout; each timeout_ms waits its own time in a shared message', { timeout: 5_000 }, async () => {
    const primary = new PolicyStores(manualClock());
    const channel = new FakeChannel(primary);
    const ipc = new IpcStore(channel);
    const store = ipc.view(SLOW_3, 20);
    try {
      const decisions = await Promise.all([store.take('a'), store.take('a')]);
      assert.deepEqual(decisions.map((d) => d.remaining), [2, 1]);
      // Past the timeout: nothing fails after the fact.
      await new Promise((r) => setTimeout(r, 60));
      assert.deepEqual([ipc.failures, ipc.timeouts, ipc.pending], [0, 0, 0]);
    } finally {
      ipc.close();
      primary.close();
    }

    // One policy with two timeouts (two routes): two views, one message, and the short wait does not cut the long one.
    const silent = new FakeChannel(undefined);
    const two = new IpcStore(silent);
    const short = two.view(SLOW_3, 20);
    const long = two.view(SLOW_3, 60_000);
    assert.notEqual(short, long);
    assert.equal(two.view({ ...SLOW_3 }, 20), short);
    try {
      const [s, l] = [short.take('k'), long.take('k')];
      await assert.rejects(s, /within 20 ms/);
      assert.equal(silent.sent.length, 1, 'both in one message');
      assert.equal(two.pending, 1, 'the long one still waits');
      silent.emit('message', { type: 'tollgate:taken', ids: [2], decisions: [0, 0, 60_000, 60_000] } satisfies TakeReply);
      assert.equal((await l).allowed, false);
      assert.deepEqual([two.failures, two.timeouts], [1, 1]);
    } finally {
      two.close();
    }
  });

  test('failed takes are told to onErrors once each, by kind, whatever view they came through; the state follows', { timeout: 5_000 }, async () => {
    const channel = new FakeChannel(undefined);
    const told: [string, number][] = [];
    const ipc = new IpcStore(channel, { onErrors: (kind, n) => told.push([kind, n]) });
    const one = ipc.view(SLOW_3, 20);
    const other = ipc.view(SLOW_5, 20);
    try {
      assert.deepEqual(one.health(), { store: 'ipc', target: 'primary', state: 'ready', last_error: null });
      // The primary does not answer: three takes of two views time out together.
      await Promise.all([assert.rejects(one.take('a')), assert.rejects(one.take('b')), assert.rejects(other.take('c'))]);
      assert.deepEqual(told, [['timeout', 3]]);
      const failing = one.health();
      assert.equal(failing.state, 'failing');
      assert.equal(failing.last_error?.kind, 'timeout');
      assert.match(failing.last_error?.message ?? '', /did not answer within 20 ms/);
      assert.deepEqual(other.health(), failing, 'one channel, one state');
      // The channel is gone: down.
      channel.failWith = new Error('channel closed');
      await assert.rejects(other.take('d'));
      assert.deepEqual(told, [['timeout', 3], ['unavailable', 1]]);
      assert.equal(one.health().state, 'down');
      // The primary cannot read a policy: an error; then an answer makes it ready, keeping the last error.
      channel.failWith = undefined;
      const [bad, good] = [one.take('e'), one.take('f')];
      await new Promise((r) => setImmediate(r));
      channel.emit('message', { type: 'tollgate:taken', ids: [6], decisions: [1, 2, 0, 20_000] } satisfies TakeReply);
      channel.emit('message', { type: 'tollgate:taken', ids: [], decisions: [], failed: [5] } satisfies TakeReply);
      await assert.rejects(bad, /cannot read/);
      await good;
      assert.deepEqual(told, [['timeout', 3], ['unavailable', 1], ['error', 1]]);
      assert.equal(one.health().state, 'failing');
      const last = one.take('g');
      await new Promise((r) => setImmediate(r));
      channel.emit('message', { type: 'tollgate:taken', ids: [7], decisions: [1, 1, 0, 20_000] } satisfies TakeReply);
      await last;
      assert.equal(one.health().state, 'ready');
      assert.equal(one.health().last_error?.kind, 'error', 'the last error stays to be seen');
      assert.deepEqual([ipc.failures, ipc.timeouts], [5, 3]);
    } finally {
      ipc.close();
    }
  });

  test('without an IPC channel (not a forked process), takes reject', async () => {
    const emitter = new EventEmitter();
    const ipc = new IpcStore(emitter);
    await assert.rejects(ipc.view(SLOW_3).take('k'), /no IPC channel/);
    ipc.close();
  });
});

describe('policy keys', () => {
  test('policyKey and parsePolicyKey round-trip', () => {
    for (const p of [SLOW_3, { requests_per_minute: 6000, burst_size: 100, max_keys: 100_000 }, { requests_per_minute: Number.MAX_SAFE_INTEGER, burst_size: 1, max_keys: 1 }]) {
      assert.deepEqual(parsePolicyKey(policyKey(p)), p);
    }
  });

  test('anything else is not a policy', () => {
    for (const key of ['', '1/3', '1/3/10/4', '0/3/10', '1/-3/10', '1/3.5/10', '01/3/10', ' 1/3/10', '1/3/10 ', '99999999999999999/1/1', 'a/b/c']) {
      assert.equal(parsePolicyKey(key), undefined, JSON.stringify(key));
    }
  });
});
