/**
 * The data plane's client side: `dataRequest` resolves the target task's node from
 * the address book (never the store), sends the job, epoch, sender, target token
 * and a request id, and retries with jittered backoff through the failures a
 * failover produces, until an answer comes or the epoch ends. A request is never
 * resent into another epoch.
 */
import { abortError, DecodeFailedError, EpochChangedError, InvalidArgumentError, randomHex, randomOf, TaskGraphError } from '@taskgraph/api';
import type { Clock, EpochContext, Logger, MethodSpec, RequestMeta, Transport } from '@taskgraph/api';
import { Backoff, sleep } from '@taskgraph/backend-kit';
import type { AddressBook } from './address-book.js';
import type { NodeStats } from './stats.js';
import { traceDataRequest } from './tracing.js';
import type { DataRequestTrace } from './tracing.js';

export interface DataClientOptions {
  readonly job: string;
  readonly transport: Transport;
  readonly addresses: AddressBook;
  readonly clock: Clock;
  readonly stats: NodeStats;
  /** The default deadline of one attempt. */
  readonly attemptTimeoutMs: number;
  /** The error for a caller whose epoch `asked` is over, given the epoch the other side is in. */
  epochChanged(asked: number, current: number): EpochChangedError;
  logger(): Logger;
  /**
   * Told of each retry of a request to task `to`: `reason` is the failed attempt's
   * error code, `NO_ADDRESS` (the task has no owner known), or `EPOCH_BEHIND` (the
   * target has not entered the epoch yet).
   */
  onRetry?(to: number, method: string, reason: string): void;
  /** Told when a request to task `to` is answered after `retries` retries. */
  onRecovered?(to: number, retries: number): void;
}

/** Where an answer goes besides the caller's promise (the task's `dataReady`). */
export interface DataReceiver {
  onData(ctx: EpochContext, from: number, method: string, output: unknown): void;
}

export class DataClient {
  /** Request ids are a prefix unique to this client and a sequence number: no clock read or random draw per request. */
  private readonly requestPrefix: string;
  private requestSeq = 0;

  constructor(private readonly o: DataClientOptions) {
    this.requestPrefix = `${randomHex(o.clock, 6)}-`;
  }

  /**
   * Calls `method` on task `to` for task `from` (-1 for a caller that is not a task)
   * and resolves with the decoded output, which also goes to `receiver`. One async
   * frame from the encode to the decode: this is the hot path of the data plane (a
   * second one, the span's end, only when a tracing SDK records or carries the call).
   */
  request<I, O>(
    ctx: EpochContext,
    from: number,
    to: number,
    method: MethodSpec<I, O>,
    input: I,
    attemptTimeoutMs: number | undefined,
    receiver?: DataReceiver,
  ): Promise<O> {
    const t = traceDataRequest(this.o.job, from, to, method, ctx.epoch);
    const sent = this.send(ctx, from, to, method, input, attemptTimeoutMs, receiver, t);
    return t === undefined ? sent : t.settle(sent);
  }

  private async send<I, O>(
    ctx: EpochContext,
    from: number,
    to: number,
    method: MethodSpec<I, O>,
    input: I,
    attemptTimeoutMs: number | undefined,
    receiver: DataReceiver | undefined,
    t: DataRequestTrace | undefined,
  ): Promise<O> {
    if (!method || typeof method.name !== 'string' || !method.input || !method.output) {
      throw new InvalidArgumentError('dataRequest needs a MethodSpec ({ name, input, output })');
    }
    let payload: Uint8Array;
    try {
      payload = method.input.encode(input);
    } catch (err) {
      if (TaskGraphError.is(err)) throw err;
      throw new InvalidArgumentError(`dataRequest ${method.name}: cannot encode the input with ${method.input.name}: ${(err as Error).message}`, { cause: err });
    }
    const { addresses, clock } = this.o;
    const callOptions = { timeoutMs: attemptTimeoutMs ?? this.o.attemptTimeoutMs, signal: ctx.signal };
    const requestId = this.requestPrefix + String(++this.requestSeq);
    const backoff = new Backoff(10, 1000, randomOf(this.o.clock));
    let out: Uint8Array | undefined;
    let why = '';
    for (let attempt = 0; out === undefined; attempt++) {
      if (ctx.signal.aborted) throw abortError(ctx.signal, 'dataRequest');
      if (attempt > 0) {
        this.o.stats.retries++;
        this.o.onRetry?.(to, method.name, why);
      }
      const target = addresses.get(to);
      if (!target) {
        why = 'NO_ADDRESS';
        await this.waitForAddress(ctx.signal, backoff.next());
        continue;
      }
      try {
        const meta: RequestMeta = { job: this.o.job, from, to, epoch: ctx.epoch, token: target.token, requestId };
        out = await this.o.transport.call(target.address, method.name, t === undefined ? meta : t.attempt(meta, target.address), payload, callOptions);
        if (attempt > 0) this.o.onRecovered?.(to, attempt);
      } catch (err) {
        t?.failed(err);
        if (ctx.signal.aborted) throw abortError(ctx.signal, 'dataRequest');
        if (TaskGraphError.is(err, 'EPOCH_CHANGED')) {
          const theirs = (err as EpochChangedError).currentEpoch;
          if (theirs !== undefined && theirs > ctx.epoch) throw this.o.epochChanged(ctx.epoch, theirs);
          // The target has not entered our epoch yet: it will.
          why = 'EPOCH_BEHIND';
          await sleep(clock, backoff.next(), ctx.signal);
          continue;
        }
        if (TaskGraphError.is(err, 'NOT_OWNER', 'UNAVAILABLE')) {
          this.o.logger().debug('data request: target not reachable at its address; re-resolving', { to, method: method.name, address: target.address, code: err.code });
          why = err.code;
          await this.waitForAddress(ctx.signal, backoff.next());
          continue;
        }
        if (TaskGraphError.is(err) && err.retryable) {
          why = err.code;
          await sleep(clock, backoff.next(), ctx.signal);
          continue;
        }
        throw err;
      }
    }
    let output: O;
    try {
      output = method.output.decode(out);
    } catch (err) {
      if (TaskGraphError.is(err)) throw err;
      throw new DecodeFailedError(`dataRequest ${method.name} from task ${to}: cannot decode the output: ${(err as Error).message}`, { cause: err });
    }
    receiver?.onData(ctx, to, method.name, output);
    return output;
  }

  private async waitForAddress(signal: AbortSignal, ms: number): Promise<void> {
    try {
      await this.o.addresses.waitForChange(this.o.clock, ms, signal);
    } catch {
      throw abortError(signal, 'dataRequest');
    }
  }
}
