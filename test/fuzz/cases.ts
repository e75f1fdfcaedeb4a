/**
 * What the fuzz tests send: valid HTTP/1.1 requests (one to three on a connection) built from pieces that
 * have broken parsers and path checks before, then mutated byte-wise. fast-check generates and shrinks
 * them, so every case is reproducible from its seed.
 */
import fc from 'fast-check';

/** The one bearer token the fuzz proxies accept. */
export const TOKEN = 'x';

/** Path segments: dot segments in every spelling, encoded separators and NUL, near-misses of route names. */
const SEGMENTS = [
  '', '.', '..', '%2e', '%2E', '.%2e', '%2e.', '%2E%2e', '%2e%2e', '...', '.a', 'a.', '..a',
  'public', 'PUBLIC', 'publicx', 'public;', 'public.', 'admin', 'health', 'a', 'b',
  '%2f', '%2F', '%5c', '%5C', '%00', '%0', '%', '%zz', '%25', '%252e', '%2e%00', '%61dmin', 'pub%6cic', '%70ublic',
  ';', 'a;b', '..;', ';..', '\\', '..\\', '\\..', '~', '@', ':', 'x:y', '|', '"', '{}', '<>', '^', '`', '*',
  '%20', '+', '\t', '#', '#x', '&', '=', '\x7f', '\x80', '\xe9', '\x00', '[]', "'",
];
const QUERY = ['', 'a=b', '/../..', '..%2f', '%00', '?', '#', 'x=/public', '&&', '%zz', ' ', '\\'];
const CHARS = ['a', '.', '/', '%', '2', 'e', 'E', 'f', 'F', '5', 'c', ';', '\\', '?', '#', ':', '@', '0'];

const segment = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...SEGMENTS) },
  { weight: 1, arbitrary: fc.string({ unit: fc.constantFrom(...CHARS), maxLength: 6 }) },
);

/** A path: `/` and segments, sometimes with a query. */
export const pathArb: fc.Arbitrary<string> = fc
  .tuple(fc.array(segment, { maxLength: 6 }), fc.option(fc.array(fc.constantFrom(...QUERY), { maxLength: 3 }), { freq: 3 }))
  .map(([segments, query]) => `/${segments.join('/')}${query === null ? '' : `?${query.join('')}`}`);

/** Request targets: mostly paths, some absolute-form, some not a target at all. */
export const targetArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 12, arbitrary: pathArb },
  { weight: 2, arbitrary: fc.constantFrom('/health', '/health?x', '/public', '/public/x', '/public?q', '/a') },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom('http://h', 'HTTP://h:1', 'https://x', 'http://public', 'http://h?'), pathArb).map(([a, p]) => a + p) },
  { weight: 1, arbitrary: fc.constantFrom('*', 'public', 'http://h', 'http:/x', 'h/x', '', '//public/../a', 'http://h/../public', 'ftp://h/a', '/public#/../a') },
);

const AUTH: Record<string, string[]> = {
  valid: [`Authorization: Bearer ${TOKEN}`],
  none: [],
  wrong: ['Authorization: Bearer y'],
  lower: [`authorization: bearer ${TOKEN}`],
  spaces: [`Authorization:   Bearer   ${TOKEN}  `],
  tab: [`Authorization: Bearer\t${TOKEN}`],
  basic: ['Authorization: Basic eDp4'],
  twice: [`Authorization: Bearer ${TOKEN}`, 'Authorization: Bearer y'],
  empty: ['Authorization:'],
  bare: [`Authorization: ${TOKEN}`],
  suffix: [`Authorization: Bearer ${TOKEN}x`],
  comma: [`Authorization: Bearer ${TOKEN}, Bearer y`],
};
const authArb = fc.oneof({ weight: 6, arbitrary: fc.constant('valid') }, { weight: 4, arbitrary: fc.constantFrom(...Object.keys(AUTH)) });

/** Header lines that proxies have been fooled by, or that must not reach an upstream. */
const EXTRA = [
  'Connection: close', 'Connection: keep-alive', 'Connection: X-A', 'X-A: 1', 'Expect: 100-continue', 'Upgrade: h2c',
  'Connection: Upgrade', 'X_User: admin', 'X-Forwarded-For: 1.2.3.4', 'Forwarded: for=1.2.3.4', 'X-Request-ID: abc',
  'Keep-Alive: timeout=5', 'TE: trailers', 'Trailer: X-T', 'Proxy-Connection: keep-alive', 'Content-Length: 0',
  'Content-Length: 3', 'Transfer-Encoding: chunked', 'Transfer-Encoding: gzip', 'Host: y', 'Cookie: a=b', '__proto__: x',
  'X-Original-URL: /admin', 'X-HTTP-Method-Override: DELETE', 'Content-Type: text/plain', 'X-Empty:', 'x-a: \x80\xff',
];

