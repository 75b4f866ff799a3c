/**
 * The Coordinator contract written once, over a backend's own operations (Vitess's
 * topo Server over its Conn). Every public method checks its input in one fixed
 * order, then the closed state, then the session it is given, and only then calls
 * the backend's hook, so bad input and a closed client fail the same way on every
 * backend, before any I/O.
 *
 * The order, for every method:
 *   1. input: key / prefix / lock name, value, version, TTL, that the session was
 *      opened here, lock owner, session id, signal types -> InvalidArgumentError
 *   2. the coordinator is closed                       -> ClosedError
 *   3. acquire's signal already aborted                -> its abort error
 *   4. the session is lost or closed                   -> LeaseLostError
 *   5. the backend's hook.
 * Input comes before the closed state because a malformed call is the caller's bug
 * whatever the client's state, and reporting it the same way every time is what
 * makes it findable.
 */
import {
  ClosedError,
  InvalidArgumentError,
  LeaseLostError,
  TaskGraphError,
  abortError,
  assertValidKey,
  assertValidPrefix,
  assertValidTtl,
  assertValidValue,
  systemClock,
} from '@taskgraph/api';
import type {
  AcquireOptions,
  Clock,
  Coordinator,
  CoordinatorCaps,
  CreateOptions,
  Entry,
  ListResult,
  Lock,
  LockHolder,
  LockOptions,
  Logger,
  Session,
  SessionOptions,
  Version,
  WatchBatch,
  WatchOptions,
} from '@taskgraph/api';
import { setMaxListeners } from 'node:events';
import { assertValidAfter, assertValidOwner, assertValidSessionId, assertValidSignal, assertValidVersion, describeKey } from './checks.js';
import type { LeaseSession, SessionContext } from './lease-session.js';
import { LockRegistry, TrackedLock } from './lock-registry.js';
import { silentLogger } from './logger.js';
import { Stops } from './stops.js';

export interface CoordinatorBaseOptions {
  readonly caps: CoordinatorCaps;
  /** How messages name this client, e.g. "memory coordinator client-3" or "etcd coordinator". */
  readonly label: string;
  /** The clock sessions keep their deadlines on. Default: the system clock. */
  readonly clock?: Clock;
  /** Default: silent. */
  readonly logger?: Logger;
}

/** A watch iterator that ends at once. */
function finished(): AsyncIterator<WatchBatch> {
  return { next: async () => ({ value: undefined, done: true }) };
}

/** A watch iterator whose first `next()` rejects with `err`, and which has ended after that. */
function failing(err: Error): AsyncIterator<WatchBatch> {
  let thrown = false;
  return {
    next: async () => {
      if (thrown) return { value: undefined, done: true };
      thrown = true;
      throw err;
    },
  };
}

export abstract class CoordinatorBase<S extends LeaseSession = LeaseSession> implements Coordinator {
  readonly caps: CoordinatorCaps;
  protected readonly clock: Clock;
  protected readonly logger: Logger;
  /** How messages name this client. */
  protected readonly label: string;
  /** Hand this to every session's constructor: it ties the session to this coordinator. */
  protected readonly sessionContext: SessionContext;
  readonly #closeController = new AbortController();
  /** Sessions neither closed nor lost: `close()` closes them. */
  readonly #sessions = new Set<LeaseSession>();
  /** Every session opened here, even ended ones: ownership is checked against it. */
  readonly #opened = new WeakMap<object, S>();
  readonly #background = new Set<Promise<void>>();
  /** Per session: its acquires in flight and its Locks not over yet, per lock name. */
  readonly #lockRegistries = new WeakMap<S, LockRegistry>();
  #closing: Promise<void> | undefined;

