/**
 * The job-wide epoch as one node sees it: the current epoch and its context (the
 * `ctx` handed to callbacks and handlers), following `<job>/state/epoch` from the
 * watch, checking the contexts callers pass back, and advancing by compare-and-set.
 */
import { setMaxListeners } from 'node:events';
import { EpochChangedError, InvalidArgumentError, abortError } from '@taskgraph/api';
import type { Clock, Coordinator, EpochContext, Logger, Version } from '@taskgraph/api';
import { decodeEpoch, encodeEpoch, keys } from './layout.js';
import type { NodeStats } from './stats.js';
import { casUpdate } from './store-ops.js';

export interface EpochScope {
  readonly context: EpochContext;
  readonly ended: boolean;
  /** Ends the epoch: its signal, if anyone made it, aborts with `reason()`; one made later is born aborted. */
  end(reason: () => Error): void;
}

/**
 * An epoch's context, whose AbortSignal is made only when first read: most epochs
 * of most tasks never read it, and making, aborting and dispatching a signal (and
 * building its reason) for every task at every epoch is a good part of an epoch
 * change's CPU when many nodes share a process. The getter is an own enumerable
 * property, so a spread copy of the context still has its signal.
 */
export function epochScope(epoch: number): EpochScope {
  let controller: AbortController | undefined;
  let reason: (() => Error) | undefined;
  const context: EpochContext = {
    epoch,
    get signal(): AbortSignal {
      if (controller === undefined) {
        controller = new AbortController();
        // Every data request in flight listens on the epoch's signal; dozens at once are normal.
        setMaxListeners(0, controller.signal);
        if (reason !== undefined) controller.abort(reason());
      }
      return controller.signal;
    },
  };
  return {
    context,
    get ended() {
      return reason !== undefined;
    },
    end(why) {
      if (reason !== undefined) return;
      reason = why;
      controller?.abort(why());
    },
  };
}

/**
 * Builds an error without capturing a stack trace: epoch ends abort every node's
 * context at once, and a stack per node per epoch was a measurable share of the cost.
 */
function withoutStack<T>(make: () => T): T {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return make();
  } finally {
    Error.stackTraceLimit = limit;
  }
}

export interface EpochTrackerOptions {
  readonly job: string;
  readonly coordinator: Coordinator;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly stats: NodeStats;
  /** Called after the epoch changed (the old epoch's context is already ended). */
  readonly onChange: (epoch: number, previous: number) => void;
}

export class EpochTracker {
  private current = -1;
  /** The version of the epoch key as the watch last delivered it: an advance needs no read. */
  private version: Version | undefined;
  private scope: EpochScope = epochScope(-1);
  private readonly key: string;

  constructor(private readonly o: EpochTrackerOptions) {
    this.key = keys.epoch(o.job);
  }

  /** The current epoch (-1 before the first value is known). */
  get epoch(): number {
    return this.current;
  }

  /** The current epoch's context: one object per epoch. */
  get context(): EpochContext {
    return this.scope.context;
  }

  /** A value of the epoch key, from the watch. Decoding failures are the caller's to report. */
  apply(value: Uint8Array, version: Version): void {
    const epoch = decodeEpoch(this.key, value);
    this.version = version;
    if (epoch === this.current) return;
    if (epoch < this.current) {
      this.o.logger.error('the epoch went backwards in the store (restored from an old backup?); following it', { from: this.current, to: epoch });
    } else if (this.current >= 0 && epoch > this.current + 1) {
      // Epochs move one at a time by compare-and-set: a jump was written by hand (or by something else).
      this.o.logger.warn('the epoch jumped by more than one in the store; following it', { from: this.current, to: epoch });
    }
    const previous = this.current;
    this.scope.end(() => withoutStack(() => new EpochChangedError(`epoch ${previous} is over`, { details: { current: epoch } })));
    this.scope = epochScope(epoch);
    this.current = epoch;
    this.o.onChange(epoch, previous);
  }

  /** Ends the current epoch's context for good (the node is leaving). */
  end(reason: Error): void {
    this.scope.end(() => reason);
  }

  /**
   * Checks a context a caller passed back: the current epoch's own context passes
   * without making its signal; any other must be a live context of the current epoch.
   * `alive()` throws when the node has left, checked after the context's shape.
   */
  check(ctx: EpochContext, alive: () => void): void {
    if (ctx === this.scope.context && !this.scope.ended) {
      alive();
      return;
    }
    if (!ctx || typeof ctx.epoch !== 'number' || !(ctx.signal instanceof AbortSignal)) {
      throw new InvalidArgumentError('pass the EpochContext your callback received');
    }
    alive();
    if (ctx.signal.aborted) throw abortError(ctx.signal);
    if (ctx.epoch !== this.current) throw this.changed(ctx.epoch);
  }

  /**
   * Moves the job from `ctx.epoch` to the next epoch: one compare-and-set on the
   * epoch key, with the version the watch delivered (no read). EpochChangedError
   * when the job is no longer in `ctx.epoch`. `beforeWrite` throws to stop.
   */
  async advance(ctx: EpochContext, beforeWrite: () => void): Promise<void> {
    const key = this.key;
    const known = this.version !== undefined && this.current === ctx.epoch ? { key, value: encodeEpoch(ctx.epoch), version: this.version } : undefined;
    await casUpdate(
      this.o.coordinator,
      key,
      (entry) => {
        if (this.current !== ctx.epoch) throw this.changed(ctx.epoch);
        let stored: number | undefined;
        if (entry) {
          try {
            stored = decodeEpoch(key, entry.value);
          } catch (err) {
            // The last readable epoch is ctx.epoch (this node follows it): the owner repairs
            // the key while advancing, by compare-and-set on the corrupt value's version.
            this.o.logger.warn("repairing a corrupt epoch key while advancing from the last readable epoch", { key, epoch: ctx.epoch, error: (err as Error).message });
            return encodeEpoch(ctx.epoch + 1);
          }
        } else {
          this.o.logger.warn("repairing a missing epoch key while advancing from the last readable epoch", { key, epoch: ctx.epoch });
          return encodeEpoch(ctx.epoch + 1);
        }
        if (stored !== ctx.epoch) throw this.changed(ctx.epoch, stored);
        return encodeEpoch(ctx.epoch + 1);
      },
      { clock: this.o.clock, signal: ctx.signal, known, beforeWrite, onWrite: () => this.o.stats.writes.epoch++ },
    );
    this.o.logger.debug('epoch advanced', { from: ctx.epoch, to: ctx.epoch + 1 });
  }

  /** The error for a caller whose epoch `asked` is over. */
  changed(asked: number, current: number = this.current): EpochChangedError {
    return new EpochChangedError(`epoch ${asked} is over (the job is in epoch ${current})`, { details: { current, requested: asked } });
  }
}
