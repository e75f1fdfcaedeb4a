/**
 * The dashboard in a real browser: Chromium (CHROMIUM_PATH, or chromium, chromium-browser, google-chrome...
 * on the PATH: see findChromium) driven by playwright-core. scripts/test-deps.sh (run by the README's test
 * command and by .ci/run) installs Debian's `chromium` package; without a browser the tests fail, saying so.
 * The screenshot in docs/ is made by test/browser/screenshot.ts (`npm run screenshot`), not by this test.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { ARGS, FAST_CHECKS, findChromium, newPage } from './chromium.js';
import { lines, startCluster, stopCluster, type Line } from '../helpers/cluster.js';
import { startFaultUpstreams } from '../helpers/fault-upstream.js';
import { request } from '../helpers/http.js';
import { startRedis } from '../helpers/redis.js';
import { startBackend, startProxy, waitFor, type TestProxy } from '../helpers/servers.js';


interface DashboardState {
  updates: number;
  errors: number;
  charts: Record<string, { data: (number | null)[][] }>;
}

// What the functions run inside the page use of the browser's globals (the test program has no DOM types).
interface PageElement {
  textContent: string | null;
  getAttribute(name: string): string | null;
}
declare const document: {
  getElementById(id: string): PageElement | null;
  querySelector(selector: string): PageElement | null;
  querySelectorAll(selector: string): { length: number };
};
declare const window: { tollgateDashboard?: DashboardState };

/** The text of each cell of each row matched by `selector`, read in the page. */
function cells(page: Page, selector: string): Promise<(string | undefined)[][]> {
  return page.locator(selector).evaluateAll((trs) => trs.map((tr) => [...(tr as unknown as { cells: Iterable<PageElement> }).cells].map((td) => td.textContent?.trim())));
}

/** Text of an element, read in the page. */
function text(page: Page, selector: string): Promise<string> {
  return page.locator(selector).innerText();
}

async function openDashboard(browser: Browser, proxy: Pick<TestProxy, 'adminUrl'>): Promise<{ page: Page; problems: string[] }> {
  const page = await newPage(browser);
  const problems: string[] = [];
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`console: ${msg.text()}`);
  });
  await page.goto(`${proxy.adminUrl}/`);
  await page.waitForFunction(() => (window.tollgateDashboard?.updates ?? 0) >= 1);
  return { page, problems };
}

