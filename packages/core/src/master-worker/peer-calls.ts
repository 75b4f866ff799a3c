/**
 * Calls between master and workers, on both ends. The calling end wraps the input
 * in an envelope with its incarnation and sends it with `dataRequest` (so it is
 * retried and follows the callee to its current node), after checking that this
 * node still holds its task. The serving end unwraps it, refuses a caller whose
 * incarnation is over, runs the interceptor, then the handler.
 */
import { ApplicationError, InvalidArgumentError, LeaseLostError, TaskGraphError, assertValidMethodName } from '@taskgraph/api';
import type { AnyMethodHandler, AnyPeerMethodHandler, BackedUpFramework, Caller, EpochContext, Interceptor, MethodSpec, NotifyOptions, PeerMethodHandler } from '@taskgraph/api';
import type { RuntimeInternals } from '../framework.js';
import { PARADIGM_PREFIX, callerOf, envelopeSpec } from './wire.js';
import type { Enveloped } from './wire.js';

export interface ServeOptions {
  /** 'the master' or 'worker 3', for errors. */
  readonly who: string;
  readonly rt: RuntimeInternals;
  readonly intercept: Interceptor | undefined;
  /** Throws when the caller's incarnation is over (beyond what the address book tells). */
  refuse?(caller: Caller, fromTask: number): void;
}

/** The application's peer methods as the task's served methods. */
export function servePeerMethods(handlers: readonly AnyPeerMethodHandler[] | undefined, o: ServeOptions): AnyMethodHandler[] {
  if (handlers !== undefined && !Array.isArray(handlers)) throw new InvalidArgumentError(`${o.who}: methods must be an array of { spec, handle }`);
  if (o.intercept !== undefined && typeof o.intercept !== 'function') throw new InvalidArgumentError(`${o.who}: intercept must be a function`);
  return (handlers ?? []).map((h) => {
    if (!h || !h.spec || typeof h.handle !== 'function') throw new InvalidArgumentError(`${o.who}: every method must be { spec, handle }`);
    assertValidMethodName(h.spec.name);
    if (h.spec.name.startsWith(PARADIGM_PREFIX)) throw new InvalidArgumentError(`${o.who} declares method "${h.spec.name}": names starting with "${PARADIGM_PREFIX}" are the framework's`);
    return peerMethod(h.spec, (ctx, input, caller) => h.handle(ctx, input, caller), o);
  });
}

/** One served method: the envelope is opened, the caller fenced and intercepted, then `handle` runs. */
export function peerMethod<I, O>(spec: MethodSpec<I, O>, handle: (ctx: EpochContext, input: I, caller: Caller) => O | Promise<O>, o: ServeOptions): AnyMethodHandler {
  const served: MethodSpec<Enveloped<I>, O> = envelopeSpec(spec);
  const handler = {
    spec: served,
    handle: async (ctx: EpochContext, env: Enveloped<I>, fromTask: number): Promise<O> => {
      const caller = callerOf(fromTask, env.incarnation);
      const current = o.rt.addresses.get(fromTask)?.incarnation;
      if (current !== undefined && env.incarnation < current) throw staleCaller(caller, current);
      o.refuse?.(caller, fromTask);
      if (o.intercept) {
        try {
          await o.intercept(ctx, { method: spec.name, caller, input: env.input });
        } catch (err) {
          if (TaskGraphError.is(err)) throw err;
          throw new ApplicationError(`${o.who} refused ${spec.name}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
        }
      }
      return handle(ctx, env.input, caller);
    },
  };
  return handler as unknown as AnyMethodHandler;
}

export function staleCaller(caller: Caller, current?: number): LeaseLostError {
  const who = caller.role === 'master' ? 'the master' : `worker ${caller.workerId}`;
  const now = current === undefined ? '' : ` (incarnation ${current} runs now)`;
  return new LeaseLostError(`a call from ${who}'s incarnation ${caller.incarnation}, which is over${now}, is refused`);
}

/**
 * Calls `spec` on task `toTask` for this node's task: only while it holds the task
 * (a node paused past its lease sends nothing once it runs again), bounded by the
 * epoch and `options.signal`.
 */
export function callPeer<I, O>(
  fw: BackedUpFramework,
  rt: RuntimeInternals,
  ctx: EpochContext,
  toTask: number,
  spec: MethodSpec<I, O>,
  input: I,
  options: NotifyOptions | undefined,
  what: string,
): Promise<O> {
  try {
    rt.assertOwner(what);
    const wire = envelopeSpec(spec);
    let callCtx = ctx;
    const signal = options?.signal;
    if (signal !== undefined) {
      if (!(signal instanceof AbortSignal)) throw new InvalidArgumentError(`${what}: options.signal must be an AbortSignal`);
      // Both signals are held by their owners (the epoch tracker, the caller) for the call's life.
      callCtx = { epoch: ctx.epoch, signal: AbortSignal.any([ctx.signal, signal]) };
    }
    const attempt = options?.attemptTimeoutMs;
    return fw.dataRequest(callCtx, toTask, wire, { incarnation: fw.getIncarnation(), input }, attempt === undefined ? {} : { attemptTimeoutMs: attempt });
  } catch (err) {
    return Promise.reject(err as Error);
  }
}

/** Pairs a method declaration with the code that serves it to the other side of the paradigm. */
export function servePeer<I, O>(spec: MethodSpec<I, O>, handle: (ctx: EpochContext, input: I, caller: Caller) => O | Promise<O>): PeerMethodHandler<I, O> {
  assertValidMethodName(spec.name);
  return { spec, handle };
}
