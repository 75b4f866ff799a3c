/**
 * What this node holds of a task once it claimed a slot: the task object and its
 * framework, and its role in the task, the running primary or a backup. It runs a
 * claimed primary slot, keeps a backup in sync, and promotes the backup when the
 * task's primary goes: a ready backup takes the primary slot with its state; one
 * that never got the state takes it only when no ready backup is there to.
 */
import { InvalidArgumentError, LeaseLostError, TaskGraphError, wallNow } from '@taskgraph/api';
import type { Lock, Logger, Session, Task, TaskBuilder, Topology, TransportServer } from '@taskgraph/api';
import type { AddressBook } from './address-book.js';
import { BackupTask } from './backup-task.js';
import type { Claim, Claimer } from './claimer.js';
import type { EpochTracker } from './epoch.js';
import { TaskFramework } from './framework.js';
import type { FrameworkHost } from './framework.js';
import { backupSlotsOf, keys } from './layout.js';
import type { AddrValue, JobSpec } from './layout.js';
import type { NodeConfig } from './node-options.js';
import { META_PUSH_METHOD } from './meta-push.js';
import { METHODS } from './replication-wire.js';
import type { ReplicationView } from './replication-server.js';
import { RunningTask } from './running-task.js';
import type { NodeStats } from './stats.js';
import { traceTakeover } from './tracing.js';
import type { Instruments } from './instruments.js';
import type { PrefixHandlers } from './watched-prefix.js';

/** What the holder uses of its node. */
export interface HolderHost {
  readonly config: NodeConfig;
  readonly stats: NodeStats;
  readonly epochs: EpochTracker;
  readonly addresses: AddressBook;
  readonly linkages: ReadonlyMap<string, Topology>;
  readonly framework: FrameworkHost;
  /** The node's life: it aborts when the node leaves. */
  readonly life: AbortSignal;
  /** The node's logger (joined: job, node, address). */
  readonly logger: Logger;
  /** True while this node runs or holds a task (not leaving). */
  holding(): boolean;
  /** The node now runs the task as its primary. */
  nowRunning(): void;
  /** The node now holds a backup of the task. */
  nowBackup(): void;
  onLeaseLost(reason: unknown): void;
  onCallbackError(err: unknown): void;
  fail(err: unknown): void;
  assertOwner(what: string): void;
  follow(prefix: string, handlers: PrefixHandlers): Promise<void>;
  /** The node's observers. */
  readonly instruments?: Instruments;
}

/** What joining made: the job's spec, the session, the server, the claimer. */
export interface Joined {
  readonly spec: JobSpec;
  readonly session: Session;
  readonly server: TransportServer;
  readonly claimer: Claimer;
  readonly builder: TaskBuilder;
}

export class TaskHolder implements ReplicationView {
  readonly id: number;
  private readonly task: Task;
  private readonly framework: TaskFramework;
  private running: RunningTask | undefined;
  private backupTask: BackupTask | undefined;
  private serving = false;
  private promoting = false;
  private log: Logger;

  constructor(
    private readonly host: HolderHost,
    private readonly joined: Joined,
    id: number,
  ) {
    this.id = id;
    this.log = host.logger.child({ task: id });
    const task = joined.builder.getTask(id);
    if (!task || typeof task.init !== 'function') throw new InvalidArgumentError(`the TaskBuilder returned no Task for task ${id}`);
    for (const topology of host.linkages.values()) topology.setTaskId(id);
    this.task = task;
    this.framework = new TaskFramework(
      host.framework,
      { id, primary: () => this.running, backup: () => this.backupTask, logger: () => this.log },
      joined.spec.numTasks,
      backupSlotsOf(joined.spec, id),
    );
  }

  /** The task's running primary on this node, while it serves. */
  primary(): RunningTask | undefined {
    return this.serving ? this.running : undefined;
  }

  backup(): BackupTask | undefined {
    return this.backupTask;
  }

  sessionLost(): boolean {
    return this.joined.session.isLost();
  }

  get logger(): Logger {
    return this.log;
  }

