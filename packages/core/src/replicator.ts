/**
 * The primary's half of hot standby: it numbers its task's state changes, ships
 * each to every live backup and resolves an update once all of them applied it;
 * it serves a joining backup a snapshot and counts the backup in from the
 * snapshot's seq on, so no change falls between the two.
 *
 * Once a seq is given out it is shipped until every backup that was live has it or
 * has gone: a backup that missed one change could never apply the next. So the
 * shipping is bounded by the backups' sessions (a backup whose record disappears
 * is dropped) and by this primary's own ownership, not by the caller's epoch.
 */
import { ClosedError, InvalidArgumentError, LeaseLostError, randomHex, randomOf, TaskGraphError } from '@taskgraph/api';
import type { Backupable, Clock, EpochContext, Logger, RequestMeta, Task, Transport, UpdateLog } from '@taskgraph/api';
import { Backoff } from '@taskgraph/backend-kit';
import type { AddressBook } from './address-book.js';
import { Notifier } from './async.js';
import type { BackupValue } from './layout.js';
import { METHODS, frame, frameUpdate } from './replication-wire.js';
import type { SnapshotHeader, SnapshotRequest } from './replication-wire.js';
import type { Instruments } from './instruments.js';

/** Room kept in a message for the frame's header. */
const HEADER_ROOM = 16 * 1024;
/** How long a large snapshot waits for its pieces to be fetched. */
const SNAPSHOT_TTL_MS = 120_000;

export interface ReplicatorOptions {
  readonly job: string;
  readonly nodeId: string;
  readonly taskId: number;
  /** This primary's fencing token. */
  readonly token: string;
  readonly incarnation: number;
  /** The seq of the last change the state already holds (a promoted backup's, or 0). */
  readonly seq: number;
  readonly task: Task;
  readonly transport: Transport;
  readonly addresses: AddressBook;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly attemptTimeoutMs: number;
  /** Throws when this node may no longer act as the primary. */
  assertOwner(what: string): void;
  /** Told of each acknowledgement of an update by a backup (the replication lag). */
  readonly instruments?: Instruments;
}

interface Peer {
  readonly value: BackupValue;
  /** The seq of the snapshot this primary served it; undefined until it asked for one. */
  synced: number | undefined;
  gone: boolean;
  readonly changed: Notifier;
}

interface HeldSnapshot {
  readonly bytes: Uint8Array;
  readonly timer: ReturnType<Clock['setTimeout']>;
}

export function isBackupable(task: Task): task is Task & Backupable {
  const t = task as Partial<Backupable>;
  return typeof t.snapshot === 'function' && typeof t.restore === 'function' && typeof t.applyUpdate === 'function';
}

/**
 * A backup is told apart by its slot and its slot lock's token together: tokens
 * only grow per lock, and some backends (Kubernetes Leases) count them per lock, so
 * two slots' holders can have the same token.
 */
function peerKey(value: Pick<BackupValue, 'slot' | 'token'>): string {
  return `${value.slot}/${value.token}`;
}

export class Replicator {
  private seq: number;
  /** By `peerKey`. */
  private readonly peers = new Map<string, Peer>();
  private readonly held = new Map<string, HeldSnapshot>();
  private readonly life = new AbortController();
  /** Wakes `waitForBackups` when a backup syncs or goes. */
  private readonly syncs = new Notifier();
  private readonly unsubscribe: () => void;
  private readonly maxBody: number;
  private requestSeq = 0;
  private readonly requestPrefix: string;

  constructor(private readonly o: ReplicatorOptions) {
    this.requestPrefix = `r${randomHex(o.clock, 4)}-`;
    this.seq = o.seq;
    this.maxBody = Math.max(64 * 1024, o.transport.maxMessageBytes - HEADER_ROOM);
    // Backups of the previous primary follow it no longer: each counts only once it asked us for a snapshot.
    for (const b of o.addresses.backupsOf(o.taskId)) this.admit(b);
    this.unsubscribe = o.addresses.subscribe((c) => {
      if (c.kind !== 'backup' || c.task !== o.taskId) return;
      if (c.before && (c.after === undefined || peerKey(c.before) !== peerKey(c.after))) this.drop(peerKey(c.before));
      if (c.after) this.admit(c.after);
    });
  }

