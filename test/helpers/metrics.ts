/** Reading the admin listener in tests: the Prometheus text exposition and the /api/events stream. */
import assert from 'node:assert/strict';
import { get, type IncomingMessage } from 'node:http';
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

/** An open /api/events stream: the parsed events so far (appended as they arrive). */
export interface EventStream<T> {
  events: T[];
  res: IncomingMessage;
  close(): void;
}

/** Opens an event stream (Server-Sent Events) and collects the JSON of each event's data lines. */
export function openEvents<T = Record<string, unknown>>(url: string): Promise<EventStream<T>> {
  return new Promise((resolve, reject) => {
    const req = get(url, { agent: false }, (res) => {
      const events: T[] = [];
      let buffered = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buffered += chunk;
        let end: number;
        while ((end = buffered.indexOf('\n\n')) !== -1) {
          const block = buffered.slice(0, end);
          buffered = buffered.slice(end + 2);
          const data = block.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n');
          if (data !== '') events.push(JSON.parse(data) as T);
        }
      });
      res.on('error', () => {});
      resolve({ events, res, close: () => req.destroy() });
    });
    req.on('error', reject);
  });
}
