/**
 * A node's instrumentation, kept at the edges of its parts: the observers of its
 * events (`NodeEvent` of `@taskgraph/api`), a decorator that times its store calls,
 * and one that times its data requests. Nothing here is built while nobody
 * observes: an event object, a clock read, only when an observer listens.
 */
import { InvalidArgumentError, TaskGraphError } from '@taskgraph/api';
import type {
  AcquireOptions,
  Clock,
  Coordinator,
  CoordinatorCaps,
  CreateOptions,
  Entry,
  EpochContext,
  ListResult,
  Lock,
  LockHolder,
  LockOptions,
  Logger,
  MethodSpec,
  NodeEvent,
  NodeObserver,
  NodeSource,
  Session,
  SessionOptions,
  StoreOp,
  Version,
  WatchBatch,
  WatchOptions,
} from '@taskgraph/api';
import { DataClient } from './data-client.js';
import type { DataClientOptions, DataReceiver } from './data-client.js';

/** The observers of one node, and the source they are told the events come from. */
export class Instruments {
  private observers: readonly NodeObserver[] = [];
  private warned = false;

  constructor(
    readonly source: NodeSource,
    private readonly logger: () => Logger,
  ) {}

  /** True while someone observes: parts build events (and read clocks for them) only then. */
  get active(): boolean {
    return this.observers.length > 0;
  }

  /** Adds an observer; returns the function that removes it. */
  add(observer: NodeObserver): () => void {
    if (typeof observer !== 'function') throw new InvalidArgumentError('an instrumentation observer is a function (event, source) => void');
    this.observers = [...this.observers, observer];
    return () => {
      this.observers = this.observers.filter((o) => o !== observer);
    };
  }

  emit(event: NodeEvent): void {
    for (const o of this.observers) this.tell(o, event);
  }

  /** One observer only (the current state, replayed to an observer that was just added). */
  tell(observer: NodeObserver, event: NodeEvent): void {
    try {
      observer(event, this.source);
    } catch (err) {
      // An observer must never break the node; say so once.
      if (this.warned) return;
      this.warned = true;
      this.logger().warn('an instrumentation observer threw; its errors are ignored from now on', { event: event.type, error: err instanceof Error ? err.message : String(err) });
    }
  }
}

function errorCode(err: unknown): string {
  return TaskGraphError.is(err) ? err.code : 'UNKNOWN';
}

/**
 * The node's coordinator, each call reported with its duration (`store-op`). Watches
 * are streams, not calls: they pass through untimed.
 */
export class TimedCoordinator implements Coordinator {
  constructor(
    readonly inner: Coordinator,
    private readonly instruments: Instruments,
    private readonly clock: Clock,
  ) {}

  get caps(): CoordinatorCaps {
    return this.inner.caps;
  }

  private timed<T>(op: StoreOp, call: () => Promise<T>): Promise<T> {
    if (!this.instruments.active) return call();
    const started = this.clock.now();
    const report = (error?: string) => {
      const seconds = (this.clock.now() - started) / 1000;
      this.instruments.emit(error === undefined ? { type: 'store-op', op, seconds } : { type: 'store-op', op, seconds, error });
    };
    return call().then(
      (v) => {
        report();
        return v;
      },
      (err: unknown) => {
        report(errorCode(err));
        throw err;
      },
    );
  }

  get(key: string): Promise<Entry | undefined> {
    return this.timed('get', () => this.inner.get(key));
  }

  list(prefix: string): Promise<ListResult> {
    return this.timed('list', () => this.inner.list(prefix));
  }

  create(key: string, value: Uint8Array, options?: CreateOptions): Promise<Version> {
    return this.timed('create', () => this.inner.create(key, value, options));
  }

  update(key: string, value: Uint8Array, expect: Version): Promise<Version> {
    return this.timed('update', () => this.inner.update(key, value, expect));
  }

  delete(key: string, expect: Version): Promise<void> {
    return this.timed('delete', () => this.inner.delete(key, expect));
  }

  deletePrefix(prefix: string): Promise<void> {
    return this.timed('deletePrefix', () => this.inner.deletePrefix(prefix));
  }

  watch(prefix: string, options: WatchOptions): AsyncIterable<WatchBatch> {
    return this.inner.watch(prefix, options);
  }

  openSession(options: SessionOptions): Promise<Session> {
    return this.timed('openSession', () => this.inner.openSession(options));
  }

  endSession(id: string): Promise<void> {
    return this.timed('endSession', () => this.inner.endSession(id));
  }

  acquire(name: string, session: Session, options?: AcquireOptions): Promise<Lock> {
    return this.timed('acquire', () => this.inner.acquire(name, session, options));
  }

  tryAcquire(name: string, session: Session, options?: LockOptions): Promise<Lock | undefined> {
    return this.timed('tryAcquire', () => this.inner.tryAcquire(name, session, options));
  }

  holder(name: string): Promise<LockHolder | undefined> {
    return this.timed('holder', () => this.inner.holder(name));
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

/**
 * The data client, each request reported when it ends (`request-sent`): its duration
 * from the call to the answer or the failure, retries included. Unobserved, a request
 * is the data client's own, with no frame added.
 */
export class InstrumentedDataClient extends DataClient {
  constructor(
    options: DataClientOptions,
    private readonly instruments: Instruments,
  ) {
    super(options);
    this.clock = options.clock;
  }

  private readonly clock: Clock;

  override request<I, O>(
    ctx: EpochContext,
    from: number,
    to: number,
    method: MethodSpec<I, O>,
    input: I,
    attemptTimeoutMs: number | undefined,
    receiver?: DataReceiver,
  ): Promise<O> {
    if (!this.instruments.active) return super.request(ctx, from, to, method, input, attemptTimeoutMs, receiver);
    const started = this.clock.now();
    const report = (error?: string) => {
      const seconds = (this.clock.now() - started) / 1000;
      const name = typeof method?.name === 'string' ? method.name : '';
      this.instruments.emit(error === undefined ? { type: 'request-sent', to, method: name, seconds } : { type: 'request-sent', to, method: name, seconds, error });
    };
    return super.request(ctx, from, to, method, input, attemptTimeoutMs, receiver).then(
      (out) => {
        report();
        return out;
      },
      (err: unknown) => {
        report(errorCode(err));
        throw err;
      },
    );
  }
}
