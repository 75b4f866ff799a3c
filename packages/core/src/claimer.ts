/**
 * Claiming a slot: a task's primary slot (the lock `<job>/tasks/<id>`, whose token
 * fences the incarnation), else one of its backup slots (`.../backup-slot/<k>`),
 * the task with the fewest live backups first; the incarnation counter bumped and
 * the primary's address published. A free primary slot whose task has a ready
 * backup is left to that backup (a hot failover keeps the state); backups of a
 * primary in this node's own process go last. A node that
 * finds nothing free waits as a cold standby and looks again whenever a record
 * disappears (and every TTL/2).
 */
import { randomOf, wallNow } from '@taskgraph/api';
import type { Clock, Coordinator, Lock, Logger, Session } from '@taskgraph/api';
import type { AddressBook } from './address-book.js';
import { decodeBackup, decodeCount, decodeStatus, encodeJson, keys } from './layout.js';
import type { AddrValue } from './layout.js';
import type { NodeStats } from './stats.js';
import { casUpdate, createReplacing, retryStore } from './store-ops.js';
import { traceClaim } from './tracing.js';

export interface ClaimerOptions {
  readonly job: string;
  readonly nodeId: string;
  readonly coordinator: Coordinator;
  readonly session: Session;
  readonly addresses: AddressBook;
  readonly numTasks: number;
  /** The backup slots of a task (0: no hot standby for it). */
  backupSlots(task: number): number;
  /** The slot to try first; default random. */
  readonly preferredTask: number | undefined;
  /**
   * This node's server address. Nodes of one host share it, so a primary behind
   * it dies with this process: its backup slots are taken only when no other
   * task's are free (such a backup still covers the primary node's own failure).
   */
  readonly address?: string;
  readonly ttlMs: number;
  readonly clock: Clock;
  readonly stats: NodeStats;
  /** The node's life: claiming stops when it aborts. */
  readonly signal: AbortSignal;
  readonly logger: Logger;
  /** True once the node knows the job is finished (from the watch). */
  jobDone(): boolean;
  random?(): number;
}

/** A slot taken: a task's primary slot, or one of its backup slots. */
export type Claim = { readonly role: 'primary'; readonly id: number; readonly lock: Lock } | { readonly role: 'backup'; readonly id: number; readonly slot: number; readonly lock: Lock };

export class Claimer {
  constructor(private readonly o: ClaimerOptions) {}

  /**
   * Takes a free slot, waiting as a standby while there is none. Resolves undefined
   * when the node should not run a task after all: it is leaving, `stillStandby()`
   * turned false, or the job is finished (a lock taken then is released).
   */
  async claim(stillStandby: () => boolean, onStandby: () => void): Promise<Claim | undefined> {
    const { signal } = this.o;
    let announced = false;
    while (stillStandby() && !signal.aborted) {
      const pass = wallNow(this.o.clock);
      const claim = (await this.claimPrimary(stillStandby)) ?? (await this.claimBackup(stillStandby));
      if (claim) {
        if (this.o.jobDone() || signal.aborted || (await this.jobIsDone())) {
          await claim.lock.release();
          return undefined;
        }
        traceClaim(this.o.job, this.o.nodeId, claim, pass, announced);
        return claim;
      }
      if (!announced) {
        onStandby();
        announced = true;
      }
      try {
        await this.o.addresses.waitForFreeSlot(this.o.clock, Math.max(200, this.o.ttlMs / 2), signal);
      } catch {
        return undefined;
      }
    }
    return undefined;
  }

  /**
   * Takes the primary slot of `task` if it is free and no ready backup of it is
   * there to take it with the state. The backups are read from the store (not the
   * watch), so a backup that became ready before the primary died is always seen.
   * This node's own backup record does not count (a backup not ready yet may take
   * the slot when no other backup is ready). Records are told apart by node, not by
   * token: some backends count tokens per lock, so two slots can share one.
   */
  async claimPrimarySlot(task: number): Promise<Lock | undefined> {
    if (this.o.backupSlots(task) > 0 && (await this.hasReadyBackup(task))) return undefined;
    return this.retry(`claim task ${task}`, () => this.o.coordinator.tryAcquire(keys.taskLock(this.o.job, task), this.o.session, { owner: this.o.nodeId }));
  }

  private async claimPrimary(stillStandby: () => boolean): Promise<Claim | undefined> {
    const n = this.o.numTasks;
    const start = this.startAt(n);
    for (let i = 0; i < n && stillStandby(); i++) {
      const id = (start + i) % n;
      if (this.o.addresses.has(id)) continue;
      const lock = await this.claimPrimarySlot(id);
      if (lock) return { role: 'primary', id, lock };
    }
    return undefined;
  }

