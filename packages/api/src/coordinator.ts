/**
 * The coordination SPI: one small, exact contract that every coordination backend
 * (memory, etcd, Consul, Kubernetes) implements and that the conformance suite in
 * `@taskgraph/testkit` pins down. Keys are strings under the coordinator's
 * namespace; values are bytes.
 */
import type { Clock, Logger } from './runtime.js';

/** An opaque per-key compare-and-set token. Compare for equality only. */
export type Version = string;
/** An opaque store-wide resume token. Compare for equality only. */
export type Revision = string;

export interface Entry {
  readonly key: string;
  readonly value: Uint8Array;
  readonly version: Version;
}

export interface ListResult {
  /** Every key under the prefix, sorted by key, all from one snapshot. */
  readonly entries: readonly Entry[];
  /** The snapshot's revision: `watch(prefix, { after: revision })` misses nothing after it. */
  readonly revision: Revision;
}

export type WatchEvent =
  | { readonly type: 'put'; readonly key: string; readonly value: Uint8Array; readonly version: Version }
  | { readonly type: 'delete'; readonly key: string };

/** Changes under a prefix, in revision order; resuming `after: batch.revision` misses nothing. */
export interface WatchBatch {
  readonly revision: Revision;
  readonly events: readonly WatchEvent[];
}

export interface WatchOptions {
  /** Deliver changes made after this revision (from `list` or a batch). Default: from now. */
  readonly after?: Revision;
  /** Ends the watch: the iterator then finishes without error and releases its resources. */
  readonly signal: AbortSignal;
}

export interface CreateOptions {
  /** Ties the key to the session: it is deleted when the session closes or expires. */
  readonly session?: Session;
}

export interface SessionOptions {
  /** Time to live; must be within `caps.ttlRangeMs` (else InvalidArgumentError). */
  readonly ttlMs: number;
}

/**
 * A liveness session (an etcd lease, a Consul session, a Kubernetes Lease). The
 * coordinator keeps it alive until `close()`.
 */
export interface Session {
  readonly id: string;
  readonly ttlMs: number;
  /**
   * Aborts when the session can no longer be trusted: the backend said it expired,
   * or the local deadline (last acknowledged keepalive + ttl - margin, on the
   * monotonic clock) passed, whichever comes first; or it was closed. The reason is
   * a LeaseLostError, or a ClosedError after `close()`.
   */
  readonly lost: AbortSignal;
  /**
   * Synchronous check: true once `lost` has fired OR the local deadline has passed
   * on the monotonic clock. After a process pause (SIGSTOP, a long GC) the deadline
   * timer fires late, possibly after I/O callbacks that were queued during the
   * pause; code that must not act on a lost session (serving as a task's owner,
   * fenced writes) calls this right before acting.
   */
  isLost(): boolean;
  /** Ends the session: its ephemeral keys are deleted and its locks released. */
  close(): Promise<void>;
}

export interface LockOptions {
  /** Who holds the lock, as `holder()` reports it. Default: the session's id. */
  readonly owner?: string;
}

export interface AcquireOptions extends LockOptions {
  /** Gives up waiting (AbortedError, or the signal's reason). */
  readonly signal?: AbortSignal;
}

/** A held lock. Locks live apart from keys: they never appear in `list` or `watch`. */
export interface Lock {
  readonly name: string;
  readonly owner: string;
  /**
   * The fencing token: strictly increases per lock name across holders (etcd
   * create_revision, Consul LockIndex, Kubernetes leaseTransitions).
   */
  readonly token: bigint;
  /** Aborts when the lock is lost (its session ended) or released. */
  readonly lost: AbortSignal;
  release(): Promise<void>;
}

export interface LockHolder {
  readonly owner: string;
  readonly token: bigint;
}

export interface CoordinatorCaps {
  /** The backend's name, e.g. "memory", "etcd". */
  readonly backend: string;
  /**
   * True when the backend keeps no history (Consul): intermediate values may merge
   * into one event, but the final state of every key is never lost. Consumers must
   * be level-triggered.
   */
  readonly watchCoalesces: boolean;
  /** The session TTLs the backend accepts, inclusive. */
  readonly ttlRangeMs: readonly [min: number, max: number];
  /** TTLs are rounded up to this granularity (etcd: whole seconds). */
  readonly ttlGranularityMs: number;
  /**
   * The server may keep a session alive up to `expiryFactor` x TTL after the last
   * renewal (Consul: 2). Ephemeral keys are gone by then.
   */
  readonly expiryFactor: number;
  /** The largest value, in bytes. */
  readonly maxValueBytes: number;
  /** The longest key or lock name, in bytes (UTF-8). */
  readonly maxKeyBytes: number;
}

