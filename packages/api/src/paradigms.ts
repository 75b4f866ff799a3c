/**
 * Interfaces the seed declared for later paradigms: hot standby (a primary with
 * backups that mirror its state) and master/worker. Declared here so applications
 * can be written against them; the runtime implements them in later releases.
 */
import type { AnyMethodHandler, MethodSpec } from './codec.js';
import type { EpochContext, Framework } from './task.js';
import type { Logger } from './runtime.js';

/** One state change of a backed-up task, shipped from the primary to its backups. */
export interface UpdateLog {
  /** The epoch the update belongs to. */
  readonly epoch: number;
  /** Strictly increasing per task and epoch: backups apply in order and drop repeats. */
  readonly seq: number;
  readonly data: Uint8Array;
}

/** A task whose state can be mirrored on backups. */
export interface Backupable {
  /** A full copy of the state, for a backup that joins late. */
  snapshot(): Uint8Array | Promise<Uint8Array>;
  /** Replaces the state with a snapshot. */
  restore(snapshot: Uint8Array): void | Promise<void>;
  /** Applies one update (on a backup, in `seq` order). */
  applyUpdate(log: UpdateLog): void | Promise<void>;
}

/** The framework seen by a backed-up task: it ships updates to the task's backups. */
export interface BackedUpFramework extends Framework {
  /** Applies `data` on every backup of this task; resolves once they acknowledged it. */
  update(ctx: EpochContext, data: Uint8Array): Promise<UpdateLog>;
}

/** The master's view in the master/worker paradigm. */
export interface MasterFrame {
  getLogger(): Logger;
  getNumWorkers(): number;
  notifyWorker<I, O>(ctx: EpochContext, workerId: number, method: MethodSpec<I, O>, input: I): Promise<O>;
  /** Finishes the job. */
  shutdownJob(): Promise<void>;
}

/** A worker's view in the master/worker paradigm. */
export interface WorkerFrame {
  getLogger(): Logger;
  getWorkerId(): number;
  notifyMaster<I, O>(ctx: EpochContext, method: MethodSpec<I, O>, input: I): Promise<O>;
  /** Worker-to-worker data flow. */
  dataRequest<I, O>(ctx: EpochContext, workerId: number, method: MethodSpec<I, O>, input: I): Promise<O>;
}

export interface MasterTask {
  setup(frame: MasterFrame): void | Promise<void>;
  /** Runs until the job is done; re-run from the stored state after a failover. */
  run(ctx: EpochContext): Promise<void>;
  exit(): void | Promise<void>;
  readonly methods?: readonly AnyMethodHandler[];
}

export interface WorkerTask {
  setup(frame: WorkerFrame): void | Promise<void>;
  run(ctx: EpochContext): Promise<void>;
  exit(): void | Promise<void>;
  readonly methods?: readonly AnyMethodHandler[];
}

/** Something that runs one node until it finishes (a master/worker node). */
export interface Bootup {
  start(): Promise<void>;
}
