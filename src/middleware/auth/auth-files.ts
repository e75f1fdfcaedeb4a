/**
 * The files an auth config names (a JWT public key, an htpasswd file), taken from the config file's folder and read when the
 * config loads (`--check`, start, reload), so a bad file is a config error at its key, never a failure on
 * a request. The auth middleware reads them again when it is built.
 */
import { isAbsolute, resolve } from 'node:path';
import type { AuthConfig, AuthSchemeConfig } from '../../config/schema.js';
import { readHtpasswd } from './hashed.js';
import { readPublicKeyFile } from './jwt.js';

/** A problem with a file, at its key path inside the auth block (`['jwt', 'public_key_file']`). */
export interface AuthFileProblem {
  path: (string | number)[];
  message: string;
}

/** `auth` with its file paths made absolute (from `dir`), those of its `any_of` schemes too; each unusable file is reported. */
export function resolveAuthFiles(auth: AuthConfig, dir: string, report: (problem: AuthFileProblem) => void): AuthConfig {
  const out = resolveSchemeFiles(auth, dir, report);
  if (auth.any_of === undefined) return out;
  const anyOf = auth.any_of.map((scheme, i) =>
    resolveSchemeFiles({ ...scheme, enabled: auth.enabled && scheme.enabled }, dir, (problem) => report({ path: ['any_of', i, ...problem.path], message: problem.message })),
  );
  return { ...out, any_of: anyOf.map((scheme, i) => ({ ...scheme, enabled: (auth.any_of as AuthSchemeConfig[])[i]?.enabled ?? true })) };
}

function resolveSchemeFiles<T extends AuthSchemeConfig>(auth: T, dir: string, report: (problem: AuthFileProblem) => void): T {
  const at = (file: string): string => (isAbsolute(file) ? file : resolve(dir, file));
  let out = auth;
  const jwt = auth.jwt;
  if (jwt?.public_key_file !== undefined) {
    const file = at(jwt.public_key_file);
    out = { ...out, jwt: { ...jwt, public_key_file: file } };
    if (auth.enabled) {
      try {
        readPublicKeyFile(file, jwt.algorithms);
      } catch (err) {
        report({ path: ['jwt', 'public_key_file'], message: (err as Error).message });
      }
    }
  }
  if (auth.users_file !== undefined) {
    const file = at(auth.users_file);
    const shown = auth.users_file;
    out = { ...out, users_file: file };
    if (auth.enabled && auth.auth_type === 'basic') {
      try {
        readHtpasswd(file, shown);
      } catch (err) {
        report({ path: ['users_file'], message: (err as Error).message });
      }
    }
  }
  return out;
}
