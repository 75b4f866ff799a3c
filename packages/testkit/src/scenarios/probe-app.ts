/**
 * A small application that exercises the framework's messaging: on a tree of
 * tasks, every task flags a meta to its parent and children in every epoch (as
 * often as asked), pulls data from every neighbour whose meta arrived, and reports
 * completion to task 0, which advances the epoch. A shared recorder (in-process)
 * sees every delivery, so tests can check exactly-once and both directions.
 */
import { TaskGraphError } from '@taskgraph/api';
import type { EpochContext, Framework, Task, TaskBuilder, Topology } from '@taskgraph/api';
import { defineMethod, serve } from '@taskgraph/core';
import { tree } from '@taskgraph/topologies';

export const echo = defineMethod<{ from: number; epoch: number }, { task: number; epoch: number; from: number }>('echo');
export const slow = defineMethod<null, string>('slow');

export interface MetaDelivery {
  readonly receiver: number;
  readonly incarnation: number;
  readonly epoch: number;
  readonly from: number;
  readonly linkType: string;
  readonly meta: string;
}

export interface DataDelivery {
  readonly receiver: number;
  readonly epoch: number;
  readonly from: number;
  readonly output: unknown;
}

export class ProbeRecorder {
  readonly metas: MetaDelivery[] = [];
  readonly data: DataDelivery[] = [];
  readonly errors: Array<{ task: number; epoch: number; code: string }> = [];
  readonly starts: Array<{ task: number; incarnation: number }> = [];
  /** (task, epoch) pairs where a task finished its part. */
  readonly finished = new Set<string>();
}

export interface ProbeOptions {
  readonly numTasks: number;
  readonly numEpochs: number;
  readonly recorder: ProbeRecorder;
  /** How many times each meta is flagged (repeats must not be delivered again). Default 1. */
  readonly repeatFlags?: number;
  /** Called when a task has flagged its metas in an epoch (tests kill it there). */
  readonly afterFlag?: (task: number, epoch: number, fw: Framework) => void | Promise<void>;
}

export const PROBE_LINK_TYPES = ['Parents', 'Children'] as const;

export function probeLinkages(numTasks: number): Record<string, Topology> {
  return tree({ numTasks, fanout: 2 });
}

class ProbeTask implements Task {
  private fw!: Framework;
  private id = -1;
  private parents: readonly number[] = [];
  private children: readonly number[] = [];
  private epoch = -1;
  private got = new Set<number>();
  private doneChildren = new Set<number>();
  private reported = false;

  constructor(private readonly o: ProbeOptions) {}

  readonly methods = [serve(echo, (ctx: EpochContext, input: { from: number; epoch: number }) => ({ task: this.id, epoch: ctx.epoch, from: input.from }))];

  init(taskId: number, fw: Framework): void {
    this.id = taskId;
    this.fw = fw;
    this.parents = fw.getTopology().get('Parents')!.getNeighbors(0);
    this.children = fw.getTopology().get('Children')!.getNeighbors(0);
    this.o.recorder.starts.push({ task: taskId, incarnation: fw.getIncarnation() });
  }

  async enterEpoch(ctx: EpochContext, epoch: number): Promise<void> {
    this.epoch = epoch;
    this.got = new Set();
    this.doneChildren = new Set();
    this.reported = false;
    for (let i = 0; i < (this.o.repeatFlags ?? 1); i++) {
      await this.fw.flagMeta(ctx, 'Parents', `hello-from-${this.id}`);
      await this.fw.flagMeta(ctx, 'Children', `hello-from-${this.id}`);
    }
    await this.o.afterFlag?.(this.id, epoch, this.fw);
    await this.check(ctx);
  }

  async metaReady(ctx: EpochContext, from: number, linkType: string, meta: string): Promise<void> {
    this.o.recorder.metas.push({ receiver: this.id, incarnation: this.fw.getIncarnation(), epoch: ctx.epoch, from, linkType, meta });
    if (meta === `hello-from-${from}`) {
      try {
        await this.fw.dataRequest(ctx, from, echo, { from: this.id, epoch: ctx.epoch });
      } catch (err) {
        if (TaskGraphError.is(err)) this.o.recorder.errors.push({ task: this.id, epoch: ctx.epoch, code: err.code });
        throw err;
      }
    } else if (meta === 'done' && this.children.includes(from)) {
      this.doneChildren.add(from);
      await this.check(ctx);
    }
  }

  async dataReady(ctx: EpochContext, from: number, _method: string, output: unknown): Promise<void> {
    this.o.recorder.data.push({ receiver: this.id, epoch: ctx.epoch, from, output });
    this.got.add(from);
    await this.check(ctx);
  }

  /** A task is done when it heard from every neighbour and every child is done. */
  private async check(ctx: EpochContext): Promise<void> {
    if (ctx.epoch !== this.epoch || this.reported) return;
    const neighbours = [...this.parents, ...this.children];
    if (!neighbours.every((n) => this.got.has(n)) || !this.children.every((c) => this.doneChildren.has(c))) return;
    this.reported = true;
    this.o.recorder.finished.add(`${this.id}/${ctx.epoch}`);
    if (this.id !== 0) {
      await this.fw.flagMeta(ctx, 'Parents', 'done');
    } else if (ctx.epoch >= this.o.numEpochs) {
      await this.fw.shutdownJob();
    } else {
      await this.fw.incEpoch(ctx);
    }
  }

  exit(): void {}
}

export class ProbeTaskBuilder implements TaskBuilder {
  constructor(private readonly o: ProbeOptions) {}
  getTask(): Task {
    return new ProbeTask(this.o);
  }
}

/**
 * Two tasks: task 1 asks task 0 for `slow`, which answers only when its epoch is
 * over; task 0 advances the epoch once the request is in. Task 1's request must
 * end with EpochChangedError, not hang and not be resent into the next epoch.
 */
export class EpochAbortRecorder {
  readonly outcomes: Array<{ epoch: number; code: string }> = [];
  readonly slowCalls: number[] = [];
}

class EpochAbortTask implements Task {
  private fw!: Framework;
  private id = -1;
  constructor(private readonly rec: EpochAbortRecorder) {}

  readonly methods = [
    serve(slow, async (ctx: EpochContext) => {
      this.rec.slowCalls.push(ctx.epoch);
      if (ctx.epoch === 0) {
        void this.fw.incEpoch(ctx).catch(() => undefined);
        await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve(), { once: true }));
        return 'late';
      }
      return 'on time';
    }),
  ];

  init(taskId: number, fw: Framework): void {
    this.id = taskId;
    this.fw = fw;
  }

  async enterEpoch(ctx: EpochContext, epoch: number): Promise<void> {
    if (this.id !== 1) return;
    try {
      const out = await this.fw.dataRequest(ctx, 0, slow, null, { attemptTimeoutMs: 60_000 });
      this.rec.outcomes.push({ epoch, code: `ok:${out}` });
      if (epoch >= 1) await this.fw.shutdownJob();
    } catch (err) {
      this.rec.outcomes.push({ epoch, code: TaskGraphError.is(err) ? err.code : String(err) });
    }
  }

  metaReady(): void {}
  exit(): void {}
}

export class EpochAbortTaskBuilder implements TaskBuilder {
  constructor(private readonly rec: EpochAbortRecorder) {}
  getTask(): Task {
    return new EpochAbortTask(this.rec);
  }
}
