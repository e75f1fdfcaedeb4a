/**
 * Hashed secrets: `sha256:` tokens, bcrypt and argon2id password hashes, Apache htpasswd files, and the
 * bounded machinery that keeps slow hashes from taking the CPU (a cache of verified credentials and a
 * limit on verifications running at once).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type * as Argon2Module from '@node-rs/argon2';
import type * as BcryptModule from '@node-rs/bcrypt';
import { passwordHashKind } from './secret-formats.js';

type Argon2 = typeof Argon2Module;
type Bcrypt = typeof BcryptModule;
let argon2: Promise<Argon2> | undefined;
let bcrypt: Promise<Bcrypt> | undefined;

/**
 * The native hash bindings load on first use: most configurations never check a slow hash, and loading
 * both costs 5-9 MiB of resident memory in every process (measured on Node 20 and 24).
 */
function argon2Module(): Promise<Argon2> {
  return (argon2 ??= import('@node-rs/argon2'));
}

function bcryptModule(): Promise<Bcrypt> {
  return (bcrypt ??= import('@node-rs/bcrypt'));
}

/** Lower-case hex SHA-256 of a text. */
export function sha256Hex(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** One user of an htpasswd file. */
export interface HtpasswdUser {
  username: string;
  password_hash: string;
}

/**
 * The users of an Apache htpasswd file (`name:hash` lines; blank lines and `#` comments skipped). Throws
 * with `file:line: message` for the first line that cannot be used.
 */
export function readHtpasswd(file: string, shownAs: string = file): HtpasswdUser[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`${shownAs}: cannot read: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : (err as Error).message}`, { cause: err });
  }
  const users: HtpasswdUser[] = [];
  const seen = new Set<string>();
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const colon = line.indexOf(':');
    if (colon <= 0) throw new Error(`${shownAs}:${i + 1}: not a "name:hash" line`);
    const username = line.slice(0, colon);
    const hash = line.slice(colon + 1);
    const kind = passwordHashKind(hash);
    if (typeof kind === 'object') throw new Error(`${shownAs}:${i + 1}: user "${username}": ${kind.error}`);
    if (seen.has(username)) throw new Error(`${shownAs}:${i + 1}: user "${username}" is listed twice`);
    seen.add(username);
    users.push({ username, password_hash: hash });
  });
  if (users.length === 0) throw new Error(`${shownAs}: lists no user`);
  return users;
}

export interface SlowVerifierOptions {
  /** Slow verifications (bcrypt, argon2id) running at once; the rest wait. */
  concurrency: number;
  /** Verifications waiting at most; past it a request is refused at once (`busy`). */
  maxQueue: number;
  /** Verified credentials kept at most. */
  cacheSize: number;
  /** How long a verified credential is kept. */
  cacheTtlMs: number;
  /** Milliseconds on a monotonic clock (tests inject one). */
  now?: () => number;
}

/** What a password check found: the password matches, it does not, or too many checks were waiting. */
export type PasswordCheck = 'ok' | 'invalid' | 'busy';

/**
 * Checks passwords against slow hashes with bounded cost. A verified credential is cached (keyed by the
 * SHA-256 of user, password and hash, so the cache holds no password), for `cacheTtlMs`, up to `cacheSize`
 * entries (the oldest goes first): a client sending its password on every request pays the hash once.
 * Wrong passwords are never cached; at most `concurrency` verifications run at once (on libuv's thread
 * pool, off the event loop), and at most `maxQueue` wait: a flood of wrong passwords costs that many
 * threads' worth of CPU, no more, and the event loop keeps serving everyone else.
 */
export class SlowVerifier {
  readonly #options: SlowVerifierOptions;
  readonly #now: () => number;
  /** Digest → expiry, in insertion order (a Map iterates oldest first). */
  readonly #cache = new Map<string, number>();
  #running = 0;
  readonly #waiting: (() => void)[] = [];
  /** Verifications made (not answered from the cache). */
  verifications = 0;

  constructor(options: SlowVerifierOptions) {
    this.#options = options;
    this.#now = options.now ?? (() => performance.now());
    // Loaded now so that the first check does not wait for them; a failure shows when a check awaits it.
    argon2Module().catch(() => undefined);
    bcryptModule().catch(() => undefined);
  }

  /** Whether `password` matches `hash` (bcrypt or argon2id); `busy` when the queue is full. */
  check(username: string, password: string, hash: string): PasswordCheck | Promise<PasswordCheck> {
    const key = sha256Hex(`${username}\u0000${password}\u0000${hash}`);
    const expires = this.#cache.get(key);
    if (expires !== undefined) {
      if (expires > this.#now()) return 'ok';
      this.#cache.delete(key);
    }
    if (this.#running >= this.#options.concurrency && this.#waiting.length >= this.#options.maxQueue) return 'busy';
    return this.#run(key, password, hash);
  }

  async #run(key: string, password: string, hash: string): Promise<PasswordCheck> {
    if (this.#running >= this.#options.concurrency) await new Promise<void>((resolve) => this.#waiting.push(resolve));
    this.#running++;
    this.verifications++;
    let ok: boolean;
    try {
      ok = await verifyHash(password, hash);
    } catch {
      ok = false;
    } finally {
      this.#running--;
      this.#waiting.shift()?.();
    }
    if (!ok) return 'invalid';
    this.#cache.set(key, this.#now() + this.#options.cacheTtlMs);
    if (this.#cache.size > this.#options.cacheSize) this.#cache.delete(this.#cache.keys().next().value as string);
    return 'ok';
  }
}

/** Whether `password` matches a bcrypt, argon2id or {SHA} hash. */
export async function verifyHash(password: string, hash: string): Promise<boolean> {
  if (hash.startsWith('$argon2id$')) return (await argon2Module()).verify(hash, password);
  if (hash.startsWith('{SHA}')) return sha1Matches(password, hash);
  return (await bcryptModule()).verify(password, hash);
}

/** htpasswd `{SHA}`: cheap, so checked on the event loop, in constant time. */
export function sha1Matches(password: string, hash: string): boolean {
  const want = Buffer.from(hash.slice('{SHA}'.length), 'base64');
  const got = createHash('sha1').update(password).digest();
  return want.length === got.length && timingSafeEqual(want, got);
}

/**
 * A bcrypt hash (cost 10) of a random string no one knows: an unknown user name is checked against it, so
 * the answer takes as long as for a known user with a wrong password.
 */
export const DUMMY_BCRYPT = '$2b$10$FcVQ7n3yE9OjE2lpmuxz1OoUDLny/MgLC5A5s.ZSM.SAS2nw2R8gq';

/** The algorithms `tollgate hash-secret` offers. */
export const HASH_ALGORITHMS = ['bcrypt', 'argon2id', 'sha256'] as const;
export type HashAlgorithm = (typeof HASH_ALGORITHMS)[number];

/**
 * The stored form of a secret: a bcrypt (cost 10) or argon2id hash for a `password_hash`, or `sha256:<hex>`
 * for `valid_tokens` (a token is random and long, so a fast hash is enough; a password is not).
 */
export async function hashSecret(secret: string, algorithm: HashAlgorithm): Promise<string> {
  if (algorithm === 'sha256') return `sha256:${sha256Hex(secret)}`;
  if (algorithm === 'argon2id') return (await argon2Module()).hash(secret);
  return (await bcryptModule()).hash(secret, 10);
}