  /** The seq of the last change handed out. */
  get lastSeq(): number {
    return this.seq;
  }

  /** How many backups hold this primary's state now (took its snapshot, not gone). */
  get inSync(): number {
    let n = 0;
    for (const p of this.peers.values()) if (p.synced !== undefined) n++;
    return n;
  }

  /** Resolves once `count` backups hold this primary's state; rejects when `signal` aborts. */
  async waitForBackups(count: number, signal: AbortSignal): Promise<void> {
    while (this.inSync < count) {
      if (this.life.signal.aborted) throw this.life.signal.reason as Error;
      await this.syncs.wait(this.o.clock, 1000, signal);
    }
  }

  /** The backups this primary ships to now (for logs and tests). */
  get backups(): ReadonlyArray<{ readonly token: string; readonly slot: number; readonly synced: number | undefined }> {
    return [...this.peers.values()].map((p) => ({ token: p.value.token, slot: p.value.slot, synced: p.synced }));
  }

  async update(ctx: EpochContext, data: Uint8Array): Promise<UpdateLog> {
    if (!(data instanceof Uint8Array)) throw new InvalidArgumentError('update: data must be a Uint8Array');
    if (data.length > this.maxBody) throw new InvalidArgumentError(`update: ${data.length} bytes; the limit on this transport is ${this.maxBody}`);
    this.o.assertOwner('update');
    const seq = ++this.seq;
    const framed = frameUpdate({ primaryToken: this.o.token, epoch: ctx.epoch, seq }, data);
    const payload = framed.frame;
    const log: UpdateLog = { epoch: ctx.epoch, seq, data: framed.data };
    const targets = [...this.peers.values()];
    if (targets.length > 0) {
      const started = this.o.instruments?.active ? this.o.clock.now() : -1;
      try {
        await Promise.all(targets.map((p) => this.ship(p, log, payload, started)));
      } catch (err) {
        // Closed while shipping: this node stopped being the primary (it left, or handed the task over).
        if (this.life.signal.aborted && !TaskGraphError.is(err, 'LEASE_LOST')) {
          this.o.assertOwner('update');
          throw new LeaseLostError(`update: task ${this.o.taskId}'s primary stopped replicating before every backup applied seq ${log.seq}`, { cause: err });
        }
        throw err;
      }
    }
    // A primary that lost its lease while shipping may have been replaced: nothing it ships now is acknowledged.
    this.o.assertOwner('update');
    return log;
  }

  /** `taskgraph_snapshot`: a backup asks for the state; it is counted in from the snapshot's seq on. */
  async serveSnapshot(req: SnapshotRequest): Promise<Uint8Array> {
    const peer = this.admit({ nodeId: req.nodeId, address: req.address, token: req.backupToken, slot: req.slot, state: 'syncing' });
    if (!peer) throw new InvalidArgumentError(`task ${this.o.taskId}: a snapshot asked by this node itself`);
    // The snapshot and its seq are taken in one synchronous step (the Backupable contract), then the peer counts.
    const seq = this.seq;
    const taking = isBackupable(this.o.task) ? this.o.task.snapshot() : new Uint8Array(0);
    peer.synced = seq;
    peer.changed.notify();
    this.syncs.notify();
    const bytes = await taking;
    if (!(bytes instanceof Uint8Array)) throw new InvalidArgumentError(`task ${this.o.taskId}: snapshot() must return a Uint8Array`);
    const id = `${this.o.token}-${seq}-${randomHex(this.o.clock, 6)}`;
    const header: SnapshotHeader = { primaryToken: this.o.token, incarnation: this.o.incarnation, seq, total: bytes.length, id };
    if (bytes.length > this.maxBody) {
      const timer = this.o.clock.setTimeout(() => this.held.delete(id), SNAPSHOT_TTL_MS);
      timer.unref?.();
      this.held.set(id, { bytes, timer });
    }
    this.o.logger.info('serving a snapshot to a backup', { slot: req.slot, seq, bytes: bytes.length });
    return frame(header, bytes.subarray(0, this.maxBody));
  }

