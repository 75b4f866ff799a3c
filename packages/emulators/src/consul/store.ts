/**
 * The emulated Consul state store: the KV table with its tombstones, sessions with
 * their TTL timers and invalidation behaviours, lock-delays, and the Raft index.
 * It follows the server's state-store rules (agent/consul/state/kvs.go, txn.go,
 * session.go) operation by operation; the HTTP layer in server.ts only translates.
 */
import { randomUUID } from 'node:crypto';
import type { EmulatorClock, EmulatorTimerHandle } from './clock.js';
import { formatGoDuration } from './durations.js';

export interface KvEntry {
  readonly key: string;
  /** null is Go's nil slice: an empty value reads back as `"Value": null`. */
  readonly value: Uint8Array | null;
  readonly flags: bigint;
  /** The session holding the key's lock, or "" when none. */
  readonly session: string;
  readonly lockIndex: number;
  readonly createIndex: number;
  readonly modifyIndex: number;
}

export type SessionBehavior = 'release' | 'delete';

export interface ServiceCheckRef {
  readonly ID: string;
  readonly Namespace: string;
}

export interface SessionRecord {
  readonly id: string;
  readonly name: string;
  readonly node: string;
  readonly lockDelayMs: number;
  readonly behavior: SessionBehavior;
  /** The TTL as the client wrote it ("" when the session has none). */
  readonly ttl: string;
  readonly ttlMs: number;
  readonly nodeChecks: readonly string[];
  readonly serviceChecks: readonly ServiceCheckRef[];
  readonly createIndex: number;
  readonly modifyIndex: number;
}

/** What a write touched, so that blocking queries re-evaluate only when it concerns them. */
export type StoreChange =
  | { readonly kind: 'kv'; readonly keys: readonly string[] }
  | { readonly kind: 'sessions' }
  /** The whole state was replaced (snapshot restore): every blocking query returns. */
  | { readonly kind: 'abandon' };

export interface TxnKvOp {
  readonly verb: string;
  readonly key: string;
  readonly value: Uint8Array | null;
  readonly flags: bigint;
  readonly index: number;
  readonly session: string;
}

export interface TxnError {
  readonly opIndex: number;
  readonly what: string;
}

export type TxnOutcome =
  | { readonly ok: true; readonly results: readonly KvEntry[] }
  | { readonly ok: false; readonly errors: readonly TxnError[] };

/** A request the server refuses before it reaches the state (Consul answers these with 500). */
export class StoreRequestError extends Error {}

export interface SessionInput {
  readonly name: string;
  readonly node: string;
  readonly lockDelayMs: number;
  readonly behavior: string;
  readonly ttl: string;
  readonly ttlMs: number | undefined;
  readonly nodeChecks: readonly string[];
  readonly serviceChecks: readonly ServiceCheckRef[];
}

export interface StoreOptions {
  readonly clock: EmulatorClock;
  /** The Raft index before the first write (a fresh server has made a few internal writes). */
  readonly initialIndex: number;
  /** The node sessions belong to; the only node this single-server emulator knows. */
  readonly nodeName: string;
  /** Real Consul arms the invalidation timer at TTL x 2. */
  readonly sessionTtlMultiplier: number;
  readonly sessionTtlMinMs: number;
  readonly sessionTtlMaxMs: number;
}

/** The state a snapshot holds (what `consul snapshot save` keeps: no timers, no lock-delays). */
export interface ConsulSnapshot {
  readonly index: number;
  readonly kvs: ReadonlyMap<string, KvEntry>;
  readonly tombstones: ReadonlyMap<string, number>;
  readonly kvsTableIndex: number;
  readonly sessions: ReadonlyMap<string, SessionRecord>;
  readonly sessionsTableIndex: number;
}

/** Consul caps every session's lock-delay at 60 s (structs.MaxLockDelay). */
export const MAX_LOCK_DELAY_MS = 60_000;

