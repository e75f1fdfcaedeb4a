import { createHash } from 'node:crypto';
import type { AuthConfig, AuthSchemeConfig } from '../../config/schema.js';
import type { RequestContext } from '../../proxy/context.js';
import { ProxyError } from '../../proxy/errors.js';
import type { FilterResult, Phases } from '../../proxy/phases.js';
import { clientCertificate, normalizeFingerprint } from '../../proxy/client-cert.js';
import type { Logger } from 'pino';
import { authorizationParam, decodeBasic, findSecret } from './credentials.js';
import { DUMMY_BCRYPT, readHtpasswd, sha1Matches, sha256Hex, SlowVerifier } from './hashed.js';
import { SHA256_TOKEN } from './secret-formats.js';
import { createForwardAuth } from './forward.js';
import { addAuthHeaders } from './phase-parts.js';
import { JwksCache } from './jwks.js';
import { JwtVerifier, readPublicKeyFile, secretKey, type JwtResult, type KeySource } from './jwt.js';

/** Refusal shared by every 401: filters return it, so a refused request allocates no error. */
const UNAUTHORIZED = new ProxyError('unauthorized');
/** A client certificate that is missing or not allowed: no HTTP challenge can fix that, so 403. */
const FORBIDDEN = new ProxyError('forbidden');

/** A JWT that verified but lacks a `required_claims` value (RFC 6750 `insufficient_scope`). */
const INSUFFICIENT_SCOPE = new ProxyError('forbidden', { message: 'The credentials do not grant access to this resource.' });

/** What an authentication check finds: the principal (a stable name for the credential) or why there is none. */
type Verified = string | { failure: string };
/** An authentication check; a promise only where a slow hash must be verified. */
type Verify = (ctx: RequestContext) => Verified | Promise<Verified>;
const INVALID = { failure: 'invalid' } as const;
const BUSY = { failure: 'busy' } as const;

export interface AuthPhases {
  /** Identifies the client; never refuses, so a rate limit can count failed attempts first. */
  readonly authenticate: Phases;
  /** Refuses a request that `authenticate` could not identify, with 401 and a challenge. */
  readonly enforce: Phases;
  /** Releases what the scheme keeps between requests (a JWKS fetch under way); called when its generation is retired. */
  close(): void;
}

/** What the auth middleware may share with others of its generation, and the generation before. */
export interface AuthDeps {
  logger?: Logger | undefined;
  /** The JWKS cache of a URL (one per URL in a generation, seeded from the previous generation's). */
  jwks?: ((url: string, timeoutMs: number) => JwksCache) | undefined;
}

/**
 * Builds the auth middleware from its config (once, at load time): secrets are listed here, the header
 * name and challenges are fixed here. Two phases, so the rate limiter can sit between them.
 */
export function createAuth(config: AuthConfig | AuthSchemeConfig, deps: AuthDeps = {}): AuthPhases {
  if ('any_of' in config && config.any_of !== undefined) return createAnyOf(config.any_of, deps);
  if (config.auth_type === 'jwt') return createJwtAuth(config, deps);
  if (config.auth_type === 'forward') return createForwardAuth(config, deps.logger);
  const realm = config.realm;
  const tokens = config.valid_tokens;
  const matchToken = tokenMatcher(tokens);
  let verify: Verify;
  let challenge: string;
  let header: string;

  switch (config.auth_type) {
    case 'bearer':
      header = 'authorization';
      challenge = `Bearer realm="${realm}"`;
      verify = function verifyBearer(ctx) {
        const token = authorizationParam(ctx.req.headers.authorization, 'bearer');
        if (token === undefined) return { failure: ctx.req.headers.authorization === undefined ? 'missing' : 'malformed' };
        return matchToken(token) ?? INVALID;
      };
      break;
    case 'api_key': {
      header = config.api_key_header.toLowerCase();
      challenge = `ApiKey header="${config.api_key_header}"`;
      const name = header;
      verify = function verifyApiKey(ctx) {
        const key = ctx.req.headers[name];
        if (key === undefined) return { failure: 'missing' };
        if (typeof key !== 'string' || key === '') return { failure: 'malformed' };
        return matchToken(key) ?? INVALID;
      };
      break;
    }
    case 'basic': {
      header = 'authorization';
      challenge = `Basic realm="${realm}", charset="UTF-8"`;
      verify = basicVerifier(config, matchToken);
      break;
    }
    case 'client_cert': {
      // The credential is the connection's verified certificate, not a header.
      header = '';
      challenge = '';
      const allowed = tokens.map(normalizeFingerprint);
      verify = function verifyClientCert(ctx) {
        const cert = clientCertificate(ctx.req.socket);
        if (cert === undefined) return { failure: 'missing' };
        // Fingerprints are public: a constant-time search is not needed, but costs nothing here either.
        return findSecret(cert.fingerprint, allowed) === -1 ? INVALID : `cert:${cert.fingerprint.slice(0, 16)}`;
      };
      break;
    }
  }

  const refusal = config.auth_type === 'client_cert' ? FORBIDDEN : UNAUTHORIZED;
  const authenticate: Phases = {
    name: 'auth',
    consumesRequestHeaders: config.forward_credentials || header === '' ? [] : [header],
    requestFilter: function authenticate(ctx): FilterResult | Promise<FilterResult> {
      const result = verify(ctx);
      // Only a slow password hash (bcrypt, argon2id) not in the cache answers later.
      if (result instanceof Promise) return result.then((r) => settle(ctx, r));
      return settle(ctx, result);
    },
  };
  function settle(ctx: RequestContext, result: Verified): FilterResult {
    if (typeof result === 'string') ctx.principal = result;
    else {
      ctx.authFailure = result.failure;
      ctx.authChallenge = result.failure === 'missing' || config.auth_type !== 'bearer' ? challenge : `${challenge}, error="invalid_token"`;
    }
    return false;
  }
  const enforce: Phases = {
    name: 'auth-enforce',
    requestFilter: function enforceAuth(ctx): FilterResult {
      if (ctx.authFailure === undefined) return false;
      if (ctx.authChallenge !== '') ctx.responseHeaders.push('WWW-Authenticate', ctx.authChallenge);
      return refusal;
    },
  };
  return { authenticate, enforce, close: noop };
}