describe('dashboard in Chromium', () => {
  let browser: Browser;
  before(async () => {
    // No browser fails every test here with findChromium's instructions, rather than skipping them.
    browser = await chromium.launch({ executablePath: findChromium(), args: ARGS });
  });
  after(async () => {
    await browser?.close();
  });

  test('after known traffic the totals match what was sent, the charts have data, and a stopped backend turns unhealthy', async () => {
    const ups = await startFaultUpstreams('alpha', 'beta');
    const proxy = await startProxy(ups, {
      server: { trusted_proxies: ['127.0.0.1'] },
      load_balancing: { health_check: FAST_CHECKS },
      middleware: { auth: { enabled: true, valid_tokens: ['t1', 't2'] }, rate_limit: { enabled: true, requests_per_minute: 1, burst_size: 10 } },
    });
    let page: Page | undefined;
    try {
      const statuses: number[] = [];
      const send = async (n: number, headers: Record<string, string>): Promise<void> => {
        for (let i = 0; i < n; i++) statuses.push((await request(`${proxy.url}/item/${i}`, { headers })).status);
      };
      await send(12, { authorization: 'Bearer t1' }); // 10 × 200, then 2 × 429 (burst 10)
      await send(10, { authorization: 'Bearer t2' }); // 10 × 200
      await send(12, { 'x-forwarded-for': '198.51.100.7' }); // no token: 10 × 401, then 2 × 429
      const count = (s: number): number => statuses.filter((x) => x === s).length;
      assert.deepEqual([count(200), count(401), count(429), statuses.length], [20, 10, 4, 34]);

      const opened = await openDashboard(browser, proxy);
      page = opened.page;
      // Totals are cumulative; the "last 60 s" figures count complete seconds, so wait for them too.
      // (The 429s were the last requests sent: their second may complete after the 401s'.)
      await page.waitForFunction(
        () => document.getElementById('recent-401')?.textContent === '10' && document.getElementById('recent-429')?.textContent === '4',
        undefined,
        { timeout: 5000 },
      );
      assert.equal(await text(page, '#total-requests'), '34');
      assert.equal(await text(page, '#total-2xx'), '20');
      assert.equal(await text(page, '#total-3xx'), '0');
      assert.equal(await text(page, '#total-4xx'), '14');
      assert.equal(await text(page, '#total-5xx'), '0');
      assert.equal(await text(page, '#total-401'), '10');
      assert.equal(await text(page, '#total-429'), '4');
      assert.equal(await text(page, '#recent-429'), '4');
      assert.equal(await page.locator('#workers').isHidden(), true, 'no worker count for a single process');
      const rows = await cells(page, '#upstreams tr');
      assert.deepEqual(
        rows.map((r) => [r[0], r[1], r[2], r[3], r[6], r[7]]),
        [
          ['default', 'alpha', `127.0.0.1:${ups[0]!.port}`, 'healthy', '50%', '10'],
          ['default', 'beta', `127.0.0.1:${ups[1]!.port}`, 'healthy', '50%', '10'],
        ],
      );
      // The routes and services of the config: here the implicit route and service `default`.
      assert.deepEqual(await cells(page, '#routes tr'), [['default', 'service default', '34']]);
      assert.deepEqual(await cells(page, '#services tr'), [['default', 'round_robin', 'alpha, beta', '20']]);
      // The rate limit's store: this process's memory, which cannot fail (so no failed-check line).
      assert.equal(await page.locator('#stores-panel').isVisible(), true);
      assert.deepEqual(await cells(page, '#stores tr'), [['memory', '–', 'default', 'ready', '–']]);
      assert.equal(await text(page, '#store-errors'), '');

      // Charts: uPlot holds one x value per second of history, and the per-second counts add up to the traffic.
      await page.waitForFunction(() => {
        const d = window.tollgateDashboard as DashboardState;
        const rps = d.charts.rps?.data[1] ?? [];
        return rps.reduce<number>((a, v) => a + (v ?? 0), 0) === 34;
      }, undefined, { timeout: 5000 });
      const chartData = await page.evaluate(() => {
        const d = window.tollgateDashboard as DashboardState;
        const sum = (xs: (number | null)[] | undefined): number => (xs ?? []).reduce<number>((a, v) => a + (v ?? 0), 0);
        return {
          points: d.charts.rps?.data[0]?.length ?? 0,
          byClass: [1, 2, 3, 4].map((i) => sum(d.charts.status?.data[i])),
          latencyPoints: (d.charts.latency?.data[1] ?? []).filter((v) => v !== null).length,
          canvases: document.querySelectorAll('.chart canvas').length,
          errors: d.errors,
        };
      });
      assert.equal(chartData.points, 60, 'a minute of complete seconds');
      assert.deepEqual(chartData.byClass, [20, 0, 14, 0]);
      assert.ok(chartData.latencyPoints >= 1, 'latency points for the seconds with traffic');
      assert.equal(chartData.canvases, 3);
      assert.equal(chartData.errors, 0);

      // Stop a backend: active checks (every 100 ms, 2 failures) take it down, and its row says so.
      await ups[1]!.kill();
      await page.waitForFunction(() => document.querySelector('#upstreams tr[data-upstream="beta"]')?.getAttribute('data-state') === 'down', undefined, { timeout: 5000 });
      assert.equal(await text(page, '#upstreams tr[data-upstream="beta"] td.state'), 'unhealthy');
      assert.equal(await text(page, '#upstreams tr[data-upstream="alpha"] td.state'), 'healthy');
      assert.equal(await text(page, '#live'), 'live');
      assert.deepEqual(opened.problems, []);
    } finally {
      await page?.close();
      await proxy.close();
      await Promise.all(ups.map((u) => u.kill()));
    }
  });

  test('a Redis store: its row turns down with the failed checks counted when Redis is killed, and ready when it is back', async () => {
    const redis = await startRedis({ own: true });
    const backend = await startBackend('b');
    const store = { type: 'redis', url: redis.url, timeout_ms: 100, on_error: 'allow' };
    const proxy = await startProxy([backend], { middleware: { rate_limit: { enabled: true, requests_per_minute: 60, burst_size: 1000, store } } });
    let page: Page | undefined;
    try {
      const opened = await openDashboard(browser, proxy);
      page = opened.page;
      assert.deepEqual(await cells(page, '#stores tr'), [['redis', redis.url, 'default', 'ready', '–']]);
      assert.equal(await text(page, '#store-errors'), 'redis: 0 failed checks since start (0 timeout, 0 unavailable, 0 error)');

      await redis.stop('SIGKILL');
      await page.waitForFunction(() => document.querySelector('#stores tr[data-store="redis"]')?.getAttribute('data-state') === 'down', undefined, { timeout: 10_000 });
      for (let i = 0; i < 7; i++) assert.equal((await request(`${proxy.url}/r/${i}`)).status, 200);
      await page.waitForFunction(() => document.getElementById('store-errors')?.textContent?.startsWith('redis: 7 failed checks') === true, undefined, { timeout: 5_000 });
      assert.equal(await text(page, '#store-errors'), 'redis: 7 failed checks since start (0 timeout, 7 unavailable, 0 error)');
      const [row] = await cells(page, '#stores tr');
      assert.deepEqual(row?.slice(0, 4), ['redis', redis.url, 'default', 'down']);
      assert.match(row?.[4] ?? '', /^\d\d:\d\d:\d\d unavailable: \S/, 'the last error: when, why, and its message');

      await redis.restart();
      await page.waitForFunction(() => document.querySelector('#stores tr[data-store="redis"] td.state')?.textContent === 'ready', undefined, { timeout: 10_000 });
      assert.equal(await text(page, '#store-errors'), 'redis: 7 failed checks since start (0 timeout, 7 unavailable, 0 error)');
      assert.deepEqual(opened.problems, []);
    } finally {
      await page?.close();
      await proxy.close();
      await backend.close();
      await redis.close();
    }
  });

  test('cluster mode: the dashboard of the primary shows the sum of both workers and the worker count', async () => {
    const ups = await startFaultUpstreams('alpha');
    const port = 0;
    const yaml = [
      `server: { listen_port: ${port}, listen_address: "127.0.0.1", workers: 2 }`,
      'load_balancing:',
      '  health_check: { active: { enabled: false } }',
      `  upstreams: [ { name: alpha, address: 127.0.0.1, port: ${ups[0]!.port} } ]`,
      'admin: { port: 0 }',
    ].join('\n');
    const cluster = await startCluster(yaml);
    let page: Page | undefined;
    try {
      for (let i = 0; i < 12; i++) assert.equal((await request(`${cluster.url}/c/${i}`)).status, 200);
      const served = (): Line[] => lines(cluster.child).filter((l) => l.msg === 'Request Completed');
      await waitFor(() => served().length === 12, 5000, 'the completion lines');
      assert.equal(new Set(served().map((l) => l.pid)).size, 2, 'both workers served some of the requests');
      const opened = await openDashboard(browser, cluster);
      page = opened.page;
      await page.waitForFunction(() => document.getElementById('total-requests')?.textContent === '12', undefined, { timeout: 5000 });
      assert.equal(await text(page, '#workers'), '2 workers');
      assert.equal(await text(page, '#total-2xx'), '12');
      assert.equal(await text(page, '#upstreams tr[data-upstream="alpha"] td.requests'), '12');
      assert.deepEqual(opened.problems, []);
    } finally {
      await page?.close();
      await stopCluster(cluster);
      await Promise.all(ups.map((u) => u.kill()));
    }
  });
});
