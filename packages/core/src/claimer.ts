/**
 * Claiming a task slot: the lock `<job>/tasks/<id>` taken with `tryAcquire` (its
 * token is the incarnation's fencing token), the incarnation counter bumped, and
 * the owner's address published. A node that finds every slot taken waits as a
 * standby and looks again whenever an owner's address disappears (and every TTL/2).
 */
import type { Clock, Coordinator, Lock, Logger, Session } from '@taskgraph/api';
import type { AddressBook } from './address-book.js';
import { decodeCount, decodeStatus, encodeJson, keys } from './layout.js';
import type { AddrValue } from './layout.js';
import type { NodeStats } from './stats.js';
import { casUpdate, createReplacing } from './store-ops.js';

export interface ClaimerOptions {
  readonly job: string;
  readonly nodeId: string;
  readonly coordinator: Coordinator;
  readonly session: Session;
  readonly addresses: AddressBook;
  readonly numTasks: number;
  /** The slot to try first; default random. */
  readonly preferredTask: number | undefined;
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

export interface Claim {
  readonly id: number;
  readonly lock: Lock;
}

export class Claimer {
  constructor(private readonly o: ClaimerOptions) {}

  /**
   * Takes a free slot, waiting as a standby while there is none. Resolves undefined
   * when the node should not run a task after all: it is leaving, `stillStandby()`
   * turned false, or the job is finished (a lock taken then is released).
   */
  async claim(stillStandby: () => boolean, onStandby: () => void): Promise<Claim | undefined> {
    const { numTasks: n, signal } = this.o;
    let announced = false;
    while (stillStandby() && !signal.aborted) {
      const preferred = this.o.preferredTask;
      const start = preferred !== undefined && preferred >= 0 && preferred < n ? preferred : Math.floor((this.o.random ?? Math.random)() * n);
      for (let i = 0; i < n && stillStandby(); i++) {
        const id = (start + i) % n;
        if (this.o.addresses.has(id)) continue;
        const lock = await this.o.coordinator.tryAcquire(keys.taskLock(this.o.job, id), this.o.session, { owner: this.o.nodeId });
        if (!lock) continue;
        if (this.o.jobDone() || signal.aborted || (await this.jobIsDone())) {
          await lock.release();
          return undefined;
        }
        return { id, lock };
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
      beforeWrite: assertOwner,
      onWrite: () => this.o.stats.writes.addr++,
    });
    this.o.addresses.set(task, value);
  }

  /** Whether the job is finished (done or failed), read from the store; a corrupt status counts as running, as the watch treats it. */
  private async jobIsDone(): Promise<boolean> {
    const key = keys.status(this.o.job);
    const e = await this.o.coordinator.get(key);
    if (e === undefined) return false;
    try {
      return decodeStatus(key, e.value).state !== 'running';
    } catch (err) {
      this.o.logger.warn('ignoring a corrupt job status', { key, error: (err as Error).message });
      return false;
    }
  }
}
