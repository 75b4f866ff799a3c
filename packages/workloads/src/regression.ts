/**
 * The seed's regression job. Task 0 is the master over a tree of slaves (fanout 2
 * by default). In epoch e the master's parameter is e; every slave pulls the
 * parameter from its parent and the gradients of its children, and serves
 * `param * taskId + sum(children's gradients)`. The master sums its children's
 * gradients, records the sum, and advances the epoch; after the last epoch it
 * shuts the job down. With 15 tasks the sums are 0, 105, 210, ..., 1050.
 *
 * Everything is driven by meta notifications and data requests, so any task can
 * fail at any point and its replacement picks up the epoch where it is.
 */
import { TaskGraphError, randomOf, systemClock } from '@taskgraph/api';
import type { EpochContext, Framework, MethodHandler, Task, TaskBuilder, Topology } from '@taskgraph/api';
import { defineMethod, jsonCodec, serve } from '@taskgraph/core';
import { tree } from '@taskgraph/topologies';

const isNumber = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

export const getParameter = defineMethod<null, number>('getParameter', { output: jsonCodec(isNumber) });
export const getGradient = defineMethod<null, number>('getGradient', { output: jsonCodec(isNumber) });

export const LINK_PARENTS = 'Parents';
export const LINK_CHILDREN = 'Children';
export const META_PARAM_READY = 'ParamReady';
export const META_GRADIENT_READY = 'GradientReady';

/** A failure a test or demo injects; thrown from a task callback, so the node fails over. */
export class InjectedFault extends Error {
  override readonly name = 'InjectedFault';
}

export interface RegressionFaults {
  /** Fail in enterEpoch of `task` at `epoch` (first incarnation only, like the seed's test). */
  readonly failEnterEpoch?: { readonly task: number; readonly epoch: number };
  /** Probability that a slave fails when its parent's data arrives. */
  readonly parentDataFailProbability?: number;
  /** Probability that a task fails when a child's data arrives. */
  readonly childDataFailProbability?: number;
  /** Source of randomness for the probabilities (seedable in tests). */
  readonly random?: () => number;
}

export interface RegressionOptions {
  readonly numTasks: number;
  /** The last epoch; the job runs epochs 0..numEpochs. Default 10. */
  readonly numEpochs?: number;
  readonly fanout?: number;
  readonly faults?: RegressionFaults;
  /** Called by the master with each epoch's sum (possibly twice for one epoch after a failover: same value). */
  readonly onResult?: (epoch: number, sum: number) => void;
  /** Called when a task starts (its incarnation tells a replacement from a first run). */
  readonly onTaskStart?: (taskId: number, incarnation: number) => void;
  /**
   * Instrumentation for fault tests: awaited before a method's answer is computed,
   * so a test can hold a task busy at a chosen point.
   */
  readonly beforeServe?: (info: { taskId: number; incarnation: number; method: string; epoch: number }) => Promise<void> | void;
}

/** The sums the job must produce. */
export function expectedSums(numTasks: number, numEpochs = 10): number[] {
  let ids = 0;
  for (let i = 1; i < numTasks; i++) ids += i;
  return Array.from({ length: numEpochs + 1 }, (_, e) => e * ids);
}

/** A value that becomes known later in the epoch; handlers and callbacks await it. */
class Later<T> {
  private value: { v: T } | undefined;
  private waiters: Array<(v: T) => void> = [];

  set(v: T): void {
    if (this.value) return;
    this.value = { v };
    for (const w of this.waiters) w(v);
    this.waiters = [];
  }

  get known(): boolean {
    return this.value !== undefined;
  }

  get(signal: AbortSignal): Promise<T> {
    if (this.value) return Promise.resolve(this.value.v);
    return new Promise<T>((resolve, reject) => {
      if (signal.aborted) {
        reject(signal.reason);
        return;
      }
      const onAbort = () => reject(signal.reason);
      signal.addEventListener('abort', onAbort, { once: true });
      this.waiters.push((v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      });
    });
  }
}

