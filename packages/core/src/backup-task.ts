/**
 * A task this node holds as a backup: the backup slot's lock, the application's
 * task object (its state a mirror of the primary's), and the receiving half of
 * replication. It asks the primary for a snapshot whenever the task has a primary
 * it does not follow yet, applies the primary's updates in `seq` order (holding
 * ones that arrive early, dropping repeats), refuses updates from a primary older
 * than the one it follows (a deposed primary), and tells the node when the
 * task's primary is gone so that it can take over.
 */
import { ClosedError, DecodeFailedError, NotOwnerError, randomHex, randomOf, UnavailableError } from '@taskgraph/api';
import type { Clock, Coordinator, Entry, Lock, Logger, RequestMeta, Session, Task, Transport, UpdateLog } from '@taskgraph/api';
import { Backoff, sleep } from '@taskgraph/backend-kit';
import type { AddressBook } from './address-book.js';
import { deferred } from './async.js';
import type { Deferred } from './async.js';
import { encodeJson, keys } from './layout.js';
import type { AddrValue, BackupValue } from './layout.js';
import { METHODS, frame, isSnapshotHeader, unframe } from './replication-wire.js';
import type { SnapshotHeader, UpdateHeader } from './replication-wire.js';
import { isBackupable } from './replicator.js';
import type { NodeStats } from './stats.js';
import { casUpdate, createReplacing } from './store-ops.js';

/** An acknowledgement carries nothing. */
const EMPTY = new Uint8Array(0);

export interface BackupTaskOptions {
  readonly job: string;
  readonly id: number;
  readonly slot: number;
  /** The backup slot's lock; its token is this backup's fencing token. */
  readonly lock: Lock;
  readonly task: Task;
  readonly nodeId: string;
  /** Where this node serves (the primary ships updates there). */
  readonly address: string;
  readonly coordinator: Coordinator;
  readonly session: Session;
  readonly transport: Transport;
  readonly addresses: AddressBook;
  readonly clock: Clock;
  readonly stats: NodeStats;
  readonly logger: Logger;
  readonly attemptTimeoutMs: number;
  /** The node's view of the epoch (for the requests it sends). */
  readonly epochs: { readonly epoch: number };
  /** The task has no primary now (or its backups changed while it has none): the node may take the slot. */
  onPrimaryGone(): void;
  /** restore() or applyUpdate() threw: the node cannot be a faithful backup. */
  onFailure(err: unknown): void;
}

interface Held {
  readonly log: UpdateLog;
  readonly done: Deferred<void>;
  /** The token of the primary that sent it. */
  readonly primaryToken: bigint;
}

export class BackupTask {
  readonly id: number;
  readonly slot: number;
  readonly lock: Lock;
  /** The backup slot's token, in decimal. */
  readonly token: string;
  readonly task: Task;
  readonly logger: Logger;
  /** The seq of the last change the task's state holds. */
  private appliedSeq = 0;
  /** The primary this backup follows (its token), once it asked it for a snapshot. */
  private target: AddrValue | undefined;
  /** The state is a faithful copy: restored from a primary's snapshot at least once. */
  private restored = false;
  /** Restored from the snapshot of the primary it follows now: its updates can be applied. */
  private inSync = false;
  private readonly held = new Map<number, Held>();
  private draining = false;
  private chain: Promise<void> = Promise.resolve();
  private recordVersion: string | undefined;
  private readonly life = new AbortController();
  private unsubscribe: (() => void) | undefined;
  private syncLoop: Promise<void> | undefined;

  constructor(private readonly o: BackupTaskOptions) {
    this.id = o.id;
    this.slot = o.slot;
    this.lock = o.lock;
    this.token = o.lock.token.toString();
    this.task = o.task;
    this.logger = o.logger;
  }

  /** The seq of the last change the state holds (0 for none). */
  get applied(): number {
    return this.appliedSeq;
  }

  /**
   * True once the state was restored from a primary's snapshot. It stays true while
   * the backup re-syncs with a new primary: that primary acknowledges nothing until
   * every backup it counts has synced, so the old state still holds every
   * acknowledged update and a promotion from it loses none.
   */
  get ready(): boolean {
    return this.restored;
  }

  /** The incarnation of the primary this backup follows (0 before it follows one). */
  get primaryIncarnation(): number {
    return this.target?.incarnation ?? 0;
  }

