/**
 * The listener's TLS state for one generation: a secure context per certificate and the table that picks
 * one by the client's server name (SNI). Built when a generation is built (start, reload), from files read
 * then; a handshake only looks a name up.
 */
import { createSecureContext, type SecureContext, type SecureContextOptions } from 'node:tls';
import { formatPath } from '../config/errors.js';
import type { TlsConfig } from '../config/schema.js';
import { readTlsFiles, TlsFileError } from '../config/tls-files.js';

/**
 * Server names to values: exact names first, then `*.suffix` wildcards (one label, as RFC 6125 says:
 * `*.example.com` takes `a.example.com`, not `example.com` nor `a.b.example.com`). On a name two entries
 * give, the earlier entry wins. `lookup` answers undefined for a name no entry gives.
 */
export class SniTable<T> {
  readonly #exact = new Map<string, T>();
  readonly #wildcard = new Map<string, T>();

  constructor(entries: readonly { names: readonly string[]; value: T }[]) {
    for (const { names, value } of entries) {
      for (const name of names) {
        const lower = name.toLowerCase();
        const table = lower.startsWith('*.') ? this.#wildcard : this.#exact;
        const key = lower.startsWith('*.') ? lower.slice(2) : lower;
        if (!table.has(key)) table.set(key, value);
      }
    }
  }

  lookup(serverName: string): T | undefined {
    let name = serverName.toLowerCase();
    if (name.endsWith('.')) name = name.slice(0, -1);
    const exact = this.#exact.get(name);
    if (exact !== undefined) return exact;
    const dot = name.indexOf('.');
    return dot <= 0 ? undefined : this.#wildcard.get(name.slice(dot + 1));
  }
}

export class TlsContexts {
  /** The default certificate's options, for the server's own context (clients that send no server name). */
  readonly defaultOptions: SecureContextOptions;
  /** Client certificates are asked for and verified. */
  readonly requestCert: boolean;
  /** The context of each server name whose certificate is not the default one. */
  readonly #byName: SniTable<SecureContext | null>;

  constructor(tls: TlsConfig, now: number = Date.now()) {
    let files;
    try {
      files = readTlsFiles(tls, now);
    } catch (err) {
      if (err instanceof TlsFileError) throw new Error(`${formatPath(['server', 'tls', ...err.path])}: ${err.message}`, { cause: err });
      throw err;
    }
    const common: SecureContextOptions = { minVersion: tls.min_version, ...(files.clientCa === undefined ? {} : { ca: files.clientCa }) };
    const [first, ...others] = files.certificates;
    if (first === undefined) throw new Error('server.tls.certificates: must list at least one certificate');
    this.defaultOptions = { ...common, cert: first.cert, key: first.key };
    this.requestCert = files.clientCa !== undefined;
    // null for the default certificate's names: the handshake keeps the server's context.
    this.#byName = new SniTable([
      { names: first.names, value: null },
      ...others.map((c) => ({ names: c.names, value: createSecureContext({ ...common, cert: c.cert, key: c.key }) })),
    ]);
  }

  /** The context for a client's server name; undefined: the server's own (the default certificate). */
  forServerName(serverName: string): SecureContext | undefined {
    return this.#byName.lookup(serverName) ?? undefined;
  }
}