  /** Runs the claimed slot: the task's primary, or one of its backups. */
  async hold(claim: Claim): Promise<void> {
    claim.lock.lost.addEventListener('abort', () => this.host.onLeaseLost(claim.lock.lost.reason), { once: true });
    if (claim.role === 'primary') {
      await this.runPrimary(claim.lock, { fresh: true, promoted: false, seq: 0 });
    } else {
      await this.runBackup(claim.slot, claim.lock);
    }
  }

  /** The epoch moved on. */
  onEpochChange(epoch: number): void {
    this.running?.onEpochChange(epoch, this.serving);
  }

  /** Leaving: the running callbacks end (or are given `graceMs`), replication stops, the task exits. */
  async close(graceMs: number, fromTask: boolean): Promise<void> {
    this.serving = false;
    if (this.running) {
      await this.running.close(graceMs, { fromTask });
      return;
    }
    if (this.backupTask) await this.backupTask.stop();
    try {
      await this.task.exit();
    } catch (err) {
      this.log.warn('task exit() threw', { error: (err as Error).message });
    }
  }

  private async runPrimary(lock: Lock, how: { fresh: boolean; promoted: boolean; seq: number; since?: number }): Promise<void> {
    const { id } = this;
    const { claimer, server } = this.joined;
    const since = how.since ?? wallNow(this.host.config.clock);
    const incarnation = await claimer.bumpIncarnation(id);
    this.log = this.host.logger.child({ task: id });
    // A failover (the task had an earlier incarnation) leaves one line, on the node that takes it over.
    const failover = how.promoted ? `failover: promoted to primary of task ${id} with the state` : !how.fresh || incarnation > 1 ? `failover: took over task ${id}` : undefined;
    this.log.info(failover ? `${failover} (incarnation ${incarnation} follows ${incarnation - 1})` : 'claimed task', {
      token: lock.token.toString(),
      incarnation,
      ...(how.promoted ? { seq: how.seq } : {}),
    });
    const running = new RunningTask(
      {
        ...this.host.config,
        session: this.joined.session,
        stats: this.host.stats,
        epochs: this.host.epochs,
        addresses: this.host.addresses,
        linkages: this.host.linkages,
        isServing: (r) => this.serving && this.running === r,
        onCallbackError: (err) => this.host.onCallbackError(err),
        assertOwner: (what) => this.host.assertOwner(what),
        ...(this.host.instruments ? { instruments: this.host.instruments } : {}),
      },
      { id, lock, incarnation, task: this.task, logger: this.log, seq: how.seq },
    );
    this.running = running;
    if (how.fresh) await this.task.init(id, this.framework);
    server.serve([...running.declareMethods(), METHODS.snapshot, METHODS.snapshotChunk, META_PUSH_METHOD]);
    if (this.host.life.aborted) return;
    this.serving = true;
    this.host.nowRunning();
    const mine: AddrValue = { nodeId: this.host.config.nodeId, address: server.address, token: running.token, incarnation };
    await claimer.publishAddress(id, mine, () => this.host.assertOwner('publishing the task address'));
    this.guardAddress(mine, running, lock);
    const { job, nodeId } = this.host.config;
    traceTakeover({ job, nodeId, task: id, incarnation, token: running.token, fresh: how.fresh, promoted: how.promoted, seq: how.seq, since });
    // becamePrimary and the current epoch first, then the metas already waiting for it.
    running.begin({ role: 'primary', incarnation, token: running.token, promoted: how.promoted, seq: how.seq });
    await this.host.follow(keys.metaFor(this.host.config.job, id), running.inbox);
  }

  /**
   * Whoever can write the store can put another address under this task's key (a
   * server that then fails the job's authentication, so callers refuse it and retry).
   * The owner holds the lock, so any record but its own is wrong: it puts its own back,
   * once the store confirms the lock is still this node's. A node whose lease the store
   * ended (revoked, expired) before the node heard of it would otherwise replace its
   * successor's record with one that its dead lease cannot even keep: the record would
   * be gone, and the task unreachable while its new owner runs it.
   */
  private guardAddress(mine: AddrValue, running: RunningTask, lock: Lock): void {
    const { id } = this;
    let restored = 0;
    const stop = this.host.addresses.subscribe((c) => {
      if (!this.serving || this.running !== running) {
        stop();
        return;
      }
      if (c.kind !== 'primary' || c.task !== id || c.after === undefined) return;
      const a = c.after;
      if (a.address === mine.address && a.token === mine.token && a.nodeId === mine.nodeId && a.incarnation === mine.incarnation) return;
      // Once loud, then quiet: whoever keeps rewriting the record must not flood the log too.
      const level = restored++ === 0 ? 'warn' : 'debug';
      this.log[level]('the task address record names another server; publishing this node’s again', { address: a.address, nodeId: a.nodeId, times: restored });
      this.republish(mine, lock).catch((err: unknown) => {
        this.log.warn('could not republish the task address', { error: err instanceof Error ? err.message : String(err) });
      });
    });
  }

