/**
 * Turns the phases a user or a plugin wrote (public `Phases<Ctx>`, hooks taking a Session and the phase's
 * own context) into the core's phases (hooks taking the RequestContext), once per route when a generation
 * is built. Each adapted hook catches what the user's hook throws or rejects with, logs and counts it, and
 * turns it into a 500 for that request; the built-in phases are not wrapped, and a route without user phases
 * has none of this on its path.
 */
import type { Logger } from 'pino';
import type { RequestContext } from '../proxy/context.js';
import { ERROR_CATALOGUE, ProxyError, type ErrorCode } from '../proxy/errors.js';
import type { FilterResult, PeerChoice as CorePeerChoice, Phases as CorePhases } from '../proxy/phases.js';
import type { AnyPhases, RequestFilterResult } from './phases.js';
import { SessionImpl, type Responder } from './session.js';

/** A user phase with the name its failures are logged and counted under. */
export interface UserPhase {
  readonly name: string;
  readonly phases: AnyPhases;
}

/** What the adapted hooks need from the process. */
export interface UserPhaseDeps {
  logger: Logger;
  /** Counts one failure of a user hook (`tollgate_phase_errors_total`). */
  countError(phase: string, hook: string): void;
}

type HookName = 'newContext' | 'requestFilter' | 'upstreamPeer' | 'upstreamRequestFilter' | 'responseFilter' | 'failToProxy' | 'logging';

/** The route's user phases as core phases, in the same order. */
export function adaptPhases(user: readonly UserPhase[], deps: UserPhaseDeps, responder: Responder): CorePhases[] {
  const count = user.length;
  const sessionOf = (ctx: RequestContext): SessionImpl => (ctx.session ??= new SessionImpl(ctx, responder, count));
  return user.map((entry, slot) => adaptOne(entry, slot, deps, sessionOf));
}