/** What one task knows about the epoch it is in. */
class EpochState {
  readonly param = new Later<number>();
  readonly gradient = new Later<number>();
  readonly childGradients = new Map<number, number>();
  constructor(readonly epoch: number) {}
}

abstract class RegressionTask implements Task {
  protected fw!: Framework;
  protected id = -1;
  protected state = new EpochState(-1);
  protected children: readonly number[] = [];
  protected parents: readonly number[] = [];

  constructor(
    protected readonly options: RegressionOptions,
    protected readonly faults: RegressionFaults,
  ) {}

  abstract readonly methods: readonly MethodHandler<null, number>[];

  init(taskId: number, framework: Framework): void {
    this.id = taskId;
    this.fw = framework;
    const topo = framework.getTopology();
    this.children = (topo.get(LINK_CHILDREN) as Topology).getNeighbors(0);
    this.parents = (topo.get(LINK_PARENTS) as Topology).getNeighbors(0);
    this.options.onTaskStart?.(taskId, framework.getIncarnation());
  }

  async enterEpoch(ctx: EpochContext, epoch: number): Promise<void> {
    this.state = new EpochState(epoch);
    const f = this.faults.failEnterEpoch;
    if (f && f.task === this.id && f.epoch === epoch && this.fw.getIncarnation() === 1) {
      throw new InjectedFault(`task ${this.id} fails in enterEpoch(${epoch}) (injected)`);
    }
    await this.onEpoch(ctx);
  }

  protected abstract onEpoch(ctx: EpochContext): Promise<void>;

  async metaReady(ctx: EpochContext, fromTask: number, linkType: string, meta: string): Promise<void> {
    if (ctx.epoch !== this.state.epoch) return;
    // The answers come back through dataReady. Not awaited: callbacks run one at a time, and
    // a meta can come before what its request waits for (a dead incarnation's meta after a
    // restart), so waiting here could block the very callback the answer needs.
    if (linkType === LINK_CHILDREN && meta === META_PARAM_READY && this.parents.includes(fromTask)) {
      this.request(ctx, fromTask, getParameter);
    } else if (linkType === LINK_PARENTS && meta === META_GRADIENT_READY && this.children.includes(fromTask)) {
      this.request(ctx, fromTask, getGradient);
    } else {
      this.fw.getLogger().warn('unexpected meta', { from: fromTask, linkType, meta });
    }
  }

  private request(ctx: EpochContext, fromTask: number, method: typeof getParameter): void {
    this.fw.dataRequest(ctx, fromTask, method, null).catch((err: unknown) => {
      // The epoch ended or the node is leaving: the request no longer matters.
      if (!TaskGraphError.is(err, 'EPOCH_CHANGED', 'ABORTED', 'CLOSED', 'LEASE_LOST')) this.fw.getLogger().warn('data request failed', { to: fromTask, method: method.name, error: String(err) });
    });
  }

  async dataReady(ctx: EpochContext, fromTask: number, method: string, output: unknown): Promise<void> {
    if (ctx.epoch !== this.state.epoch || typeof output !== 'number') return;
    const random = this.faults.random ?? randomOf(systemClock);
    if (method === getParameter.name) {
      const p = this.faults.parentDataFailProbability ?? 0;
      if (p > 0 && random() < p) throw new InjectedFault(`task ${this.id} fails in parent-data-ready (injected)`);
      await this.onParam(ctx, output);
    } else if (method === getGradient.name) {
      const p = this.faults.childDataFailProbability ?? 0;
      if (p > 0 && random() < p) throw new InjectedFault(`task ${this.id} fails in child-data-ready (injected)`);
      this.state.childGradients.set(fromTask, output);
      await this.tryFinish(ctx);
    }
  }

  protected abstract onParam(ctx: EpochContext, param: number): Promise<void>;

  /**
   * Finishes the epoch's part of this task once its parameter and every child's
   * gradient are known, whatever order they arrived in (after a failover, the
   * children's gradients can come before the parameter). Never waits: callbacks
   * run one at a time, so waiting here would block the very callback it waits for.
   */
  protected abstract tryFinish(ctx: EpochContext): Promise<void>;

