/**
 * The framework a task object is given: one per task object, for its whole life
 * on this node, across a promotion from backup to primary. It checks every call's
 * input and context, then hands the work to the node's parts: the epoch tracker,
 * the meta outbox, the data client, the replicator. Calls that only a primary can
 * make are refused on a backup.
 */
import { InvalidArgumentError, LeaseLostError } from '@taskgraph/api';
import type { BackedUpFramework, Clock, Coordinator, DataRequestOptions, EpochContext, Logger, MethodSpec, TaskRole, Topology, UpdateLog } from '@taskgraph/api';
import type { AddressBook } from './address-book.js';
import type { BackupTask } from './backup-task.js';
import type { DataClient } from './data-client.js';
import type { EpochTracker } from './epoch.js';
import type { Instruments } from './instruments.js';
import type { RunningTask } from './running-task.js';
import { flagMetaSpan, inSpan, incEpochSpan } from './tracing.js';

const enc = new TextEncoder();

/** What the framework needs from its node. */
export interface FrameworkHost {
  readonly job: string;
  readonly linkages: ReadonlyMap<string, Topology>;
  /** The largest meta string, in UTF-8 bytes. */
  readonly maxMetaBytes: number;
  readonly epochs: EpochTracker;
  readonly data: DataClient;
  /** Throws ClosedError once the node has left. */
  assertAlive(): void;
  /** Throws LeaseLostError once the node may no longer act as the task's owner. */
  assertOwner(what: string): void;
  kill(): Promise<void>;
  shutdownJob(): Promise<void>;
  readonly addresses: AddressBook;
  readonly coordinator: Coordinator;
  readonly clock: Clock;
  /** A task's own work failed (as a callback that threw): the node fails, unless it is the end of the task. */
  onCallbackError(err: unknown): void;
  /** The node's observers (metas flagged). */
  readonly instruments?: Instruments;
}

/**
 * What a paradigm built on the task API (master/worker) needs of the runtime beyond
 * the public framework: reached through the `RUNTIME` key of the framework object,
 * so applications do not see it.
 */
export interface RuntimeInternals {
  readonly job: string;
  readonly coordinator: Coordinator;
  readonly clock: Clock;
  readonly addresses: AddressBook;
  /** Throws LeaseLostError once this node may no longer act as the task's owner. */
  assertOwner(what: string): void;
  /** The primary's fencing token while this node serves as the task's primary. */
  token(): bigint | undefined;
  /** Aborts when this node's hold on the task as its primary ends (a fresh aborted signal when it does not hold it). */
  primarySignal(): AbortSignal;
  /** Fails the node as a callback that threw does. */
  fail(err: unknown): void;
  /** The context of the epoch this node is in now. */
  epochContext(): EpochContext;
}

export const RUNTIME: unique symbol = Symbol('taskgraph.runtime');

/** Where the task object stands on this node now. */
export interface TaskRoleView {
  readonly id: number;
  /** The running primary, when this node is the task's primary. */
  primary(): RunningTask | undefined;
  /** The backup, when this node holds one of the task's backups. */
  backup(): BackupTask | undefined;
  logger(): Logger;
}

export class TaskFramework implements BackedUpFramework {
  private readonly assertAlive: () => void;

  constructor(
    private readonly host: FrameworkHost,
    private readonly view: TaskRoleView,
    private readonly numTasks: number,
    private readonly numBackups = 0,
  ) {
    this.assertAlive = () => host.assertAlive();
  }

  getJob(): string {
    return this.host.job;
  }

  getTaskId(): number {
    return this.view.id;
  }

  getNumTasks(): number {
    return this.numTasks;
  }

  getIncarnation(): number {
    return this.view.primary()?.incarnation ?? this.view.backup()?.primaryIncarnation ?? 0;
  }

  getRole(): TaskRole {
    return this.view.primary() ? 'primary' : 'backup';
  }

  getNumBackups(): number {
    return this.numBackups;
  }

  async waitForBackups(ctx: EpochContext, count: number = this.numBackups): Promise<void> {
    this.host.epochs.check(ctx, this.assertAlive);
    if (!Number.isInteger(count) || count < 0) throw new InvalidArgumentError(`waitForBackups: count must be a non-negative integer, got ${String(count)}`);
    if (count > this.numBackups) throw new InvalidArgumentError(`waitForBackups: the job has ${this.numBackups} backups per task; ${count} can never be in sync`);
    await this.primary('waitForBackups').replicator.waitForBackups(count, ctx.signal);
  }

