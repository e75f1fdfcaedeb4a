/**
 * The differential fuzz run (`npm run fuzz -- --nginx`): every case goes to Tollgate and to an nginx
 * configured the same way (proxies.ts), each in front of its own pair of strict upstreams, and the two
 * outcomes are compared: the responses (the proxy's own status, or which upstream answered), what each
 * upstream received (method, target, credential), and how the connection ended. Disagreements are
 * counted by category, with the shortest case of each.
 */
import { createWriteStream } from 'node:fs';
import fc from 'fast-check';
import { normalizeTarget } from '../../src/proxy/path.js';
import { caseArb, show } from './cases.js';
import { checkTollgateCase, sendCase, tollgateRules, type Outcome } from './harness.js';
import { startNginx, startTollgate, type ProxyProcess } from './proxies.js';
import { parseResponses, single } from './strict-http.js';
import { startStrictUpstream, type Finding, type Received, type StrictUpstream } from './strict-upstream.js';

/** How one response on the connection came about: from an upstream (by role) or from the proxy itself. */
type Answer = { from: 'upstream'; role: string; status: number } | { from: 'proxy'; status: number; reason: string };

/** One proxy's handling of one case. */
export interface Side {
  /** The final responses, in order. */
  answers: Answer[];
  /** The 1xx responses' statuses. */
  interim: number[];
  /** What each upstream received during the case, by role. */
  received: Record<'protected' | 'public', Received[]>;
  /** What the strict upstreams refused to parse (the proxy forwarded bytes outside RFC 9112 / 3986). */
  malformed: string[];
  /** The response bytes did not parse strictly: the problem. */
  unparsable: string | undefined;
  hung: boolean;
}

/** A strict upstream's complaint without its quoted bytes: `target outside RFC 3986`. */
const problemKind = (problem: string): string => problem.replace(/^malformed request reached the upstream: /, '').replace(/:?\s*["(].*$/s, '');

export function side(text: string, outcome: Outcome, received: Side['received'], findings: Finding[]): Side {
  const { responses, problem } = parseResponses(outcome.bytes, text.includes('HEAD '));
  const answers = responses.filter((r) => r.status >= 200).map((r): Answer => {
    const role = single(r.headers, 'x-upstream');
    // Tollgate's error bodies say why (`"message"`); nginx's do not.
    const reason = /"message":"((?:[^"\\]|\\.)*)"/.exec(r.body.toString('latin1'))?.[1] ?? '';
    return typeof role === 'string' ? { from: 'upstream', role, status: r.status } : { from: 'proxy', status: r.status, reason };
  });
  const malformed = findings.filter((f) => f.problem.startsWith('malformed request')).map((f) => f.problem);
  const interim = responses.filter((r) => r.status < 200).map((r) => r.status);
  const unparsable = problem === undefined ? undefined : /^HTTP\/1\.[01] /.test(outcome.bytes.toString('latin1', 0, 9)) ? problemKind(problem) : 'no status line (an HTTP/0.9 answer)';
  return { answers, interim, received, malformed, unparsable, hung: outcome.hung };
}

export interface Disagreement {
  /** The category: what differs, without the details that vary from case to case. */
  category: string;
  /** Within the category: the exact statuses or targets. */
  detail: string;
  /** Tollgate forwards what nginx refuses, or sends the protected upstream another path or credential. */
  security: boolean;
}

const describeAnswer = (a: Answer | undefined): string => (a === undefined ? 'nothing (closed)' : a.from === 'proxy' ? `${a.status}` : `forwards to ${a.role}`);

