/**
 * One etcd watch driven by hand on the client's low-level Watch stream, as an
 * async iterator of whole revisions.
 *
 * Why not the etcd3 client's Watcher: on reconnect it resumes from the last
 * response header's revision + 1, and a header's revision is the store's
 * revision when the response was sent, which can be past the events in it (a
 * watcher catching up on history), so events can be skipped. Here the resume
 * point is the last delivered event's revision + 1, or, before any event, the
 * created response's header revision + 1 (nothing between them was missed).
 *
 * Each watch has its own gRPC stream. Ending it (signal, return(), failure)
 * half-closes and then cancels the stream: etcd keeps a watch open after a mere
 * half-close, and cancelling without ending first makes the etcd3 client mark the
 * connection as failed and reset it.
 */
import type { IDuplexStream, IEvent, IWatchRequest, IWatchResponse } from 'etcd3';
import { CompactedError, InternalError, TaskGraphError } from '@taskgraph/api';
import type { Clock, Logger, TimerHandle } from '@taskgraph/api';
import { Backoff } from '@taskgraph/backend-kit';
import type { KeyRange } from './keys.js';

export type WatchStream = IDuplexStream<IWatchRequest, IWatchResponse>;

/** The events of one revision. */
export interface RawBatch {
  readonly revision: bigint;
  readonly events: readonly IEvent[];
}

export interface RawWatchDeps {
  readonly open: () => Promise<WatchStream>;
  readonly clock: Clock;
  readonly logger: Logger;
  /** A failed stream as an error, and whether to reconnect after it (else the watch ends with it). */
  readonly mapFailure: (err: unknown) => { readonly error: TaskGraphError; readonly retry: boolean };
}

/** Batches buffered before the stream is paused until the consumer catches up. */
const HIGH_WATER = 256;
const LOW_WATER = 64;

interface Waiter {
  resolve(result: IteratorResult<RawBatch>): void;
  reject(err: unknown): void;
}

type Pausable = { pause?: () => void; resume?: () => void };

export class RawWatch implements AsyncIterableIterator<RawBatch> {
  readonly #deps: RawWatchDeps;
  readonly #range: KeyRange;
  readonly #what: string;
  readonly #signals: readonly AbortSignal[];
  readonly #onAbort = (): void => this.#finish(undefined);
  #queue: RawBatch[] = [];
  #failure: TaskGraphError | undefined;
  #done = false;
  #started = false;
  #waiter: Waiter | undefined;
  #stream: WatchStream | undefined;
  #paused = false;
  /** The first revision not yet delivered; undefined until etcd says where "now" is. */
  #next: bigint | undefined;
  #timer: TimerHandle | undefined;
  /** Reconnect delays, reset once etcd has created the watch again; capped as gRPC's reconnect backoff is here. */
  readonly #backoff = new Backoff(100, 2000);