  /** Publishes the backup record, then follows the task's primary in the background. */
  async start(): Promise<void> {
    const value = this.record('syncing');
    this.o.stats.writes.addr++;
    this.recordVersion = await createReplacing(this.o.coordinator, keys.backup(this.o.job, this.id, this.slot), encodeJson(value), {
      session: this.o.session,
      logger: this.logger,
      clock: this.o.clock,
      signal: this.life.signal,
    });
    this.unsubscribe = this.o.addresses.subscribe((c) => {
      if (c.task !== this.id) return;
      if (c.kind === 'primary' && c.after && c.after.token !== this.target?.token) this.wake();
      if (!this.o.addresses.has(this.id)) this.o.onPrimaryGone();
    });
    this.syncLoop = this.follow();
    if (!this.o.addresses.has(this.id)) this.o.onPrimaryGone();
  }

  /** `taskgraph_update` from a primary. */
  async handleUpdate(header: UpdateHeader, body: Uint8Array): Promise<Uint8Array> {
    const from = BigInt(header.primaryToken);
    const known = this.o.addresses.get(this.id);
    if ((known !== undefined && BigInt(known.token) > from) || (this.target !== undefined && BigInt(this.target.token) > from)) {
      throw new NotOwnerError(`task ${this.id}: primary ${header.primaryToken} is deposed`, { details: { reason: 'deposed' } });
    }
    if (this.target === undefined || BigInt(this.target.token) < from) {
      throw new UnavailableError(`task ${this.id}: this backup does not follow primary ${header.primaryToken} yet`, { details: { reason: 'resync' } });
    }
    // A repeat is known only against the state of this primary: while the snapshot is on
    // its way, the seqs applied so far came from the previous primary and may name other changes.
    if (this.inSync && header.seq <= this.appliedSeq) return EMPTY;
    let entry = this.held.get(header.seq);
    if (!entry) {
      entry = { log: { epoch: header.epoch, seq: header.seq, data: body.slice() }, done: deferred<void>(), primaryToken: from };
      entry.done.promise.catch(() => undefined);
      this.held.set(header.seq, entry);
      this.drain();
    }
    // Not bounded by the caller's signal: the change is applied (or released) whether or
    // not the primary still waits, and a retry of the same seq waits on the same entry.
    await entry.done.promise;
    return EMPTY;
  }

  /** Stops following the primary (the node leaves, or this backup is being promoted). Resolves when no apply runs. */
  async stop(): Promise<void> {
    this.unsubscribe?.();
    this.life.abort(new ClosedError(`task ${this.id}: the backup stopped`));
    this.releaseHeld(new ClosedError(`task ${this.id}: the backup stopped`));
    await this.syncLoop;
    await this.chain;
  }

  /** Gives up the backup slot after a promotion: the record goes, the slot's lock is released. */
  async vacate(): Promise<void> {
    const version = this.recordVersion;
    if (version !== undefined) {
      await this.o.coordinator.delete(keys.backup(this.o.job, this.id, this.slot), version).catch(() => undefined);
    }
    await this.lock.release().catch(() => undefined);
  }

  private record(state: BackupValue['state']): BackupValue {
    return {
      nodeId: this.o.nodeId,
      address: this.o.address,
      token: this.token,
      slot: this.slot,
      state,
      ...(this.target ? { primaryToken: this.target.token } : {}),
    };
  }

  private readonly wakeups = new Set<() => void>();

  private wake(): void {
    for (const w of [...this.wakeups]) w();
  }

  /** Syncs with the task's primary whenever it has one this backup does not follow. */
  private async follow(): Promise<void> {
    const signal = this.life.signal;
    const backoff = new Backoff(50, 1000, randomOf(this.o.clock));
    while (!signal.aborted) {
      const primary = this.o.addresses.get(this.id);
      if (primary && primary.token !== this.target?.token) {
        try {
          await this.syncWith(primary);
          backoff.reset();
        } catch (err) {
          if (signal.aborted) return;
          this.logger.info('could not sync with the primary yet; retrying', { error: err instanceof Error ? err.message : String(err) });
          this.target = undefined;
          await sleep(this.o.clock, backoff.next(), signal).catch(() => undefined);
        }
        continue;
      }
      await new Promise<void>((resolve) => {
        const done = () => {
          this.wakeups.delete(done);
          this.o.clock.clearTimeout(timer);
          signal.removeEventListener('abort', done);
          resolve();
        };
        const timer = this.o.clock.setTimeout(done, 1000);
        timer.unref?.();
        signal.addEventListener('abort', done, { once: true });
        this.wakeups.add(done);
      });
    }
  }

