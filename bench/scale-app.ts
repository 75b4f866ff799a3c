/**
 * The application the scale benchmark runs as `taskgraph node --count K` processes:
 * its tasks have no neighbours and do nothing but say when they enter an epoch (a
 * `TG-RESULT` line with the system-wide monotonic clock, which the benchmark process
 * reads on the same machine), so an epoch advance costs only what the framework and
 * the store cost.
 */
import type { EpochContext, Framework, Task } from '@taskgraph/api';
import { defineApp } from '@taskgraph/core';
import type { AppContext } from '@taskgraph/core';
import { IDLE_LINK, NoNeighbors } from './coordination-idle-app.js';

/** What a task reports on entering an epoch: task, epoch, `process.hrtime.bigint()` in decimal. */
export interface EnteredRecord {
  readonly t: number;
  readonly e: number;
  readonly ns: string;
}

class Reporter implements Task {
  #id = -1;
  constructor(private readonly report: (r: EnteredRecord) => void) {}
  init(taskId: number, _fw: Framework): void {
    this.#id = taskId;
  }
  enterEpoch(_ctx: EpochContext, epoch: number): void {
    this.report({ t: this.#id, e: epoch, ns: process.hrtime.bigint().toString() });
  }
  metaReady(): void {}
  exit(): void {}
}

export default defineApp({
  name: 'scale',
  linkTypes: [IDLE_LINK],
  taskBuilder: (ctx: AppContext) => ({ getTask: () => new Reporter((r) => ctx.report(r)) }),
  linkages: () => ({ [IDLE_LINK]: new NoNeighbors() }),
});