function noop(): void {}

/**
 * `auth_type: jwt`: the token from `Authorization: Bearer` (or the `cookie`), verified asynchronously
 * (jose). Refusals follow RFC 6750: 401 `invalid_token` (the reason, such as expired or wrong audience,
 * is told to the log and metrics, not to the client), 403 `insufficient_scope` when `required_claims` fail.
 */
function createJwtAuth(config: AuthSchemeConfig, deps: AuthDeps): AuthPhases {
  const jwt = config.jwt;
  if (jwt === undefined) throw new Error('jwt auth needs a jwt block');
  let keys: KeySource;
  let jwks: JwksCache | undefined;
  if (jwt.jwks_url !== undefined) {
    jwks = deps.jwks?.(jwt.jwks_url, jwt.jwks_timeout_ms) ?? new JwksCache(jwt.jwks_url, { timeoutMs: jwt.jwks_timeout_ms, logger: deps.logger });
    keys = { jwks };
  } else if (jwt.public_key_file !== undefined) keys = { fixed: readPublicKeyFile(jwt.public_key_file, jwt.algorithms) };
  else keys = { fixed: secretKey(jwt.secret ?? '') };
  const verifier = new JwtVerifier(jwt, keys);
  const base = `Bearer realm="${config.realm}"`;
  const invalid = `${base}, error="invalid_token", error_description="The access token is missing, malformed, expired or not valid here"`;
  const scope = `${base}, error="insufficient_scope", error_description="The access token does not grant access to this resource"`;
  const cookie = jwt.cookie;
  const claimHeaders = Object.entries(jwt.claims_to_headers);
  const consumed = claimHeaders.map(([, h]) => h.toLowerCase());
  if (!config.forward_credentials) consumed.push('authorization');

  function refuse(ctx: RequestContext, failure: string): FilterResult {
    ctx.authFailure = failure;
    ctx.authChallenge = failure === 'missing' ? base : failure === 'insufficient_scope' ? scope : invalid;
    return false;
  }

  function accept(ctx: RequestContext, result: JwtResult): FilterResult {
    if (result.claims === undefined) return refuse(ctx, result.failure ?? 'invalid');
    ctx.principal = result.principal;
    ctx.authClaims = result.claims;
    if (claimHeaders.length > 0) ctx.authHeaders = claimsToHeaders(result.claims, claimHeaders);
    return false;
  }

  const authenticate: Phases = {
    name: 'auth',
    consumesRequestHeaders: consumed,
    requestFilter: function authenticateJwt(ctx): FilterResult | Promise<FilterResult> {
      const header = ctx.req.headers.authorization;
      let token: string | undefined;
      if (header !== undefined) {
        token = authorizationParam(header, 'bearer');
        if (token === undefined) return refuse(ctx, 'malformed');
      } else if (cookie !== undefined) token = cookieValue(ctx.req.headers.cookie, cookie);
      if (token === undefined || token === '') return refuse(ctx, 'missing');
      const result = verifier.verify(token);
      if (!(result instanceof Promise)) return accept(ctx, result);
      return result.then(
        (r) => accept(ctx, r),
        () => refuse(ctx, 'invalid'),
      );
    },
    upstreamRequestFilter: addAuthHeaders,
  };
  const enforce: Phases = {
    name: 'auth-enforce',
    requestFilter: enforceWithChallenge,
  };
  return {
    authenticate,
    enforce,
    close: function closeJwt(): void {
      // A cache from deps belongs to the generation, which closes it; only an own one is closed here.
      if (deps.jwks === undefined) jwks?.close();
    },
  };
}