/**
 * The coordination store. Every method rejects with a TaskGraphError: NotFound,
 * AlreadyExists, Conflict, LeaseLost, Compacted, Unavailable (not applied: retry),
 * Indeterminate (sent, outcome unknown: re-read), InvalidArgument, Closed.
 */
export interface Coordinator {
  readonly caps: CoordinatorCaps;
  /** Linearizable read of one key. */
  get(key: string): Promise<Entry | undefined>;
  /** Every key under `prefix`, from one snapshot. */
  list(prefix: string): Promise<ListResult>;
  /** Creates `key`; AlreadyExistsError if it exists. Returns the new version. */
  create(key: string, value: Uint8Array, options?: CreateOptions): Promise<Version>;
  /**
   * Replaces the value if the key's version is `expect` (ConflictError if not,
   * NotFoundError if there is no key). The key keeps its session, if any.
   */
  update(key: string, value: Uint8Array, expect: Version): Promise<Version>;
  /** Deletes the key if its version is `expect` (ConflictError / NotFoundError). */
  delete(key: string, expect: Version): Promise<void>;
  /** Deletes every key under a non-empty prefix (clean-up only; not atomic with anything). */
  deletePrefix(prefix: string): Promise<void>;
  /**
   * Changes under `prefix` in revision order. Throws CompactedError when `after` is
   * older than the history the backend keeps: re-list, then watch after the new
   * revision. Transient backend failures are retried inside; the iterator ends
   * without error when the signal aborts.
   */
  watch(prefix: string, options: WatchOptions): AsyncIterable<WatchBatch>;
  /** Opens a session kept alive until closed or lost. */
  openSession(options: SessionOptions): Promise<Session>;
  /**
   * Ends a session by its id, whichever client opened it: its ephemeral keys are
   * deleted and its locks released at once, as if its TTL had run out. For a
   * supervisor that saw the session's process exit: only then is it safe, since a
   * live owner would go on acting until its own client notices (at its next renewal
   * at the latest). Idempotent: an unknown or already-ended id resolves.
   */
  endSession(id: string): Promise<void>;
  /**
   * Waits until the lock is held by `session`. Locks are fair: first come, first served.
   *
   * A lock whose answer was lost: when the store shows the lock held by this same
   * session, and this client holds no live Lock (not released, not lost) for that
   * session and lock name, the holding comes from an earlier acquire or tryAcquire of
   * this session whose answer was lost (an unknown outcome: the store granted the lock,
   * the call rejected). `acquire` then returns a Lock for it, with the token and owner
   * the store recorded, instead of waiting (`tryAcquire` likewise, instead of
   * undefined), so a retry of the call gets what its first try was granted. When this
   * client does hold a live Lock for it, `acquire` waits as for any holder (a session
   * never holds a lock twice). The session is what holds a lock: when `owner` differs
   * from the recorded owner the holding is adopted all the same, and the Lock (like
   * `holder()`) reports the recorded owner. A Lock whose `release()` is in flight counts
   * as live until the release settles.
   *
   * One acquire or tryAcquire per session and lock name runs at a time in a client: an
   * acquire called while another is in flight waits for it to settle first.
   */
  acquire(name: string, session: Session, options?: AcquireOptions): Promise<Lock>;
  /**
   * Takes the lock if nobody holds it (nor waits for it); undefined otherwise.
   *
   * When the store shows the lock held by this same session and this client holds no
   * live Lock (not released, not lost) for that session and lock name, the holding
   * comes from an earlier acquire or tryAcquire of this session whose answer was lost
   * (an unknown outcome): `tryAcquire` returns a Lock for it, with the token and owner
   * the store recorded (whatever `owner` says now: the session is what holds a lock),
   * instead of undefined, whoever else waits for the lock. When this client does hold
   * a live Lock for it (or its `release()` is in flight), or an acquire or tryAcquire of
   * the session for that name is in flight, `tryAcquire` returns undefined, as before:
   * a session never holds a lock twice. See `acquire`.
   */
  tryAcquire(name: string, session: Session, options?: LockOptions): Promise<Lock | undefined>;
  /** Who holds the lock now, if anyone. */
  holder(name: string): Promise<LockHolder | undefined>;
  /** Closes the client (open sessions are closed; watches end). */
  close(): Promise<void>;
}

/** What every backend factory accepts besides its own options. */
export interface CoordinatorRuntimeOptions {
  readonly clock?: Clock;
  readonly logger?: Logger;
}

/** A backend package's URL factory: `createXCoordinator(url)`, resolved by scheme. */
export type CoordinatorFactory = (url: string | URL, runtime?: CoordinatorRuntimeOptions) => Promise<Coordinator>;
