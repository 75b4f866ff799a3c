/**
 * The "server" of the memory backend: keys, one revision counter, the change
 * history, sessions with TTLs and locks. Clients (MemoryCoordinator) call it with
 * stored keys (their namespace already applied) after validating input; tests call
 * it directly to expire sessions, compact history, inject store-wide faults or
 * freeze everybody.
 */
import { AlreadyExistsError, CompactedError, ConflictError, InvalidArgumentError, LeaseLostError, NotFoundError, deferOn, systemClock } from '@taskgraph/api';
import type { Clock, Logger, TimerHandle } from '@taskgraph/api';
import { silentLogger } from '@taskgraph/backend-kit';
import { FaultSet } from './faults.js';
import { Pulse } from './pulse.js';
import { KeyIndex } from './key-index.js';
import { WatchIndex } from './watch-index.js';
import type { WatchSink } from './watch-index.js';

export interface MemoryStoreOptions {
  /** A label for ids and messages. Default: "memory". */
  readonly name?: string;
  /** The clock sessions expire by. Default: the system clock. */
  readonly clock?: Clock;
  /**
   * How many revisions of history are kept for resuming watches. Resuming from
   * an older revision throws CompactedError. Default: 10,000.
   */
  readonly historyLimit?: number;
  /**
   * How many calls of this store's clients may complete in one stretch of the event
   * loop before a call waits for the next turn (see {@link MemoryStore.turn}).
   * Default: 256.
   */
  readonly callsPerTurn?: number;
  readonly logger?: Logger;
}

export type StoredEvent =
  | { readonly type: 'put'; readonly key: string; readonly value: Uint8Array; readonly version: string }
  | { readonly type: 'delete'; readonly key: string };

/** The changes of one revision. */
export interface HistoryRecord {
  readonly revision: number;
  readonly events: readonly StoredEvent[];
}

export interface StoredEntry {
  readonly key: string;
  readonly value: Uint8Array;
  readonly version: string;
  /** The session the key is tied to, if it is ephemeral. */
  readonly session: string | undefined;
}

export interface SessionInfo {
  readonly id: string;
  readonly ttlMs: number;
  /** When the server last heard from the session, on the store's clock. */
  readonly lastKeepaliveAt: number;
  /** When the server will expire it unless it hears again. */
  readonly expiresAt: number;
  /** Keepalives received (opening the session does not count). */
  readonly keepalives: number;
  readonly keys: readonly string[];
  readonly locks: readonly string[];
}

export type SessionEnd = 'expired' | 'closed';

/** A queued or granted lock request, as the store tracks it. */
export interface LockRequest {
  readonly name: string;
  readonly sessionId: string;
  readonly owner: string;
}

interface Value {
  readonly value: Uint8Array;
  readonly modRevision: number;
  readonly session: string | undefined;
}

interface ServerSession {
  readonly id: string;
  readonly ttlMs: number;
  lastKeepaliveAt: number;
  keepalives: number;
  timer: TimerHandle | undefined;
  readonly keys: Set<string>;
  readonly locks: Set<string>;
  readonly waiting: Set<Waiter>;
  readonly listeners: Set<(end: SessionEnd) => void>;
}

interface Waiter extends LockRequest {
  readonly onGrant: (token: bigint) => void;
  readonly onReject: (err: Error) => void;
}

interface LockState {
  holder: (LockRequest & { readonly token: bigint }) | undefined;
  readonly queue: Waiter[];
}

/** History records past the limit kept before they are dropped in one go. */
const PRUNE_BATCH = 1024;

/**
 * Code point order, which is UTF-8 byte order: the order etcd and Consul list in.
 * UTF-16 unit order is the same except where a surrogate (0xD800-0xDFFF, half of a
 * code point above 0xFFFF) meets a unit from 0xE000 up: only then is it corrected,
 * so the common case is a plain unit comparison (lists sort thousands of keys).
 */
export function compareKeys(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    if (x >= 0xd800 && y >= 0xd800) {
      const xs = x <= 0xdfff;
      const ys = y <= 0xdfff;
      if (xs !== ys) return xs ? 1 : -1;
    }
    return x - y;
  }
  return a.length - b.length;
}

export class MemoryStore {
  readonly name: string;
  readonly clock: Clock;
  readonly historyLimit: number;
  readonly callsPerTurn: number;
  /** Faults every client of this store meets; patterns match stored keys (namespace included). */
  readonly faults = new FaultSet();
  /** Fires on every commit and state change (watches wait on their own feeds: see {@link subscribe}). */
  readonly pulse = new Pulse();