/** Header values a claim can become: printable ASCII only (anything else is left out, never sent mangled). */
const HEADER_VALUE = /^[\x20-\x7e]{0,4096}$/;

/** The `claims_to_headers` of a verified token: strings, numbers and booleans; other claims are left out. */
function claimsToHeaders(claims: Readonly<Record<string, unknown>>, pairs: readonly [string, string][]): string[] {
  const out: string[] = [];
  for (const [claim, header] of pairs) {
    const value = claims[claim];
    if (typeof value !== 'string' && typeof value !== 'number' && typeof value !== 'boolean') continue;
    const text = String(value);
    if (HEADER_VALUE.test(text)) out.push(header, text);
  }
  return out;
}

/** The value of cookie `name` in a Cookie header (RFC 6265 section 5.4: `a=1; b=2`), or undefined. */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq === -1 || part.slice(0, eq).trim() !== name) continue;
    let value = part.slice(eq + 1).trim();
    if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1);
    return value;
  }
  return undefined;
}

/**
 * The principal of a token: `cred:` and the first 16 hex digits of its SHA-256, computed once when the config
 * loads. It names the rate-limit bucket, so it must not depend on the token's place in `valid_tokens`: with
 * `token:<index>`, two instances sharing a Redis with their tokens listed in another order (a rolling deploy)
 * charged one client's requests to another client's bucket. A digest, never the token, so bucket keys in
 * Redis do not hold secrets; 64 bits keep two tokens of one config from sharing a bucket by chance.
 */
export function tokenPrincipal(token: string): string {
  return `cred:${createHash('sha256').update(token).digest('hex').slice(0, 16)}`;
}

/**
 * Finds the principal of a presented token among `valid_tokens`, plain and `sha256:` entries alike (a token
 * has the same principal either way, so its bucket does not change when its entry is hashed). Every entry
 * is compared, with no early exit. Without `sha256:` entries no digest is computed: the presented token is
 * compared as it is, allocating nothing.
 */
export function tokenMatcher(tokens: readonly string[]): (candidate: string) => string | undefined {
  const plain = tokens.filter((t) => !SHA256_TOKEN.test(t));
  const plainPrincipals = plain.map(tokenPrincipal);
  const hashed = tokens.filter((t) => SHA256_TOKEN.test(t)).map((t) => t.slice('sha256:'.length).toLowerCase());
  const hashedPrincipals = hashed.map((hex) => `cred:${hex.slice(0, 16)}`);
  if (hashed.length === 0) {
    return function matchPlain(candidate) {
      const i = findSecret(candidate, plain);
      return i === -1 ? undefined : plainPrincipals[i];
    };
  }
  return function matchPlainOrHashed(candidate) {
    const i = findSecret(candidate, plain);
    const j = findSecret(sha256Hex(candidate), hashed);
    return i !== -1 ? plainPrincipals[i] : j !== -1 ? hashedPrincipals[j] : undefined;
  };
}

/**
 * Basic auth: RFC 7617 `user:password` (users with a plain password, a `password_hash`, or from
 * `users_file`) or a raw token of `valid_tokens`. Both forms are always checked, so timing does not tell
 * which one the credentials were. Plain passwords and {SHA} hashes are checked at once; bcrypt and
 * argon2id go through a SlowVerifier (cached, bounded), and an unknown user is checked against a dummy
 * bcrypt hash so that it takes as long as a wrong password.
 */