function adaptOne(entry: UserPhase, slot: number, deps: UserPhaseDeps, sessionOf: (ctx: RequestContext) => SessionImpl): CorePhases {
  const { name, phases } = entry;
  /** Logs and counts a failure; the error a request gets for it. */
  const failed = (ctx: RequestContext, hook: HookName, err: unknown): ProxyError => {
    deps.logger.error({ err, request_id: ctx.requestId, phase: name, hook }, `phase ${name}: ${hook} failed`);
    deps.countError(name, hook);
    return new ProxyError('internal_error', { cause: err });
  };
  /** A void hook that returned a promise: its rejection is reported, never left unhandled. */
  const settleVoid = (ctx: RequestContext, hook: HookName, result: unknown): void => {
    if (isThenable(result)) result.then(undefined, (err: unknown) => void failed(ctx, hook, err));
  };
  const contextOf = (session: SessionImpl, hook: HookName): unknown => {
    session.hook = hook;
    if (!session.made[slot]) {
      session.made[slot] = true;
      if (phases.newContext !== undefined) session.contexts[slot] = phases.newContext();
    }
    return session.contexts[slot];
  };

  const core: { -readonly [K in keyof CorePhases]: CorePhases[K] } = { name };
  const requestFilter = phases.requestFilter;
  if (requestFilter !== undefined) {
    const settled = (ctx: RequestContext, session: SessionImpl, result: RequestFilterResult): FilterResult => {
      if (session.answered) return true;
      if (result === undefined || result === false || result === null) return false;
      if (result === true) return failed(ctx, 'requestFilter', new Error('returned true without answering (use session.json, text or respond)'));
      return asProxyError(result) ?? failed(ctx, 'requestFilter', new TypeError(`returned ${describe(result)}; expected nothing, false, true or a ProxyError`));
    };
    core.requestFilter = function userRequestFilter(ctx: RequestContext): FilterResult | Promise<FilterResult> {
      const session = sessionOf(ctx);
      let result: RequestFilterResult | Promise<RequestFilterResult>;
      try {
        result = requestFilter.call(phases, session, contextOf(session, 'requestFilter'));
      } catch (err) {
        return session.answered ? true : failed(ctx, 'requestFilter', err);
      }
      if (!isThenable(result)) return settled(ctx, session, result);
      return Promise.resolve(result).then(
        (value) => (isThenable(value) ? failed(ctx, 'requestFilter', new TypeError('resolved to a promise')) : settled(ctx, session, value)),
        (err: unknown) => (session.answered ? true : failed(ctx, 'requestFilter', err)),
      );
    };
  }
  const upstreamPeer = phases.upstreamPeer;
  if (upstreamPeer !== undefined) {
    core.upstreamPeer = function userUpstreamPeer(ctx: RequestContext): CorePeerChoice | undefined {
      const session = sessionOf(ctx);
      let choice: unknown;
      try {
        choice = upstreamPeer.call(phases, session, contextOf(session, 'upstreamPeer'));
      } catch (err) {
        throw failed(ctx, 'upstreamPeer', err);
      }
      if (choice === undefined || choice === null) return undefined;
      const { service, upstream } = choice as { service?: unknown; upstream?: unknown };
      if (typeof service !== 'string' || (upstream !== undefined && typeof upstream !== 'string')) {
        throw failed(ctx, 'upstreamPeer', new TypeError(`returned ${describe(choice)}; expected session.choose(service, upstream?) or nothing`));
      }
      return upstream === undefined ? { service } : { service, upstream };
    };
  }
  const upstreamRequestFilter = phases.upstreamRequestFilter;
  if (upstreamRequestFilter !== undefined) {
    core.upstreamRequestFilter = function userUpstreamRequestFilter(ctx: RequestContext): void {
      const session = sessionOf(ctx);
      try {
        settleVoid(ctx, 'upstreamRequestFilter', upstreamRequestFilter.call(phases, session, contextOf(session, 'upstreamRequestFilter')));
      } catch (err) {
        throw failed(ctx, 'upstreamRequestFilter', err);
      }
    };
  }
  const responseFilter = phases.responseFilter;
  if (responseFilter !== undefined) {
    core.responseFilter = function userResponseFilter(ctx: RequestContext, headers: string[]): void {
      const session = sessionOf(ctx);
      session.useResponseList(headers);
      try {
        settleVoid(ctx, 'responseFilter', responseFilter.call(phases, session, contextOf(session, 'responseFilter')));
      } catch (err) {
        // On an upstream's response head (the forwarding handler catches this and answers 500 in its place);
        // on a response Tollgate generates (an error, a redirect, the phase's own answer) there is nothing
        // better to send: it goes out as it is.
        const upstreamHead = ctx.error === undefined && ctx.upstreamLatency >= 0 && !session.responseFailed;
        if (session.responseFailed) deps.logger.error({ err, request_id: ctx.requestId, phase: name, hook: 'responseFilter' }, `phase ${name}: responseFilter failed again on the error response`);
        else {
          const error = failed(ctx, 'responseFilter', err);
          session.responseFailed = true;
          if (upstreamHead) throw error;
        }
      } finally {
        session.useResponseList(undefined);
      }
    };
  }
  const failToProxy = phases.failToProxy;
  if (failToProxy !== undefined) {
    core.failToProxy = function userFailToProxy(ctx: RequestContext, error: ProxyError): ProxyError | undefined {
      const session = sessionOf(ctx);
      try {
        const replaced: unknown = failToProxy.call(phases, session, contextOf(session, 'failToProxy'), error);
        settleVoid(ctx, 'failToProxy', replaced);
        return asProxyError(replaced);
      } catch (err) {
        failed(ctx, 'failToProxy', err);
        return undefined;
      }
    };
  }
  const logging = phases.logging;
  if (logging !== undefined) {
    core.logging = function userLogging(ctx: RequestContext): void {
      const session = sessionOf(ctx);
      try {
        settleVoid(ctx, 'logging', logging.call(phases, session, contextOf(session, 'logging')));
      } catch (err) {
        failed(ctx, 'logging', err);
      }
    };
  }
  return core;
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof value === 'object' && value !== null && typeof (value as { then?: unknown }).then === 'function';
}

/**
 * A ProxyError, also one made by another copy of Tollgate (a plugin that imports its own): rebuilt from its
 * code and message. Undefined for anything else.
 */
function asProxyError(value: unknown): ProxyError | undefined {
  if (value instanceof ProxyError) return value;
  if (typeof value !== 'object' || value === null) return undefined;
  const { name, code, message } = value as { name?: unknown; code?: unknown; message?: unknown };
  if (name !== 'ProxyError' || typeof code !== 'string' || !Object.hasOwn(ERROR_CATALOGUE, code)) return undefined;
  return new ProxyError(code as ErrorCode, typeof message === 'string' ? { message } : undefined);
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'object') return 'an object';
  return `${typeof value} ${String(value).slice(0, 40)}`;
}
