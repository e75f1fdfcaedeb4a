/**
 * Parsing of credentials from request headers, and their constant-time comparison. Pure functions, run
 * once per request by the auth middleware.
 */
/**
 * Whether `candidate` equals `secret`, in a time that depends on the secret's length alone: every code
 * unit of the secret is compared, differences are OR-ed together, and nothing exits early, so neither where
 * a guess goes wrong nor the guess's length changes the work done. Plain string comparison replaced SHA-256
 * digests compared with crypto.timingSafeEqual: the digest of each presented credential cost about 6,000
 * instructions per request (callgrind), this costs a few hundred.
 */
export function equalsSecret(candidate: string, secret: string): boolean {
  let diff = candidate.length ^ secret.length;
  // charCodeAt past the candidate's end is NaN, and NaN | 0 is 0: the length difference is already in diff.
  for (let i = 0; i < secret.length; i++) diff |= (candidate.charCodeAt(i) | 0) ^ secret.charCodeAt(i);
  return diff === 0;
}

/**
 * Index of the secret equal to `candidate`, or -1. Compares against every secret, with no early exit, so
 * the time taken does not tell which (or whether one) matched.
 */
export function findSecret(candidate: string, secrets: readonly string[]): number {
  let found = -1;
  for (let i = 0; i < secrets.length; i++) {
    const equal = equalsSecret(candidate, secrets[i] as string);
    found = equal && found === -1 ? i : found;
  }
  return found;
}

/**
 * The credentials of an `Authorization` header for one scheme (compared case-insensitively, RFC 9110
 * section 11.1), or undefined when the header is missing, of another scheme or malformed.
 */
export function authorizationParam(header: string | undefined, scheme: string): string | undefined {
  if (header === undefined || header.length <= scheme.length + 1) return undefined;
  if (header.slice(0, scheme.length).toLowerCase() !== scheme.toLowerCase()) return undefined;
  const sep = header.charCodeAt(scheme.length);
  if (sep !== 32 && sep !== 9) return undefined;
  const param = header.slice(scheme.length + 1).trim();
  if (param === '' || /\s/.test(param)) return undefined;
  return param;
}

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/** `user:password` from RFC 7617 Basic credentials, or undefined when they are not base64 of that form. */
export function decodeBasic(param: string): { username: string; password: string } | undefined {
  if (param.length % 4 !== 0 || !BASE64.test(param)) return undefined;
  const text = Buffer.from(param, 'base64').toString('utf8');
  const colon = text.indexOf(':');
  if (colon <= 0) return undefined;
  return { username: text.slice(0, colon), password: text.slice(colon + 1) };
}
