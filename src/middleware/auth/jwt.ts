import { createHash, createPublicKey, createSecretKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type * as JoseModule from 'jose';
import type { JWTPayload } from 'jose';
import type { JwtConfig } from '../../config/schema.js';
import type { JwksCache } from './jwks.js';

/** Why a token was refused: the `reason` label of tollgate_auth_failures_total (docs/security.md). */
export type JwtFailure =
  | 'malformed'
  | 'expired'
  | 'not_yet_valid'
  | 'bad_signature'
  | 'wrong_issuer'
  | 'wrong_audience'
  | 'wrong_algorithm'
  | 'unknown_key'
  | 'invalid'
  | 'insufficient_scope';

export interface JwtResult {
  /** The verified claims; undefined when refused. */
  claims: JWTPayload | undefined;
  failure: JwtFailure | undefined;
  /** `jwt:` and 16 hex digits of the token's SHA-256; '' when refused. */
  principal: string;
}

/** Verified tokens kept at most (each entry is a digest and the claims, not the token). */
export const JWT_CACHE_SIZE = 10_000;

interface CachedToken {
  claims: JWTPayload;
  principal: string;
  /** The key set it was verified with (JwksCache.version); a refetched set verifies it again. */
  version: number;
  /** Epoch milliseconds: from when and until when it may be accepted (nbf and exp, skew included). */
  notBefore: number;
  notAfter: number;
}

/** The key type (`KeyObject.asymmetricKeyType`, or `secret`) each algorithm needs, and for EC its curve. */
const KEY_TYPES: Record<string, { type: string; curve?: string }> = {
  RS256: { type: 'rsa' },
  RS384: { type: 'rsa' },
  RS512: { type: 'rsa' },
  PS256: { type: 'rsa' },
  PS384: { type: 'rsa' },
  PS512: { type: 'rsa' },
  ES256: { type: 'ec', curve: 'prime256v1' },
  ES384: { type: 'ec', curve: 'secp384r1' },
  ES512: { type: 'ec', curve: 'secp521r1' },
  EdDSA: { type: 'ed25519' },
  Ed25519: { type: 'ed25519' },
  HS256: { type: 'secret' },
  HS384: { type: 'secret' },
  HS512: { type: 'secret' },
};

/** Whether `key` is of the type `alg` needs: an RSA public key never verifies an HS256 token, and so on. */
export function keyFits(alg: string, key: KeyObject): boolean {
  const need = KEY_TYPES[alg];
  if (need === undefined) return false;
  if (need.type === 'secret') return key.type === 'secret';
  if (key.type !== 'public' || key.asymmetricKeyType !== need.type) return false;
  return need.curve === undefined || key.asymmetricKeyDetails?.namedCurve === need.curve;
}

/** A public key from a PEM file (SPKI, or a certificate); throws with a message for the config error. */
export function readPublicKeyFile(file: string, algorithms: readonly string[]): KeyObject {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`${file}: cannot read: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : (err as Error).message}`, { cause: err });
  }
  let key: KeyObject;
  try {
    key = createPublicKey(text);
  } catch (err) {
    throw new Error(`${file}: not a PEM public key or certificate: ${(err as Error).message}`, { cause: err });
  }
  if (!algorithms.some((alg) => keyFits(alg, key))) {
    throw new Error(`${file}: a ${key.asymmetricKeyType ?? key.type} key fits none of jwt.algorithms (${algorithms.join(', ')})`);
  }
  return key;
}

type Jose = typeof JoseModule;
let jose: Promise<Jose> | undefined;

/** jose loads when the first JWT verifier is made: a configuration without JWT never pays for it. */
function joseModule(): Promise<Jose> {
  return (jose ??= import('jose'));
}

/** Where the verifying keys come from: a fixed key (file or secret) or a JWKS. */
export type KeySource = { fixed: KeyObject } | { jwks: JwksCache };

/**
 * Verifies JWTs (RFC 7519) against one `jwt` config: the signature with a key whose type fits the token's
 * algorithm (one of `algorithms`, never `none`), then `iss`, `aud`, `exp` and `nbf` (with `clock_skew_ms`),
 * then `required_claims`. Built when the config loads; `verify` runs per request.
 */
export class JwtVerifier {
  readonly #config: JwtConfig;
  readonly #keys: KeySource;
  readonly #options: { issuer?: string; audience?: string[]; algorithms: string[]; clockTolerance: number };
  readonly #required: [string, string | number | boolean][];
  /** Token digest → verified claims: a client sends its token on every request, and a signature check costs tens of microseconds. */
  readonly #cache = new Map<string, CachedToken>();
  readonly #skewMs: number;
  readonly #now: () => number;

