/**
 * The `Framework` a running task is given: one per claimed task (incarnation). It
 * checks every call's input and context, then hands the work to the node's parts:
 * the epoch tracker, the meta outbox, the data client.
 */
import { InvalidArgumentError } from '@taskgraph/api';
import type { DataRequestOptions, EpochContext, Framework, Logger, MethodSpec, Topology } from '@taskgraph/api';
import type { DataClient } from './data-client.js';
import type { EpochTracker } from './epoch.js';
import type { RunningTask } from './running-task.js';

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
}

export class TaskFramework implements Framework {
  private readonly assertAlive: () => void;

  constructor(
    private readonly host: FrameworkHost,
    private readonly running: RunningTask,
    private readonly numTasks: number,
  ) {
    this.assertAlive = () => host.assertAlive();
  }

  getJob(): string {
    return this.host.job;
  }

  getTaskId(): number {
    return this.running.id;
  }

  getNumTasks(): number {
    return this.numTasks;
  }

  getIncarnation(): number {
    return this.running.incarnation;
  }

  getEpoch(): number {
    return this.host.epochs.epoch;
  }

  getTopology(): ReadonlyMap<string, Topology> {
    return this.host.linkages;
  }

  getLogger(): Logger {
    return this.running.logger;
  }

  async flagMeta(ctx: EpochContext, linkType: string, meta: string): Promise<void> {
    this.host.epochs.check(ctx, this.assertAlive);
    const topology = this.host.linkages.get(linkType);
    if (!topology) throw new InvalidArgumentError(`flagMeta: unknown link type "${linkType}" (added: ${[...this.host.linkages.keys()].join(', ') || 'none'})`);
    if (typeof meta !== 'string') throw new InvalidArgumentError('flagMeta: meta must be a string');
    const size = enc.encode(meta).length;
    if (size > this.host.maxMetaBytes) throw new InvalidArgumentError(`flagMeta: meta is ${size} bytes; the limit is ${this.host.maxMetaBytes}`);
    const receivers = topology.getNeighbors(ctx.epoch);
    for (const id of receivers) this.checkTaskId(id, `topology "${linkType}"`);
    await this.running.outbox.flag(ctx, receivers, linkType, meta);
  }

  async incEpoch(ctx: EpochContext): Promise<void> {
    this.host.epochs.check(ctx, this.assertAlive);
    await this.host.epochs.advance(ctx, () => this.host.assertOwner('incEpoch'));
  }

  dataRequest<I, O>(ctx: EpochContext, toTask: number, method: MethodSpec<I, O>, input: I, options: DataRequestOptions = {}): Promise<O> {
    try {
      this.host.epochs.check(ctx, this.assertAlive);
      this.checkTaskId(toTask, 'dataRequest');
    } catch (err) {
      return Promise.reject(err as Error);
    }
    // No async frame of its own: the data client's is the only one on this hot path.
    return this.host.data.request(ctx, this.running.id, toTask, method, input, options.attemptTimeoutMs, this.running);
  }

  kill(): Promise<void> {
    return this.host.kill();
  }

  shutdownJob(): Promise<void> {
    return this.host.shutdownJob();
  }

  private checkTaskId(id: number, what: string): void {
    const n = this.numTasks;
    if (!Number.isInteger(id) || id < 0 || id >= n) throw new InvalidArgumentError(`${what}: task ${id} does not exist (tasks are 0..${n - 1})`);
  }
}
