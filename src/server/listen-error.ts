/**
 * A listener that could not bind its address, in words an operator can act on:
 * `cannot listen on 127.0.0.1:8080 for the proxy: address already in use`. Made when a listener starts;
 * the CLI prints the message as its one line and exits 1.
 */

/** Which of Tollgate's listeners failed: the proxy port, the admin listener, or the http-to-https redirect. */
export type ListenerName = 'proxy' | 'admin listener' | 'redirect_http listener';

export class ListenError extends Error {
  readonly code = 'TOLLGATE_LISTEN_FAILED';
  /** The system's code (`EADDRINUSE`, `EACCES`, ...), when it gave one. */
  readonly errno: string | undefined;

  constructor(
    readonly listener: ListenerName,
    readonly address: string,
    readonly port: number,
    /** The listen error (or, from a cluster worker, its `code` and `message`). */
    cause: unknown,
  ) {
    const errno = (cause as NodeJS.ErrnoException | undefined)?.code;
    super(`cannot listen on ${hostPort(address, port)} for the ${listener}: ${reasonOf(cause, port)}`, { cause });
    this.name = 'ListenError';
    this.errno = errno;
  }
}

/** `127.0.0.1:8080`, `[::1]:8080` */
function hostPort(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

/** What went wrong, from the system's error code; its own message for a code not listed. */
function reasonOf(err: unknown, port: number): string {
  switch ((err as NodeJS.ErrnoException | undefined)?.code) {
    case 'EADDRINUSE':
      return 'address already in use';
    case 'EACCES':
      return port > 0 && port < 1024 ? 'permission denied (ports below 1024 need privileges)' : 'permission denied';
    case 'EADDRNOTAVAIL':
      return 'address not available (no interface of this host has it)';
    case 'EAFNOSUPPORT':
      return 'address family not supported by this host';
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EAI_NONAME':
      return 'host name not found';
    default: {
      const message = (err as { message?: unknown } | undefined)?.message;
      return typeof message === 'string' ? message : String(err);
    }
  }
}
