/** What the browser test and the screenshot script share: a Chromium to drive and how to open a page. */
import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { Browser, Page } from 'playwright-core';

/** The names a Chromium or Chrome binary goes by (Debian, other distributions, Google's packages), in the order tried. */
export const BROWSER_NAMES = ['chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable', 'chrome'] as const;

const HOW_TO_GET_ONE = "install Debian's chromium (apt-get install -y chromium, or bash scripts/test-deps.sh), or set CHROMIUM_PATH to a Chromium or Chrome binary";

function isExecutableFile(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return statSync(file).isFile();
  } catch {
    return false;
  }
}

/**
 * The browser to drive: `CHROMIUM_PATH` when set, else the first of BROWSER_NAMES found on `PATH`. Throws,
 * saying how to get one, when there is none: the browser tests fail rather than skip, since CI installs it.
 */
export function findChromium(env: NodeJS.ProcessEnv = process.env): string {
  const given = env.CHROMIUM_PATH;
  if (given !== undefined && given !== '') {
    if (isExecutableFile(given)) return given;
    throw new Error(`CHROMIUM_PATH=${given} is not an executable file: ${HOW_TO_GET_ONE}`);
  }
  const dirs = (env.PATH ?? '').split(delimiter).filter((d) => d !== '');
  for (const name of BROWSER_NAMES) {
    for (const dir of dirs) {
      const file = join(dir, name);
      if (isExecutableFile(file)) return file;
    }
  }
  throw new Error(`no Chromium found (CHROMIUM_PATH is not set, and none of ${BROWSER_NAMES.join(', ')} is on the PATH): ${HOW_TO_GET_ONE}`);
}

// Without the background-networking switches Chromium reaches out to Google services, which this closed
// network refuses, and the launch gets slow and noisy.
export const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
/** Health checks fast enough for a test to see a stopped backend go down. */
export const FAST_CHECKS = { active: { interval_ms: 100, timeout_ms: 200, healthy_threshold: 2, unhealthy_threshold: 2 }, passive: { enabled: false } };

/**
 * A laptop-sized page. The test runs under tsx, whose transform wraps named functions in a `__name` helper;
 * functions passed to page.evaluate are sent as source, so the page gets a do-nothing `__name` too.
 */
export async function newPage(browser: Browser): Promise<Page> {
  const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  await page.addInitScript('globalThis.__name = (fn) => fn;');
  return page;
}
