/**
 * Makes docs/dashboard.png: 20 s of mixed traffic through a proxy with three backends (one slow), then one
 * backend stopped, and a screenshot of the dashboard under load. Not a test: `npm run screenshot [FILE]`.
 */
import { resolve } from 'node:path';
import { chromium } from 'playwright-core';
import { startFaultUpstreams } from '../helpers/fault-upstream.js';
import { request } from '../helpers/http.js';
import { startProxy } from '../helpers/servers.js';
import { ARGS, FAST_CHECKS, findChromium, newPage } from './chromium.js';

// The page's document, as the function passed to waitForFunction sees it (this program has no DOM types).
declare const document: { querySelector(selector: string): { getAttribute(name: string): string | null } | null };

const SCREENSHOT = process.argv[2] ?? 'docs/dashboard.png';
const browser = await chromium.launch({ executablePath: findChromium(), args: ARGS });
try {
  const ups = await startFaultUpstreams('api-1', 'api-2', 'api-3');
  ups[2]!.mode = 'slow';
  ups[2]!.delayMs = 8;
  const tokens = Array.from({ length: 10 }, (_v, i) => `load-${i}`);
  const proxy = await startProxy(ups, {
    server: { trusted_proxies: ['127.0.0.1'] },
    load_balancing: { strategy: 'least_conn', health_check: { ...FAST_CHECKS, active: { ...FAST_CHECKS.active, interval_ms: 500 } } },
    middleware: { auth: { enabled: true, valid_tokens: tokens }, rate_limit: { enabled: true, requests_per_minute: 1800, burst_size: 30 } },
  });
  const page = await newPage(browser);
  let stop = false;
  const client = async (seed: number): Promise<void> => {
    let i = seed;
    while (!stop) {
      i++;
      // Client 4 hammers with one token (over its limit: 429s); one request in 17 has no token (401s).
      const token = seed === 4 ? 'load-9' : (tokens[i % 9] as string);
      const headers: Record<string, string> = i % 17 === 0 ? { 'x-forwarded-for': `203.0.113.${i % 5}` } : { authorization: `Bearer ${token}` };
      await request(`${proxy.url}/orders/${i}`, { headers }).catch(() => undefined);
      await new Promise((r) => setTimeout(r, 6 + (i % 7)));
    }
  };
  try {
    await page.goto(`${proxy.adminUrl}/`);
    const clients = [client(1), client(2), client(3), client(4)];
    await new Promise((r) => setTimeout(r, 20_000));
    await ups[1]!.kill();
    await page.waitForFunction(() => document.querySelector('#upstreams tr[data-upstream="api-2"]')?.getAttribute('data-state') === 'down', undefined, { timeout: 10_000 });
    await new Promise((r) => setTimeout(r, 5_000));
    await page.screenshot({ path: resolve(SCREENSHOT), fullPage: true });
    stop = true;
    await Promise.all(clients);
  } finally {
    stop = true;
    await page.close();
    await proxy.close();
    await Promise.all(ups.map((u) => u.kill()));
  }
} finally {
  await browser.close();
}
