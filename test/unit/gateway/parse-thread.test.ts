import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { ConfigError } from '../../../src/config/errors.js';
import { readConfig } from '../../../src/config/load.js';
import { readConfigOffThread, stopParseThread } from '../../../src/gateway/reload.js';
import { writeConfig } from '../../helpers/cli.js';

const GOOD = `server: { listen_port: 8080 }
load_balancing:
  upstreams: [{ name: b1, address: 127.0.0.1, port: 3000 }]
`;

describe('reading the config on a worker thread', () => {
  after(() => stopParseThread());

  test('gives the config and hash that readConfig gives on this thread', async () => {
    const file = writeConfig(GOOD);
    assert.deepEqual(await readConfigOffThread(file), readConfig(file));
  });

  test('a bad file rejects with the same ConfigError, file:line:col and key path', async () => {
    const file = writeConfig(GOOD.replace('port: 3000', 'port: 70000'));
    const err = await readConfigOffThread(file).then(
      () => assert.fail('a bad file must be refused'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof ConfigError);
    assert.deepEqual(err.problems, [{ line: 3, col: 53, path: 'load_balancing.upstreams[0].port', message: 'must be 1-65535, got 70000' }]);
    assert.match(err.message, new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:3:53 load_balancing\\.upstreams\\[0\\]\\.port: `));
  });

  test('after stopParseThread, the next read starts a new thread; several reads at once all answer', async () => {
    const file = writeConfig(GOOD);
    await readConfigOffThread(file);
    stopParseThread();
    const answers = await Promise.all([readConfigOffThread(file), readConfigOffThread(file), readConfigOffThread(file)]);
    for (const a of answers) assert.equal(a.hash, readConfig(file).hash);
  });
});