  getEpoch(): number {
    return this.host.epochs.epoch;
  }

  getTopology(): ReadonlyMap<string, Topology> {
    return this.host.linkages;
  }

  getLogger(): Logger {
    return this.view.logger();
  }

  async flagMeta(ctx: EpochContext, linkType: string, meta: string): Promise<void> {
    this.host.epochs.check(ctx, this.assertAlive);
    const primary = this.primary('flagMeta');
    const topology = this.host.linkages.get(linkType);
    if (!topology) throw new InvalidArgumentError(`flagMeta: unknown link type "${linkType}" (added: ${[...this.host.linkages.keys()].join(', ') || 'none'})`);
    if (typeof meta !== 'string') throw new InvalidArgumentError('flagMeta: meta must be a string');
    const size = enc.encode(meta).length;
    if (size > this.host.maxMetaBytes) throw new InvalidArgumentError(`flagMeta: meta is ${size} bytes; the limit is ${this.host.maxMetaBytes}`);
    const receivers = topology.getNeighbors(ctx.epoch);
    for (const id of receivers) this.checkTaskId(id, `topology "${linkType}"`);
    if (this.host.instruments?.active) this.host.instruments.emit({ type: 'meta-flagged', linkType, receivers: receivers.length });
    await inSpan(flagMetaSpan(this.host.job, this.view.id, ctx.epoch, linkType, receivers.length), () => primary.outbox.flag(ctx, receivers, linkType, meta));
  }

  async incEpoch(ctx: EpochContext): Promise<void> {
    this.host.epochs.check(ctx, this.assertAlive);
    this.primary('incEpoch');
    await inSpan(incEpochSpan(this.host.job, this.view.id, ctx.epoch), () => this.host.epochs.advance(ctx, () => this.host.assertOwner('incEpoch')));
  }

  dataRequest<I, O>(ctx: EpochContext, toTask: number, method: MethodSpec<I, O>, input: I, options: DataRequestOptions = {}): Promise<O> {
    let primary: RunningTask;
    try {
      this.host.epochs.check(ctx, this.assertAlive);
      primary = this.primary('dataRequest');
      this.checkTaskId(toTask, 'dataRequest');
    } catch (err) {
      return Promise.reject(err as Error);
    }
    // No async frame of its own: the data client's is the only one on this hot path.
    return this.host.data.request(ctx, primary.id, toTask, method, input, options.attemptTimeoutMs, primary);
  }

  async update(ctx: EpochContext, data: Uint8Array): Promise<UpdateLog> {
    // A node that left (its lease lost, or any other reason) is no longer the primary: LeaseLostError, as documented.
    this.host.assertOwner('update');
    this.host.epochs.check(ctx, this.assertAlive);
    return this.primary('update').replicator.update(ctx, data);
  }

  kill(): Promise<void> {
    return this.host.kill();
  }

  [RUNTIME](): RuntimeInternals {
    const { host, view } = this;
    return {
      job: host.job,
      coordinator: host.coordinator,
      clock: host.clock,
      addresses: host.addresses,
      assertOwner: (what) => host.assertOwner(what),
      token: () => view.primary()?.lock.token,
      primarySignal: () => view.primary()?.lock.lost ?? AbortSignal.abort(new LeaseLostError(`task ${view.id} is not served by this node`)),
      fail: (err) => host.onCallbackError(err),
      epochContext: () => host.epochs.context,
    };
  }

  shutdownJob(): Promise<void> {
    return this.host.shutdownJob();
  }

  /** The running primary; a backup's calls are refused (only the primary acts for its task). */
  private primary(what: string): RunningTask {
    const primary = this.view.primary();
    if (primary) return primary;
    this.assertAlive();
    throw new InvalidArgumentError(`${what}: this node holds a backup of task ${this.view.id}; only the task's primary can ${what}`);
  }

  private checkTaskId(id: number, what: string): void {
    const n = this.numTasks;
    if (!Number.isInteger(id) || id < 0 || id >= n) throw new InvalidArgumentError(`${what}: task ${id} does not exist (tasks are 0..${n - 1})`);
  }
}
