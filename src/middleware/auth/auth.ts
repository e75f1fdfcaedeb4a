import { createHash } from 'node:crypto';
import type { AuthConfig } from '../../config/schema.js';
import type { RequestContext } from '../../proxy/context.js';
import { ProxyError } from '../../proxy/errors.js';
import type { FilterResult, Phases } from '../../proxy/phases.js';
import { clientCertificate, normalizeFingerprint } from '../../proxy/client-cert.js';
import { authorizationParam, decodeBasic, findSecret } from './credentials.js';

/** Refusal shared by every 401: filters return it, so a refused request allocates no error. */
const UNAUTHORIZED = new ProxyError('unauthorized');
/** A client certificate that is missing or not allowed: no HTTP challenge can fix that, so 403. */
const FORBIDDEN = new ProxyError('forbidden');

/** An authentication check: the principal (a stable name for the credential) or why there is none. */
type Verify = (ctx: RequestContext) => string | { failure: string };

export interface AuthPhases {
  /** Identifies the client; never refuses, so a rate limit can count failed attempts first. */
  readonly authenticate: Phases;
  /** Refuses a request that `authenticate` could not identify, with 401 and a challenge. */
  readonly enforce: Phases;
}

/**
 * Builds the auth middleware from its config (once, at load time): secrets are listed here, the header
 * name and challenges are fixed here. Two phases, so the rate limiter can sit between them.
 */
export function createAuth(config: AuthConfig): AuthPhases {
  const realm = config.realm;
  const tokens = config.valid_tokens;
  const principals = tokens.map(tokenPrincipal);
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
        const index = findSecret(token, tokens);
        return index === -1 ? { failure: 'invalid' } : (principals[index] as string);
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
        const index = findSecret(key, tokens);
        return index === -1 ? { failure: 'invalid' } : (principals[index] as string);
      };
      break;
    }
    case 'basic': {
      header = 'authorization';
      challenge = `Basic realm="${realm}", charset="UTF-8"`;
      const users = config.users.map((u) => `${u.username}:${u.password}`);
      const names = config.users.map((u) => u.username);
      verify = function verifyBasic(ctx) {
        const param = authorizationParam(ctx.req.headers.authorization, 'basic');
        if (param === undefined) return { failure: ctx.req.headers.authorization === undefined ? 'missing' : 'malformed' };
        // Both forms are always checked, so timing does not tell which one the credentials were.
        const pair = decodeBasic(param);
        const user = findSecret(pair === undefined ? '' : `${pair.username}:${pair.password}`, users);
        const token = findSecret(param, tokens);
        if (pair !== undefined && user !== -1) return `user:${names[user] as string}`;
        if (token !== -1) return principals[token] as string;
        return { failure: 'invalid' };
      };
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
        return findSecret(cert.fingerprint, allowed) === -1 ? { failure: 'invalid' } : `cert:${cert.fingerprint.slice(0, 16)}`;
      };
      break;
    }
  }

  const refusal = config.auth_type === 'client_cert' ? FORBIDDEN : UNAUTHORIZED;
  const authenticate: Phases = {
    name: 'auth',
    consumesRequestHeaders: config.forward_credentials || header === '' ? [] : [header],
    requestFilter: function authenticate(ctx): FilterResult {
      const result = verify(ctx);
      if (typeof result === 'string') ctx.principal = result;
      else {
        ctx.authFailure = result.failure;
        ctx.authChallenge = result.failure === 'missing' || config.auth_type !== 'bearer' ? challenge : `${challenge}, error="invalid_token"`;
      }
      return false;
    },
  };
  const enforce: Phases = {
    name: 'auth-enforce',
    requestFilter: function enforceAuth(ctx): FilterResult {
      if (ctx.authFailure === undefined) return false;
      if (ctx.authChallenge !== '') ctx.responseHeaders.push('WWW-Authenticate', ctx.authChallenge);
      return refusal;
    },
  };
  return { authenticate, enforce };
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
