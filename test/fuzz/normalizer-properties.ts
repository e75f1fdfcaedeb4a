/**
 * Properties of the path normalizer (src/proxy/path.ts), checked against an independent reference: RFC 3986
 * section 5.2.4's remove_dot_segments (a string-rewriting algorithm, unlike path.ts's segment stack), after
 * slashes are merged and escaped unreserved characters decoded. (Node 20's WHATWG URL cannot be the reference:
 * it leaves `/a/.a/../b` as it is.) Returns the properties a target breaks (none: all hold).
 */
import { ProxyError } from '../../src/proxy/errors.js';
import { normalizeTarget } from '../../src/proxy/path.js';

const ESCAPE = /%[0-9A-Fa-f]{2}/g;
const UNRESERVED = /^[A-Za-z0-9\-._~]$/;

function decodeUnreserved(path: string): string {
  return path.replace(ESCAPE, (e) => {
    const c = String.fromCharCode(parseInt(e.slice(1), 16));
    return UNRESERVED.test(c) ? c : e;
  });
}

function removeDotSegments(path: string): string {
  let input = path;
  let output = '';
  const up = (): void => {
    output = output.slice(0, Math.max(0, output.lastIndexOf('/')));
  };
  while (input.length > 0) {
    if (input.startsWith('../')) input = input.slice(3);
    else if (input.startsWith('./')) input = input.slice(2);
    else if (input.startsWith('/./')) input = input.slice(2);
    else if (input === '/.') input = '/';
    else if (input.startsWith('/../')) {
      input = input.slice(3);
      up();
    } else if (input === '/..') {
      input = '/';
      up();
    } else if (input === '.' || input === '..') input = '';
    else {
      const segment = (/^\/?[^/]*/.exec(input) as RegExpExecArray)[0];
      output += segment;
      input = input.slice(segment.length);
    }
  }
  return output === '' ? '/' : output;
}

export function normalizerProblems(target: string): string[] {
  const problems: string[] = [];
  const out = normalizeTarget(target, false);
  const strict = normalizeTarget(target, true);
  const q = target.indexOf('?');
  const path = q === -1 ? target : target.slice(0, q);
  const query = q === -1 ? '' : target.slice(q);
  if (!target.startsWith('/')) return problems; // absolute form and the rest: covered by the raw-socket cases
  const refuse = target.includes('#') || /%00/.test(path) || /%(?![0-9A-Fa-f]{2})/.test(path) || path.includes('\\');
  if (out instanceof ProxyError) {
    if (!refuse) problems.push(`refused ${JSON.stringify(target)}: ${out.message}`);
    return problems;
  }
  if (refuse) problems.push(`accepted ${JSON.stringify(target)} as ${JSON.stringify(out)}`);
  const slashes = /%2f|%5c/i.test(path);
  if ((strict instanceof ProxyError) !== slashes) problems.push(`encoded_slashes: reject disagrees on ${JSON.stringify(target)}`);
  const oq = out.indexOf('?');
  const outPath = oq === -1 ? out : out.slice(0, oq);
  if ((oq === -1 ? '' : out.slice(oq)) !== query) problems.push(`query changed: ${JSON.stringify(target)} -> ${JSON.stringify(out)}`);
  if (!outPath.startsWith('/') || outPath.includes('//')) problems.push(`not one slash between segments: ${JSON.stringify(out)}`);
  for (const segment of outPath.split('/')) {
    const dots = segment.replace(/%2e/gi, '.');
    if (dots === '.' || dots === '..') problems.push(`dot segment left in ${JSON.stringify(out)}`);
  }
  if (/%(?:[46][1-9a-f]|[57][0-9a]|3[0-9]|2[de]|5f|7e)/i.test(outPath)) problems.push(`escaped unreserved character left in ${JSON.stringify(out)}`);
  if (normalizeTarget(out, false) !== out) problems.push(`not idempotent: ${JSON.stringify(out)} -> ${JSON.stringify(normalizeTarget(out, false))}`);
  const merged = path.replace(/\/+/g, '/');
  const expected = removeDotSegments(decodeUnreserved(merged));
  if (outPath !== expected) problems.push(`${JSON.stringify(target)}: ${JSON.stringify(outPath)}, the reference says ${JSON.stringify(expected)}`);
  return problems;
}
