/**
 * The application API: what an application writes (Task, TaskBuilder, Topology)
 * and what the framework gives it (Framework, Bootstrap). Names follow the seed
 * (TaskGraph, Go, 2015), made idiomatic TypeScript.
 */
import type { AnyMethodHandler, MethodSpec } from './codec.js';
import type { Logger } from './runtime.js';
import type { BackedUpFramework, NeighborEvent, RoleChange } from './standby.js';

/**
 * The context of one epoch: its number, and a signal that aborts when that epoch
 * ends or the node stops. Pass it to every framework call made for that epoch.
 */
export interface EpochContext {
  readonly epoch: number;
  readonly signal: AbortSignal;
}

/** Which tasks are this task's neighbours for one link type, per epoch. */
export interface Topology {
  /** Called once, before the task starts, with the id of the task this node runs. */
  setTaskId(taskId: number): void;
  /** The neighbours of this task in `epoch`. Must be deterministic for (taskId, epoch). */
  getNeighbors(epoch: number): readonly number[];
}

/** Makes the task object for a task id. Called once per incarnation on the node that claims it. */
export interface TaskBuilder {
  getTask(taskId: number): Task;
}

/**
 * An application task. Every callback may be async; the framework runs one
 * callback at a time per task (epoch, meta and data events are serialised), while
 * served methods (`methods`) may run concurrently with them.
 */
export interface Task {
  /**
   * Called once when this node has claimed `taskId` (as its primary or as a backup),
   * before any other callback. The framework is the same object for the task
   * object's whole life, across a promotion from backup to primary.
   */
  init(taskId: number, framework: BackedUpFramework): void | Promise<void>;
  /** The job entered `epoch` (also called once on start with the current epoch). */
  enterEpoch(ctx: EpochContext, epoch: number): void | Promise<void>;
  /**
   * `fromTask` flagged `meta` on `linkType` towards this task. Fires once per
   * (epoch, fromTask, linkType, meta), however often it was flagged.
   */
  metaReady(ctx: EpochContext, fromTask: number, linkType: string, meta: string): void | Promise<void>;
  /** The answer to this task's `dataRequest` arrived (also returned by the promise). */
  dataReady?(ctx: EpochContext, fromTask: number, method: string, output: unknown): void | Promise<void>;
  /** The node is leaving (job done, killed, or stopped). No more callbacks follow. */
  exit(): void | Promise<void>;
  /**
   * This node became its task's primary: claimed fresh (`promoted: false`, the
   * state is whatever `init` made), or promoted from backup with the state the
   * backups hold (`promoted: true`). Called before the epoch's `enterEpoch`.
   */
  becamePrimary?(ctx: EpochContext, change: RoleChange): void | Promise<void>;
  /**
   * This node became a backup of its task: it mirrors the primary's state (a
   * snapshot, then every update) and runs no epoch callbacks until it is promoted.
   */
  becameBackup?(change: RoleChange): void | Promise<void>;
  /** A neighbour (in the current epoch, any link type) lost its node; its incarnation is over. */
  neighborFailed?(ctx: EpochContext, event: NeighborEvent): void | Promise<void>;
  /** A neighbour runs again: a new incarnation (a standby took over, or a backup was promoted). */
  neighborRestarted?(ctx: EpochContext, event: NeighborEvent): void | Promise<void>;
  /** The methods this task serves to other tasks' `dataRequest`. Read after `init`. */
  readonly methods?: readonly AnyMethodHandler[];
}

export interface DataRequestOptions {
  /** Deadline of each attempt, in ms (the request as a whole is bounded by the epoch). */
  readonly attemptTimeoutMs?: number;
}

/** What the framework offers a running task. */
export interface Framework {
  getJob(): string;
  getTaskId(): number;
  getNumTasks(): number;
  /**
   * How many times this task has been claimed, this incarnation included (1 for
   * the first run; a standby that took over sees 2 or more).
   */
  getIncarnation(): number;
  /** The current epoch as this node knows it. */
  getEpoch(): number;
  /** The topologies by link type, as added with `Bootstrap.addLinkage`. */
  getTopology(): ReadonlyMap<string, Topology>;
  getLogger(): Logger;
  /**
   * Sends a small notification to every neighbour of `linkType` in `ctx.epoch`.
   * Rejects with EpochChangedError when that epoch is over, InvalidArgumentError when
   * the meta is too large or the link type unknown.
   */
  flagMeta(ctx: EpochContext, linkType: string, meta: string): Promise<void>;
  /**
   * Advances the job's epoch from `ctx.epoch` to `ctx.epoch + 1` by compare-and-swap.
   * Rejects with EpochChangedError when the epoch is no longer `ctx.epoch`.
   */
  incEpoch(ctx: EpochContext): Promise<void>;
  /**
   * Fetches `method` from task `toTask`, retrying through failures and re-resolving
   * the task's node, until it succeeds or `ctx.epoch` ends (EpochChangedError).
   * Also calls the task's `dataReady` with the output when the task defines it.
   */
  dataRequest<I, O>(ctx: EpochContext, toTask: number, method: MethodSpec<I, O>, input: I, options?: DataRequestOptions): Promise<O>;
  /** This node leaves now; its task is re-run elsewhere. */
  kill(): Promise<void>;
  /** The whole job finishes: every node calls `exit()` and stops. */
  shutdownJob(): Promise<void>;
}

/** Wires an application to the framework on one node. */
export interface Bootstrap {
  setTaskBuilder(builder: TaskBuilder): void;
  addLinkage(linkType: string, topology: Topology): void;
  /**
   * Runs the node: claims a task (or waits as a standby) and runs the event loop.
   * Resolves with how the node ended; rejects only on a fatal error.
   */
  start(): Promise<NodeOutcome>;
  /** Leaves gracefully (what SIGTERM does): the task is released for a standby. */
  stop(reason?: string): Promise<void>;
}

/** How a node's `start()` ended. */
export interface NodeOutcome {
  /**
   * - `job-done`: the job was shut down (by any task or the controller);
   * - `killed`: `kill()` was called on this node;
   * - `stopped`: `stop()` was called (SIGTERM);
   * - `lease-lost`: the node lost its session and left its task.
   */
  readonly reason: 'job-done' | 'killed' | 'stopped' | 'lease-lost';
  /** The task this node ran last, if it claimed one. */
  readonly taskId?: number;
}
