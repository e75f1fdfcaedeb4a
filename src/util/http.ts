/**
 * node:http's values, taken from Node without an ES module namespace.
 *
 * On Node 24, `import { createServer } from 'node:http'` makes Node build the module's namespace from every
 * export, and reading three of them (`WebSocket`, `CloseEvent`, `MessageEvent`) loads Node's own bundled
 * undici, the one behind `fetch`: about 2.7 MiB of heap for the life of the process, which the proxy never
 * uses (docs/deployment.md#memory). `process.getBuiltinModule` hands over the module object as `require`
 * would. Type-only imports of node:http are erased by the compiler and need nothing of this.
 */
import type * as Http from 'node:http';

const http = process.getBuiltinModule('node:http');

export const { createServer, IncomingMessage, ServerResponse, STATUS_CODES } = http;
export type IncomingMessage = Http.IncomingMessage;
export type ServerResponse<Request extends Http.IncomingMessage = Http.IncomingMessage> = Http.ServerResponse<Request>;