/** The node health check every agent has; sessions default to it. */
export const SERF_HEALTH = 'serfHealth';

const encoder = new TextEncoder();

/** memdb orders keys by their bytes, not by UTF-16 code units. */
export function compareKeys(a: string, b: string): number {
  return Buffer.compare(Buffer.from(encoder.encode(a)), Buffer.from(encoder.encode(b)));
}

function bytesEqual(a: Uint8Array | null, b: Uint8Array | null): boolean {
  const x = a ?? new Uint8Array(0);
  const y = b ?? new Uint8Array(0);
  return x.length === y.length && Buffer.compare(Buffer.from(x.buffer, x.byteOffset, x.length), Buffer.from(y.buffer, y.byteOffset, y.length)) === 0;
}

/** structs.DirEntry.Equal: the fields a write compares before it bumps ModifyIndex. */
function sameContent(a: KvEntry, b: KvEntry): boolean {
  return a.lockIndex === b.lockIndex && a.key === b.key && a.flags === b.flags && a.session === b.session && bytesEqual(a.value, b.value);
}

/** A transaction's private view of the KV table; committed all at once or dropped. */
class KvOverlay {
  readonly writes = new Map<string, KvEntry | null>();
  readonly tombstones = new Map<string, number>();

  constructor(private readonly base: ReadonlyMap<string, KvEntry>) {}

  get(key: string): KvEntry | undefined {
    if (this.writes.has(key)) return this.writes.get(key) ?? undefined;
    return this.base.get(key);
  }

  list(prefix: string): KvEntry[] {
    const keys = new Set<string>();
    for (const k of this.base.keys()) if (k.startsWith(prefix)) keys.add(k);
    for (const k of this.writes.keys()) if (k.startsWith(prefix)) keys.add(k);
    const out: KvEntry[] = [];
    for (const k of [...keys].sort(compareKeys)) {
      const e = this.get(k);
      if (e) out.push(e);
    }
    return out;
  }

  put(entry: KvEntry): void {
    this.writes.set(entry.key, entry);
  }

  delete(key: string, idx: number): void {
    if (!this.get(key)) return;
    this.writes.set(key, null);
    this.tombstones.set(key, idx);
  }
}

export class ConsulStore {
  readonly #clock: EmulatorClock;
  readonly #options: StoreOptions;
  #index: number;
  #kvs = new Map<string, KvEntry>();
  #tombstones = new Map<string, number>();
  #kvsTableIndex = 0;
  #sessions = new Map<string, SessionRecord>();
  #sessionsTableIndex = 0;
  /** key -> when its lock-delay ends, on the emulator's clock. */
  #lockDelays = new Map<string, number>();
  readonly #timers = new Map<string, EmulatorTimerHandle>();
  #timersArmed = true;
  readonly #listeners = new Set<(change: StoreChange) => void>();
  /** Counts renewals, for tests that check a client's keepalive cadence. */
  renewals = 0;

  constructor(options: StoreOptions) {
    this.#options = options;
    this.#clock = options.clock;
    this.#index = options.initialIndex;
  }

  get index(): number {
    return this.#index;
  }

  get nodeName(): string {
    return this.#options.nodeName;
  }

