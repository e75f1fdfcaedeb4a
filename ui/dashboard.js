/* Tollgate dashboard: reads /api/events (Server-Sent Events, one status document a second) and draws it.
 * Plain browser JavaScript, no build step; charts by uPlot (vendor/). */
/* global uPlot, EventSource, ResizeObserver, document, window */
'use strict';

(function dashboard() {
  const CLASSES = ['2xx', '3xx', '4xx', '5xx'];
  const COLOURS = { '2xx': '#3ecf8e', '3xx': '#5aa9ff', '4xx': '#f5b544', '5xx': '#ff5d5d' };
  const AXIS = { stroke: '#8d9aab', grid: { stroke: '#263243', width: 1 }, ticks: { stroke: '#263243', width: 1 } };

  /** State for tests and the curious: the charts, the last document and how many arrived. */
  const state = { updates: 0, last: null, charts: {}, errors: 0 };
  window.tollgateDashboard = state;

  const byId = (id) => document.getElementById(id);
  const int = (n) => (typeof n === 'number' ? n.toLocaleString('en-US') : '–');
  const ms = (v) => (v === null || v === undefined ? '–' : v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : String(Math.round(v)));
  const set = (id, text) => {
    const el = byId(id);
    if (el !== null && el.textContent !== text) el.textContent = text;
  };

  function duration(s) {
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    const h = Math.floor(s / 3600);
    return h < 48 ? `${h} h ${Math.floor((s % 3600) / 60)} min` : `${Math.floor(h / 24)} d ${h % 24} h`;
  }

  function makeChart(id, series, yLabel) {
    const el = byId(id);
    const opts = {
      width: Math.max(300, el.clientWidth),
      height: 220,
      series: [{}, ...series],
      axes: [
        { ...AXIS, space: 90, values: (_u, splits) => splits.map((t) => new Date(t * 1000).toLocaleTimeString('en-GB')) },
        { ...AXIS, label: yLabel, size: 56 },
      ],
      scales: { x: { time: true }, y: { range: (_u, min, max) => [0, Math.max(1, max * 1.1, min)] } },
      cursor: { drag: { x: false, y: false } },
      legend: { live: false },
    };
    const data = [[], ...series.map(() => [])];
    const chart = new uPlot(opts, data, el);
    new ResizeObserver(() => chart.setSize({ width: Math.max(300, el.clientWidth), height: 220 })).observe(el);
    return chart;
  }

  function ensureCharts() {
    if (state.charts.rps !== undefined) return;
    state.charts.rps = makeChart('chart-rps', [{ label: 'req/s', stroke: '#5aa9ff', fill: 'rgba(90,169,255,0.15)', width: 2 }], 'req/s');
    state.charts.latency = makeChart(
      'chart-latency',
      [
        { label: 'p50', stroke: '#3ecf8e', width: 2, value: (_u, v) => (v === null ? '–' : `${ms(v)} ms`) },
        { label: 'p99', stroke: '#f5b544', width: 2, value: (_u, v) => (v === null ? '–' : `${ms(v)} ms`) },
      ],
      'ms',
    );
    state.charts.status = makeChart(
      'chart-status',
      CLASSES.map((c) => ({ label: c, stroke: COLOURS[c], width: 2 })),
      'responses/s',
    );
  }

  /** A row with one cell per class name; kept across updates and found again by `key`. */
  function newRow(key, classes) {
    const row = document.createElement('tr');
    row.dataset.key = key;
    for (const cls of classes) {
      const td = document.createElement('td');
      td.className = cls;
      row.appendChild(td);
    }
    return row;
  }

  /** Puts `items` in `body` in order, one row each (made by `make`, filled by `fill`); drops the others. */
  function renderRows(body, items, keyOf, make, fill) {
    const rows = new Map([...body.rows].map((r) => [r.dataset.key, r]));
    items.forEach((item, i) => {
      const key = keyOf(item);
      let row = rows.get(key);
      if (row === undefined) row = make(key, item);
      if (body.rows[i] !== row) body.insertBefore(row, body.rows[i] ?? null);
      rows.delete(key);
      fill(row, item);
    });
    for (const stale of rows.values()) stale.remove();
  }

  // An upstream is its service and its name: two services may each have an upstream "api-1".
  function renderUpstreams(upstreams) {
    renderRows(
      byId('upstreams'),
      upstreams,
      (u) => `${u.service}/${u.name}`,
      (key, u) => {
        const row = newRow(key, ['service', 'name', 'address', 'state', 'num inflight', 'num weight', 'share', 'num requests']);
        row.dataset.service = u.service;
        row.dataset.upstream = u.name;
        row.cells[6].innerHTML = '<div class="share"><div class="bar"><span></span></div><span class="pct"></span></div>';
        return row;
      },
      (row, u) => {
        row.dataset.state = u.state;
        row.cells[0].textContent = u.service;
        row.cells[1].textContent = u.name;
        row.cells[2].textContent = u.address;
        row.cells[3].textContent = u.state === 'up' ? 'healthy' : u.state === 'down' ? 'unhealthy' : 'ejected';
        row.cells[3].dataset.state = u.state;
        row.cells[4].textContent = int(u.inflight);
        row.cells[5].textContent = String(Math.round(u.weight * 100) / 100);
        const pct = u.share === null ? null : Math.round(u.share * 1000) / 10;
        row.cells[6].querySelector('.bar span').style.width = `${pct ?? 0}%`;
        row.cells[6].querySelector('.pct').textContent = pct === null ? '–' : `${pct}%`;
        row.cells[7].textContent = int(u.requests);
      },
    );
  }

  function renderTopology(routes, services) {
    renderRows(
      byId('routes'),
      routes,
      (r) => r.name,
      (key) => newRow(key, ['name', 'target', 'num requests']),
      (row, r) => {
        row.cells[0].textContent = r.name;
        row.cells[1].textContent = r.service !== null ? `service ${r.service}` : `redirect to ${r.redirect}`;
        row.cells[2].textContent = int(r.requests);
      },
    );
    renderRows(
      byId('services'),
      services,
      (s) => s.name,
      (key) => newRow(key, ['name', 'strategy', 'members', 'num requests']),
      (row, s) => {
        row.cells[0].textContent = s.name;
        row.cells[1].textContent = s.strategy;
        row.cells[2].textContent = s.upstreams.join(', ');
        row.cells[3].textContent = int(s.requests);
      },
    );
  }

  const STORE_KINDS = ['timeout', 'unavailable', 'error'];

  // One row per rate-limit store in use; the failed checks of each shared kind of store in use below them.
  function renderStores(rateLimit) {
    const stores = rateLimit?.stores ?? [];
    byId('stores-panel').hidden = stores.length === 0;
    renderRows(
      byId('stores'),
      stores,
      (r) => `${r.store} ${r.target} ${r.routes.join(',')}`,
      (key, r) => {
        const row = newRow(key, ['store', 'target', 'routes', 'state', 'error']);
        row.dataset.store = r.store;
        return row;
      },
      (row, r) => {
        row.dataset.state = r.state;
        row.cells[0].textContent = r.store;
        row.cells[1].textContent = r.target ?? '–';
        row.cells[2].textContent = r.routes.join(', ');
        row.cells[3].textContent = r.state;
        row.cells[3].dataset.state = r.state;
        const e = r.last_error;
        row.cells[4].textContent = e === null ? '–' : `${new Date(e.at).toLocaleTimeString('en-GB')} ${e.kind}: ${e.message}`;
      },
    );
    const shared = [...new Set(stores.map((r) => r.store))].filter((store) => rateLimit.errors[store] !== undefined);
    set(
      'store-errors',
      shared
        .map((store) => {
          const counts = rateLimit.errors[store];
          const total = STORE_KINDS.reduce((n, k) => n + counts[k], 0);
          return `${store}: ${int(total)} failed check${total === 1 ? '' : 's'} since start (${STORE_KINDS.map((k) => `${int(counts[k])} ${k}`).join(', ')})`;
        })
        .join(' · '),
    );
  }

  function render(s) {
    state.last = s;
    state.updates++;
    set('version', `v${s.version}`);
    set('uptime', duration(s.uptime_s));
    byId('draining').hidden = !s.draining;
    // Cluster mode: how many workers the numbers come from.
    const workers = byId('workers');
    workers.hidden = s.cluster === undefined;
    if (s.cluster !== undefined) {
      const missing = s.cluster.running - s.cluster.answered;
      set('workers', `${s.cluster.running} workers${missing > 0 ? ` (${missing} not answering)` : ''}`);
    }
    set('total-requests', int(s.totals.requests));
    set('rps', int(s.current.rps));
    set('p50', ms(s.current.p50_ms));
    set('p99', ms(s.current.p99_ms));
    for (const c of CLASSES) set(`total-${c}`, int(s.totals.status[c]));
    set('recent-401', int(s.recent.unauthorized));
    set('total-401', int(s.totals.unauthorized));
    set('recent-429', int(s.recent.rate_limited));
    set('total-429', int(s.totals.rate_limited));
    set('connections', int(s.connections.open));
    set('refused', int(s.connections.refused_total));
    renderUpstreams(s.upstreams);
    renderTopology(s.routes ?? [], s.services ?? []);
    renderStores(s.rate_limit);
    ensureCharts();
    const t = s.series.t;
    state.charts.rps.setData([t, s.series.rps]);
    state.charts.latency.setData([t, s.series.p50_ms, s.series.p99_ms]);
    state.charts.status.setData([t, ...CLASSES.map((c) => s.series.status[c])]);
  }

  function connect() {
    const live = byId('live');
    const events = new EventSource('/api/events');
    events.onopen = () => {
      live.textContent = 'live';
      live.className = 'badge on';
    };
    events.onerror = () => {
      // EventSource reconnects by itself (retry: 2 s); say so meanwhile.
      live.textContent = 'reconnecting';
      live.className = 'badge off';
    };
    events.onmessage = (e) => {
      try {
        render(JSON.parse(e.data));
      } catch (err) {
        state.errors++;
        window.console.error('tollgate dashboard: cannot render an update', err);
      }
    };
  }

  connect();
})();