  private async syncWith(primary: AddrValue): Promise<void> {
    // Updates held for an older primary will never be completed by it: it is deposed. Those
    // of this same primary (a sync tried again after a failure: a lost snapshot answer) are
    // not: they are released as retryable, for the primary to send again once this backup
    // is in sync. Refusing them as "deposed" made a live primary abdicate (simulator seed
    // 56 of hot-standby) and, with its only backup not in sync, lose the task's state.
    const now = BigInt(primary.token);
    for (const h of this.held.values()) {
      h.done.reject(
        h.primaryToken < now
          ? new NotOwnerError(`task ${this.id}: the backup follows primary ${primary.token} now`, { details: { reason: 'deposed' } })
          : new UnavailableError(`task ${this.id}: this backup syncs with primary ${primary.token} again`, { details: { reason: 'resync' } }),
      );
    }
    this.held.clear();
    this.target = primary;
    this.inSync = false;
    const meta = this.meta(primary);
    const request = frame({ backupToken: this.token, slot: this.slot, address: this.o.address, nodeId: this.o.nodeId });
    const first = await this.o.transport.call(primary.address, METHODS.snapshot, meta, request, { timeoutMs: this.o.attemptTimeoutMs, signal: this.life.signal });
    const { header, body } = unframe<SnapshotHeader>(first, 'snapshot', isSnapshotHeader);
    if (header.primaryToken !== primary.token) throw new DecodeFailedError(`task ${this.id}: a snapshot from primary ${header.primaryToken}, asked of ${primary.token}`);
    const bytes = await this.fetchRest(primary, header, body);
    await this.serial(async () => {
      if (isBackupable(this.task)) await this.task.restore(bytes);
    });
    if (this.target !== primary) return;
    this.appliedSeq = header.seq;
    this.restored = true;
    this.target = { ...primary, incarnation: header.incarnation };
    // The record says `ready` before any update is acknowledged through this backup: a
    // standby deciding whether to take a free primary slot reads the records, and must
    // not take it over a backup that holds acknowledged updates.
    await this.markReady();
    this.inSync = true;
    for (const [seq, h] of this.held) {
      if (seq <= this.appliedSeq) {
        this.held.delete(seq);
        h.done.resolve();
      }
    }
    this.drain();
    this.logger.info('backup in sync with the primary', { primaryToken: primary.token, seq: header.seq, bytes: bytes.length });
  }

  private async fetchRest(primary: AddrValue, header: SnapshotHeader, first: Uint8Array): Promise<Uint8Array> {
    if (first.length >= header.total) return first.slice();
    const out = new Uint8Array(header.total);
    out.set(first, 0);
    let offset = first.length;
    while (offset < header.total) {
      const piece = await this.o.transport.call(primary.address, METHODS.snapshotChunk, this.meta(primary), frame({ id: header.id, offset }), {
        timeoutMs: this.o.attemptTimeoutMs,
        signal: this.life.signal,
      });
      if (piece.length === 0 || offset + piece.length > header.total) throw new DecodeFailedError(`task ${this.id}: a snapshot piece of ${piece.length} bytes at ${offset} of ${header.total}`);
      out.set(piece, offset);
      offset += piece.length;
    }
    return out;
  }

  private async markReady(): Promise<void> {
    const key = keys.backup(this.o.job, this.id, this.slot);
    const value = encodeJson(this.record('ready'));
    const known: Entry | undefined = this.recordVersion === undefined ? undefined : { key, value: new Uint8Array(0), version: this.recordVersion };
    const out = await casUpdate(this.o.coordinator, key, () => value, {
      clock: this.o.clock,
      signal: this.life.signal,
      known,
      onWrite: () => this.o.stats.writes.addr++,
    });
    this.recordVersion = out.version;
  }

  private meta(primary: AddrValue): RequestMeta {
    return { job: this.o.job, from: this.id, to: this.id, epoch: this.o.epochs.epoch, token: primary.token, requestId: `b${randomHex(this.o.clock, 6)}` };
  }

  /** Applies held changes in seq order, one at a time, once the state is restored. */
  private drain(): void {
    if (this.draining || !this.inSync) return;
    this.draining = true;
    void (async () => {
      try {
        for (let next = this.held.get(this.appliedSeq + 1); next && this.inSync && !this.life.signal.aborted; next = this.held.get(this.appliedSeq + 1)) {
          const entry = next;
          await this.serial(async () => {
            if (isBackupable(this.task)) await this.task.applyUpdate(entry.log);
          });
          this.held.delete(entry.log.seq);
          this.appliedSeq = entry.log.seq;
          entry.done.resolve();
        }
      } catch (err) {
        this.o.onFailure(err);
      } finally {
        this.draining = false;
      }
    })();
  }

  /** The task's restore and applyUpdate run one at a time. */
  private serial(run: () => Promise<void>): Promise<void> {
    const p = this.chain.then(run);
    this.chain = p.catch(() => undefined);
    return p;
  }

  private releaseHeld(err: Error): void {
    for (const h of this.held.values()) h.done.reject(err);
    this.held.clear();
  }
}