  onChange(listener: (change: StoreChange) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #emit(change: StoreChange): void {
    for (const listener of [...this.#listeners]) listener(change);
  }

  /** Every write that goes through Raft takes the next index, applied or not. */
  #nextIndex(): number {
    this.#index += 1;
    return this.#index;
  }

  // ---- reads -------------------------------------------------------------------

  getKey(key: string): KvEntry | undefined {
    return this.#kvs.get(key);
  }

  listKeys(prefix: string): KvEntry[] {
    return new KvOverlay(this.#kvs).list(prefix);
  }

  /** The KV table's index: the last write to keys or tombstones. */
  get kvsTableIndex(): number {
    return this.#kvsTableIndex;
  }

  /** KVS.Get's index: the key's ModifyIndex, or the table index when the key is missing. */
  keyIndex(key: string): number {
    return this.#kvs.get(key)?.modifyIndex ?? this.#kvsTableIndex;
  }

  /**
   * KVS.List's index: the highest ModifyIndex or tombstone under the prefix, or the
   * table index when there is neither (or the prefix is empty).
   */
  prefixIndex(prefix: string): number {
    if (prefix === '') return this.#kvsTableIndex;
    let max = 0;
    for (const [k, e] of this.#kvs) if (k.startsWith(prefix) && e.modifyIndex > max) max = e.modifyIndex;
    for (const [k, i] of this.#tombstones) if (k.startsWith(prefix) && i > max) max = i;
    return max === 0 ? this.#kvsTableIndex : max;
  }

  getSession(id: string): SessionRecord | undefined {
    return this.#sessions.get(id);
  }

  listSessions(): SessionRecord[] {
    return [...this.#sessions.values()].sort((a, b) => a.createIndex - b.createIndex);
  }

  get sessionsTableIndex(): number {
    return this.#sessionsTableIndex;
  }

  /** When the key's lock-delay ends, if one is running. */
  lockDelayUntil(key: string): number | undefined {
    const until = this.#lockDelays.get(key);
    if (until === undefined) return undefined;
    if (until <= this.#clock.now()) {
      this.#lockDelays.delete(key);
      return undefined;
    }
    return until;
  }

  // ---- KV writes -------------------------------------------------------------

  /** Applies KV operations atomically, like `/v1/txn` (a single `/v1/kv` write is a one-op transaction). */
  transact(ops: readonly TxnKvOp[]): TxnOutcome {
    // Checks the leader makes before the entry goes to Raft (kvsPreApply): no index is used when they fail.
    const preErrors: TxnError[] = [];
    ops.forEach((op, i) => {
      if (op.key === '' && op.verb !== 'delete-tree') preErrors.push({ opIndex: i, what: 'Must provide key' });
      else if (op.verb === 'lock' && this.lockDelayUntil(op.key) !== undefined) {
        preErrors.push({ opIndex: i, what: `failed to lock key ${JSON.stringify(op.key)} due to lock delay` });
      }
    });
    if (preErrors.length > 0) return { ok: false, errors: preErrors };

    const writes = ops.some((op) => WRITE_VERBS.has(op.verb));
    const idx = writes ? this.#nextIndex() : 0;
    const view = new KvOverlay(this.#kvs);
    const results: KvEntry[] = [];
    const errors: TxnError[] = [];
    ops.forEach((op, i) => {
      const outcome = this.#applyOp(view, idx, op);
      if (typeof outcome === 'string') errors.push({ opIndex: i, what: outcome });
      else results.push(...outcome);
    });
    if (errors.length > 0) return { ok: false, errors };
    this.#commit(view, idx);
    return { ok: true, results };
  }

  #commit(view: KvOverlay, idx: number): void {
    if (view.writes.size === 0) return;
    for (const [key, entry] of view.writes) {
      if (entry) {
        this.#kvs.set(key, entry);
        this.#tombstones.delete(key);
      } else {
        this.#kvs.delete(key);
      }
    }
    for (const [key, at] of view.tombstones) {
      if (!this.#kvs.has(key)) this.#tombstones.set(key, at);
    }
    this.#kvsTableIndex = idx;
    this.#emit({ kind: 'kv', keys: [...view.writes.keys()] });
  }

  /** One operation inside a transaction: its results, or the error text Consul reports. */
  #applyOp(view: KvOverlay, idx: number, op: TxnKvOp): KvEntry[] | string {
    const key = op.key;
    const quoted = JSON.stringify(key);
    const strip = (e: KvEntry): KvEntry => ({ ...e, value: null });
    switch (op.verb) {
      case 'set': {
        return [strip(this.#set(view, idx, this.#incoming(op), false))];
      }
      case 'cas': {
        const existing = view.get(key);
        if (op.index === 0 && existing) return `failed to set key ${quoted}, index is stale`;
        if (op.index !== 0 && !existing) return `failed to set key ${quoted}, index is stale`;
        if (existing && op.index !== 0 && existing.modifyIndex !== op.index) return `failed to set key ${quoted}, index is stale`;
        return [strip(this.#set(view, idx, this.#incoming(op), false))];
      }
      case 'lock': {
        const locked = this.#lock(view, idx, op);
        if (typeof locked === 'string') return locked;
        if (!locked) return `failed to lock key ${quoted}, lock is already held`;
        return [strip(locked)];
      }
      case 'unlock': {
        const unlocked = this.#unlock(view, idx, op);
        if (typeof unlocked === 'string') return unlocked;
        if (!unlocked) return `failed to unlock key ${quoted}, lock isn't held, or is held by another session`;
        return [strip(unlocked)];
      }
      case 'get': {
        const e = view.get(key);
        return e ? [e] : `key ${quoted} doesn't exist`;
      }
      case 'get-or-empty': {
        return [view.get(key) ?? { ...this.#incoming(op), value: null }];
      }
      case 'get-tree':
        return view.list(key);
      case 'check-session': {
        const e = view.get(key);
        if (!e) return `failed to check session, key ${quoted} doesn't exist`;
        if (e.session !== op.session) {
          return `failed session check for key ${quoted}, current session ${JSON.stringify(e.session)} != ${JSON.stringify(op.session)}`;
        }
        return [strip(e)];
      }
      case 'check-index': {
        const e = view.get(key);
        if (!e) return `failed to check index, key ${quoted} doesn't exist`;
        if (e.modifyIndex !== op.index) return `failed index check for key ${quoted}, current modify index ${e.modifyIndex} != ${op.index}`;
        return [strip(e)];
      }
      case 'check-not-exists':
        return view.get(key) ? `key ${quoted} exists` : [];
      case 'delete':
        view.delete(key, idx);
        return [];
      case 'delete-cas': {
        const e = view.get(key);
        // Consul treats a CAS delete of a missing key as done.
        if (!e) return [];
        if (e.modifyIndex !== op.index) return `failed to delete key ${quoted}, index is stale`;
        view.delete(key, idx);
        return [];
      }
      case 'delete-tree':
        for (const e of view.list(key)) view.delete(e.key, idx);
        return [];
      default:
        return `unknown KV verb ${JSON.stringify(op.verb)}`;
    }
  }

  #incoming(op: TxnKvOp): KvEntry {
    return { key: op.key, value: op.value, flags: op.flags, session: op.session, lockIndex: 0, createIndex: 0, modifyIndex: 0 };
  }

  /**
   * kvsSetTxn: keeps CreateIndex, keeps the existing Session unless told otherwise,
   * and leaves ModifyIndex alone when nothing changed. The incoming LockIndex is
   * kept as given (a plain set or CAS writes 0, as in Consul).
   */
  #set(view: KvOverlay, idx: number, incoming: KvEntry, updateSession: boolean): KvEntry {
    const existing = view.get(incoming.key);
    let entry: KvEntry = {
      ...incoming,
      createIndex: existing ? existing.createIndex : idx,
      session: updateSession ? incoming.session : (existing?.session ?? ''),
    };
    if (existing && sameContent(existing, entry)) return { ...entry, modifyIndex: existing.modifyIndex };
    entry = { ...entry, modifyIndex: idx };
    view.put(entry);
    return entry;
  }

  #lock(view: KvOverlay, idx: number, op: TxnKvOp): KvEntry | false | string {
    if (op.session === '') return 'missing session';
    if (!this.#sessions.has(op.session)) return `invalid session ${JSON.stringify(op.session)}`;
    const existing = view.get(op.key);
    let lockIndex = 1;
    if (existing) {
      if (existing.session === op.session) lockIndex = existing.lockIndex;
      else if (existing.session !== '') return false;
      else lockIndex = existing.lockIndex + 1;
    }
    return this.#set(view, idx, { ...this.#incoming(op), lockIndex }, true);
  }

  #unlock(view: KvOverlay, idx: number, op: TxnKvOp): KvEntry | false | string {
    if (op.session === '') return 'missing session';
    const existing = view.get(op.key);
    if (!existing || existing.session !== op.session) return false;
    return this.#set(view, idx, { ...this.#incoming(op), session: '', lockIndex: existing.lockIndex }, true);
  }

  /**
   * The `/v1/kv` PUT forms. Returns what the endpoint answers: a lock refused by
   * lock-delay is `false` without a Raft write; a bad session is an error.
   */
  put(op: TxnKvOp): boolean {
    if (op.verb === 'lock' && this.lockDelayUntil(op.key) !== undefined) return false;
    // These fail inside the Raft apply, so they still use up an index.
    if ((op.verb === 'lock' || op.verb === 'unlock') && op.session === '') {
      this.#nextIndex();
      throw new StoreRequestError('missing session');
    }
    if (op.verb === 'lock' && !this.#sessions.has(op.session)) {
      this.#nextIndex();
      throw new StoreRequestError(`invalid session ${JSON.stringify(op.session)}`);
    }
    const outcome = this.transact([op]);
    return outcome.ok;
  }

  /** Drops tombstones (Consul reaps them after tombstone_ttl); a prefix's index can then go backwards. */
  reapTombstones(upToIndex = Number.POSITIVE_INFINITY): number {
    let reaped = 0;
    for (const [key, at] of this.#tombstones) {
      if (at <= upToIndex) {
        this.#tombstones.delete(key);
        reaped += 1;
      }
    }
    this.#nextIndex();
    return reaped;
  }

  // ---- sessions --------------------------------------------------------------

  createSession(input: SessionInput): SessionRecord {
    if (input.behavior !== 'release' && input.behavior !== 'delete') {
      throw new StoreRequestError(`Invalid Behavior setting '${input.behavior}'`);
    }
    if (input.ttl !== '') {
      if (input.ttlMs === undefined) throw new StoreRequestError(`Session TTL '${input.ttl}' invalid: time: invalid duration ${JSON.stringify(input.ttl)}`);
      const { sessionTtlMinMs: min, sessionTtlMaxMs: max } = this.#options;
      if (input.ttlMs !== 0 && (input.ttlMs < min || input.ttlMs > max)) {
        // Consul formats the TTL with %d: nanoseconds.
        throw new StoreRequestError(
          `Invalid Session TTL '${Math.round(input.ttlMs * 1e6)}', must be between [${formatGoDuration(min)}=${formatGoDuration(max)}]`,
        );
      }
    }
    if (input.node !== this.#options.nodeName) throw new StoreRequestError(`Missing node registration`);
    for (const check of input.nodeChecks) {
      if (check !== SERF_HEALTH) throw new StoreRequestError(`Missing check '${check}' registration`);
    }
    for (const check of input.serviceChecks) throw new StoreRequestError(`Missing check '${check.ID}' registration`);
    const idx = this.#nextIndex();
    let id = randomUUID();
    while (this.#sessions.has(id)) id = randomUUID();
    const record: SessionRecord = {
      id,
      name: input.name,
      node: input.node,
      lockDelayMs: input.lockDelayMs,
      behavior: input.behavior,
      ttl: input.ttl,
      ttlMs: input.ttlMs ?? 0,
      nodeChecks: input.nodeChecks,
      serviceChecks: input.serviceChecks,
      createIndex: idx,
      modifyIndex: idx,
    };
    this.#sessions.set(id, record);
    this.#sessionsTableIndex = idx;
    this.#armTimer(record);
    this.#emit({ kind: 'sessions' });
    return record;
  }

  /** Resets the session's TTL timer (not a Raft write: the index does not move). */
  renewSession(id: string): SessionRecord | undefined {
    const record = this.#sessions.get(id);
    if (!record) return undefined;
    this.renewals += 1;
    this.#armTimer(record);
    return record;
  }

  /** Destroys a session and applies its behaviour to the keys it holds (also what a TTL expiry does). */
  destroySession(id: string): boolean {
    const idx = this.#nextIndex();
    const record = this.#sessions.get(id);
    if (!record) return false;
    this.#clearTimer(id);
    this.#sessions.delete(id);
    this.#sessionsTableIndex = idx;
    const delay = Math.min(record.lockDelayMs, MAX_LOCK_DELAY_MS);
    const now = this.#clock.now();
    const view = new KvOverlay(this.#kvs);
    for (const entry of this.#kvs.values()) {
      if (entry.session !== id) continue;
      if (record.behavior === 'release') view.put({ ...entry, session: '', modifyIndex: idx });
      else view.delete(entry.key, idx);
      if (delay > 0) this.#lockDelays.set(entry.key, now + delay);
    }
    this.#commit(view, idx);
    this.#emit({ kind: 'sessions' });
    return true;
  }

  #armTimer(record: SessionRecord): void {
    this.#clearTimer(record.id);
    if (record.ttlMs <= 0 || !this.#timersArmed) return;
    const handle = this.#clock.setTimeout(() => {
      this.#timers.delete(record.id);
      this.destroySession(record.id);
    }, record.ttlMs * this.#options.sessionTtlMultiplier);
    handle.unref?.();
    this.#timers.set(record.id, handle);
  }

  #clearTimer(id: string): void {
    const handle = this.#timers.get(id);
    if (handle !== undefined) this.#clock.clearTimeout(handle);
    this.#timers.delete(id);
  }

  /** A stopped server invalidates nothing: its timers stop until it leads again. */
  pauseTimers(): void {
    this.#timersArmed = false;
    for (const id of [...this.#timers.keys()]) this.#clearTimer(id);
  }

  /** A new leader starts every session's timer afresh (full TTL x multiplier), as Consul does. */
  resumeTimers(): void {
    this.#timersArmed = true;
    for (const record of this.#sessions.values()) this.#armTimer(record);
  }

  // ---- snapshots ---------------------------------------------------------------

  snapshot(): ConsulSnapshot {
    return {
      index: this.#index,
      kvs: new Map(this.#kvs),
      tombstones: new Map(this.#tombstones),
      kvsTableIndex: this.#kvsTableIndex,
      sessions: new Map(this.#sessions),
      sessionsTableIndex: this.#sessionsTableIndex,
    };
  }

  /**
   * Replaces the state with a snapshot's. The tables' indexes go back to the
   * snapshot's; with `rewindIndex` the Raft index does too, as on a cluster
   * rebuilt from a backup, so new writes reuse indexes clients have already seen.
   */
  restore(snapshot: ConsulSnapshot, options: { rewindIndex?: boolean } = {}): void {
    this.pauseTimers();
    this.#kvs = new Map(snapshot.kvs);
    this.#tombstones = new Map(snapshot.tombstones);
    this.#kvsTableIndex = snapshot.kvsTableIndex;
    this.#sessions = new Map(snapshot.sessions);
    this.#sessionsTableIndex = snapshot.sessionsTableIndex;
    this.#lockDelays = new Map();
    if (options.rewindIndex === true) this.#index = snapshot.index;
    else this.#index = Math.max(this.#index, snapshot.index) + 1;
    this.resumeTimers();
    this.#emit({ kind: 'abandon' });
  }

  close(): void {
    this.pauseTimers();
    this.#listeners.clear();
  }
}

const WRITE_VERBS: ReadonlySet<string> = new Set(['set', 'cas', 'lock', 'unlock', 'delete', 'delete-cas', 'delete-tree']);

/** True when a verb changes the state (a transaction with one goes through Raft). */
export function isWriteVerb(verb: string): boolean {
  return WRITE_VERBS.has(verb);
}
