/**
 * The contract of an application module: what a module exports so that the
 * `taskgraph` command (and anything else) can run it without knowing it.
 *
 *   // my-app.ts
 *   import { defineApp } from '@taskgraph/core';
 *   export default defineApp({
 *     name: 'my-app',
 *     linkTypes: ['Parents', 'Children'],
 *     taskBuilder: (ctx) => new MyTaskBuilder(ctx.numTasks, ctx.args),
 *     linkages: (ctx) => tree({ numTasks: ctx.numTasks, fanout: 2 }),
 *     verify: (ctx, results) => ({ ok: results.length > 0, message: `${results.length} results` }),
 *   });
 */
import { InvalidArgumentError } from '@taskgraph/api';
import type { Logger, TaskBuilder, Topology } from '@taskgraph/api';

/** What an application is told about the node it runs on. */
export interface AppContext {
  /** The job's number of tasks (from its spec). */
  readonly numTasks: number;
  /** Application arguments (`--arg key=value` on the command line). */
  readonly args: Readonly<Record<string, string>>;
  readonly logger: Logger;
  /**
   * Reports a result record (any JSON value). Under `taskgraph run` the records of
   * every node are collected and given to `verify`; under `taskgraph node` they are
   * printed as `TG-RESULT <json>` lines on stdout.
   */
  report(record: unknown): void;
}

export interface AppVerdict {
  readonly ok: boolean;
  readonly message: string;
}

export interface TaskGraphApp {
  readonly name: string;
  /** The job's link types (the controller creates the job with them). */
  readonly linkTypes: readonly string[];
  /** The task builder of one node. */
  taskBuilder(ctx: AppContext): TaskBuilder;
  /** Fresh topologies for one node, by link type. */
  linkages(ctx: AppContext): Readonly<Record<string, Topology>>;
  /** Checks the records reported by all nodes once the job is done. */
  verify?(ctx: Omit<AppContext, 'report'>, results: readonly unknown[]): AppVerdict;
  /**
   * `master-worker` for an application made with `defineMasterWorkerApp` (task 0 is
   * the master, tasks 1..N the workers); absent for a task graph.
   */
  readonly paradigm?: 'task-graph' | 'master-worker';
  /** The tasks that get the job's hot backups (default: every task). */
  backupTasks?(numTasks: number): readonly number[];
  /**
   * A line to print for a record reported while the job runs (progress), or
   * undefined for a record that is only for `verify`.
   */
  describeRecord?(record: unknown): string | undefined;
}

/** Checks an application definition and returns it (for type inference). */
export function defineApp(app: TaskGraphApp): TaskGraphApp {
  assertApp(app, 'defineApp');
  return app;
}

/** Checks that a module's export is an application. */
export function assertApp(value: unknown, where: string): asserts value is TaskGraphApp {
  const v = value as Partial<TaskGraphApp> | undefined;
  const missing: string[] = [];
  if (!v || typeof v !== 'object') throw new InvalidArgumentError(`${where}: not an application object`);
  if (typeof v.name !== 'string' || v.name === '') missing.push('name');
  if (!Array.isArray(v.linkTypes) || v.linkTypes.length === 0) missing.push('linkTypes');
  if (typeof v.taskBuilder !== 'function') missing.push('taskBuilder()');
  if (typeof v.linkages !== 'function') missing.push('linkages()');
  if (v.verify !== undefined && typeof v.verify !== 'function') missing.push('verify() (must be a function when present)');
  if (v.backupTasks !== undefined && typeof v.backupTasks !== 'function') missing.push('backupTasks() (must be a function when present)');
  if (v.describeRecord !== undefined && typeof v.describeRecord !== 'function') missing.push('describeRecord() (must be a function when present)');
  if (v.paradigm !== undefined && v.paradigm !== 'task-graph' && v.paradigm !== 'master-worker') missing.push('paradigm ("task-graph" or "master-worker", when present)');
  if (missing.length > 0) throw new InvalidArgumentError(`${where}: an application must have ${missing.join(', ')}`);
}
