/**
 * Running statistics: a job whose tasks carry state from epoch to epoch that only
 * the whole history can rebuild, the case hot standby exists for.
 *
 * The tasks form a tree (fanout 2 by default). In every epoch each task pulls one
 * value from each of its neighbours (its parent and its children) with
 * `dataRequest`; a neighbour's value is a hash of its own running digest and the
 * epoch. The task folds the values into its running statistics (count, sum, sum of
 * squares, min, max) and its digest, and hands the change to `update()` before it
 * moves on. Each digest therefore depends on every value the task and, through
 * them, every other task ever saw: a task restarted from nothing cannot rebuild it,
 * and every neighbour that reads from it afterwards goes wrong too. A promoted
 * backup holds it. After its fold a task tells its parent (`Folded`); the root
 * advances the epoch once its whole tree has folded, and after the last epoch shuts
 * the job down. `expectedStats` computes the exact answer by a sequential reference
 * run of the same arithmetic.
 *
 * Everything is integer arithmetic on 32-bit words and small sums, so the answer is
 * exact and the same on every machine.
 */
import { InvalidArgumentError, TaskGraphError } from '@taskgraph/api';
import type { BackedUpFramework, Backupable, EpochContext, NeighborEvent, RoleChange, Task, TaskBuilder, Topology, UpdateLog } from '@taskgraph/api';
import { defineMethod, jsonCodec, serve } from '@taskgraph/core';
import { tree } from '@taskgraph/topologies';

const LINK_PARENTS = 'Parents';
const LINK_CHILDREN = 'Children';
/** Flagged by a task to its parent once it and its whole subtree folded the epoch. */
export const META_FOLDED = 'Folded';
export const RUNNING_STATS_LINK_TYPES = [LINK_PARENTS, LINK_CHILDREN] as const;

/** Values a task offers are in 0..OFFER_RANGE-1, so the sums stay far below 2^53. */
export const OFFER_RANGE = 1000;
/** Guards the sums: (fanout + 1) x (epochs + 1) x OFFER_RANGE^2 must stay below 2^53. */
export const MAX_EPOCHS = 1_000_000;

const isOffer = (v: unknown): v is number => Number.isInteger(v) && (v as number) >= 0 && (v as number) < OFFER_RANGE;

/** A task's value for the epoch of the request, from the digest it had when that epoch began. */
export const getOffer = defineMethod<null, number>('getOffer', { output: jsonCodec(isOffer) });

