/** What the browser test and the screenshot script share: Debian's Chromium and how to open a page. */
import type { Browser, Page } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';
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