  private async republish(mine: AddrValue, lock: Lock): Promise<void> {
    const { claimer } = this.joined;
    const holder = await claimer.retry(`read the holder of ${lock.name}`, () => this.host.config.coordinator.holder(lock.name));
    if (holder?.token !== lock.token) {
      const reason = new LeaseLostError(`task ${this.id}: the store no longer has this node's lock (${holder ? `${holder.owner} holds it` : 'nobody holds it'})`);
      this.log.warn('the task lock is no longer this node’s: leaving the task to its holder', { holder: holder?.owner });
      this.host.onLeaseLost(reason);
      return;
    }
    await claimer.publishAddress(this.id, mine, () => this.host.assertOwner('republishing the task address'));
  }

  private async runBackup(slot: number, lock: Lock): Promise<void> {
    const { id } = this;
    const { config } = this.host;
    this.log = this.host.logger.child({ task: id, backupSlot: slot });
    this.log.info('claimed a backup slot', { token: lock.token.toString() });
    const backup: BackupTask = new BackupTask({
      ...config,
      id,
      slot,
      lock,
      task: this.task,
      address: this.joined.server.address,
      session: this.joined.session,
      addresses: this.host.addresses,
      stats: this.host.stats,
      logger: this.log,
      epochs: this.host.epochs,
      onPrimaryGone: () => void this.considerPromotion(backup),
      onFailure: (err) => this.host.fail(err),
    });
    this.backupTask = backup;
    await this.task.init(id, this.framework);
    this.joined.server.serve([METHODS.update]);
    if (this.host.life.aborted) return;
    this.host.nowBackup();
    await this.task.becameBackup?.({ role: 'backup', incarnation: 0, token: backup.token, promoted: false, seq: 0 });
    await backup.start();
  }

  /**
   * The task has no primary: a backup in sync takes the slot at once; one that never
   * got the state takes it only if no backup in sync is there to (the claimer reads
   * the store for that). Loops until the task has a primary again, this one or not.
   */
  private async considerPromotion(backup: BackupTask): Promise<void> {
    if (this.promoting) return;
    this.promoting = true;
    const { config } = this.host;
    try {
      while (this.backupTask === backup && this.host.holding() && !this.host.addresses.has(this.id)) {
        const lock = backup.ready
          ? await this.joined.claimer.retry(`take the primary slot of task ${this.id}`, () =>
              config.coordinator.tryAcquire(keys.taskLock(config.job, this.id), this.joined.session, { owner: config.nodeId }),
            )
          : await this.joined.claimer.claimPrimarySlot(this.id);
        if (lock) {
          await this.promote(backup, lock);
          return;
        }
        await this.host.addresses.waitForChange(config.clock, Math.max(200, config.ttlMs / 2), this.host.life).catch(() => undefined);
      }
    } catch (err) {
      if (!this.host.life.aborted && !TaskGraphError.is(err, 'CLOSED')) this.host.fail(err);
    } finally {
      this.promoting = false;
    }
  }

  private async promote(backup: BackupTask, lock: Lock): Promise<void> {
    const since = wallNow(this.host.config.clock);
    lock.lost.addEventListener('abort', () => this.host.onLeaseLost(lock.lost.reason), { once: true });
    const promoted = backup.ready;
    const seq = backup.applied;
    await backup.stop();
    this.backupTask = undefined;
    // The backup slot frees for a standby to take, as a new backup of this primary.
    await backup.vacate();
    if (!promoted) this.log.warn('no backup held the state: taking over the primary slot without it');
    await this.runPrimary(lock, { fresh: false, promoted, seq, since });
  }
}