/** The first way in which Tollgate (`t`) and nginx (`n`) handled a case differently, or undefined. */
export function compare(t: Side, n: Side): Disagreement | undefined {
  if (t.hung !== n.hung) return { category: `${t.hung ? 'Tollgate' : 'nginx'} leaves the connection open`, detail: '', security: false };
  if (n.malformed.length > 0 && t.malformed.length === 0) {
    const kind = problemKind(n.malformed[0] as string);
    return { category: 'nginx forwards what a strict parser refuses', detail: kind, security: false };
  }
  if (t.unparsable !== undefined || n.unparsable !== undefined) {
    if (t.unparsable !== undefined && n.unparsable === undefined) return { category: 'Tollgate response does not parse', detail: t.unparsable, security: false };
    if (n.unparsable !== undefined && t.unparsable === undefined) return { category: 'nginx response does not parse', detail: n.unparsable, security: false };
  }
  const length = Math.max(t.answers.length, n.answers.length);
  for (let i = 0; i < length; i++) {
    const a = t.answers[i];
    const b = n.answers[i];
    const detail = `response ${i + 1}: Tollgate ${describeAnswer(a)}, nginx ${describeAnswer(b)}`;
    if (a === undefined || b === undefined) {
      return { category: `${a === undefined ? 'Tollgate' : 'nginx'} closes the connection sooner`, detail, security: false };
    }
    if (a.from === 'upstream' && b.from === 'upstream') {
      if (a.role !== b.role) return { category: 'both forward, to different upstreams', detail, security: true };
    } else if (a.from === 'upstream') {
      return { category: `nginx ${b.status}, Tollgate forwards`, detail: `to ${a.role}`, security: true };
    } else if (b.from === 'upstream') {
      return { category: `Tollgate ${a.status}, nginx forwards`, detail: `to ${b.role}: ${a.reason}`, security: false };
    } else if (a.status !== b.status) {
      const same = Math.floor(a.status / 100) === Math.floor(b.status / 100);
      return { category: same ? 'different status in the same class' : 'different status class', detail: `Tollgate ${a.status}, nginx ${b.status}${a.reason === '' ? '' : ` (Tollgate: ${a.reason})`}`, security: false };
    }
  }
  for (const role of ['protected', 'public'] as const) {
    // Tollgate forwards pipelined requests over several upstream connections, so they may arrive in another
    // order: the requests both forwarded alike are set aside first, the rest compared in order.
    const key = (r: Received): string => JSON.stringify([r.method, r.target, r.authorization]);
    const nKeys = n.received[role].map(key);
    const ts = t.received[role].filter((r) => {
      const at = nKeys.indexOf(key(r));
      if (at === -1) return true;
      nKeys[at] = '';
      return false;
    });
    const ns = n.received[role].filter((_r, i) => nKeys[i] !== '');
    if (ts.length !== ns.length) return { category: `${role} upstream received a different number of requests`, detail: `Tollgate ${ts.length}, nginx ${ns.length}`, security: role === 'protected' && ts.length > ns.length };
    for (let i = 0; i < ts.length; i++) {
      const x = ts[i] as Received;
      const y = ns[i] as Received;
      if (x.method !== y.method) return { category: `both forward to ${role}, different method`, detail: `Tollgate ${x.method}, nginx ${y.method}`, security: role === 'protected' };
      if (x.authorization.join('\n') !== y.authorization.join('\n')) {
        return { category: `both forward to ${role}, different credential`, detail: `Tollgate ${JSON.stringify(x.authorization)}, nginx ${JSON.stringify(y.authorization)}`, security: role === 'protected' };
      }
      if (x.target !== y.target) {
        const normalized = normalizeTarget(y.target, false);
        if (normalized === x.target) return { category: `both forward to ${role}, nginx sends the target unnormalized`, detail: '', security: false };
        return { category: `both forward to ${role}, different path`, detail: `Tollgate ${JSON.stringify(x.target)}, nginx ${JSON.stringify(y.target)}`, security: role === 'protected' };
      }
    }
  }
  if (t.interim.join() !== n.interim.join()) return { category: 'different interim (1xx) responses', detail: `Tollgate [${t.interim.join(', ')}], nginx [${n.interim.join(', ')}]`, security: false };
  return undefined;
}

interface Tally {
  count: number;
  security: boolean;
  details: Map<string, number>;
  /** The shortest case in the category, and how each proxy handled it. */
  example: { text: string; t: Side; n: Side };
}