const methodArb = fc.oneof(
  { weight: 12, arbitrary: fc.constantFrom('GET', 'GET', 'GET', 'POST', 'POST', 'PUT', 'HEAD', 'DELETE', 'OPTIONS', 'PATCH') },
  { weight: 1, arbitrary: fc.constantFrom('TRACE', 'CONNECT', 'get', 'FOO', 'G@T', 'PRI') },
);
const versionArb = fc.oneof(
  { weight: 16, arbitrary: fc.constant('HTTP/1.1') },
  { weight: 1, arbitrary: fc.constantFrom('HTTP/1.0', 'HTTP/1.2', 'HTTP/2.0', 'HTTP/0.9', 'http/1.1', 'HTTP/11', 'HTTP/1.1 ', 'HTTP/1.01') },
);
const BODY_UNITS = ['a', 'b', '0', '\r\n', '\n', ' ', 'GET / HTTP/1.1\r\nHost: x\r\n\r\n', '0\r\n\r\n'];

const bodyArb = fc.oneof(
  { weight: 3, arbitrary: fc.constant({ kind: 'none' as const }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('length' as const), data: fc.string({ unit: fc.constantFrom(...BODY_UNITS), maxLength: 4 }) }) },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('chunked' as const),
      chunks: fc.array(fc.string({ unit: fc.constantFrom(...BODY_UNITS), minLength: 1, maxLength: 3 }), { maxLength: 3 }),
      ext: fc.constantFrom('', '', '', ';a=b', ';a="b"', '; a', ';\x00', ' '),
      upper: fc.boolean(),
      trailer: fc.constantFrom('', '', '', 'X-T: 1\r\n', 'Content-Length: 5\r\n', 'Transfer-Encoding: chunked\r\n'),
    }),
  },
);

export interface RequestSpec {
  method: string;
  target: string;
  version: string;
  host: string | null;
  auth: string;
  extra: string[];
  body: { kind: 'none' } | { kind: 'length'; data: string } | { kind: 'chunked'; chunks: string[]; ext: string; upper: boolean; trailer: string };
}

export const requestArb: fc.Arbitrary<RequestSpec> = fc.record({
  method: methodArb,
  target: targetArb,
  version: versionArb,
  host: fc.oneof({ weight: 8, arbitrary: fc.constant('x') }, { weight: 1, arbitrary: fc.constantFrom(null, 'h:80', 'a.b', '', 'x y', '[::1]') }),
  auth: authArb,
  extra: fc.array(fc.constantFrom(...EXTRA), { maxLength: 2 }),
  body: bodyArb,
});

export function serializeRequest(spec: RequestSpec): string {
  let text = `${spec.method} ${spec.target} ${spec.version}\r\n`;
  if (spec.host !== null) text += `Host: ${spec.host}\r\n`;
  for (const line of AUTH[spec.auth] ?? []) text += `${line}\r\n`;
  for (const line of spec.extra) text += `${line}\r\n`;
  const body = spec.body;
  if (body.kind === 'length') return `${text}Content-Length: ${body.data.length}\r\n\r\n${body.data}`;
  if (body.kind === 'none') return `${text}\r\n`;
  text += 'Transfer-Encoding: chunked\r\n\r\n';
  for (const chunk of body.chunks) {
    const size = chunk.length.toString(16);
    text += `${body.upper ? size.toUpperCase() : size}${body.ext}\r\n${chunk}\r\n`;
  }
  return `${text}0\r\n${body.trailer}\r\n`;
}

/** Byte-level mutations; positions are taken modulo the text's length, so they shrink towards the start. */
export type Mutation =
  | { op: 'insert'; at: number; text: string }
  | { op: 'delete'; at: number; length: number }
  | { op: 'replace'; at: number; byte: number }
  | { op: 'duplicate'; at: number; length: number }
  | { op: 'line'; nth: number; line: string }
  | { op: 'lf'; nth: number }
  | { op: 'truncate'; at: number }
  | { op: 'case'; at: number; length: number };

