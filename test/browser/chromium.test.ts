/** Finding the browser the dashboard test drives: CHROMIUM_PATH, then the usual names on PATH, else a failure that says what to do. */
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { after, describe, test } from 'node:test';
import { findChromium } from './chromium.js';

describe('findChromium', () => {
  const root = mkdtempSync(join(tmpdir(), 'tollgate-chromium-'));
  after(() => rmSync(root, { recursive: true, force: true }));

  /** An executable file `name` in a folder of its own; returns the folder. */
  function binary(folder: string, name: string, mode = 0o755): string {
    const dir = join(root, folder);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, name), '#!/bin/sh\n');
    chmodSync(join(dir, name), mode);
    return dir;
  }

  test('CHROMIUM_PATH wins over anything on the PATH', () => {
    const own = join(binary('own', 'my-chrome'), 'my-chrome');
    const onPath = binary('path-a', 'chromium');
    assert.equal(findChromium({ CHROMIUM_PATH: own, PATH: onPath }), own);
  });

  test('a CHROMIUM_PATH that is not an executable file fails, naming it, with no fallback to the PATH', () => {
    const onPath = binary('path-b', 'chromium');
    const plain = join(binary('plain', 'not-executable', 0o644), 'not-executable');
    for (const given of [join(root, 'missing'), plain, root]) {
      assert.throws(() => findChromium({ CHROMIUM_PATH: given, PATH: onPath }), (err: Error) => err.message.startsWith(`CHROMIUM_PATH=${given} is not an executable file`));
    }
  });

  test('on the PATH: chromium before chromium-browser before google-chrome, whatever folder comes first', () => {
    const chrome = binary('path-c', 'google-chrome');
    const browser = binary('path-d', 'chromium-browser');
    assert.equal(findChromium({ PATH: [chrome, browser].join(delimiter) }), join(browser, 'chromium-browser'));
    assert.equal(findChromium({ PATH: chrome }), join(chrome, 'google-chrome'));
    // A file of the name that cannot be run is passed over.
    const stub = binary('path-e', 'chromium', 0o644);
    assert.equal(findChromium({ PATH: [stub, chrome].join(delimiter) }), join(chrome, 'google-chrome'));
  });

  test('none found: the error says how to install one or where to point', () => {
    const empty = join(root, 'empty');
    mkdirSync(empty, { recursive: true });
    for (const env of [{ PATH: empty }, {}, { CHROMIUM_PATH: '', PATH: empty }]) {
      assert.throws(
        () => findChromium(env),
        (err: Error) => err.message.includes('apt-get install -y chromium') && err.message.includes('CHROMIUM_PATH') && err.message.includes('google-chrome'),
      );
    }
  });
});
