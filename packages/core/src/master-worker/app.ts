/**
 * Master/worker applications: the task builder that makes task 0 the master and
 * task `w + 1` worker `w`, and `defineMasterWorkerApp`, which makes an application
 * module that `taskgraph run` (and anything that runs a `TaskGraphApp`) runs like a
 * task graph: a job of `workers + 1` tasks whose hot backups, if any, go to the
 * master only.
 *
 *   export default defineMasterWorkerApp({
 *     name: 'squares',
 *     master: (ctx) => new SquaresMaster(ctx.args),
 *     worker: (ctx, workerId) => new SquaresWorker(workerId),
 *     verify: (ctx, results) => ({ ok: ..., message: ... }),
 *   });
 */
import { InvalidArgumentError } from '@taskgraph/api';
import type { MasterTask, Task, TaskBuilder, WorkerTask } from '@taskgraph/api';
import { assertApp } from '../app.js';
import type { AppContext, AppVerdict, TaskGraphApp } from '../app.js';
import type { JobDefinition } from '../controller.js';
import { MasterAdapter } from './master-adapter.js';
import { WorkerAdapter } from './worker-adapter.js';
import { MASTER_TASK, MASTER_WORKER_LINK_TYPES, masterWorkerLinkages, workerOfTask } from './wire.js';

export interface MasterWorkerFactories {
  /** Makes the master's task object (once per node that holds the master). */
  master(): MasterTask;
  /** Makes worker `workerId`'s task object (once per incarnation). */
  worker(workerId: number): WorkerTask;
}

/** The task builder of a master/worker job of `numWorkers` workers (`numWorkers + 1` tasks). */
export function masterWorkerBuilder(numWorkers: number, factories: MasterWorkerFactories): TaskBuilder {
  if (!Number.isInteger(numWorkers) || numWorkers < 1) throw new InvalidArgumentError(`a master/worker job needs at least one worker, got ${String(numWorkers)}`);
  return {
    getTask(taskId: number): Task {
      if (taskId === MASTER_TASK) return new MasterAdapter(factories.master(), numWorkers);
      return new WorkerAdapter(factories.worker(workerOfTask(taskId)), workerOfTask(taskId));
    },
  };
}

/** The job definition of a master/worker job: `backups` hot backups of the master only. */
export function masterWorkerJob(numWorkers: number, backups = 0): JobDefinition {
  if (!Number.isInteger(numWorkers) || numWorkers < 1) throw new InvalidArgumentError(`a master/worker job needs at least one worker, got ${String(numWorkers)}`);
  return { numTasks: numWorkers + 1, linkTypes: MASTER_WORKER_LINK_TYPES, backups, ...(backups > 0 ? { backupTasks: [MASTER_TASK] } : {}) };
}

export interface MasterWorkerAppDefinition {
  readonly name: string;
  /** The master's task object; `ctx.numTasks - 1` is the number of workers. */
  master(ctx: AppContext): MasterTask;
  worker(ctx: AppContext, workerId: number): WorkerTask;
  verify?(ctx: Omit<AppContext, 'report'>, results: readonly unknown[]): AppVerdict;
  describeRecord?(record: unknown): string | undefined;
  /**
   * Checks the application's arguments (throw InvalidArgumentError for a bad one):
   * called when a node's task builder is made, so `taskgraph run` refuses a bad
   * `--arg` before any node starts.
   */
  checkArgs?(ctx: AppContext): void;
}

/** Makes a master/worker application module (see the file's comment). */
export function defineMasterWorkerApp(def: MasterWorkerAppDefinition): TaskGraphApp {
  if (!def || typeof def.master !== 'function' || typeof def.worker !== 'function') throw new InvalidArgumentError('defineMasterWorkerApp: an application needs master() and worker()');
  const app: TaskGraphApp = {
    name: def.name,
    paradigm: 'master-worker',
    linkTypes: MASTER_WORKER_LINK_TYPES,
    taskBuilder: (ctx) => {
      def.checkArgs?.(ctx);
      return masterWorkerBuilder(ctx.numTasks - 1, { master: () => def.master(ctx), worker: (w) => def.worker(ctx, w) });
    },
    linkages: (ctx) => masterWorkerLinkages(ctx.numTasks - 1),
    backupTasks: () => [MASTER_TASK],
    ...(def.verify ? { verify: def.verify.bind(def) } : {}),
    ...(def.describeRecord ? { describeRecord: def.describeRecord.bind(def) } : {}),
  };
  assertApp(app, 'defineMasterWorkerApp');
  return app;
}