  /** Serves a method: the instrumentation hook first, then the value once it is known. */
  protected async answer(ctx: EpochContext, method: string, value: (state: EpochState) => Later<number>): Promise<number> {
    if (ctx.epoch !== this.state.epoch) {
      // A request can arrive between the framework's epoch change and our enterEpoch.
      throw new TaskGraphError('EPOCH_CHANGED', `task ${this.id} is not in epoch ${ctx.epoch} yet`, { details: { current: this.state.epoch } });
    }
    const state = this.state;
    await this.options.beforeServe?.({ taskId: this.id, incarnation: this.fw.getIncarnation(), method, epoch: ctx.epoch });
    return value(state).get(ctx.signal);
  }

  protected sumOfChildren(): number {
    let s = 0;
    for (const g of this.state.childGradients.values()) s += g;
    return s;
  }

  exit(): void {}
}

class MasterTask extends RegressionTask {
  readonly methods = [serve(getParameter, (ctx: EpochContext) => this.answer(ctx, getParameter.name, (s) => s.param))];

  private finished = -1;

  protected async onEpoch(ctx: EpochContext): Promise<void> {
    this.state.param.set(ctx.epoch);
    if (this.children.length > 0) await this.fw.flagMeta(ctx, LINK_CHILDREN, META_PARAM_READY);
    await this.tryFinish(ctx);
  }

  protected async onParam(): Promise<void> {}

  protected async tryFinish(ctx: EpochContext): Promise<void> {
    if (this.finished === ctx.epoch || this.state.childGradients.size < this.children.length) return;
    this.finished = ctx.epoch;
    const sum = this.sumOfChildren();
    this.fw.getLogger().info('epoch finished', { epoch: ctx.epoch, sum });
    this.options.onResult?.(ctx.epoch, sum);
    if (ctx.epoch >= (this.options.numEpochs ?? 10)) await this.fw.shutdownJob();
    else await this.fw.incEpoch(ctx);
  }
}

class SlaveTask extends RegressionTask {
  readonly methods = [
    serve(getParameter, (ctx: EpochContext) => this.answer(ctx, getParameter.name, (s) => s.param)),
    serve(getGradient, (ctx: EpochContext) => this.answer(ctx, getGradient.name, (s) => s.gradient)),
  ];

  protected async onEpoch(): Promise<void> {
    // Wait for the parent's ParamReady.
  }

  protected async onParam(ctx: EpochContext, param: number): Promise<void> {
    if (this.state.param.known) return;
    this.state.param.set(param);
    if (this.children.length > 0) await this.fw.flagMeta(ctx, LINK_CHILDREN, META_PARAM_READY);
    await this.tryFinish(ctx);
  }

  protected async tryFinish(ctx: EpochContext): Promise<void> {
    if (this.state.gradient.known || !this.state.param.known) return;
    if (this.state.childGradients.size < this.children.length) return;
    const param = await this.state.param.get(ctx.signal);
    this.state.gradient.set(param * this.id + this.sumOfChildren());
    await this.fw.flagMeta(ctx, LINK_PARENTS, META_GRADIENT_READY);
  }
}

/** Builds the master for task 0 and a slave for every other task. */
export class RegressionTaskBuilder implements TaskBuilder {
  constructor(private readonly options: RegressionOptions) {}

  getTask(taskId: number): Task {
    const faults = this.options.faults ?? {};
    return taskId === 0 ? new MasterTask(this.options, faults) : new SlaveTask(this.options, faults);
  }
}

/** The link types of the regression job. */
export function regressionLinkages(options: Pick<RegressionOptions, 'numTasks' | 'fanout'>): Record<string, Topology> {
  return tree({ numTasks: options.numTasks, fanout: options.fanout ?? 2 });
}

export const REGRESSION_LINK_TYPES = [LINK_PARENTS, LINK_CHILDREN] as const;
