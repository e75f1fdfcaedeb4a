/**
 * How a config problem is worded. The schema gives its own message where it has something to say
 * ("must be a port number (1-65535)"); every other problem gets Tollgate's words from `configErrorMap`
 * instead of zod's, and an unknown key is told the known key it is nearest to. Runs when a config is
 * loaded or reloaded, never on a request.
 */
import { z } from 'zod';

/** What a value must be, for a type problem: `must be ${EXPECTED[type]}`. */
const EXPECTED: Record<string, string> = {
  boolean: 'true or false',
  number: 'a number',
  int: 'a whole number',
  string: 'a string',
  object: 'a mapping (key: value)',
  array: 'a list',
};

/** `a, b or c` */
function oneOf(values: readonly unknown[]): string {
  const words = values.map((v) => String(v));
  return words.length <= 1 ? (words[0] ?? '') : `${words.slice(0, -1).join(', ')} or ${words[words.length - 1] ?? ''}`;
}

/** What one branch of a union wants, from the first problem it had with the value. */
function branchWants(issues: readonly z.core.$ZodIssue[]): string | undefined {
  const first = issues[0];
  if (first === undefined) return undefined;
  if (first.code === 'invalid_type') return EXPECTED[first.expected] ?? first.expected;
  if (first.code === 'invalid_value') return oneOf(first.values);
  return undefined;
}

/**
 * Tollgate's message for a problem the schema has none of its own for (the schema's messages take
 * precedence over an error map given to `safeParse`). `, got <value>` is added by the loader.
 */
export const configErrorMap: z.core.$ZodErrorMap = function configErrorMap(issue) {
  switch (issue.code) {
    case 'invalid_type':
      if (issue.input === undefined) return 'is required';
      return `must be ${EXPECTED[issue.expected] ?? issue.expected}`;
    case 'too_small': {
      const min = Number(issue.minimum);
      if (issue.origin === 'string') return min <= 1 ? 'must not be empty' : `must be at least ${min} characters`;
      if (issue.origin === 'array' || issue.origin === 'set') return `must list at least ${min} ${min === 1 ? 'item' : 'items'}`;
      return issue.inclusive === false ? `must be more than ${min}` : `must be at least ${min}`;
    }
    case 'too_big': {
      const max = Number(issue.maximum);
      if (issue.origin === 'string') return `must be at most ${max} characters`;
      if (issue.origin === 'array' || issue.origin === 'set') return `must list at most ${max} ${max === 1 ? 'item' : 'items'}`;
      return issue.inclusive === false ? `must be less than ${max}` : `must be at most ${max}`;
    }
    case 'invalid_format':
      return issue.format === 'regex' && issue.pattern !== undefined ? `must match ${issue.pattern}` : `must be a valid ${issue.format}`;
    case 'not_multiple_of':
      return `must be a multiple of ${String(issue.divisor)}`;
    case 'invalid_value':
      return issue.values.length === 1 ? `must be ${String(issue.values[0])}` : `must be one of ${oneOf(issue.values)}`;
    case 'invalid_union': {
      const wants = issue.errors.map(branchWants);
      return wants.every((w) => w !== undefined) && wants.length > 0 ? `must be ${oneOf(wants)}` : 'is not any of the forms this key takes';
    }
    case 'invalid_key':
      return 'is not a valid key here';
    case 'invalid_element':
      return 'has an invalid entry';
    case 'unrecognized_keys':
      return 'unknown key';
    default:
      return 'is not valid here';
  }
};

/** The schema under wrappers that do not change what keys a mapping takes (defaults, optional, preprocess). */
function unwrap(schema: z.ZodType): z.ZodType {
  let s: z.ZodType = schema;
  for (;;) {
    if (s instanceof z.ZodOptional || s instanceof z.ZodDefault || s instanceof z.ZodPrefault || s instanceof z.ZodNullable) s = s.unwrap() as z.ZodType;
    else if (s instanceof z.ZodPipe) s = (s.in instanceof z.ZodTransform ? s.out : s.in) as z.ZodType;
    else return s;
  }
}

/**
 * The keys the mapping at `path` may have, read from the schema; `data` (the value being validated) picks
 * the branch of a union that has a discriminator (a Redis store's keys are not a memory store's).
 */
export function knownKeys(schema: z.ZodType, path: readonly PropertyKey[], data: unknown): string[] {
  const s = unwrap(schema);
  if (s instanceof z.ZodUnion) {
    const discriminator = s instanceof z.ZodDiscriminatedUnion ? s.def.discriminator : undefined;
    const chosen = isRecord(data) && discriminator !== undefined ? data[discriminator] : undefined;
    const options = (s.options as z.ZodType[]).filter((option) => {
      if (chosen === undefined) return true;
      const o = unwrap(option);
      return !(o instanceof z.ZodObject) || (o.shape as Record<string, z.ZodType>)[discriminator as string]?.safeParse(chosen).success === true;
    });
    return [...new Set(options.flatMap((option) => knownKeys(option, path, data)))];
  }
  if (path.length === 0) return s instanceof z.ZodObject ? Object.keys(s.shape) : [];
  const [head, ...rest] = path;
  const child = isRecord(data) || Array.isArray(data) ? (data as Record<PropertyKey, unknown>)[head as PropertyKey] : undefined;
  if (s instanceof z.ZodObject) {
    const field = (s.shape as Record<string, z.ZodType | undefined>)[String(head)];
    return field === undefined ? [] : knownKeys(field, rest, child);
  }
  if (s instanceof z.ZodArray) return knownKeys(s.element as z.ZodType, rest, child);
  if (s instanceof z.ZodRecord) return knownKeys(s.valueType as z.ZodType, rest, child);
  return [];
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Edit distance with adjacent transpositions (optimal string alignment), so `wieght` is one edit from
 * `weight`, as `lisen_port` is from `listen_port`.
 */
export function editDistance(a: string, b: string): number {
  const rows = a.length + 1;
  const cols = b.length + 1;
  const d = new Array<number>(rows * cols);
  for (let i = 0; i < rows; i++) d[i * cols] = i;
  for (let j = 0; j < cols; j++) d[j] = j;
  for (let i = 1; i < rows; i++) {
    for (let j = 1; j < cols; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min((d[(i - 1) * cols + j] as number) + 1, (d[i * cols + j - 1] as number) + 1, (d[(i - 1) * cols + j - 1] as number) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) best = Math.min(best, (d[(i - 2) * cols + j - 2] as number) + 1);
      d[i * cols + j] = best;
    }
  }
  return d[rows * cols - 1] as number;
}

/**
 * The known key an unknown one was most likely meant to be: the nearest (ignoring case), when it is at
 * most a third of the key's length away (at least one edit); the first in schema order on a tie.
 */
export function closestKey(key: string, known: readonly string[]): string | undefined {
  const limit = Math.max(1, Math.floor(key.length / 3));
  let best: string | undefined;
  let bestDistance = limit + 1;
  for (const candidate of known) {
    if (candidate === key) continue;
    const distance = editDistance(key.toLowerCase(), candidate.toLowerCase());
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best;
}
