// The 1,000-route config and the requests that go through it, shared by bench/bench.mjs (the
// tollgate-routes-1000 row) and bench/instructions.mjs (its variants of the same name and tollgate-mix).

// 1,000 routes of the three kinds the matcher keys on, all to the service `default` (load_balancing: the
// same three backends as `tollgate`): 500 exact hosts, each with a path prefix; 300 `*.suffix` wildcards
// with a prefix; 200 host-less prefixes, one of them /big so the 1 MiB run goes through a route too. A
// matcher that looped over the routes would pay for every one of them on each request; the compiled one
// (src/routing/matcher.ts) does a few Map lookups per host candidate and path boundary.
export const ROUTE_COUNTS = { exact: 500, wildcard: 300, hostless: 200 };

export function routes1000Yaml(bigPath) {
  const lines = [];
  for (let i = 0; i < ROUTE_COUNTS.exact; i++) {
    lines.push(`  - { name: "svc${i}", match: { hosts: ["svc${i}.example.test"], path_prefix: "/api/v${i % 4}" }, service: "default" }`);
  }
  for (let i = 0; i < ROUTE_COUNTS.wildcard; i++) {
    lines.push(`  - { name: "zone${i}", match: { hosts: ["*.zone${i}.example.net"], path_prefix: "/web" }, service: "default" }`);
  }
  for (let i = 0; i < ROUTE_COUNTS.hostless - 1; i++) {
    lines.push(`  - { name: "p${i}", match: { path_prefix: "/p${i}/" }, service: "default" }`);
  }
  lines.push(`  - { name: "big", match: { path_prefix: "${bigPath}" }, service: "default" }`);
  return `# ${lines.length} generated routes\nroutes:\n${lines.join('\n')}\n`;
}

// The requests wrk sends to tollgate-routes-1000, in turn: routes of each kind, from deep in each group, a
// few path boundaries deep. The first is also the one of the h2load and 1 MiB runs (its Host, the run's
// path: /big falls through the exact host's table to the host-less /big route).
export const ROUTE_MIX = [
  { host: 'svc437.example.test', path: '/api/v1/items/437' },
  { host: 'svc250.example.test', path: '/api/v2/items?id=250' },
  { host: 'svc499.example.test', path: '/api/v3/a/b/c' },
  { host: 'eu.zone7.example.net', path: '/web/index.html' },
  { host: 'a.b.zone150.example.net', path: '/web/static/app.js' },
  { host: 'shop.zone299.example.net', path: '/web' },
  { host: 'www.example.org', path: '/p42/items/1' },
  { host: 'www.example.org', path: '/p198/' },
];
// Requests no route takes (404 no_route): checked once at start, so the row cannot come from a catch-all.
export const ROUTE_MISSES = [
  { host: 'svc437.example.test', path: '/api/v2/items' },
  { host: 'zone7.example.net', path: '/web' },
  { host: 'www.example.org', path: '/' },
];
