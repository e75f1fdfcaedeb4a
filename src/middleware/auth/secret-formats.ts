/** The formats of stored secrets the config accepts; no dependency, so the config schema can use them. */

/** `sha256:` and 64 hex digits: a token stored as its SHA-256. */
export const SHA256_TOKEN = /^sha256:[0-9a-fA-F]{64}$/;
/** A bcrypt hash as htpasswd -B, PHP and most libraries write it. */
export const BCRYPT_HASH = /^\$2[aby]\$\d{2}\$[./A-Za-z0-9]{53}$/;
/** An argon2id hash in the PHC string format. */
export const ARGON2ID_HASH = /^\$argon2id\$v=\d+\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$/;
/** htpasswd's `{SHA}`: base64 of the password's SHA-1 (unsalted; accepted for existing files). */
const SHA1_HASH = /^\{SHA\}[A-Za-z0-9+/]{27}=$/;

/** The kind of a password hash, or a message saying why it is not one Tollgate takes. */
export function passwordHashKind(hash: string): 'bcrypt' | 'argon2id' | 'sha1' | { error: string } {
  if (BCRYPT_HASH.test(hash)) return 'bcrypt';
  if (ARGON2ID_HASH.test(hash)) return 'argon2id';
  if (SHA1_HASH.test(hash)) return 'sha1';
  if (hash.startsWith('$apr1$')) return { error: 'MD5-crypt ($apr1$) is not supported: it is fast to brute-force; re-create the entry with htpasswd -B (bcrypt)' };
  if (/^\$[156]\$/.test(hash)) return { error: 'crypt(3) hashes ($1$, $5$, $6$) are not supported; re-create the entry with htpasswd -B (bcrypt)' };
  if (hash.startsWith('$2')) return { error: 'not a well-formed bcrypt hash ($2a$, $2b$ or $2y$, a two-digit cost and 53 characters)' };
  if (hash.startsWith('$argon2')) return { error: 'only argon2id is supported (not argon2i or argon2d)' };
  return { error: 'not a supported hash (bcrypt, argon2id or {SHA}); plain-text and crypt() entries are refused' };
}
