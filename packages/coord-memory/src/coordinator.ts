/**
 * A client of a MemoryStore: what a node holds as its "connection". It validates
 * input, applies its namespace, keeps its sessions alive, and carries the fault
 * switches that make it unreachable, frozen or failing, as a real client would be.
 */
import {
  ClosedError,
  InvalidArgumentError,
  LeaseLostError,
  UnavailableError,
  abortError,
  assertValidKey,
  assertValidPrefix,
  assertValidTtl,
  assertValidValue,
  utf8Length,
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
  WatchEvent,
  WatchOptions,
} from '@taskgraph/api';
import { FaultSet } from './faults.js';
import type { MemoryOperation } from './faults.js';
import { MemoryLock } from './lock.js';
import { silentLogger } from './logger.js';
import { Pulse, nextPulse } from './pulse.js';
import { MemorySession } from './session.js';
import type { SessionHost } from './session.js';
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

export class MemoryCoordinator implements Coordinator {
  readonly caps: CoordinatorCaps = MEMORY_CAPS;
  readonly store: MemoryStore;
  readonly namespace: string;
  readonly id: string;
  /** Faults only this client meets; patterns match the keys it is called with. */
  readonly faults = new FaultSet();

  readonly #clock: Clock;
  readonly #logger: Logger;
  readonly #pulse = new Pulse();
  readonly #closeController = new AbortController();
  readonly #sessions = new Set<MemorySession>();
  readonly #sessionHost: SessionHost;
  #unreachable = false;
  #frozen = false;
  #watches = 0;