  /**
   * @param after deliver revisions after this one; undefined: from when the stream is created
   * @param signals any of them aborting ends the iterator without error
   */
  constructor(deps: RawWatchDeps, range: KeyRange, after: bigint | undefined, signals: readonly AbortSignal[], what: string) {
    this.#deps = deps;
    this.#range = range;
    this.#what = what;
    this.#signals = signals;
    this.#next = after === undefined ? undefined : after + 1n;
    if (signals.some((s) => s.aborted)) {
      this.#done = true;
      return;
    }
    for (const s of signals) s.addEventListener('abort', this.#onAbort, { once: true });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<RawBatch>> {
    const batch = this.#queue.shift();
    if (batch) {
      this.#maybeResume();
      return Promise.resolve({ value: batch, done: false });
    }
    if (this.#failure) {
      const failure = this.#failure;
      this.#failure = undefined;
      return Promise.reject(failure);
    }
    if (this.#done) return Promise.resolve({ value: undefined, done: true });
    if (this.#waiter) return Promise.reject(new InternalError(`${this.#what}: next() was called before the previous next() settled`));
    if (!this.#started) {
      this.#started = true;
      this.#connect();
    }
    return new Promise((resolve, reject) => (this.#waiter = { resolve, reject }));
  }

  return(): Promise<IteratorResult<RawBatch>> {
    this.#finish(undefined);
    this.#queue = [];
    this.#failure = undefined;
    return Promise.resolve({ value: undefined, done: true });
  }

  #connect(): void {
    if (this.#done) return;
    let opening: Promise<WatchStream>;
    try {
      opening = this.#deps.open();
    } catch (err) {
      this.#onFailure(undefined, err);
      return;
    }
    opening.then(
      (stream) => {
        if (this.#done) {
          closeStream(stream);
          return;
        }
        this.#stream = stream;
        this.#paused = false;
        stream.on('data', (res: IWatchResponse) => this.#onResponse(stream, res));
        stream.on('error', (err: Error) => this.#onFailure(stream, err));
        stream.on('end', () => this.#onFailure(stream, new Error('etcd ended the watch stream')));
        stream.write({
          create_request: {
            key: this.#range.start,
            range_end: this.#range.end,
            ...(this.#next === undefined ? {} : { start_revision: this.#next.toString() }),
          },
        });
      },
      (err: unknown) => this.#onFailure(undefined, err),
    );
  }

  #onResponse(stream: WatchStream, res: IWatchResponse): void {
    if (stream !== this.#stream || this.#done) return;
    if (res.compact_revision !== undefined && res.compact_revision !== '0' && res.compact_revision !== '') {
      this.#finish(
        new CompactedError(
          `${this.#what}: etcd compacted its history up to revision ${res.compact_revision}, past the requested revision ${String(this.#next)}; list again and watch after the new revision`,
        ),
      );
      return;
    }
    if (res.canceled) {
      const reason = res.cancel_reason || 'no reason given';
      const { error, retry } = this.#deps.mapFailure(new Error(`etcd cancelled the watch: ${reason}`));
      if (retry) this.#onFailure(stream, error);
      else this.#finish(error);
      return;
    }
    if (res.created) {
      this.#backoff.reset();
      const head = BigInt(res.header.revision);
      if (this.#next === undefined) {
        this.#next = head + 1n;
      } else if (head + 1n < this.#next) {
        // Watching from a revision etcd has not reached would wait silently until it
        // does: after a data loss or against another cluster, that could be forever.
        this.#finish(
          new CompactedError(
            `${this.#what}: etcd is at revision ${head}, behind revision ${this.#next - 1n} this watch already saw (its data was replaced or lost); list again and watch after the new revision`,
          ),
        );
      }
      return;
    }
    let current: { revision: bigint; events: IEvent[] } | undefined;
    for (const event of res.events) {
      const revision = BigInt(event.kv.mod_revision);
      if (!current || current.revision !== revision) {
        if (current) this.#push(current);
        current = { revision, events: [] };
      }
      current.events.push(event);
    }
    if (current) this.#push(current);
    this.#deliver();
    if (this.#queue.length >= HIGH_WATER && !this.#paused) {
      this.#paused = true;
      (stream as unknown as Pausable).pause?.();
    }
  }

  #push(batch: RawBatch): void {
    this.#queue.push(batch);
    this.#next = batch.revision + 1n;
  }

  #maybeResume(): void {
    if (this.#paused && this.#queue.length <= LOW_WATER && this.#stream) {
      this.#paused = false;
      (this.#stream as unknown as Pausable).resume?.();
    }
  }

  #onFailure(stream: WatchStream | undefined, err: unknown): void {
    if (this.#done || (stream !== undefined && stream !== this.#stream)) return;
    this.#closeStream();
    const { error, retry } = TaskGraphError.is(err) ? { error: err, retry: err.retryable } : this.#deps.mapFailure(err);
    if (!retry) {
      this.#finish(error);
      return;
    }
    const delay = this.#backoff.next();
    this.#deps.logger.debug('etcd watch stream failed; reconnecting', { watch: this.#what, next: String(this.#next), delayMs: Math.round(delay), error: error.message });
    const timer = this.#deps.clock.setTimeout(() => {
      this.#timer = undefined;
      this.#connect();
    }, delay);
    timer.unref?.();
    this.#timer = timer;
  }

  #deliver(): void {
    const waiter = this.#waiter;
    if (!waiter) return;
    const batch = this.#queue.shift();
    if (batch) {
      this.#waiter = undefined;
      waiter.resolve({ value: batch, done: false });
      return;
    }
    if (this.#failure) {
      this.#waiter = undefined;
      const failure = this.#failure;
      this.#failure = undefined;
      waiter.reject(failure);
      return;
    }
    if (this.#done) {
      this.#waiter = undefined;
      waiter.resolve({ value: undefined, done: true });
    }
  }

  /** Ends the watch: with `failure` (delivered after the batches already queued), or quietly on abort. */
  #finish(failure: TaskGraphError | undefined): void {
    if (this.#done) return;
    this.#done = true;
    if (failure) this.#failure = failure;
    else this.#queue = [];
    for (const s of this.#signals) s.removeEventListener('abort', this.#onAbort);
    if (this.#timer) {
      this.#deps.clock.clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    this.#closeStream();
    this.#deliver();
  }

  #closeStream(): void {
    const stream = this.#stream;
    this.#stream = undefined;
    if (stream) closeStream(stream);
  }
}

export function closeStream(stream: IDuplexStream<unknown, unknown>): void {
  // Errors from here on belong to a stream nobody listens to any more.
  stream.on('error', () => undefined);
  try {
    stream.end();
  } catch {
    // already ended
  }
  try {
    stream.cancel();
  } catch {
    // already cancelled
  }
}
