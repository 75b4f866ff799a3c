/**
 * A client of a MemoryStore: what a node holds as its "connection". It applies its
 * namespace and carries the fault switches that make it unreachable, frozen or
 * failing, as a real client would be. Input checks, the closed guard and session
 * keepalives are the backend kit's (CoordinatorBase, LeaseSession).
 */
import { InvalidArgumentError, UnavailableError, abortError, assertValidKey, deferOn } from '@taskgraph/api';
import type { Clock, CoordinatorCaps, Entry, ListResult, Lock, LockHolder, Logger, Session, Version, WatchBatch, WatchEvent } from '@taskgraph/api';
import { CoordinatorBase, describeKey, silentLogger } from '@taskgraph/backend-kit';
import { FaultSet } from './faults.js';
import type { MemoryOperation } from './faults.js';
import { MemoryLock } from './lock.js';
import { Pulse, nextPulse } from './pulse.js';
import { WatchFeed } from './watch-feed.js';
import { MemorySession } from './session.js';
import type { MemorySessionHost } from './session.js';
import { MemoryStore } from './store.js';
import type { HistoryRecord, LockRequest } from './store.js';

export const MEMORY_CAPS: CoordinatorCaps = Object.freeze({
  backend: 'memory',
  watchCoalesces: false,
  ttlRangeMs: Object.freeze([100, 3_600_000] as const),
  ttlGranularityMs: 1,
  expiryFactor: 1,
  maxValueBytes: 1.5 * 1024 * 1024,
  maxKeyBytes: 1024,
});

export interface MemoryCoordinatorOptions {
  /** The store ("server") to connect to. Default: a new private store on `clock`. */
  readonly store?: MemoryStore;
  /**
   * A key prefix: keys are stored as `<namespace>/<key>`, so clients with different
   * namespaces never see each other's keys or locks. Default: none.
   */
  readonly namespace?: string;
  /** The clock keepalives and local deadlines run on. Default: the store's clock. */
  readonly clock?: Clock;
  readonly logger?: Logger;
  /** A label for messages and logs. Default: `client-<n>`. */
  readonly id?: string;
}

type GateMode = 'call' | 'closing';

let clientSeq = 0;

function parseRevision(revision: unknown): number {
  if (typeof revision !== 'string' || !/^(0|[1-9][0-9]{0,15})$/.test(revision)) {
    throw new InvalidArgumentError(`revision ${JSON.stringify(revision)} is not a memory revision (a decimal string from list or a watch batch)`);
  }
  return Number(revision);
}

export class MemoryCoordinator extends CoordinatorBase<MemorySession> {
  readonly store: MemoryStore;
  readonly namespace: string;
  readonly id: string;
  /** Faults only this client meets; patterns match the keys it is called with. */
  readonly faults = new FaultSet();

  readonly #pulse = new Pulse();
  readonly #sessionHost: MemorySessionHost;
  #unreachable = false;
  #frozen = false;
  #watches = 0;

