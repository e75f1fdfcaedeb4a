/** Reading the Prometheus text exposition in tests. */
import assert from 'node:assert/strict';
import { request } from './http.js';

/** Every sample of the exposition whose name is `name`, as values keyed by the label text (`{a="b"}`, or ''). */
export function samples(text: string, name: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)(\{[^}]*\})? (\S+)$/.exec(line);
    if (m !== null && m[1] === name) out.set(m[2] ?? '', Number(m[3]));
  }
  return out;
}

/** GET /metrics from an admin listener: checks the status and the Prometheus content type, returns the text. */
export async function scrape(adminUrl: string): Promise<string> {
  const res = await request(`${adminUrl}/metrics`);
  assert.equal(res.status, 200);
  assert.match(String(res.headers['content-type']), /^text\/plain; version=0\.0\.4/);
  return res.body;
}
