/**
 * The `Session` façade over a RequestContext, made for a request the first time one of its route's user
 * phases runs (routes without user phases never make one). It also holds each user phase's context.
 */
import type { RequestContext } from '../proxy/context.js';
import { ProxyError, type ErrorCode } from '../proxy/errors.js';
import type { HeaderEditor, PeerChoice, RouteInfo, Session, UpstreamInfo } from './phases.js';

/** Sends a response Tollgate-style (its headers, the response filters): the generation's pipeline. */
export interface Responder {
  writeHead(ctx: RequestContext, status: number, headers: string[]): void;
}

/**
 * A flat name/value list edited in place. `boundary` is the RequestContext whose `forwardHeaderCount`
 * marks where the client's headers end in `forwardHeaders`: removing one before it moves the mark, so a
 * retry (which cuts the list back to the mark and appends Tollgate's headers again) keeps the edit.
 */
export class HeaderList implements HeaderEditor {
  #list: string[];
  readonly #boundary: RequestContext | undefined;

  constructor(list: string[], boundary?: RequestContext) {
    this.#list = list;
    this.#boundary = boundary;
  }

  /** Points the editor at another list (the response filter's, then the context's again). */
  use(list: string[]): void {
    this.#list = list;
  }

  get(name: string): string | undefined {
    const list = this.#list;
    const lower = name.toLowerCase();
    for (let i = 0; i < list.length; i += 2) if ((list[i] as string).toLowerCase() === lower) return list[i + 1] as string;
    return undefined;
  }

  getAll(name: string): string[] {
    const list = this.#list;
    const lower = name.toLowerCase();
    const out: string[] = [];
    for (let i = 0; i < list.length; i += 2) if ((list[i] as string).toLowerCase() === lower) out.push(list[i + 1] as string);
    return out;
  }

  has(name: string): boolean {
    return this.get(name) !== undefined;
  }

  set(name: string, value: string): void {
    checkHeader(name, value);
    const list = this.#list;
    const lower = name.toLowerCase();
    let at = -1;
    for (let i = 0; i < list.length; i += 2) {
      if ((list[i] as string).toLowerCase() !== lower) continue;
      if (at === -1) {
        at = i;
        list[i + 1] = value;
      } else {
        this.#removeAt(i);
        i -= 2;
      }
    }
    if (at === -1) this.#push(name, value);
  }

  append(name: string, value: string): void {
    checkHeader(name, value);
    this.#push(name, value);
  }

  delete(name: string): void {
    const list = this.#list;
    const lower = name.toLowerCase();
    for (let i = 0; i < list.length; i += 2) {
      if ((list[i] as string).toLowerCase() !== lower) continue;
      this.#removeAt(i);
      i -= 2;
    }
  }

  entries(): [string, string][] {
    const list = this.#list;
    const out: [string, string][] = [];
    for (let i = 0; i < list.length; i += 2) out.push([list[i] as string, list[i + 1] as string]);
    return out;
  }

  /**
   * Before Tollgate appends its own headers (requestFilter, upstreamPeer) the list ends at the mark: what is
   * added there belongs with the client's headers, so the mark moves past it and a retry keeps it.
   */
  #push(name: string, value: string): void {
    const ctx = this.#boundary;
    const atMark = ctx !== undefined && this.#list === ctx.forwardHeaders && this.#list.length === ctx.forwardHeaderCount;
    this.#list.push(name, value);
    if (atMark) ctx.forwardHeaderCount += 2;
  }

  #removeAt(i: number): void {
    this.#list.splice(i, 2);
    const ctx = this.#boundary;
    if (ctx !== undefined && this.#list === ctx.forwardHeaders && i < ctx.forwardHeaderCount) ctx.forwardHeaderCount -= 2;
  }
}

/** RFC 9110 token characters for names; values without control characters (Node would throw later). */
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

function checkHeader(name: string, value: string): void {
  if (!TOKEN.test(name)) throw new TypeError(`invalid header name ${JSON.stringify(name)}`);
  if (typeof value !== 'string' || !VALUE.test(value)) throw new TypeError(`invalid value for header ${name}`);
}

export class SessionImpl implements Session {
  readonly #ctx: RequestContext;
  readonly #responder: Responder;
  /** Each user phase's context, by its position among the route's user phases (made on first use). */
  readonly contexts: unknown[];
  /** Which of `contexts` have been made. */
  readonly made: boolean[];
  /** Set by json/text/respond: a requestFilter that returns true must have answered. */
  answered = false;
  /** The user hook running now, so the helpers know which phase calls them. */
  hook = '';
  /** A user response filter failed on this request's upstream response head (it is answered with 500 instead). */
  responseFailed = false;
  readonly #upstream: HeaderList;
  readonly #response: HeaderList;
  #route: RouteInfo | undefined;