/** A 32-bit mix of two words (murmur3's finaliser over a ^ b*golden): integer-only, so exact everywhere. */
export function mix32(a: number, b: number): number {
  let h = (a ^ Math.imul(b, 0x9e3779b1)) >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

const SEED = 0x7a5c6e11;

export function initialDigest(task: number): number {
  return mix32(SEED, task);
}

/** The value a task whose digest was `digest` when `epoch` began offers in that epoch. */
export function offerOf(digest: number, epoch: number): number {
  return mix32(digest, epoch + 0x51ed) % OFFER_RANGE;
}

/** What a task's state sums up, and what it reports at the end. */
export interface RunningStats {
  /** How many epochs the state has folded (numEpochs + 1 when nothing was lost). */
  readonly epochs: number;
  /** Values folded, and their sum, sum of squares, min and max (null before the first). */
  readonly count: number;
  readonly sum: number;
  readonly sumSq: number;
  readonly min: number | null;
  readonly max: number | null;
  /** The running digest (uint32): a hash of every value the task folded, in order. */
  readonly digest: number;
}

/** A task's whole state: the statistics, plus what it needs to serve the epoch it folded. */
export interface RunningStatsState extends RunningStats {
  /** The last epoch folded (-1 for none). */
  readonly foldedEpoch: number;
  /** The digest when `foldedEpoch` began: the epoch's offers are computed from it, also after the fold. */
  readonly prevDigest: number;
  /** The epochs in which an injected kill came after the fold (so a promoted backup does not kill again). */
  readonly kills: readonly number[];
}

/** One epoch's change to a task's state: the values it pulled, by neighbour, in task order. */
export interface FoldChange {
  readonly epoch: number;
  readonly values: ReadonlyArray<readonly [task: number, value: number]>;
  /** The primary kills itself right after this fold (an injected fault), recorded with it. */
  readonly kill?: true;
}

export function freshState(task: number): RunningStatsState {
  const digest = initialDigest(task);
  return { foldedEpoch: -1, prevDigest: digest, digest, epochs: 0, count: 0, sum: 0, sumSq: 0, min: null, max: null, kills: [] };
}

/** Folds one epoch's values into a state (pure: the primary, its backups and the reference all use it). */
export function fold(s: RunningStatsState, change: FoldChange): RunningStatsState {
  let { digest, count, sum, sumSq, min, max } = s;
  const prevDigest = digest;
  digest = mix32(digest, change.epoch);
  for (const [task, v] of change.values) {
    digest = mix32(digest, task * OFFER_RANGE + v);
    count++;
    sum += v;
    sumSq += v * v;
    min = min === null ? v : Math.min(min, v);
    max = max === null ? v : Math.max(max, v);
  }
  const kills = change.kill ? [...s.kills, change.epoch] : s.kills;
  return { foldedEpoch: change.epoch, prevDigest, digest, epochs: s.epochs + 1, count, sum, sumSq, min, max, kills };
}

/** The statistics part of a state (what is reported and compared). */
export function statsOf(s: RunningStatsState): RunningStats {
  const { epochs, count, sum, sumSq, min, max, digest } = s;
  return { epochs, count, sum, sumSq, min, max, digest };
}

/** A task's neighbours in the tree (parent and children), in task order. */
export function statsNeighbours(numTasks: number, fanout: number, task: number): number[] {
  const { Parents, Children } = tree({ numTasks, fanout });
  Parents.setTaskId(task);
  Children.setTaskId(task);
  return [...Parents.getNeighbors(0), ...Children.getNeighbors(0)].sort((a, b) => a - b);
}

/** The exact answer: every task's statistics after epochs 0..numEpochs, by a sequential reference run. */
export function expectedStats(numTasks: number, numEpochs = 10, fanout = 2): RunningStats[] {
  const neighbours = Array.from({ length: numTasks }, (_, t) => statsNeighbours(numTasks, fanout, t));
  let states = Array.from({ length: numTasks }, (_, t) => freshState(t));
  for (let e = 0; e <= numEpochs; e++) {
    const offers = states.map((s) => offerOf(s.digest, e));
    states = states.map((s, t) => fold(s, { epoch: e, values: neighbours[t]!.map((n) => [n, offers[n]!] as const) }));
  }
  return states.map(statsOf);
}

/** A primary kills itself (framework.kill()) in `epoch`, once its fold there is acknowledged. */
export interface KillAt {
  readonly epoch: number;
  readonly task: number;
}

/** What the tasks report (through `onRecord`): their final statistics, and the fault-tolerance events they saw. */
export type RunningStatsRecord =
  | { readonly task: number; readonly final: RunningStats }
  | { readonly task: number; readonly event: 'promoted'; readonly seq: number; readonly incarnation: number; readonly epoch: number }
  | { readonly task: number; readonly event: 'cold-start'; readonly incarnation: number; readonly epoch: number }
  | { readonly task: number; readonly event: 'kill'; readonly epoch: number }
  | { readonly task: number; readonly event: 'neighbor-failed' | 'neighbor-restarted'; readonly neighbor: number; readonly incarnation: number; readonly epoch: number };

export interface RunningStatsOptions {
  readonly numTasks: number;
  /** The last epoch; the job runs epochs 0..numEpochs. Default 10. */
  readonly numEpochs?: number;
  /** Children per task (default 2; give `runningStatsLinkages` the same). */
  readonly fanout?: number;
  /**
   * Injected faults: the primary of `task` kills itself in `epoch` right after its
   * fold is acknowledged. Each fires once: the kill is recorded in the state with
   * the fold (so a promoted backup knows it happened), and a primary that took the
   * task over cold in that epoch (its state cannot know) does not kill again.
   */
  readonly killAt?: readonly KillAt[];
  /** Receives the tasks' records (an app passes its `report`). */
  readonly onRecord?: (record: RunningStatsRecord) => void;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

const isInt = (v: unknown): v is number => Number.isSafeInteger(v);
const isMinMax = (v: unknown): v is number | null => v === null || isOffer(v);

function isState(v: unknown): v is RunningStatsState {
  const s = v as Record<string, unknown> | null;
  return (
    typeof s === 'object' && s !== null &&
    [s['foldedEpoch'], s['prevDigest'], s['digest'], s['epochs'], s['count'], s['sum'], s['sumSq']].every(isInt) &&
    isMinMax(s['min']) && isMinMax(s['max']) && Array.isArray(s['kills']) && s['kills'].every(isInt)
  );
}

function isFoldChange(v: unknown): v is FoldChange {
  const c = v as Record<string, unknown> | null;
  return (
    typeof c === 'object' && c !== null && isInt(c['epoch']) && Array.isArray(c['values']) && (c['kill'] === undefined || c['kill'] === true) &&
    c['values'].every((p: unknown) => Array.isArray(p) && p.length === 2 && isInt(p[0]) && isOffer(p[1]))
  );
}

function decodeJson<T>(bytes: Uint8Array, guard: (v: unknown) => v is T, what: string): T {
  const v: unknown = JSON.parse(dec.decode(bytes));
  if (!guard(v)) throw new InvalidArgumentError(`running-stats: a malformed ${what}`);
  return v;
}

class RunningStatsTask implements Task, Backupable {
  private fw!: BackedUpFramework;
  private id = -1;
  private state: RunningStatsState = freshState(0);
  private parent: number | undefined;
  private children: readonly number[] = [];
  private neighbours: readonly number[] = [];
  /** The epoch this task entered last, its children that folded it, and whether it told its parent. */
  private epoch = -1;
  private childrenFolded = new Set<number>();
  private finished = -1;
  /** The epoch in which this node took the task over without its state (a cold start), if it did. */
  private coldStartEpoch: number | undefined;
  private readonly numEpochs: number;

  readonly methods = [serve(getOffer, (ctx: EpochContext) => this.offer(ctx))];

  constructor(private readonly o: RunningStatsOptions) {
    this.numEpochs = o.numEpochs ?? 10;
  }

  init(taskId: number, framework: BackedUpFramework): void {
    this.id = taskId;
    this.fw = framework;
    this.state = freshState(taskId);
    const topo = framework.getTopology();
    this.parent = (topo.get(LINK_PARENTS) as Topology).getNeighbors(0)[0];
    this.children = (topo.get(LINK_CHILDREN) as Topology).getNeighbors(0);
    this.neighbours = [...(this.parent === undefined ? [] : [this.parent]), ...this.children].sort((a, b) => a - b);
  }

  becamePrimary(ctx: EpochContext, change: RoleChange): void {
    const log = this.fw.getLogger();
    if (change.promoted) {
      log.info('promoted to primary with the state', { seq: change.seq, incarnation: change.incarnation, epochsHeld: this.state.epochs });
      this.record({ task: this.id, event: 'promoted', seq: change.seq, incarnation: change.incarnation, epoch: ctx.epoch });
    } else if (change.incarnation > 1) {
      log.warn('took the task over cold: the state of the incarnations before is lost', { incarnation: change.incarnation });
      this.coldStartEpoch = ctx.epoch;
      this.record({ task: this.id, event: 'cold-start', incarnation: change.incarnation, epoch: ctx.epoch });
    }
  }

  becameBackup(): void {
    this.fw.getLogger().info('holding a backup of the statistics');
  }

  neighborFailed(ctx: EpochContext, e: NeighborEvent): void {
    // Nothing to repair: dataRequest waits for the neighbour's next primary and follows it there.
    this.record({ task: this.id, event: 'neighbor-failed', neighbor: e.task, incarnation: e.incarnation, epoch: ctx.epoch });
  }

  neighborRestarted(ctx: EpochContext, e: NeighborEvent): void {
    this.record({ task: this.id, event: 'neighbor-restarted', neighbor: e.task, incarnation: e.incarnation, epoch: ctx.epoch });
  }

  async enterEpoch(ctx: EpochContext, epoch: number): Promise<void> {
    this.epoch = epoch;
    this.childrenFolded = new Set();
    // A promoted backup may hold this epoch's fold already: folding twice would count its values twice.
    if (this.state.foldedEpoch < epoch) {
      if (await this.foldEpoch(ctx, epoch)) return;
    } else if (epoch === this.numEpochs) {
      this.record({ task: this.id, final: statsOf(this.state) });
    }
    await this.tryFinish(ctx);
  }

  async metaReady(ctx: EpochContext, fromTask: number, linkType: string, meta: string): Promise<void> {
    if (ctx.epoch !== this.epoch || linkType !== LINK_PARENTS || meta !== META_FOLDED || !this.children.includes(fromTask)) return;
    this.childrenFolded.add(fromTask);
    await this.tryFinish(ctx);
  }

  exit(): void {}

  snapshot(): Uint8Array {
    return enc.encode(JSON.stringify(this.state));
  }

  restore(snapshot: Uint8Array): void {
    this.state = decodeJson(snapshot, isState, 'snapshot');
  }

  applyUpdate(log: UpdateLog): void {
    this.state = fold(this.state, decodeJson(log.data, isFoldChange, 'update'));
  }

  /** Pulls the epoch's values, folds them and has the backups apply the change. True when the node killed itself after it. */
  private async foldEpoch(ctx: EpochContext, epoch: number): Promise<boolean> {
    // Work acknowledged before the task is backed up would die with its primary: the
    // job starts only once every task is mirrored (the job's backups, if it has any).
    if (this.state.epochs === 0 && this.fw.getNumBackups() > 0) await this.fw.waitForBackups(ctx);
    const values = await Promise.all(this.neighbours.map(async (n) => [n, await this.fw.dataRequest(ctx, n, getOffer, null)] as const));
    const kill = this.killDue(epoch);
    // The state changes and the change goes to update() in one synchronous turn
    // (the Backupable contract), so a snapshot never holds half of it.
    const change: FoldChange = kill ? { epoch, values, kill } : { epoch, values };
    this.state = fold(this.state, change);
    const log = await this.fw.update(ctx, enc.encode(JSON.stringify(change)));
    if (epoch === this.numEpochs) this.record({ task: this.id, final: statsOf(this.state) });
    if (!kill) return false;
    this.record({ task: this.id, event: 'kill', epoch });
    this.fw.getLogger().warn('killing this node (injected fault)', { epoch, seq: log.seq });
    await this.fw.kill();
    return true;
  }

  /** Tells the parent (or, at the root, moves the job on) once this task and its subtree folded the epoch. */
  private async tryFinish(ctx: EpochContext): Promise<void> {
    if (this.finished === this.epoch || this.state.foldedEpoch !== this.epoch) return;
    if (this.children.some((c) => !this.childrenFolded.has(c))) return;
    this.finished = this.epoch;
    if (this.parent !== undefined) await this.fw.flagMeta(ctx, LINK_PARENTS, META_FOLDED);
    else if (this.epoch >= this.numEpochs) await this.fw.shutdownJob();
    else await this.fw.incEpoch(ctx);
  }

  /** Served concurrently with the callbacks: computed from the state alone, whatever the task is doing. */
  private offer(ctx: EpochContext): number {
    const s = this.state;
    if (s.foldedEpoch > ctx.epoch) {
      throw new TaskGraphError('EPOCH_CHANGED', `task ${this.id} has folded epoch ${s.foldedEpoch} already`, { details: { current: s.foldedEpoch } });
    }
    return offerOf(s.foldedEpoch === ctx.epoch ? s.prevDigest : s.digest, ctx.epoch);
  }

  private killDue(epoch: number): true | undefined {
    const asked = (this.o.killAt ?? []).some((k) => k.task === this.id && k.epoch === epoch);
    return asked && !this.state.kills.includes(epoch) && this.coldStartEpoch !== epoch ? true : undefined;
  }

  private record(r: RunningStatsRecord): void {
    this.o.onRecord?.(r);
  }
}

/** Builds a running-statistics task for every task id. */
export class RunningStatsTaskBuilder implements TaskBuilder {
  constructor(private readonly options: RunningStatsOptions) {
    const { numTasks, numEpochs = 10, fanout = 2 } = options;
    if (!Number.isInteger(numTasks) || numTasks < 1) throw new InvalidArgumentError(`running-stats: numTasks must be a positive integer, got ${numTasks}`);
    if (!Number.isInteger(numEpochs) || numEpochs < 0 || numEpochs > MAX_EPOCHS) throw new InvalidArgumentError(`running-stats: numEpochs must be an integer in 0..${MAX_EPOCHS}, got ${numEpochs}`);
    if (!Number.isInteger(fanout) || fanout < 1) throw new InvalidArgumentError(`running-stats: fanout must be a positive integer, got ${fanout}`);
    const seen = new Set<string>();
    for (const k of options.killAt ?? []) {
      if (seen.has(`${k.epoch}:${k.task}`)) throw new InvalidArgumentError(`running-stats: kill-at ${k.epoch}:${k.task} is given twice`);
      seen.add(`${k.epoch}:${k.task}`);
      if (!Number.isInteger(k.task) || k.task < 0 || k.task >= numTasks) throw new InvalidArgumentError(`running-stats: kill-at task ${k.task} is outside 0..${numTasks - 1}`);
      if (!Number.isInteger(k.epoch) || k.epoch < 0 || k.epoch > numEpochs) throw new InvalidArgumentError(`running-stats: kill-at epoch ${k.epoch} is outside 0..${numEpochs}`);
    }
  }

  getTask(): Task {
    return new RunningStatsTask(this.options);
  }
}

/** The link types of the running-statistics job: a tree. */
export function runningStatsLinkages(options: Pick<RunningStatsOptions, 'numTasks' | 'fanout'>): Record<string, Topology> {
  return tree({ numTasks: options.numTasks, fanout: options.fanout ?? 2 });
}