  constructor(options: MemoryCoordinatorOptions = {}) {
    if (options.store !== undefined && !(options.store instanceof MemoryStore)) {
      throw new InvalidArgumentError('options.store must be a MemoryStore');
    }
    const namespace = options.namespace ?? '';
    if (namespace !== '') assertValidKey(namespace, MEMORY_CAPS.maxKeyBytes, 'namespace');
    this.store = options.store ?? new MemoryStore(options.clock ? { clock: options.clock } : {});
    this.namespace = namespace;
    this.id = options.id ?? `client-${++clientSeq}`;
    this.#clock = options.clock ?? this.store.clock;
    this.#logger = (options.logger ?? silentLogger).child({ coordinator: this.id });
    this.#sessionHost = {
      clock: this.#clock,
      logger: this.#logger,
      keepalive: async (id) => {
        await this.#gate('keepalive', id, id);
        this.store.keepalive(id);
      },
      closeRemote: async (id) => {
        await this.#gate('closeSession', id, id, undefined, this.closed ? 'closing' : 'call');
        this.store.closeSession(id);
      },
      onServerEnd: (id, listener) => this.store.onSessionEnd(id, listener),
      canHear: () => !this.#unreachable && !this.#frozen && !this.store.frozen && !this.closed,
      forget: (session) => this.#sessions.delete(session),
    };
  }

  get closed(): boolean {
    return this.#closeController.signal.aborted;
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

  /** Sessions opened by this client and not yet closed or lost. */
  get openSessions(): number {
    return this.#sessions.size;
  }

  /** Watches of this client whose iterators have not finished. */
  get activeWatches(): number {
    return this.#watches;
  }

  // ---- keys -----------------------------------------------------------------

  async get(key: string): Promise<Entry | undefined> {
    assertValidKey(key, this.caps.maxKeyBytes);
    const stored = this.#stored(key);
    await this.#gate('get', key, stored);
    const found = this.store.get(stored);
    return found && { key, value: found.value, version: found.version };
  }

  async list(prefix: string): Promise<ListResult> {
    assertValidPrefix(prefix, this.caps.maxKeyBytes);
    const stored = this.#stored(prefix);
    await this.#gate('list', prefix, stored);
    const { entries, revision } = this.store.range(stored);
    return { entries: entries.map((e) => ({ ...e, key: this.#unstored(e.key) })), revision: String(revision) };
  }

  async create(key: string, value: Uint8Array, options: CreateOptions = {}): Promise<Version> {
    assertValidKey(key, this.caps.maxKeyBytes);
    assertValidValue(value, this.caps.maxValueBytes, key);
    const session = options.session === undefined ? undefined : this.#ownSession(options.session);
    const stored = this.#stored(key);
    // Copy before waiting at the gate: the caller may reuse its buffer as soon as we return a promise.
    const copy = value.slice();
    await this.#gate('create', key, stored);
    if (session?.isLost()) throw new LeaseLostError(`cannot create ${JSON.stringify(key)}: session ${session.id} is lost`);
    return this.store.create(stored, copy, session?.id);
  }

  async update(key: string, value: Uint8Array, expect: Version): Promise<Version> {
    assertValidKey(key, this.caps.maxKeyBytes);
    assertValidValue(value, this.caps.maxValueBytes, key);
    this.#assertVersion(expect);
    const stored = this.#stored(key);
    const copy = value.slice();
    await this.#gate('update', key, stored);
    return this.store.update(stored, copy, expect);
  }

  async delete(key: string, expect: Version): Promise<void> {
    assertValidKey(key, this.caps.maxKeyBytes);
    this.#assertVersion(expect);
    const stored = this.#stored(key);
    await this.#gate('delete', key, stored);
    this.store.delete(stored, expect);
  }

  async deletePrefix(prefix: string): Promise<void> {
    assertValidPrefix(prefix, this.caps.maxKeyBytes);
    const stored = this.#stored(prefix);
    await this.#gate('deletePrefix', prefix, stored);
    this.store.deletePrefix(stored);
  }

  watch(prefix: string, options: WatchOptions): AsyncIterable<WatchBatch> {
    assertValidPrefix(prefix, this.caps.maxKeyBytes);
    const signal = (options as Partial<WatchOptions> | undefined)?.signal;
    if (!(signal instanceof AbortSignal)) throw new InvalidArgumentError('watch needs options.signal, an AbortSignal that ends it');
    // "From now" means from this call, not from the first next(): writes made in between are delivered.
    const start = options.after === undefined ? this.store.revision : parseRevision(options.after);
    const stored = this.#stored(prefix);
    return { [Symbol.asyncIterator]: () => this.#watch(prefix, stored, start, signal) };
  }

  async *#watch(prefix: string, stored: string, start: number, signal: AbortSignal): AsyncGenerator<WatchBatch, void, undefined> {
    if (signal.aborted) return;
    if (this.closed) throw new ClosedError(`memory coordinator ${this.id} is closed`);
    this.faults.check('watch', prefix);
    this.store.faults.check('watch', stored);
    this.#watches++;
    try {
      let cursor = start;
      const stops = [signal, this.#closeController.signal];
      for (;;) {
        if (signal.aborted || this.closed) return;
        if (this.#unreachable || this.#frozen || this.store.frozen) {
          // A cut-off client hears nothing; the cursor stays put so it resumes gap-free.
          await nextPulse([this.#pulse, this.store.pulse], stops);
          continue;
        }
        const record = this.store.nextChange(cursor, stored);
        if (record) {
          cursor = record.revision;
          yield this.#batch(record);
          continue;
        }
        cursor = this.store.revision;
        await nextPulse([this.#pulse, this.store.pulse], stops);
      }
    } finally {
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

  async openSession(options: SessionOptions): Promise<Session> {
    const ttlMs = (options as Partial<SessionOptions> | undefined)?.ttlMs;
    assertValidTtl(ttlMs, this.caps.ttlRangeMs, this.caps.backend);
    const sentAt = this.#clock.now();
    await this.#gate('openSession', '', '');
    const session = new MemorySession(this.#sessionHost, this.store.openSession(ttlMs), ttlMs, sentAt);
    if (!session.lost.aborted) this.#sessions.add(session);
    return session;
  }

  // ---- locks ----------------------------------------------------------------

  async acquire(name: string, session: Session, options: AcquireOptions = {}): Promise<Lock> {
    assertValidKey(name, this.caps.maxKeyBytes, 'lock name');
    const own = this.#ownSession(session);
    const owner = this.#owner(options, own);
    const signal = options.signal;
    if (signal !== undefined && !(signal instanceof AbortSignal)) throw new InvalidArgumentError('acquire options.signal must be an AbortSignal');
    const what = `acquire of lock ${JSON.stringify(name)}`;
    if (signal?.aborted) throw abortError(signal, what);
    const stored = this.#stored(name);
    await this.#gate('acquire', name, stored, signal);
    if (own.isLost()) throw new LeaseLostError(`cannot acquire lock ${JSON.stringify(name)}: session ${own.id} is lost`);

    return new Promise<Lock>((resolve, reject) => {
      let settled = false;
      let request: LockRequest | undefined;
      const closeSignal = this.#closeController.signal;
      const cleanup = (): void => {
        signal?.removeEventListener('abort', onAbort);
        own.lost.removeEventListener('abort', onLost);
        closeSignal.removeEventListener('abort', onClose);
      };
      const fail = (err: unknown): void => {
        if (settled) return;
        settled = true;
        cleanup();
        if (request) this.store.cancelLockRequest(request);
        reject(err);
      };
      const onAbort = (): void => fail(abortError(signal as AbortSignal, what));
      const onLost = (): void => fail(new LeaseLostError(`session ${own.id} was lost while waiting for lock ${JSON.stringify(name)}`));
      const onClose = (): void => fail(new ClosedError(`memory coordinator ${this.id} was closed while waiting for lock ${JSON.stringify(name)}`));
      const onGrant = (token: bigint): void => {
        if (settled) {
          // Granted in the same instant the wait was given up: hand it straight on.
          this.store.releaseLock(stored, own.id, token);
          return;
        }
        settled = true;
        cleanup();
        resolve(new MemoryLock(this.#lockHost, stored, name, owner, token, own));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      own.lost.addEventListener('abort', onLost, { once: true });
      closeSignal.addEventListener('abort', onClose, { once: true });
      // Any of them may have aborted while the gate was awaited; a listener added late never fires.
      if (signal?.aborted) return onAbort();
      if (own.isLost()) return onLost();
      if (closeSignal.aborted) return onClose();
      try {
        request = this.store.requestLock({ name: stored, sessionId: own.id, owner }, onGrant, fail);
      } catch (err) {
        fail(err);
      }
    });
  }

  async tryAcquire(name: string, session: Session, options: LockOptions = {}): Promise<Lock | undefined> {
    assertValidKey(name, this.caps.maxKeyBytes, 'lock name');
    const own = this.#ownSession(session);
    const owner = this.#owner(options, own);
    const stored = this.#stored(name);
    await this.#gate('tryAcquire', name, stored);
    if (own.isLost()) throw new LeaseLostError(`cannot acquire lock ${JSON.stringify(name)}: session ${own.id} is lost`);
    const token = this.store.tryLock({ name: stored, sessionId: own.id, owner });
    return token === undefined ? undefined : new MemoryLock(this.#lockHost, stored, name, owner, token, own);
  }

  async holder(name: string): Promise<LockHolder | undefined> {
    assertValidKey(name, this.caps.maxKeyBytes, 'lock name');
    const stored = this.#stored(name);
    await this.#gate('holder', name, stored);
    const h = this.store.lockHolder(stored);
    return h && { owner: h.owner, token: h.token };
  }

  readonly #lockHost = {
    release: async (stored: string, name: string, sessionId: string, token: bigint): Promise<void> => {
      await this.#gate('release', name, stored);
      this.store.releaseLock(stored, sessionId, token);
    },
  };

  // ---- lifecycle --------------------------------------------------------------

  /** Closes every open session (their keys go, their locks pass on), ends watches; later calls reject with ClosedError. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.#closeController.abort(new ClosedError(`memory coordinator ${this.id} is closed`));
    this.#pulse.fire();
    await Promise.all([...this.#sessions].map((s) => s.close()));
  }

  // ---- internals --------------------------------------------------------------

  /**
   * Where every call meets the fault switches, in the order a real client would:
   * closed, frozen (wait), unreachable, then injected faults. While closing, a
   * frozen or unreachable store is not waited for.
   */
  async #gate(op: MemoryOperation, key: string, stored: string, signal?: AbortSignal, mode: GateMode = 'call'): Promise<void> {
    for (;;) {
      if (mode === 'call' && this.closed) throw new ClosedError(`memory coordinator ${this.id} is closed`);
      if (signal?.aborted) throw abortError(signal, op);
      if (this.#frozen || this.store.frozen) {
        if (mode === 'closing') throw new UnavailableError(`memory coordinator ${this.id} is frozen: ${op} was not applied`);
        const stops = signal ? [this.#closeController.signal, signal] : [this.#closeController.signal];
        await nextPulse([this.#pulse, this.store.pulse], stops);
        continue;
      }
      if (this.#unreachable) throw new UnavailableError(`memory coordinator ${this.id} is unreachable (injected): ${op} was not applied`);
      this.faults.check(op, key);
      this.store.faults.check(op, stored);
      return;
    }
  }

  #stored(key: string): string {
    return this.namespace === '' ? key : `${this.namespace}/${key}`;
  }

  #unstored(key: string): string {
    return this.namespace === '' ? key : key.slice(this.namespace.length + 1);
  }

  #ownSession(session: unknown): MemorySession {
    if (!(session instanceof MemorySession) || session.host !== this.#sessionHost) {
      throw new InvalidArgumentError(`the session was not opened by memory coordinator ${this.id}`);
    }
    return session;
  }

  #owner(options: LockOptions, session: MemorySession): string {
    const owner = options.owner ?? session.id;
    if (typeof owner !== 'string' || owner.length === 0) throw new InvalidArgumentError('lock owner must be a non-empty string');
    if (utf8Length(owner) > this.caps.maxKeyBytes) {
      throw new InvalidArgumentError(`lock owner is ${utf8Length(owner)} bytes; the limit is ${this.caps.maxKeyBytes}`);
    }
    return owner;
  }

  #assertVersion(version: unknown): void {
    if (typeof version !== 'string' || version.length === 0) {
      throw new InvalidArgumentError(`version must be a non-empty string from get, list, create or update, got ${JSON.stringify(version)}`);
    }
  }
}