  readonly #logger: Logger;
  readonly #data = new Map<string, Value>();
  readonly #dirs = new KeyIndex();
  readonly #history: HistoryRecord[] = [];
  readonly #sessions = new Map<string, ServerSession>();
  readonly #locks = new Map<string, LockState>();
  readonly #watches = new WatchIndex();
  #revision = 0;
  #compactedByHand = 0;
  #sessionSeq = 0;
  #frozen = false;
  #callsThisTurn = 0;
  #turnEnd: Promise<void> | undefined;

  constructor(options: MemoryStoreOptions = {}) {
    const limit = options.historyLimit ?? 10_000;
    if (!Number.isInteger(limit) || limit < 1) {
      throw new InvalidArgumentError(`historyLimit must be a positive integer, got ${String(options.historyLimit)}`);
    }
    this.name = options.name ?? 'memory';
    this.clock = options.clock ?? systemClock;
    this.historyLimit = limit;
    const perTurn = options.callsPerTurn ?? 256;
    if (!Number.isInteger(perTurn) || perTurn < 1) {
      throw new InvalidArgumentError(`callsPerTurn must be a positive integer, got ${String(options.callsPerTurn)}`);
    }
    this.callsPerTurn = perTurn;
    this.#logger = (options.logger ?? silentLogger).child({ store: this.name });
  }

  /** The latest revision (0 before the first change). */
  get revision(): number {
    return this.#revision;
  }