  constructor(ctx: RequestContext, responder: Responder, phases: number) {
    this.#ctx = ctx;
    this.#responder = responder;
    this.contexts = new Array<unknown>(phases).fill(undefined);
    this.made = new Array<boolean>(phases).fill(false);
    this.#upstream = new HeaderList(ctx.forwardHeaders, ctx);
    this.#response = new HeaderList(ctx.responseHeaders);
  }

  get requestId(): string {
    return this.#ctx.requestId;
  }

  get method(): string {
    return this.#ctx.req.method ?? 'GET';
  }

  get path(): string {
    return this.#ctx.path;
  }

  get protocol(): 'http/1.1' | 'h2' {
    return this.#ctx.protocol;
  }

  get clientAddress(): string {
    return this.#ctx.clientAddress;
  }

  get route(): RouteInfo {
    const route = this.#ctx.route;
    this.#route ??= { name: route?.name ?? 'none', service: route?.service?.name };
    return this.#route;
  }

  get identity(): string | undefined {
    return this.#ctx.principal;
  }

  requestHeader(name: string): string | undefined {
    const value = this.#ctx.req.headers[name.toLowerCase()];
    return Array.isArray(value) ? value.join(', ') : value;
  }

  cookie(name: string): string | undefined {
    const header = this.#ctx.req.headers.cookie;
    if (header === undefined) return undefined;
    for (const pair of header.split(';')) {
      const eq = pair.indexOf('=');
      if (eq === -1 || pair.slice(0, eq).trim() !== name) continue;
      const value = pair.slice(eq + 1).trim();
      return value.length >= 2 && value.startsWith('"') && value.endsWith('"') ? value.slice(1, -1) : value;
    }
    return undefined;
  }

  get upstreamHeaders(): HeaderEditor {
    // #readHeaders replaces the list after the session may have been made (a 404's phases never run, but be exact).
    this.#upstream.use(this.#ctx.forwardHeaders);
    return this.#upstream;
  }

  get responseHeaders(): HeaderEditor {
    return this.#response;
  }

  /** The response filter's list while it runs; the context's list otherwise. */
  useResponseList(list: string[] | undefined): void {
    this.#response.use(list ?? this.#ctx.responseHeaders);
  }

  get status(): number {
    return this.#ctx.status;
  }

  get upstream(): UpstreamInfo | undefined {
    const backend = this.#ctx.backend;
    if (backend === undefined) return undefined;
    return { service: backend.service, name: backend.name, address: backend.address, port: backend.port };
  }

  get upstreamLatencyMs(): number {
    return this.#ctx.upstreamLatency;
  }

  elapsedMs(): number {
    return performance.now() - this.#ctx.startedAt;
  }

  get error(): ProxyError | undefined {
    return this.#ctx.error;
  }

  refuse(code: ErrorCode, message?: string): ProxyError {
    return new ProxyError(code, message === undefined ? undefined : { message });
  }

  json(status: number, body: unknown, headers?: Readonly<Record<string, string>>): true {
    return this.respond(status, JSON.stringify(body), 'application/json; charset=utf-8', headers);
  }

  text(status: number, body: string, headers?: Readonly<Record<string, string>>): true {
    return this.respond(status, body, 'text/plain; charset=utf-8', headers);
  }

  respond(status: number, body: string | Uint8Array, contentType: string, headers?: Readonly<Record<string, string>>): true {
    if (this.hook !== 'requestFilter') throw new Error(`a response can only be sent from requestFilter, not ${this.hook}`);
    if (this.answered) throw new Error('this request has already been answered');
    if (!Number.isInteger(status) || status < 200 || status > 599) throw new RangeError(`status must be an integer 200-599, got ${status}`);
    const ctx = this.#ctx;
    const bytes = typeof body === 'string' ? Buffer.from(body) : body;
    const list = new HeaderList([]);
    if (headers !== undefined) for (const [name, value] of Object.entries(headers)) list.append(name, value);
    list.set('Content-Type', contentType);
    list.set('Content-Length', String(bytes.byteLength));
    this.answered = true;
    const flat = list.entries().flat();
    this.#responder.writeHead(ctx, status, flat);
    ctx.bytesSent = ctx.req.method === 'HEAD' ? 0 : bytes.byteLength;
    ctx.res.end(bytes);
    return true;
  }

  choose(service: string, upstream?: string): PeerChoice {
    return upstream === undefined ? { service } : { service, upstream };
  }
}