  /** A free backup slot, of the task with the fewest live backups first. */
  private async claimBackup(stillStandby: () => boolean): Promise<Claim | undefined> {
    const n = this.o.numTasks;
    const start = this.startAt(n);
    const order = Array.from({ length: n }, (_, i) => (start + i) % n)
      .filter((id) => this.o.backupSlots(id) > 0)
      .sort((a, b) => this.colocated(a) - this.colocated(b) || this.o.addresses.backupsOf(a).length - this.o.addresses.backupsOf(b).length);
    for (const id of order) {
      const slots = this.o.backupSlots(id);
      const taken = new Set(this.o.addresses.backupsOf(id).map((b) => b.slot));
      if (taken.size >= slots) continue;
      for (let slot = 0; slot < slots && stillStandby(); slot++) {
        if (taken.has(slot)) continue;
        const lock = await this.retry(`claim backup slot ${slot} of task ${id}`, () =>
          this.o.coordinator.tryAcquire(keys.backupLock(this.o.job, id, slot), this.o.session, { owner: this.o.nodeId }),
        );
        if (lock) return { role: 'backup', id, slot, lock };
      }
    }
    return undefined;
  }

  /** 1 when `task`'s primary runs behind this node's address (in this process), else 0. */
  private colocated(task: number): number {
    return this.o.address !== undefined && this.o.addresses.get(task)?.address === this.o.address ? 1 : 0;
  }

  private async hasReadyBackup(task: number): Promise<boolean> {
    const { entries } = await this.retry(`read the backups of task ${task}`, () => this.o.coordinator.list(keys.backups(this.o.job, task)));
    for (const e of entries) {
      try {
        const b = decodeBackup(e.key, e.value);
        if (b.state === 'ready' && b.nodeId !== this.o.nodeId) return true;
      } catch (err) {
        this.o.logger.warn('ignoring a corrupt backup record', { key: e.key, error: (err as Error).message });
      }
    }
    return false;
  }

  /** A read or a lock try, through the store's outages (the backends settle a lost lock answer themselves). */
  retry<T>(what: string, op: () => Promise<T>): Promise<T> {
    return retryStore(op, { clock: this.o.clock, signal: this.o.signal, logger: this.o.logger, what });
  }

  private startAt(n: number): number {
    const preferred = this.o.preferredTask;
    return preferred !== undefined && preferred >= 0 && preferred < n ? preferred : Math.floor((this.o.random ?? randomOf(this.o.clock))() * n);
  }

  /** Counts one more claim of `task` (`<job>/tasks/<id>/incarnation`); resolves with the new count. */
  async bumpIncarnation(task: number): Promise<number> {
    const key = keys.incarnation(this.o.job, task);
    let next = 1;
    await casUpdate(
      this.o.coordinator,
      key,
      (entry) => {
        next = 1;
        if (entry) {
          try {
            next = decodeCount(key, entry.value) + 1;
          } catch (err) {
            this.o.logger.warn('resetting a corrupt incarnation counter', { key, error: (err as Error).message });
          }
        }
        return encodeJson(next);
      },
      { clock: this.o.clock, signal: this.o.signal, onWrite: () => this.o.stats.writes.incarnation++ },
    );
    return next;
  }

  /** Publishes the owner's address record (ephemeral: it goes with the session). */
  async publishAddress(task: number, value: AddrValue, assertOwner: () => void): Promise<void> {
    await createReplacing(this.o.coordinator, keys.addr(this.o.job, task), encodeJson(value), {
      session: this.o.session,
      logger: this.o.logger,
      clock: this.o.clock,
      signal: this.o.signal,
      beforeWrite: assertOwner,
      onWrite: () => this.o.stats.writes.addr++,
    });
    this.o.addresses.set(task, value);
  }

  /** Whether the job is finished (done or failed), read from the store; a corrupt status counts as running, as the watch treats it. */
  private async jobIsDone(): Promise<boolean> {
    const key = keys.status(this.o.job);
    const e = await this.retry('read the job status', () => this.o.coordinator.get(key));
    if (e === undefined) return false;
    try {
      return decodeStatus(key, e.value).state !== 'running';
    } catch (err) {
      this.o.logger.warn('ignoring a corrupt job status', { key, error: (err as Error).message });
      return false;
    }
  }
}