  constructor(config: JwtConfig, keys: KeySource, now: () => number = Date.now) {
    this.#config = config;
    this.#keys = keys;
    this.#skewMs = config.clock_skew_ms;
    this.#now = now;
    this.#options = {
      algorithms: [...config.algorithms],
      clockTolerance: config.clock_skew_ms / 1000,
      ...(config.issuer === undefined ? {} : { issuer: config.issuer }),
      ...(config.audiences === undefined ? {} : { audience: [...config.audiences] }),
    };
    this.#required = Object.entries(config.required_claims);
    joseModule().catch(() => undefined);
  }

  /**
   * The claims of a valid token, or why it is refused. A token verified before (same key set, still within
   * its nbf and exp) is answered from the cache, synchronously; only positive results are kept.
   */
  verify(token: string): JwtResult | Promise<JwtResult> {
    const digest = createHash('sha256').update(token).digest('hex');
    const hit = this.#cache.get(digest);
    if (hit !== undefined) {
      const now = this.#now();
      if (hit.version === this.#version() && now >= hit.notBefore && now <= hit.notAfter) return { claims: hit.claims, failure: undefined, principal: hit.principal };
      this.#cache.delete(digest);
    }
    return this.#verify(token, digest);
  }

  #version(): number {
    return 'fixed' in this.#keys ? 0 : this.#keys.jwks.version;
  }

  async #verify(token: string, digest: string): Promise<JwtResult> {
    const refused = (failure: JwtFailure): JwtResult => ({ claims: undefined, failure, principal: '' });
    const { decodeProtectedHeader, errors, jwtVerify } = await joseModule();
    let header: { alg?: unknown; kid?: unknown };
    try {
      header = decodeProtectedHeader(token);
    } catch {
      return refused('malformed');
    }
    const alg = header.alg;
    if (typeof alg !== 'string' || !this.#config.algorithms.includes(alg)) return refused('wrong_algorithm');
    const kid = typeof header.kid === 'string' ? header.kid : undefined;
    let keys: KeyObject[];
    if ('fixed' in this.#keys) keys = [this.#keys.fixed];
    else keys = (await this.#keys.jwks.candidates(alg, kid)).map((k) => k.key);
    keys = keys.filter((k) => keyFits(alg, k));
    if (keys.length === 0) return refused('unknown_key');
    const version = this.#version();
    let failure: JwtFailure = 'bad_signature';
    // Without a kid, each key of the right type is tried (a set usually holds one or two).
    for (const key of keys) {
      try {
        const { payload } = await jwtVerify(token, key, { ...this.#options, currentDate: new Date(this.#now()) });
        for (const [name, want] of this.#required) {
          if (!claimHas(payload[name], want)) return refused('insufficient_scope');
        }
        const principal = `jwt:${digest.slice(0, 16)}`;
        this.#remember(digest, { claims: payload, principal, version, ...this.#window(payload) });
        return { claims: payload, failure: undefined, principal };
      } catch (err) {
        failure = classify(err, errors);
        if (failure !== 'bad_signature') break;
      }
    }
    return refused(failure);
  }

  /** When a verified token may be accepted from the cache: its nbf to its exp (skew included), at most 5 minutes from now without exp. */
  #window(payload: JWTPayload): { notBefore: number; notAfter: number } {
    const now = this.#now();
    return {
      notBefore: typeof payload.nbf === 'number' ? payload.nbf * 1000 - this.#skewMs : 0,
      notAfter: typeof payload.exp === 'number' ? payload.exp * 1000 + this.#skewMs : now + 300_000,
    };
  }

  #remember(digest: string, entry: CachedToken): void {
    this.#cache.set(digest, entry);
    if (this.#cache.size > JWT_CACHE_SIZE) this.#cache.delete(this.#cache.keys().next().value as string);
  }
}

/** A secret for HS* algorithms, as a key object. */
export function secretKey(secret: string): KeyObject {
  return createSecretKey(Buffer.from(secret, 'utf8'));
}

/**
 * Whether a claim satisfies `required_claims`: the exact value, or, for a string value, one of the words of
 * a space-separated claim (`scope: "read write"`) or an element of an array claim.
 */
export function claimHas(claim: unknown, want: string | number | boolean): boolean {
  if (claim === want) return true;
  if (typeof want !== 'string') return false;
  if (typeof claim === 'string') return claim.split(' ').includes(want);
  return Array.isArray(claim) && claim.includes(want);
}

function classify(err: unknown, errors: Jose['errors']): JwtFailure {
  if (err instanceof errors.JWTExpired) return 'expired';
  if (err instanceof errors.JWTClaimValidationFailed) {
    if (err.claim === 'nbf') return 'not_yet_valid';
    if (err.claim === 'iss') return 'wrong_issuer';
    if (err.claim === 'aud') return 'wrong_audience';
    return 'invalid';
  }
  if (err instanceof errors.JWSSignatureVerificationFailed) return 'bad_signature';
  if (err instanceof errors.JOSEAlgNotAllowed) return 'wrong_algorithm';
  if (err instanceof errors.JWSInvalid || err instanceof errors.JWTInvalid) return 'malformed';
  return 'invalid';
}

