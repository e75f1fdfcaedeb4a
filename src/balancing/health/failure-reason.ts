/**
 * Why talking to an upstream failed, in words for a log line: health transitions, ejections and hints.
 * Runs only on those (rare) events, never per request.
 */
export function describeFailure(err: unknown): string {
  const cause = (err as { cause?: unknown } | null)?.cause;
  // A ProxyError wraps what undici or the socket reported: that says more than the catalogue message.
  if (err instanceof Error && err.name === 'ProxyError' && cause !== undefined) return describeFailure(cause);
  const code = (err as { code?: unknown } | null)?.code;
  switch (code) {
    case 'ECONNREFUSED':
      return 'connection refused';
    case 'ECONNRESET':
    case 'EPIPE':
      return 'connection reset';
    case 'UND_ERR_SOCKET':
      return 'connection closed by the upstream before the response was complete';
    case 'UND_ERR_CONNECT_TIMEOUT':
    case 'ETIMEDOUT':
      return 'connect timed out';
    case 'UND_ERR_HEADERS_TIMEOUT':
      return 'no response head in time';
    case 'UND_ERR_BODY_TIMEOUT':
      return 'response body stalled';
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return 'host name not found';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return 'host unreachable';
  }
  if (err instanceof Error) {
    if (err.name === 'HTTPParserError') return `invalid HTTP response: ${err.message}`;
    if (err.name === 'TimeoutError') return 'timed out';
    return typeof code === 'string' ? `${code}: ${err.message}` : err.message;
  }
  return String(err);
}