  constructor(options: CoordinatorBaseOptions) {
    // Every watch, lock wait and session of this client listens on it: a node host has hundreds at once.
    setMaxListeners(0, this.#closeController.signal);
    this.caps = options.caps;
    this.label = options.label;
    this.clock = options.clock ?? systemClock;
    this.logger = options.logger ?? silentLogger;
    this.sessionContext = {
      clock: this.clock,
      logger: this.logger,
      ended: (session, work) => {
        this.#sessions.delete(session);
        this.track(work);
      },
    };
  }

  // ---- what a backend implements --------------------------------------------------
  // Each hook is called with checked input, on an open coordinator, synchronously
  // from the public method: what a hook does before its first await (copying the
  // caller's buffer) happens before the caller gets the promise.

  protected abstract doGet(key: string): Promise<Entry | undefined>;
  protected abstract doList(prefix: string): Promise<ListResult>;
  /** `session`, if given, is live and was opened here. */
  protected abstract doCreate(key: string, value: Uint8Array, session: S | undefined): Promise<Version>;
  protected abstract doUpdate(key: string, value: Uint8Array, expect: Version): Promise<Version>;
  protected abstract doDelete(key: string, expect: Version): Promise<void>;
  protected abstract doDeletePrefix(prefix: string): Promise<void>;
  /**
   * Called by `watch()` at once (it is not async): check `after` here and throw
   * InvalidArgumentError if it is no revision of this backend, and take "now" here
   * if the watch starts from now. Start no I/O before the iterable is iterated (the
   * base calls this even on a closed coordinator). The iterable must end without
   * error when `signal` or `closedSignal` aborts. The base ends an iteration that starts after either
   * (Closed when the coordinator closed), without calling the iterable.
   */
  protected abstract doWatch(prefix: string, after: string | undefined, signal: AbortSignal): AsyncIterable<WatchBatch>;
  /**
   * Opens a session with the TTL rounded up to `caps.ttlGranularityMs`; construct it
   * with `this.sessionContext`. The base registers it, and closes it again if the
   * coordinator closed meanwhile.
   */
  protected abstract doOpenSession(ttlMs: number): Promise<S>;
  /**
   * Ends a session on the server by its id, whichever client opened it: its
   * ephemeral keys and locks go now. Resolve as well when the server does not know
   * the id (or it cannot be an id of this backend): ending is idempotent. Not called
   * for a live session of this client: the base closes that one itself.
   */
  protected abstract doEndSession(id: string): Promise<void>;
  /**
   * `session` was opened here and is live; `signal` has not aborted. Stop waiting on `acquireStops(...)`.
   *
   * No other acquire or tryAcquire of this session and name is in flight in this
   * client while the hook runs (the base waits for it first), but this client may
   * hold a Lock of it: {@link holdsLock}. When the store shows the lock held by
   * `session` and `holdsLock` is false, that holding is an earlier call's whose
   * answer was lost: return a Lock for it, with the token and owner the store
   * recorded (not `owner`), instead of waiting. When `holdsLock` is true, wait as for
   * any holder. The base tracks the Lock returned.
   */
  protected abstract doAcquire(name: string, session: S, owner: string, signal: AbortSignal | undefined): Promise<Lock>;
  /**
   * Called only when this client holds no Lock of this session and name and has no
   * acquire or tryAcquire of it in flight (the base answers undefined itself then):
   * so when the store shows the lock held by `session`, the holding is an earlier
   * call's whose answer was lost. Return a Lock for it, with the token and owner the
   * store recorded (not `owner`), rather than undefined. The base tracks the Lock returned.
   */
  protected abstract doTryAcquire(name: string, session: S, owner: string): Promise<Lock | undefined>;
  protected abstract doHolder(name: string): Promise<LockHolder | undefined>;
  /** Closes the backend's client. Runs once, after every session closed and all tracked work settled. */
  protected doClose(): Promise<void> {
    return Promise.resolve();
  }

  // ---- state ---------------------------------------------------------------------

  get closed(): boolean {
    return this.#closeController.signal.aborted;
  }

  /** Aborts (with a ClosedError) when `close()` begins: end watches and waits on it. */
  protected get closedSignal(): AbortSignal {
    return this.#closeController.signal;
  }

  /** Sessions opened by this client and neither closed nor lost. */
  get openSessions(): number {
    return this.#sessions.size;
  }

  // ---- keys ----------------------------------------------------------------------

  async get(key: string): Promise<Entry | undefined> {
    assertValidKey(key, this.caps.maxKeyBytes);
    this.assertOpen(`get of ${describeKey(key)}`);
    return this.doGet(key);
  }

  async list(prefix: string): Promise<ListResult> {
    assertValidPrefix(prefix, this.caps.maxKeyBytes);
    this.assertOpen(`list of ${describeKey(prefix)}`);
    return this.doList(prefix);
  }

  async create(key: string, value: Uint8Array, options: CreateOptions = {}): Promise<Version> {
    assertValidKey(key, this.caps.maxKeyBytes);
    assertValidValue(value, this.caps.maxValueBytes, key);
    const what = `create of ${describeKey(key)}`;
    const given = (options as Partial<CreateOptions> | null | undefined)?.session;
    const session = given === undefined ? undefined : this.#own(given, what);
    this.assertOpen(what);
    if (session) this.assertLive(session, what);
    return this.doCreate(key, value, session);
  }

  async update(key: string, value: Uint8Array, expect: Version): Promise<Version> {
    assertValidKey(key, this.caps.maxKeyBytes);
    assertValidValue(value, this.caps.maxValueBytes, key);
    const what = `update of ${describeKey(key)}`;
    assertValidVersion(expect, what);
    this.assertOpen(what);
    return this.doUpdate(key, value, expect);
  }

  async delete(key: string, expect: Version): Promise<void> {
    assertValidKey(key, this.caps.maxKeyBytes);
    const what = `delete of ${describeKey(key)}`;
    assertValidVersion(expect, what);
    this.assertOpen(what);
    return this.doDelete(key, expect);
  }

  async deletePrefix(prefix: string): Promise<void> {
    assertValidPrefix(prefix, this.caps.maxKeyBytes);
    this.assertOpen(`deletePrefix of ${describeKey(prefix)}`);
    return this.doDeletePrefix(prefix);
  }

  /** Throws InvalidArgumentError at once on bad input; a closed coordinator is reported by the iterator (ClosedError). */
  watch(prefix: string, options: WatchOptions): AsyncIterable<WatchBatch> {
    assertValidPrefix(prefix, this.caps.maxKeyBytes);
    const what = `watch of ${describeKey(prefix)}`;
    const given = options as Partial<WatchOptions> | null | undefined;
    const signal = given?.signal;
    assertValidSignal(signal, what);
    const after = given?.after;
    assertValidAfter(after, what);
    const source = this.doWatch(prefix, after, signal);
    return {
      [Symbol.asyncIterator]: (): AsyncIterator<WatchBatch> => {
        if (signal.aborted) return finished();
        if (this.closed) return failing(this.#closedError(what));
        return source[Symbol.asyncIterator]();
      },
    };
  }

  // ---- sessions ------------------------------------------------------------------

  async openSession(options: SessionOptions): Promise<S> {
    const ttlMs = (options as Partial<SessionOptions> | null | undefined)?.ttlMs;
    assertValidTtl(ttlMs, this.caps.ttlRangeMs, this.caps.backend);
    this.assertOpen('openSession');
    const granularity = this.caps.ttlGranularityMs;
    const session = await this.doOpenSession(granularity > 1 ? Math.ceil(ttlMs / granularity) * granularity : ttlMs);
    this.#opened.set(session, session);
    if (this.closed) {
      // Nobody would close it now: end it, so its keys do not wait for its TTL.
      await session.close();
      throw this.#closedError('openSession');
    }
    if (!session.lost.aborted) this.#sessions.add(session);
    return session;
  }

  /**
   * Ends a session by its id. A live session of this client is closed as its owner
   * would (so its `lost` fires with ClosedError at once); any other id goes to the
   * backend, whose owning client learns of it the way it learns of an expiry.
   */
  async endSession(id: string): Promise<void> {
    assertValidSessionId(id, this.caps.maxKeyBytes);
    this.assertOpen(`endSession of ${describeKey(id)}`);
    for (const own of this.#sessions) if (own.id === id) return own.close();
    return this.doEndSession(id);
  }

  // ---- locks ---------------------------------------------------------------------

  async acquire(name: string, session: Session, options: AcquireOptions = {}): Promise<Lock> {
    assertValidKey(name, this.caps.maxKeyBytes, 'lock name');
    const what = `acquire of lock ${describeKey(name)}`;
    const own = this.#own(session, what);
    const given = options as Partial<AcquireOptions> | null | undefined;
    const owner = given?.owner ?? own.id;
    assertValidOwner(owner, this.caps.maxKeyBytes);
    const signal = given?.signal;
    if (signal !== undefined) assertValidSignal(signal, what);
    this.assertOpen(what);
    if (signal?.aborted) throw abortError(signal, what);
    this.assertLive(own, what);
    const registry = this.#lockRegistry(own);
    // One call at a time per session and name: what an earlier call was granted is then never taken for a lost answer.
    if (registry.find(name)?.calling) {
      const stops = this.acquireStops(what, own, signal);
      for (let busy = registry.find(name); busy?.calling; busy = registry.find(name)) await busy.next(stops);
      this.assertOpen(what);
      this.assertLive(own, what);
    }
    const slot = registry.slot(name);
    slot.calling = true;
    let lock: Lock;
    try {
      lock = await this.doAcquire(name, own, owner, signal);
    } finally {
      slot.calling = false;
      registry.changed(name, slot);
    }
    return this.#track(registry, name, lock);
  }

  async tryAcquire(name: string, session: Session, options: LockOptions = {}): Promise<Lock | undefined> {
    assertValidKey(name, this.caps.maxKeyBytes, 'lock name');
    const what = `tryAcquire of lock ${describeKey(name)}`;
    const own = this.#own(session, what);
    const owner = (options as Partial<LockOptions> | null | undefined)?.owner ?? own.id;
    assertValidOwner(owner, this.caps.maxKeyBytes);
    this.assertOpen(what);
    this.assertLive(own, what);
    const registry = this.#lockRegistry(own);
    const slot = registry.slot(name);
    // A Lock of this session is live here, or a call for it is in flight: the session does not take it twice.
    if (!slot.idle) return undefined;
    slot.calling = true;
    let lock: Lock | undefined;
    try {
      lock = await this.doTryAcquire(name, own, owner);
    } finally {
      slot.calling = false;
      registry.changed(name, slot);
    }
    return lock && this.#track(registry, name, lock);
  }

  async holder(name: string): Promise<LockHolder | undefined> {
    assertValidKey(name, this.caps.maxKeyBytes, 'lock name');
    this.assertOpen(`holder of lock ${describeKey(name)}`);
    return this.doHolder(name);
  }

  // ---- lifecycle -----------------------------------------------------------------

  /**
   * Closes the client: `closedSignal` aborts (new calls reject with ClosedError,
   * watches and waits end), every open session is closed, tracked work settles,
   * then `doClose()` runs. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#closeController.abort(this.#closedError('close'));
    await Promise.all([...this.#sessions].map((s) => s.close()));
    // Work settling may start more (a session's end tracks its clean-up): wait until none is left.
    while (this.#background.size > 0) await Promise.all([...this.#background]);
    await this.doClose();
  }

  // ---- for hooks -----------------------------------------------------------------

  /** Throws ClosedError if the coordinator is closed. For hooks that waited: check again after waiting. */
  protected assertOpen(what: string): void {
    if (this.closed) throw this.#closedError(what);
  }

  /** Throws LeaseLostError if the session is lost or closed (judged by the clock). For hooks that waited. */
  protected assertLive(session: S, what: string): void {
    if (!session.isLost()) return;
    const reason: unknown = session.lost.reason;
    const why = TaskGraphError.is(reason, 'CLOSED') ? 'was closed' : 'is lost';
    throw new LeaseLostError(`${what}: session ${session.id} ${why}`, { cause: reason });
  }

  /**
   * Why a waiting acquire must stop, in order of precedence: the coordinator closed
   * (ClosedError), the caller's signal aborted (its abort error), the session was
   * lost or closed (LeaseLostError).
   */
  protected acquireStops(what: string, session: S, signal: AbortSignal | undefined): Stops {
    const closed = this.#closeController.signal;
    return new Stops([
      { signal: closed, error: () => this.#closedError(what) },
      ...(signal ? [{ signal, error: () => abortError(signal, what) }] : []),
      {
        signal: session.lost,
        error: () => new LeaseLostError(`${what}: session ${session.id} was lost or closed while waiting`, { cause: session.lost.reason }),
      },
    ]);
  }

  /**
   * True when this client holds a Lock of `session` for `name` that is neither lost
   * nor released (one whose release is in flight counts). A holding of `session` the
   * store shows while this is false came from a call whose answer was lost.
   */
  protected holdsLock(session: S, name: string): boolean {
    return (this.#lockRegistries.get(session)?.find(name)?.locks.size ?? 0) > 0;
  }

  /**
   * Resolves once {@link holdsLock} is false, or rejects with the error of the first
   * of `stops` to fire: for a backend whose acquire cannot queue behind its own
   * session's holding on the server, and so waits for it here.
   */
  protected async untilLockFree(session: S, name: string, stops: Stops): Promise<void> {
    const registry = this.#lockRegistry(session);
    for (;;) {
      const slot = registry.find(name);
      if (slot === undefined || slot.locks.size === 0) return;
      await slot.next(stops);
    }
  }

  /**
   * Keeps background work (a revoke, a clean-up) that `close()` must wait for
   * before `doClose()`. Its failure is logged, never thrown.
   */
  protected track(work: Promise<unknown>): void {
    const settled = work.then(
      () => undefined,
      (err: unknown) => this.logger.debug('background work failed', { error: String(err) }),
    );
    this.#background.add(settled);
    void settled.finally(() => this.#background.delete(settled));
  }

  // ---- internals -------------------------------------------------------------------

  #own(session: unknown, what: string): S {
    const own = typeof session === 'object' && session !== null ? this.#opened.get(session) : undefined;
    if (own === undefined) throw new InvalidArgumentError(`${what}: the session was not opened by this ${this.label}`);
    return own;
  }

  #lockRegistry(session: S): LockRegistry {
    let registry = this.#lockRegistries.get(session);
    if (registry === undefined) {
      registry = new LockRegistry();
      this.#lockRegistries.set(session, registry);
    }
    return registry;
  }

  /** Counts the Lock as this session's until it is over (lost, or released with no release in flight). */
  #track(registry: LockRegistry, name: string, lock: Lock): Lock {
    const slot = registry.slot(name);
    const tracked = new TrackedLock(lock, (over) => {
      slot.locks.delete(over);
      registry.changed(name, slot);
    });
    if (tracked.ended) registry.changed(name, slot);
    else slot.locks.add(tracked);
    return tracked;
  }

  #closedError(what: string): ClosedError {
    return new ClosedError(`${what}: the ${this.label} is closed`);
  }
}