function basicVerifier(config: AuthSchemeConfig, matchToken: (candidate: string) => string | undefined): Verify {
  const plainUsers: string[] = [];
  const plainNames: string[] = [];
  const hashes = new Map<string, string>();
  for (const u of config.users) {
    if (u.password !== undefined) {
      plainUsers.push(`${u.username}:${u.password}`);
      plainNames.push(u.username);
    } else if (u.password_hash !== undefined) hashes.set(u.username, u.password_hash);
  }
  if (config.users_file !== undefined) {
    for (const u of readHtpasswd(config.users_file)) if (!hashes.has(u.username) && !plainNames.includes(u.username)) hashes.set(u.username, u.password_hash);
  }
  if (hashes.size === 0) {
    return function verifyBasic(ctx) {
      const param = authorizationParam(ctx.req.headers.authorization, 'basic');
      if (param === undefined) return { failure: ctx.req.headers.authorization === undefined ? 'missing' : 'malformed' };
      const pair = decodeBasic(param);
      const user = findSecret(pair === undefined ? '' : `${pair.username}:${pair.password}`, plainUsers);
      const token = matchToken(param);
      if (pair !== undefined && user !== -1) return `user:${plainNames[user] as string}`;
      return token ?? INVALID;
    };
  }
  const pv = config.password_verification;
  const slow = new SlowVerifier({ concurrency: pv.concurrency, maxQueue: pv.max_queue, cacheSize: pv.cache_size, cacheTtlMs: pv.cache_ttl_ms });
  return function verifyBasicHashed(ctx) {
    const param = authorizationParam(ctx.req.headers.authorization, 'basic');
    if (param === undefined) return { failure: ctx.req.headers.authorization === undefined ? 'missing' : 'malformed' };
    const pair = decodeBasic(param);
    const user = findSecret(pair === undefined ? '' : `${pair.username}:${pair.password}`, plainUsers);
    const token = matchToken(param);
    if (pair !== undefined && user !== -1) return `user:${plainNames[user] as string}`;
    if (token !== undefined) return token;
    if (pair === undefined) return INVALID;
    const known = hashes.get(pair.username);
    const hash = known ?? DUMMY_BCRYPT;
    if (hash.startsWith('{SHA}')) return sha1Matches(pair.password, hash) ? `user:${pair.username}` : INVALID;
    const principal = `user:${pair.username}`;
    const checked = slow.check(pair.username, pair.password, hash);
    if (checked instanceof Promise) return checked.then((c) => (c === 'ok' && known !== undefined ? principal : c === 'busy' ? BUSY : INVALID));
    return checked === 'ok' && known !== undefined ? principal : checked === 'busy' ? BUSY : INVALID;
  };
}

/** What `any_of` has found so far for one request. */
interface AnyOfState {
  /** The first failure that is not `missing` (the most telling), or `missing`. */
  failure: string | undefined;
  challenges: string[];
}

/**
 * `any_of`: each scheme's authenticate phase is tried in order, and the first that identifies the client
 * wins (its principal, claims and upstream headers). When none does, the request is refused with the first
 * failure other than `missing` (a bad JWT tells more than an absent API key), and the challenges of every
 * scheme in one WWW-Authenticate (RFC 9110 section 11.6.1 allows a list).
 */
function createAnyOf(schemes: readonly AuthSchemeConfig[], deps: AuthDeps): AuthPhases {
  const built = schemes.filter((s) => s.enabled).map((s) => createAuth(s, deps));
  const filters = built.map((b) => b.authenticate.requestFilter as (ctx: RequestContext) => FilterResult | Promise<FilterResult>);
  const consumed = new Set<string>();
  for (const b of built) for (const h of b.authenticate.consumesRequestHeaders ?? []) consumed.add(h);

  function record(ctx: RequestContext, state: AnyOfState): boolean {
    if (ctx.authFailure === undefined && ctx.principal !== undefined) return true;
    if (state.failure === undefined || (state.failure === 'missing' && ctx.authFailure !== 'missing')) state.failure = ctx.authFailure;
    if (ctx.authChallenge !== '') state.challenges.push(ctx.authChallenge);
    return false;
  }

  function step(ctx: RequestContext, start: number, state: AnyOfState): FilterResult | Promise<FilterResult> {
    for (let i = start; i < filters.length; i++) {
      ctx.authFailure = undefined;
      ctx.authChallenge = '';
      const result = (filters[i] as (ctx: RequestContext) => FilterResult | Promise<FilterResult>)(ctx);
      if (result instanceof Promise) return result.then(() => (record(ctx, state) ? false : step(ctx, i + 1, state)));
      if (record(ctx, state)) return false;
    }
    ctx.authFailure = state.failure ?? 'missing';
    ctx.authChallenge = state.challenges.join(', ');
    return false;
  }

  const authenticate: Phases = {
    name: 'auth',
    consumesRequestHeaders: [...consumed],
    requestFilter: function authenticateAnyOf(ctx): FilterResult | Promise<FilterResult> {
      return step(ctx, 0, { failure: undefined, challenges: [] });
    },
    upstreamRequestFilter: addAuthHeaders,
  };
  const enforce: Phases = {
    name: 'auth-enforce',
    requestFilter: enforceWithChallenge,
  };
  return {
    authenticate,
    enforce,
    close: function closeAnyOf(): void {
      for (const b of built) b.close();
    },
  };
}

/**
 * The enforce phase of JWT and any_of: a request `authenticate` could not identify gets its challenge and
 * 401, or 403 insufficient_scope when a JWT lacked a required claim.
 */
function enforceWithChallenge(ctx: RequestContext): FilterResult {
  if (ctx.authFailure === undefined) return false;
  if (ctx.authChallenge !== '') ctx.responseHeaders.push('WWW-Authenticate', ctx.authChallenge);
  return ctx.authFailure === 'insufficient_scope' ? INSUFFICIENT_SCOPE : UNAUTHORIZED;
}
