/**
 * The master/worker paradigm the seed declared: one master that makes the global
 * decisions, workers that compute and pull data from each other. Declared here so
 * applications can be written against it; the runtime does not run it yet (hot
 * standby, the seed's other paradigm, is in `standby.ts` and is implemented).
 */
import type { AnyMethodHandler, MethodSpec } from './codec.js';
import type { EpochContext } from './task.js';
import type { Logger } from './runtime.js';

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