  /** Watches may resume after this revision or a later one; older ones throw CompactedError. */
  get compactedRevision(): number {
    return Math.max(this.#compactedByHand, this.#revision - this.historyLimit, 0);
  }

  /** Drops the history up to `revision` (default: all of it), as etcd's compaction does. */
  compact(revision = this.#revision): void {
    if (!Number.isInteger(revision) || revision < 0 || revision > this.#revision) {
      throw new InvalidArgumentError(`cannot compact to revision ${revision}: the store is at ${this.#revision}`);
    }
    this.#compactedByHand = Math.max(this.#compactedByHand, revision);
    this.#prune();
    this.pulse.fire();
  }

  /**
   * Undefined while a call may go ahead in this turn of the event loop; else a
   * promise of the next turn, to wait for first. A real server's answers arrive as
   * I/O, each in a turn of its own, so timers (keepalives) run between them; calls
   * answered in memory resolve as promise jobs, and a thousand nodes in one process
   * calling one after another would make one chain of them that no timer interrupts
   * (their sessions expired while they started). So at most `callsPerTurn` calls
   * complete in one stretch; the count is of calls, not time, so a run repeats.
   */
  turn(): Promise<void> | undefined {
    if (this.#turnEnd) return this.#turnEnd;
    if (++this.#callsThisTurn === 1) {
      // Reset when this stretch of the loop ends.
      deferOn(this.clock, () => {
        this.#callsThisTurn = 0;
      });
    }
    if (this.#callsThisTurn <= this.callsPerTurn) return undefined;
    this.#turnEnd = new Promise((resolve) =>
      deferOn(this.clock, () => {
        this.#turnEnd = undefined;
        this.#callsThisTurn = 0;
        resolve();
      }),
    );
    return this.#turnEnd;
  }

  /** Every call of every client hangs until {@link unfreeze}. Sessions still expire meanwhile. */
  freeze(): void {
    this.#frozen = true;
    this.pulse.fire();
  }

  unfreeze(): void {
    this.#frozen = false;
    this.pulse.fire();
  }

  get frozen(): boolean {
    return this.#frozen;
  }

  // ---- keys ---------------------------------------------------------------

  get(key: string): { value: Uint8Array; version: string } | undefined {
    const v = this.#data.get(key);
    return v && { value: v.value.slice(), version: String(v.modRevision) };
  }

  /** Every key starting with `prefix`, sorted, with the revision they were read at. */
  range(prefix: string): { entries: { key: string; value: Uint8Array; version: string }[]; revision: number } {
    const entries: { key: string; value: Uint8Array; version: string }[] = [];
    for (const key of this.#keysUnder(prefix)) {
      const v = this.#data.get(key) as Value;
      entries.push({ key, value: v.value.slice(), version: String(v.modRevision) });
    }
    entries.sort((a, b) => compareKeys(a.key, b.key));
    return { entries, revision: this.#revision };
  }

  /** Every stored key, for tests and debugging. */
  entries(): StoredEntry[] {
    return [...this.#data]
      .map(([key, v]) => ({ key, value: v.value.slice(), version: String(v.modRevision), session: v.session }))
      .sort((a, b) => compareKeys(a.key, b.key));
  }

  create(key: string, value: Uint8Array, sessionId?: string): string {
    if (this.#data.has(key)) throw new AlreadyExistsError(`key ${JSON.stringify(key)} already exists`);
    const session = sessionId === undefined ? undefined : this.#liveSession(sessionId);
    const copy = value.slice();
    const revision = this.#commit((rev) => {
      this.#data.set(key, { value: copy, modRevision: rev, session: sessionId });
      this.#dirs.add(key);
      return [{ type: 'put', key, value: copy, version: String(rev) }];
    });
    session?.keys.add(key);
    return String(revision);
  }

  update(key: string, value: Uint8Array, expect: string): string {
    const old = this.#data.get(key);
    if (!old) throw new NotFoundError(`key ${JSON.stringify(key)} does not exist`);
    if (String(old.modRevision) !== expect) {
      throw new ConflictError(`key ${JSON.stringify(key)} is at version ${old.modRevision}, not ${expect}`);
    }
    const copy = value.slice();
    return String(
      this.#commit((rev) => {
        this.#data.set(key, { value: copy, modRevision: rev, session: old.session });
        return [{ type: 'put', key, value: copy, version: String(rev) }];
      }),
    );
  }

  delete(key: string, expect: string): void {
    const old = this.#data.get(key);
    if (!old) throw new NotFoundError(`key ${JSON.stringify(key)} does not exist`);
    if (String(old.modRevision) !== expect) {
      throw new ConflictError(`key ${JSON.stringify(key)} is at version ${old.modRevision}, not ${expect}`);
    }
    this.#commit(() => this.#remove([key]));
  }

  /** Deletes every key under `prefix` in one revision (none when nothing matches). */
  deletePrefix(prefix: string): void {
    const keys = [...this.#keysUnder(prefix)];
    if (keys.length > 0) this.#commit(() => this.#remove(keys.sort(compareKeys)));
  }

  /**
   * The first revision after `after` with changes under `prefix`, or undefined
   * when there is none yet. Throws CompactedError when history after `after` is gone.
   */
  nextChange(after: number, prefix: string, through = Number.POSITIVE_INFINITY): HistoryRecord | undefined {
    this.assertResumable(after);
    const h = this.#history;
    let lo = 0;
    let hi = h.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((h[mid] as HistoryRecord).revision <= after) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < h.length; i++) {
      const record = h[i] as HistoryRecord;
      if (record.revision > through) return undefined;
      const events = record.events.filter((e) => e.key.startsWith(prefix));
      if (events.length > 0) return events.length === record.events.length ? record : { revision: record.revision, events };
    }
    return undefined;
  }

  /**
   * From now on, hands `sink` every committed record under `prefix` (only the part
   * under it), synchronously as it commits. Returns the unsubscribe function. The
   * records up to now are in the history ({@link nextChange} through `revision`).
   */
  subscribe(prefix: string, sink: WatchSink): () => void {
    return this.#watches.add(prefix, sink);
  }

  /** Watches subscribed now (tests check that stopped watches leave none). */
  get watchers(): number {
    return this.#watches.size;
  }

  /** Throws unless a watch can resume after `after`. */
  assertResumable(after: number): void {
    if (after < this.compactedRevision) {
      throw new CompactedError(
        `revision ${after} is compacted (history starts after ${this.compactedRevision}); list again and watch from its revision`,
        { details: { revision: String(after), compacted: String(this.compactedRevision) } },
      );
    }
    if (after > this.#revision) {
      throw new InvalidArgumentError(`revision ${after} is in the future: store ${this.name} is at ${this.#revision}`);
    }
  }

  // ---- sessions -----------------------------------------------------------

  openSession(ttlMs: number): string {
    const id = `${this.name}:${++this.#sessionSeq}`;
    const session: ServerSession = {
      id,
      ttlMs,
      lastKeepaliveAt: this.clock.now(),
      keepalives: 0,
      timer: undefined,
      keys: new Set(),
      locks: new Set(),
      waiting: new Set(),
      listeners: new Set(),
    };
    this.#sessions.set(id, session);
    this.#armExpiry(session);
    return id;
  }

  /** Renews the session; LeaseLostError when it has expired or was closed. */
  keepalive(id: string): void {
    const session = this.#liveSession(id);
    session.lastKeepaliveAt = this.clock.now();
    session.keepalives++;
    this.#armExpiry(session);
  }

  /** Closes the session: its keys are deleted (one revision) and its locks released. False if it was gone. */
  closeSession(id: string): boolean {
    const session = this.#sessions.get(id);
    if (!session) return false;
    this.#end(session, 'closed');
    return true;
  }

  /** Expires the session now, as its TTL running out would. False if it was gone. */
  expireSession(id: string): boolean {
    const session = this.#sessions.get(id);
    if (!session) return false;
    this.#end(session, 'expired');
    return true;
  }

  hasSession(id: string): boolean {
    return this.#sessions.has(id);
  }

  sessionIds(): string[] {
    return [...this.#sessions.keys()];
  }

  sessionInfo(id: string): SessionInfo | undefined {
    const s = this.#sessions.get(id);
    if (!s) return undefined;
    return {
      id: s.id,
      ttlMs: s.ttlMs,
      lastKeepaliveAt: s.lastKeepaliveAt,
      expiresAt: s.lastKeepaliveAt + s.ttlMs,
      keepalives: s.keepalives,
      keys: [...s.keys].sort(compareKeys),
      locks: [...s.locks].sort(compareKeys),
    };
  }

  /** Calls `listener` once when the session ends; returns an unsubscribe function. */
  onSessionEnd(id: string, listener: (end: SessionEnd) => void): () => void {
    const session = this.#sessions.get(id);
    if (!session) {
      listener('expired');
      return () => undefined;
    }
    session.listeners.add(listener);
    return () => session.listeners.delete(listener);
  }

  // ---- locks --------------------------------------------------------------

  /**
   * Queues a lock request (first come, first served). `onGrant` is called with the
   * fencing token when it is granted, synchronously if the lock is free; `onReject`
   * with LeaseLostError if the session ends first. Cancel with {@link cancelLockRequest}.
   */
  requestLock(request: LockRequest, onGrant: (token: bigint) => void, onReject: (err: Error) => void): LockRequest {
    const session = this.#liveSession(request.sessionId);
    const waiter: Waiter = { ...request, onGrant, onReject };
    const state = this.#lockState(request.name);
    state.queue.push(waiter);
    session.waiting.add(waiter);
    this.#grantNext(request.name);
    return waiter;
  }

  /** Withdraws a queued request; false if it was granted or gone already. */
  cancelLockRequest(request: LockRequest): boolean {
    const state = this.#locks.get(request.name);
    const i = state ? state.queue.indexOf(request as Waiter) : -1;
    if (!state || i < 0) return false;
    state.queue.splice(i, 1);
    this.#sessions.get(request.sessionId)?.waiting.delete(request as Waiter);
    this.#dropIfIdle(request.name);
    return true;
  }

  /** Takes the lock if nobody holds or waits for it; returns the token, or undefined. */
  tryLock(request: LockRequest): bigint | undefined {
    const session = this.#liveSession(request.sessionId);
    const state = this.#locks.get(request.name);
    if (state && (state.holder || state.queue.length > 0)) return undefined;
    return this.#grant(request, session);
  }

  /** Releases the lock if `sessionId` holds it with `token`; the next waiter gets it. */
  releaseLock(name: string, sessionId: string, token: bigint): boolean {
    const state = this.#locks.get(name);
    if (!state?.holder || state.holder.sessionId !== sessionId || state.holder.token !== token) return false;
    state.holder = undefined;
    this.#sessions.get(sessionId)?.locks.delete(name);
    this.#grantNext(name);
    this.#dropIfIdle(name);
    this.pulse.fire();
    return true;
  }

  lockHolder(name: string): { owner: string; token: bigint; sessionId: string } | undefined {
    const h = this.#locks.get(name)?.holder;
    return h && { owner: h.owner, token: h.token, sessionId: h.sessionId };
  }

  /** How many requests wait for the lock. */
  lockWaiters(name: string): number {
    return this.#locks.get(name)?.queue.length ?? 0;
  }

  // ---- internals ----------------------------------------------------------

  #commit(apply: (revision: number) => StoredEvent[]): number {
    const revision = ++this.#revision;
    const events = apply(revision);
    if (events.length > 0) {
      const record = { revision, events };
      this.#history.push(record);
      this.#watches.dispatch(record);
    }
    this.#prune(false);
    this.pulse.fire();
    return revision;
  }

  #remove(keys: readonly string[]): StoredEvent[] {
    const events: StoredEvent[] = [];
    for (const key of keys) {
      const old = this.#data.get(key);
      if (!old) continue;
      this.#data.delete(key);
      this.#dirs.delete(key);
      if (old.session !== undefined) this.#sessions.get(old.session)?.keys.delete(key);
      events.push({ type: 'delete', key });
    }
    return events;
  }