const INSERTS = [
  '\r', '\n', '\r\n', '\x00', ' ', '\t', ':', '/', '.', '..', '%', '%2e', '\\', '?', '#', ';', ',', '\x7f', '\x80', '\xff', '0', '-', '_',
  'chunked', ' chunked', 'HTTP/1.1', '\r\n\r\n', '\r\n ', 'GET /a HTTP/1.1\r\nHost: x\r\n\r\n', 'Transfer-Encoding: chunked\r\n', 'Content-Length: 1\r\n', 'ffffffffffffffff',
];
const LINES = [
  'Transfer-Encoding: chunked', 'Transfer-Encoding: ,chunked', 'Transfer-Encoding: chunked ', 'Transfer-Encoding: chunked, identity', 'Transfer-Encoding: identity',
  'Transfer-Encoding:\tchunked', 'Transfer-encoding: cHuNkEd', 'Content-Length: 5', 'Content-Length:  5', 'Content-Length: 05', 'Content-Length: -1',
  'Content-Length: 1e3', 'Content-Length: 0x5', 'Content-Length: 99999999999999999999', 'Content-Length: 5, 5', 'Content-Length:', 'Host: x',
  'Host: public', 'Host:', `Authorization: Bearer ${TOKEN}`, 'Authorization: Bearer y', 'Connection: close', 'Connection: keep-alive, Upgrade',
  'Upgrade: websocket', 'Expect: 100-continue', 'X: a\r\n b', ' X: a', 'X : a', 'X\t: a', ':x', 'X-A: a\x00b', 'X_A: 1', 'X-Forwarded-For: 10.0.0.1',
];
const BYTES = [0, 9, 10, 13, 32, 34, 35, 37, 46, 47, 58, 59, 63, 92, 127, 128, 255, 48, 65, 97];

export const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant('insert' as const), at: fc.nat(), text: fc.constantFrom(...INSERTS) }),
  fc.record({ op: fc.constant('delete' as const), at: fc.nat(), length: fc.integer({ min: 1, max: 8 }) }),
  fc.record({ op: fc.constant('replace' as const), at: fc.nat(), byte: fc.constantFrom(...BYTES) }),
  fc.record({ op: fc.constant('duplicate' as const), at: fc.nat(), length: fc.integer({ min: 1, max: 40 }) }),
  fc.record({ op: fc.constant('line' as const), nth: fc.nat(), line: fc.constantFrom(...LINES) }),
  fc.record({ op: fc.constant('lf' as const), nth: fc.nat() }),
  fc.record({ op: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ op: fc.constant('case' as const), at: fc.nat(), length: fc.integer({ min: 1, max: 12 }) }),
);

function nthCrlf(text: string, nth: number): number {
  const positions: number[] = [];
  for (let i = text.indexOf('\r\n'); i !== -1; i = text.indexOf('\r\n', i + 2)) positions.push(i);
  return positions.length === 0 ? -1 : (positions[nth % positions.length] as number);
}

export function mutate(text: string, m: Mutation): string {
  const pos = (n: number): number => n % (text.length + 1);
  switch (m.op) {
    case 'insert':
      return text.slice(0, pos(m.at)) + m.text + text.slice(pos(m.at));
    case 'delete':
      return text.slice(0, pos(m.at)) + text.slice(pos(m.at) + m.length);
    case 'replace':
      return text.slice(0, pos(m.at)) + String.fromCharCode(m.byte) + text.slice(pos(m.at) + 1);
    case 'duplicate':
      return text.slice(0, pos(m.at) + m.length) + text.slice(pos(m.at));
    case 'line': {
      const at = nthCrlf(text, m.nth);
      return at === -1 ? text : `${text.slice(0, at + 2)}${m.line}\r\n${text.slice(at + 2)}`;
    }
    case 'lf': {
      const at = nthCrlf(text, m.nth);
      return at === -1 ? text : text.slice(0, at) + text.slice(at + 1);
    }
    case 'truncate':
      return text.slice(0, Math.max(1, pos(m.at)));
    case 'case': {
      const at = pos(m.at);
      const flipped = [...text.slice(at, at + m.length)].map((c) => (c === c.toLowerCase() ? c.toUpperCase() : c.toLowerCase())).join('');
      return text.slice(0, at) + flipped + text.slice(at + m.length);
    }
  }
}

export interface FuzzCase {
  requests: RequestSpec[];
  mutations: Mutation[];
  /** What goes on the wire, one byte per char. */
  text: string;
}

/** One connection's worth: 1-3 requests, then 0-3 mutations of the whole byte string (none in a quarter of cases). */
export const caseArb: fc.Arbitrary<FuzzCase> = fc
  .tuple(
    fc.array(requestArb, { minLength: 1, maxLength: 3 }),
    fc.oneof({ weight: 1, arbitrary: fc.constant([] as Mutation[]) }, { weight: 3, arbitrary: fc.array(mutationArb, { minLength: 1, maxLength: 3 }) }),
  )
  .map(([requests, mutations]) => ({ requests, mutations, text: mutations.reduce(mutate, requests.map(serializeRequest).join('')) }));

/** A case as one printable line: the bytes as a JSON string. */
export function show(c: { text: string }): string {
  return JSON.stringify(c.text);
}