  /** `taskgraph_snapshot_chunk`: the next piece of a large snapshot. */
  serveChunk(id: string, offset: number): Uint8Array {
    const held = this.held.get(id);
    if (!held) throw new InvalidArgumentError(`no snapshot ${id} is held (expired, or served already)`);
    const end = Math.min(held.bytes.length, offset + this.maxBody);
    if (end >= held.bytes.length) {
      this.o.clock.clearTimeout(held.timer);
      this.held.delete(id);
    }
    return held.bytes.subarray(offset, end);
  }

  /** Stops shipping (the node leaves or the task is handed over): updates in flight reject. */
  close(): void {
    this.unsubscribe();
    this.life.abort(new ClosedError(`task ${this.o.taskId}: the primary stopped replicating`));
    for (const p of this.peers.values()) p.changed.notify();
    this.syncs.notify();
    for (const h of this.held.values()) this.o.clock.clearTimeout(h.timer);
    this.held.clear();
  }

  private admit(value: BackupValue): Peer | undefined {
    // This node's own backup record, gone since its promotion, may still be in the address book.
    if (value.nodeId === this.o.nodeId) return undefined;
    const key = peerKey(value);
    const known = this.peers.get(key);
    if (known) return known;
    const peer: Peer = { value, synced: undefined, gone: false, changed: new Notifier() };
    this.peers.set(key, peer);
    return peer;
  }

  private drop(key: string): void {
    const peer = this.peers.get(key);
    if (!peer) return;
    this.peers.delete(key);
    peer.gone = true;
    peer.changed.notify();
    this.syncs.notify();
    this.o.logger.info('a backup left; updates no longer wait for it', { slot: peer.value.slot });
  }

  /** Sends one change to one backup until it has it, or it has gone. */
  private async ship(peer: Peer, log: UpdateLog, payload: Uint8Array, started = -1): Promise<void> {
    const backoff = new Backoff(10, 500, randomOf(this.o.clock));
    const signal = this.life.signal;
    const meta: RequestMeta = {
      job: this.o.job,
      from: this.o.taskId,
      to: this.o.taskId,
      epoch: log.epoch,
      token: peer.value.token,
      requestId: `${this.requestPrefix}${++this.requestSeq}`,
    };
    for (;;) {
      if (peer.gone) return;
      if (signal.aborted) throw signal.reason as Error;
      if (peer.synced !== undefined && peer.synced >= log.seq) return;
      if (peer.synced === undefined) {
        // It will ask for a snapshot, which will hold this change, or it will go.
        await peer.changed.wait(this.o.clock, 1000, signal).catch(() => undefined);
        continue;
      }
      try {
        await this.o.transport.call(peer.value.address, METHODS.update, meta, payload, { timeoutMs: this.o.attemptTimeoutMs, signal });
        if (started >= 0) this.o.instruments?.emit({ type: 'replicated', slot: peer.value.slot, seq: log.seq, seconds: (this.o.clock.now() - started) / 1000 });
        return;
      } catch (err) {
        if (signal.aborted) throw signal.reason as Error;
        if (TaskGraphError.is(err, 'NOT_OWNER') && err.details['reason'] === 'deposed') {
          throw new LeaseLostError(`update: task ${this.o.taskId}'s backups follow a newer primary; this node is no longer its primary`, { cause: err });
        }
        if (peer.gone) return;
        this.o.logger.debug('update not applied by a backup yet; retrying', { slot: peer.value.slot, seq: log.seq, code: TaskGraphError.is(err) ? err.code : 'UNKNOWN' });
        await peer.changed.wait(this.o.clock, backoff.next(), signal).catch(() => undefined);
      }
    }
  }
}