  /**
   * Drops the history no watch may resume from. After a commit only in bulk (a
   * splice of the whole history per commit was a copy of 10,000 records per write):
   * records kept past the limit are never handed out, since every read of the
   * history checks the revision against `compactedRevision` first.
   */
  #prune(always = true): void {
    const h = this.#history;
    if (!always && h.length < this.historyLimit + PRUNE_BATCH) return;
    const through = this.compactedRevision;
    let lo = 0;
    let hi = h.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((h[mid] as HistoryRecord).revision <= through) lo = mid + 1;
      else hi = mid;
    }
    if (lo > 0) h.splice(0, lo);
  }

  /** The keys under `prefix`, from the directory index when it is a directory. */
  #keysUnder(prefix: string): Iterable<string> {
    if (prefix === '') return this.#data.keys();
    return this.#dirs.under(prefix) ?? [...this.#data.keys()].filter((k) => k.startsWith(prefix));
  }

  #liveSession(id: string): ServerSession {
    const session = this.#sessions.get(id);
    if (!session) throw new LeaseLostError(`session ${id} has expired or was closed`);
    return session;
  }

  #armExpiry(session: ServerSession): void {
    if (session.timer !== undefined) this.clock.clearTimeout(session.timer);
    const due = session.lastKeepaliveAt + session.ttlMs;
    session.timer = this.clock.setTimeout(() => {
      session.timer = undefined;
      if (this.#sessions.get(session.id) === session) this.#end(session, 'expired');
    }, due - this.clock.now());
    // The store must never keep a process alive just to expire a session.
    session.timer.unref?.();
  }

  #end(session: ServerSession, end: SessionEnd): void {
    this.#sessions.delete(session.id);
    if (session.timer !== undefined) this.clock.clearTimeout(session.timer);
    session.timer = undefined;
    this.#logger.debug(`session ${end}`, { session: session.id, keys: session.keys.size, locks: session.locks.size });
    // Everything the session owned goes in one revision, as one etcd lease revoke does.
    const keys = [...session.keys].sort(compareKeys);
    if (keys.length > 0) this.#commit(() => this.#remove(keys));
    for (const waiter of [...session.waiting]) {
      this.cancelLockRequest(waiter);
      waiter.onReject(new LeaseLostError(`session ${session.id} ${end} while waiting for lock ${JSON.stringify(waiter.name)}`));
    }
    for (const name of [...session.locks]) {
      const h = this.#locks.get(name)?.holder;
      if (h) this.releaseLock(name, session.id, h.token);
    }
    this.pulse.fire();
    for (const listener of [...session.listeners]) listener(end);
    session.listeners.clear();
  }

  #lockState(name: string): LockState {
    let state = this.#locks.get(name);
    if (!state) {
      state = { holder: undefined, queue: [] };
      this.#locks.set(name, state);
    }
    return state;
  }

  #grantNext(name: string): void {
    const state = this.#locks.get(name);
    if (!state || state.holder) return;
    const next = state.queue.shift();
    if (!next) return;
    const session = this.#sessions.get(next.sessionId);
    session?.waiting.delete(next);
    if (!session) {
      this.#grantNext(name);
      return;
    }
    next.onGrant(this.#grant(next, session));
  }

  #grant(request: LockRequest, session: ServerSession): bigint {
    // A grant takes a revision of its own, so tokens strictly increase even with no writes in between.
    const token = BigInt(this.#commit(() => []));
    this.#lockState(request.name).holder = { name: request.name, sessionId: request.sessionId, owner: request.owner, token };
    session.locks.add(request.name);
    return token;
  }

  #dropIfIdle(name: string): void {
    const state = this.#locks.get(name);
    if (state && !state.holder && state.queue.length === 0) this.#locks.delete(name);
  }
}