function summary(s: Side): string {
  const received = (['protected', 'public'] as const).flatMap((role) => s.received[role].map((r) => `${role} got ${r.method} ${JSON.stringify(r.target)} auth ${JSON.stringify(r.authorization)}`));
  return `${s.interim.length > 0 ? `interim [${s.interim.join(', ')}], ` : ''}answers [${s.answers.map(describeAnswer).join(', ')}]${received.length > 0 ? `; ${received.join('; ')}` : ''}${s.malformed.length > 0 ? `; upstream refused: ${s.malformed.join('; ')}` : ''}${s.hung ? '; hung' : ''}`;
}

export interface DifferentialOptions {
  runs: number;
  seed: number;
  concurrency: number;
  timeoutMs: number;
  fromBatch: number;
  nginx: string;
  /** A file to write every disagreement to, one JSON object a line. */
  dump: string | undefined;
}

/** The loopback address case `k` connects from: what the upstreams see in `X-Forwarded-For`. */
const clientAddress = (k: number): string => `127.${1 + (Math.floor(k / 62_500) % 250)}.${Math.floor(k / 250) % 250}.${(k % 250) + 1}`;

/** Runs the cases of batches `fromBatch`.. (the same cases as the raw-socket run with that seed) through both. */
export async function runDifferential(options: DifferentialOptions): Promise<number> {
  const { runs, seed, concurrency, timeoutMs } = options;
  console.log(`fuzz --nginx: seed ${seed}, ${runs} cases through Tollgate and nginx, ${concurrency} lanes`);
  interface Lane {
    tollgate: ProxyProcess;
    nginxPort: number;
    upstreams: { t: Record<'protected' | 'public', StrictUpstream>; n: Record<'protected' | 'public', StrictUpstream> };
  }
  const upstreamsByLane = [];
  for (let i = 0; i < concurrency; i++) {
    upstreamsByLane.push({
      t: { protected: await startStrictUpstream('protected', tollgateRules('protected')), public: await startStrictUpstream('public', tollgateRules('public')) },
      n: { protected: await startStrictUpstream('protected'), public: await startStrictUpstream('public') },
    });
  }
  const nginx = await startNginx(upstreamsByLane.map((u) => ({ protectedPort: u.n.protected.port, publicPort: u.n.public.port })), options.nginx);
  const lanes: Lane[] = [];
  for (const [i, upstreams] of upstreamsByLane.entries()) {
    lanes.push({ tollgate: await startTollgate(upstreams.t.protected.port, upstreams.t.public.port), nginxPort: nginx.ports[i] as number, upstreams });
  }

  const tallies = new Map<string, Tally>();
  /** Requests that reached an upstream after their case had ended, by proxy; and the recent cases by address. */
  const late = { Tollgate: 0, nginx: 0 };
  const lateExamples: Record<keyof typeof late, string[]> = { Tollgate: [], nginx: [] };
  const recent = new Map<string, string>();
  let caseNumber = 0;
  const dump = options.dump === undefined ? undefined : createWriteStream(options.dump);
  let failures = 0;
  let agreed = 0;
  let sent = 0;
  const started = Date.now();
  const fail = (what: string): void => {
    failures++;
    if (failures <= 30) console.log(`FAIL ${what}`);
  };
  const takeAll = (u: Record<'protected' | 'public', StrictUpstream>, address: string, proxy: keyof typeof late): { received: Side['received']; findings: Finding[] } => {
    const p = u.protected.take();
    const q = u.public.take();
    const mine = (received: Received[]): Received[] =>
      received.filter((r) => {
        if (r.forwardedFor === address) return true;
        late[proxy]++;
        const earlier = recent.get(r.forwardedFor);
        if (lateExamples[proxy].length < 5) lateExamples[proxy].push(`${r.method} ${JSON.stringify(r.target)} from case ${earlier === undefined ? r.forwardedFor : JSON.stringify(earlier)}`);
        return false;
      });
    return { received: { protected: mine(p.received), public: mine(q.received) }, findings: [...p.findings, ...q.findings] };
  };

  for (let b = options.fromBatch; sent < runs; b++) {
    const cases = fc.sample(caseArb, { seed: seed + b, numRuns: Math.min(1000, runs - sent) });
    let next = 0;
    const work = async (lane: Lane): Promise<void> => {
      while (next < cases.length) {
        const i = next++;
        const c = cases[i] as (typeof cases)[number];
        const address = clientAddress(caseNumber++);
        recent.set(address, c.text);
        if (recent.size > 10_000) recent.delete(recent.keys().next().value as string);
        const [to, no] = await Promise.all([sendCase(lane.tollgate.port, c.text, timeoutMs, address), sendCase(lane.nginxPort, c.text, timeoutMs, address)]).catch((err: Error) => {
          fail(`batch ${b} case ${i}: ${err.message}\n  case ${show(c)}`);
          return [];
        });
        if (to === undefined || no === undefined) continue;
        const tr = takeAll(lane.upstreams.t, address, 'Tollgate');
        const nr = takeAll(lane.upstreams.n, address, 'nginx');
        for (const problem of checkTollgateCase(c.text, to, tr.findings, timeoutMs).problems) fail(`batch ${b} case ${i}: ${problem}\n  case ${show(c)}`);
        const t = side(c.text, to, tr.received, tr.findings);
        const n = side(c.text, no, nr.received, nr.findings);
        const d = compare(t, n);
        if (d === undefined) {
          agreed++;
          continue;
        }
        const tally = tallies.get(d.category) ?? { count: 0, security: d.security, details: new Map(), example: { text: c.text, t, n } };
        tally.count++;
        dump?.write(`${JSON.stringify({ ...d, text: c.text, tollgate: summary(t), nginx: summary(n) })}\n`);
        tally.details.set(d.detail, (tally.details.get(d.detail) ?? 0) + 1);
        if (c.text.length < tally.example.text.length) tally.example = { text: c.text, t, n };
        tallies.set(d.category, tally);
      }
    };
    await Promise.all(lanes.map(work));
    sent += cases.length;
    for (const lane of lanes) {
      if (lane.tollgate.child.exitCode !== null || lane.tollgate.child.signalCode !== null) {
        fail(`Tollgate exited: ${lane.tollgate.stderr()}`);
        sent = runs;
      }
    }
    if ((b - options.fromBatch) % 5 === 4 || sent >= runs) {
      const s = (Date.now() - started) / 1000;
      console.log(`${sent} cases in ${s.toFixed(0)} s, ${agreed} alike, ${sent - agreed} different, Tollgate failures ${failures}`);
    }
  }

  dump?.end();
  for (const lane of lanes) await lane.tollgate.stop();
  await nginx.stop();
  for (const u of upstreamsByLane) for (const s of [u.t.protected, u.t.public, u.n.protected, u.n.public]) await s.close();

  console.log(`\ndone: seed ${seed}, ${sent} cases: ${agreed} handled alike, ${sent - agreed} differently; Tollgate property failures ${failures}`);
  for (const proxy of ['Tollgate', 'nginx'] as const) {
    console.log(`requests that reached an upstream after their case's connection had ended, through ${proxy}: ${late[proxy]}`);
    for (const example of lateExamples[proxy]) console.log(`    ${example}`);
  }
  console.log('disagreements by category (! = Tollgate forwards what nginx refuses, or sends the protected upstream something else):');
  for (const [category, tally] of [...tallies].sort((x, y) => y[1].count - x[1].count)) {
    console.log(`\n${tally.security ? '!' : ' '} ${tally.count}  ${category}`);
    const details = [...tally.details].sort((x, y) => y[1] - x[1]);
    for (const [detail, count] of details.slice(0, 8)) if (detail !== '') console.log(`      ${count}  ${detail}`);
    if (details.length > 8) console.log(`      (${details.length - 8} more details, ${details.slice(8).reduce((n, d) => n + d[1], 0)} cases)`);
    console.log(`    shortest: ${show(tally.example)}`);
    console.log(`      Tollgate: ${summary(tally.example.t)}`);
    console.log(`      nginx:    ${summary(tally.example.n)}`);
  }
  return failures;
}