  constructor(options: MemoryCoordinatorOptions = {}) {
    if (options.store !== undefined && !(options.store instanceof MemoryStore)) {
      throw new InvalidArgumentError('options.store must be a MemoryStore');
    }
    const namespace = options.namespace ?? '';
    if (namespace !== '') assertValidKey(namespace, MEMORY_CAPS.maxKeyBytes, 'namespace');
    const store = options.store ?? new MemoryStore(options.clock ? { clock: options.clock } : {});
    const id = options.id ?? `client-${++clientSeq}`;
    super({
      caps: MEMORY_CAPS,
      label: `memory coordinator ${id}`,
      clock: options.clock ?? store.clock,
      logger: (options.logger ?? silentLogger).child({ coordinator: id }),
    });
    this.store = store;
    this.namespace = namespace;
    this.id = id;
    this.#sessionHost = {
      keepalive: async (sessionId) => {
        await this.#gate('keepalive', sessionId, sessionId);
        return this.#answered(() => this.store.keepalive(sessionId));
      },
      closeRemote: async (sessionId) => {
        await this.#gate('closeSession', sessionId, sessionId, undefined, this.closed ? 'closing' : 'call');
        this.store.closeSession(sessionId);
      },
      // The store's word that a session ended reaches the client on its own clock, as an answer does.
      onServerEnd: (sessionId, listener) =>
        this.store.onSessionEnd(sessionId, (end) => (this.clock === this.store.clock ? listener(end) : deferOn(this.clock, () => listener(end)))),
      canHear: () => !this.#unreachable && !this.#frozen && !this.store.frozen && !this.closed,
    };
  }

  // ---- fault switches -------------------------------------------------------

  /**
   * Cuts this client off the store (true) or reconnects it (false). While cut off,
   * every call rejects with UnavailableError, keepalives fail (so sessions are lost
   * by their local deadline and then expire on the server), server notices are not
   * heard, and watches stall; on reconnection watches resume with nothing missed, or
   * throw CompactedError if the history they need is gone.
   */
  setUnreachable(unreachable: boolean): void {
    this.#unreachable = unreachable;
    this.#pulse.fire();
  }

  get unreachable(): boolean {
    return this.#unreachable;
  }

  /** Every call of this client (keepalives included) hangs until {@link unfreeze}. */
  freeze(): void {
    this.#frozen = true;
    this.#pulse.fire();
  }

  unfreeze(): void {
    this.#frozen = false;
    this.#pulse.fire();
  }

  get frozen(): boolean {
    return this.#frozen;
  }

  /** Expires a session on the server now, as if its TTL had run out. */
  expireSession(session: Session | string): boolean {
    return this.store.expireSession(typeof session === 'string' ? session : session.id);
  }

  /** Watches of this client whose iterators have not finished. */
  get activeWatches(): number {
    return this.#watches;
  }

  // ---- keys -----------------------------------------------------------------

  protected async doGet(key: string): Promise<Entry | undefined> {
    const stored = this.#stored(key);
    await this.#gate('get', key, stored);
    return this.#answered(() => {
      const found = this.store.get(stored);
      return found && { key, value: found.value, version: found.version };
    });
  }

  protected async doList(prefix: string): Promise<ListResult> {
    const stored = this.#stored(prefix);
    await this.#gate('list', prefix, stored);
    return this.#answered(() => {
      const { entries, revision } = this.store.range(stored);
      return { entries: entries.map((e) => ({ ...e, key: this.#unstored(e.key) })), revision: String(revision) };
    });
  }

  protected async doCreate(key: string, value: Uint8Array, session: MemorySession | undefined): Promise<Version> {
    const stored = this.#stored(key);
    // Copy before waiting at the gate: the caller may reuse its buffer as soon as we return a promise.
    const copy = value.slice();
    await this.#gate('create', key, stored);
    if (session) this.assertLive(session, `create of ${describeKey(key)}`);
    return this.#answered(() => {
      const version = this.store.create(stored, copy, session?.id);
      this.#applied('create', key, stored);
      return version;
    });
  }

  protected async doUpdate(key: string, value: Uint8Array, expect: Version): Promise<Version> {
    const stored = this.#stored(key);
    const copy = value.slice();
    await this.#gate('update', key, stored);
    return this.#answered(() => {
      const version = this.store.update(stored, copy, expect);
      this.#applied('update', key, stored);
      return version;
    });
  }

  protected async doDelete(key: string, expect: Version): Promise<void> {
    const stored = this.#stored(key);
    await this.#gate('delete', key, stored);
    return this.#answered(() => {
      this.store.delete(stored, expect);
      this.#applied('delete', key, stored);
    });
  }

  protected async doDeletePrefix(prefix: string): Promise<void> {
    const stored = this.#stored(prefix);
    await this.#gate('deletePrefix', prefix, stored);
    return this.#answered(() => {
      this.store.deletePrefix(stored);
      this.#applied('deletePrefix', prefix, stored);
    });
  }

  protected doWatch(prefix: string, after: string | undefined, signal: AbortSignal): AsyncIterable<WatchBatch> {
    // "From now" means from this call, not from the first next(): writes made in between are delivered.
    const start = after === undefined ? this.store.revision : parseRevision(after);
    const stored = this.#stored(prefix);
    return { [Symbol.asyncIterator]: () => this.#watch(prefix, stored, start, signal) };
  }

  async *#watch(prefix: string, stored: string, start: number, signal: AbortSignal): AsyncGenerator<WatchBatch, void, undefined> {
    this.faults.check('watch', prefix);
    this.store.faults.check('watch', stored);
    this.#watches++;
    // Subscribed before the history is read: what commits from here on is queued, what came before is in the history.
    const feed = new WatchFeed(this.store.historyLimit, this.clock);
    const subscribedAt = this.store.revision;
    const unsubscribe = this.store.subscribe(stored, feed);
    // One listener per watch for its whole life, not one per wait; the flag saves reading both signals per record.
    let stopped = signal.aborted || this.closed;
    const stop = (): void => {
      stopped = true;
      feed.wake();
    };
    signal.addEventListener('abort', stop, { once: true });
    this.closedSignal.addEventListener('abort', stop, { once: true });
    try {
      let cursor = start;
      let caughtUp = false;
      const stops = [signal, this.closedSignal];
      for (;;) {
        if (stopped) return;
        if (this.#unreachable || this.#frozen || this.store.frozen) {
          // A cut-off client hears nothing; the cursor stays put so it resumes gap-free.
          await nextPulse([this.#pulse, this.store.pulse], stops);
          continue;
        }
        let record: HistoryRecord | undefined;
        if (!caughtUp) {
          record = this.store.nextChange(cursor, stored, subscribedAt);
          if (!record) {
            caughtUp = true;
            cursor = Math.max(cursor, subscribedAt);
          }
        }
        if (caughtUp) {
          record = feed.shift();
          // The check a read of the history would make: a consumer so far behind that its next record left the history has lost it.
          if (feed.overflowed) this.store.assertResumable(this.store.compactedRevision - 1);
          if (record) this.store.assertResumable(record.revision - 1);
        }
        if (record) {
          cursor = record.revision;
          yield this.#batch(record);
          continue;
        }
        await feed.next();
      }
    } finally {
      unsubscribe();
      signal.removeEventListener('abort', stop);
      this.closedSignal.removeEventListener('abort', stop);
      this.#watches--;
    }
  }

  #batch(record: HistoryRecord): WatchBatch {
    const events = record.events.map((e): WatchEvent =>
      e.type === 'put'
        ? { type: 'put', key: this.#unstored(e.key), value: e.value.slice(), version: e.version }
        : { type: 'delete', key: this.#unstored(e.key) },
    );
    return { revision: String(record.revision), events };
  }

  // ---- sessions -------------------------------------------------------------

  protected async doOpenSession(ttlMs: number): Promise<MemorySession> {
    const sentAt = this.clock.now();
    await this.#gate('openSession', '', '');
    const id = await this.#answered(() => this.store.openSession(ttlMs));
    return new MemorySession(this.sessionContext, this.#sessionHost, id, ttlMs, sentAt);
  }

  protected async doEndSession(id: string): Promise<void> {
    await this.#gate('closeSession', id, id);
    await this.#answered(() => this.store.closeSession(id));
  }

  // ---- locks ----------------------------------------------------------------

  protected async doAcquire(name: string, session: MemorySession, owner: string, signal: AbortSignal | undefined): Promise<Lock> {
    const what = `acquire of lock ${describeKey(name)}`;
    const stored = this.#stored(name);
    await this.#gate('acquire', name, stored, signal);
    this.assertLive(session, what);
    const stops = this.acquireStops(what, session, signal);
    stops.throwIfStopped();
    const adopted = this.#adopt(stored, name, session);
    if (adopted) return adopted;

    return new Promise<Lock>((resolve, reject) => {
      let settled = false;
      let request: LockRequest | undefined;
      let unsubscribe = (): void => undefined;
      const fail = (err: unknown): void => {
        if (settled) return;
        settled = true;
        unsubscribe();
        if (request) this.store.cancelLockRequest(request);
        reject(err);
      };
      const onGrant = (token: bigint): void => {
        if (settled) {
          // Granted in the same instant the wait was given up: hand it straight on.
          this.store.releaseLock(stored, session.id, token);
          return;
        }
        settled = true;
        unsubscribe();
        try {
          // An injected unknown outcome: granted, but the answer never reaches the caller.
          this.#applied('acquire', name, stored);
        } catch (err) {
          reject(err);
          return;
        }
        resolve(new MemoryLock(this.#lockHost, stored, name, owner, token, session));
      };
      // A stop may have fired while the gate was awaited: then this fails at once.
      unsubscribe = stops.onStop(fail);
      if (settled) return;
      try {
        request = this.store.requestLock({ name: stored, sessionId: session.id, owner }, onGrant, fail);
      } catch (err) {
        fail(err);
      }
    });
  }

  protected async doTryAcquire(name: string, session: MemorySession, owner: string): Promise<Lock | undefined> {
    const stored = this.#stored(name);
    await this.#gate('tryAcquire', name, stored);
    this.assertLive(session, `tryAcquire of lock ${describeKey(name)}`);
    const lock = await this.#answered(() => {
      const token = this.store.tryLock({ name: stored, sessionId: session.id, owner });
      const taken = token === undefined ? this.#adopt(stored, name, session) : new MemoryLock(this.#lockHost, stored, name, owner, token, session);
      this.#applied('tryAcquire', name, stored);
      return taken;
    });
    return lock;
  }

  /**
   * The lock as a Lock of `session` if the store shows the session holding it and this
   * client holds no Lock for it: an earlier acquire's, whose answer was lost. With the
   * token and owner the store recorded.
   */
  #adopt(stored: string, name: string, session: MemorySession): MemoryLock | undefined {
    const holder = this.store.lockHolder(stored);
    if (holder?.sessionId !== session.id || this.holdsLock(session, name)) return undefined;
    this.logger.info('the lock is held by this session with no Lock here (an earlier answer was lost): adopting it', {
      lock: name,
      session: session.id,
      token: String(holder.token),
    });
    return new MemoryLock(this.#lockHost, stored, name, holder.owner, holder.token, session);
  }

  protected async doHolder(name: string): Promise<LockHolder | undefined> {
    const stored = this.#stored(name);
    await this.#gate('holder', name, stored);
    return this.#answered(() => {
      const h = this.store.lockHolder(stored);
      return h && { owner: h.owner, token: h.token };
    });
  }

  readonly #lockHost = {
    release: async (stored: string, name: string, sessionId: string, token: bigint): Promise<void> => {
      await this.#gate('release', name, stored);
      return this.#answered(() => {
        this.store.releaseLock(stored, sessionId, token);
        this.#applied('release', name, stored);
      });
    },
  };

  // ---- internals --------------------------------------------------------------

  /**
   * Where every call meets the fault switches, in the order a real client would:
   * closed, frozen (wait), unreachable, then injected faults. While closing, a
   * frozen or unreachable store is not waited for.
   */
  async #gate(op: MemoryOperation, key: string, stored: string, signal?: AbortSignal, mode: GateMode = 'call'): Promise<void> {
    for (;;) {
      if (mode === 'call') this.assertOpen(op);
      if (signal?.aborted) throw abortError(signal, op);
      if (this.#frozen || this.store.frozen) {
        if (mode === 'closing') throw new UnavailableError(`memory coordinator ${this.id} is frozen: ${op} was not applied`);
        const stops = signal ? [this.closedSignal, signal] : [this.closedSignal];
        await nextPulse([this.#pulse, this.store.pulse], stops);
        continue;
      }
      if (this.#unreachable) throw new UnavailableError(`memory coordinator ${this.id} is unreachable (injected): ${op} was not applied`);
      // A keepalive does not wait its turn: it is what the turns are for (and a real
      // client sends it on a stream of its own).
      const turn = op === 'keepalive' ? undefined : this.store.turn();
      if (turn) {
        await turn;
        continue;
      }
      this.faults.check(op, key);
      this.store.faults.check(op, stored);
      return;
    }
  }

  /**
   * Applies a call at the store and hands its outcome back on this client's clock: at
   * once when the client shares the store's clock; a turn of the client's clock later
   * when it has its own (a simulated node), so a paused client hears nothing until it
   * resumes, as a paused process reads nothing from its socket.
   */
  async #answered<T>(apply: () => T): Promise<T> {
    let outcome: { ok: true; value: T } | { ok: false; error: unknown };
    try {
      outcome = { ok: true, value: apply() };
    } catch (error) {
      outcome = { ok: false, error };
    }
    if (this.clock !== this.store.clock) await new Promise<void>((resolve) => deferOn(this.clock, resolve));
    if (!outcome.ok) throw outcome.error;
    return outcome.value;
  }

  /** The injected faults that strike after a call took effect (an outcome the caller cannot know). */
  #applied(op: MemoryOperation, key: string, stored: string): void {
    this.faults.checkApplied(op, key);
    this.store.faults.checkApplied(op, stored);
  }

  #stored(key: string): string {
    return this.namespace === '' ? key : `${this.namespace}/${key}`;
  }

  #unstored(key: string): string {
    return this.namespace === '' ? key : key.slice(this.namespace.length + 1);
  }
}
