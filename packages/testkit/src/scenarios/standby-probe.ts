/**
 * A hot-standby workload for the scenarios: every task's primary streams distinct
 * values into its state through `update()`, a few at a time, until the test stops
 * it; the state (Backupable) is the list of values applied. A recorder shared with
 * the test (same process) sees every value issued, acknowledged or refused, every
 * role change and neighbour event, every snapshot restored and update applied, so
 * a scenario can check the exact answer and kill nodes at exact points (its
 * listeners run synchronously, inside the acknowledgement or the event).
 *
 * The job has one epoch: the stream uses the epoch-0 context, and neighbour events
 * are only passed on within the epoch they happen in.
 */
import { TaskGraphError } from '@taskgraph/api';
import type { BackedUpFramework, Backupable, EpochContext, NeighborEvent, RoleChange, Task, TaskBuilder, Topology, UpdateLog } from '@taskgraph/api';
import { ring, tree } from '@taskgraph/topologies';

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A tree (fanout 2) and a ring over the same tasks: a neighbour can be one in several link types. */
export const STANDBY_LINK_TYPES = ['Parents', 'Children', 'Prev', 'Next'] as const;

export function standbyLinkages(numTasks: number): Record<string, Topology> {
  return { ...tree({ numTasks, fanout: 2 }), ...ring({ numTasks }) };
}

/** A value a primary put into its state and handed to `update()`. */
export interface Issued {
  readonly task: number;
  /** The index of the node (in its LocalCluster) whose primary issued it. */
  readonly node: number;
  /** The primary's incarnation. */
  readonly incarnation: number;
  /** `<task>.<incarnation>.<n>`: unique in the job. */
  readonly value: string;
  /** Its position in the primary's state (1-based): the seq it must get. */
  readonly position: number;
}

export type StreamOutcome =
  | (Issued & { readonly acked: true; readonly seq: number })
  | (Issued & { readonly acked: false; readonly code: string; readonly message: string });

export type StandbyEvent =
  | { readonly kind: 'primary'; readonly change: RoleChange; /** Values the state held then. */ readonly held: number }
  | { readonly kind: 'backup'; readonly change: RoleChange }
  | { readonly kind: 'failed' | 'restarted'; readonly event: NeighborEvent };

export interface StandbyOptions {
  readonly recorder: StandbyRecorder;
  /** The node's index in its LocalCluster (the builder's argument). */
  readonly node: number;
  /** Values issued at once (updates in flight together). Default 3. */
  readonly burst?: number;
  /**
   * The pause between bursts, in ms: the stream's rate. It keeps the state (and
   * the work of a machine shared with other tests) small over scenarios that last
   * several session TTLs; nothing waits on it.
   */
  readonly paceMs: number;
}

export class StandbyRecorder {
  readonly issued: Issued[] = [];
  readonly outcomes: StreamOutcome[] = [];
  /** Snapshots restored on backups: the values each held. */
  readonly restores: Array<{ readonly task: number; readonly node: number; readonly values: readonly string[] }> = [];
  /** Updates applied on backups, in the order they were. */
  readonly applied: Array<{ readonly task: number; readonly node: number; readonly seq: number; readonly value: string }> = [];
  /** Every task object made, by the index of its node (a node makes one, when it claims a slot). */
  readonly tasks = new Map<number, StandbyTask>();
  private readonly outcomeListeners = new Set<(o: StreamOutcome) => void>();
  private readonly eventListeners = new Set<(task: StandbyTask, e: StandbyEvent) => void>();
  private stopped = false;

  /** Every stream finishes the updates it has in flight and issues no more. */
  stop(): void {
    this.stopped = true;
  }

  get isStopped(): boolean {
    return this.stopped;
  }

  acked(task: number): Array<Extract<StreamOutcome, { acked: true }>> {
    return this.outcomes.filter((o): o is Extract<StreamOutcome, { acked: true }> => o.task === task && o.acked);
  }

  /** Calls `listener` inside each acknowledgement or refusal; returns the unsubscribe. */
  onOutcome(listener: (o: StreamOutcome) => void): () => void {
    this.outcomeListeners.add(listener);
    return () => this.outcomeListeners.delete(listener);
  }

  /** Calls `listener` inside each role change or neighbour event; returns the unsubscribe. */
  onEvent(listener: (task: StandbyTask, e: StandbyEvent) => void): () => void {
    this.eventListeners.add(listener);
    return () => this.eventListeners.delete(listener);
  }

  /** @internal */
  outcome(o: StreamOutcome): void {
    this.outcomes.push(o);
    for (const l of [...this.outcomeListeners]) l(o);
  }

  /** @internal */
  event(task: StandbyTask, e: StandbyEvent): void {
    task.events.push(e);
    for (const l of [...this.eventListeners]) l(task, e);
  }
}

export class StandbyTask implements Task, Backupable {
  id = -1;
  /** The values applied, in order: the task's state. */
  state: string[] = [];
  /** Role changes and neighbour events, in the order the callbacks ran. */
  readonly events: StandbyEvent[] = [];
  private fw: BackedUpFramework | undefined;
  private started = false;
  private streamingNow = false;
  private exited = false;
  private wake: (() => void) | undefined;
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor(private readonly o: StandbyOptions) {}

  /** True while this primary's stream runs (it has issued values whose outcome is not known yet, or will issue more). */
  get streaming(): boolean {
    return this.streamingNow;
  }

  get node(): number {
    return this.o.node;
  }

  init(taskId: number, fw: BackedUpFramework): void {
    this.id = taskId;
    this.fw = fw;
    this.o.recorder.tasks.set(this.o.node, this);
  }

  becamePrimary(_ctx: EpochContext, change: RoleChange): void {
    this.o.recorder.event(this, { kind: 'primary', change, held: this.state.length });
  }

  becameBackup(change: RoleChange): void {
    this.o.recorder.event(this, { kind: 'backup', change });
  }

  neighborFailed(_ctx: EpochContext, event: NeighborEvent): void {
    this.o.recorder.event(this, { kind: 'failed', event });
  }

  neighborRestarted(_ctx: EpochContext, event: NeighborEvent): void {
    this.o.recorder.event(this, { kind: 'restarted', event });
  }

  enterEpoch(ctx: EpochContext): void {
    if (this.started) return;
    this.started = true;
    this.streamingNow = true;
    // Not awaited: the callback queue stays free for the events that come while it streams.
    void this.stream(ctx);
  }

  metaReady(): void {}

  exit(): void {
    this.exited = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.wake?.();
  }

  /** Ends the job (from its primary). */
  shutdown(): Promise<void> {
    if (!this.fw) throw new Error(`task object of node ${this.o.node} was never initialised`);
    return this.fw.shutdownJob();
  }

  snapshot(): Uint8Array {
    return enc.encode(JSON.stringify(this.state));
  }

  restore(snapshot: Uint8Array): void {
    this.state = JSON.parse(dec.decode(snapshot)) as string[];
    this.o.recorder.restores.push({ task: this.id, node: this.o.node, values: [...this.state] });
  }

  applyUpdate(log: UpdateLog): void {
    const value = dec.decode(log.data);
    this.state.push(value);
    this.o.recorder.applied.push({ task: this.id, node: this.o.node, seq: log.seq, value });
  }

  /**
   * Issues bursts of values until the recorder stops it or an update is refused. A
   * node that left keeps calling (its exit only cuts the pause short), so the
   * refusal of its next update is seen.
   */
  private async stream(ctx: EpochContext): Promise<void> {
    const fw = this.fw!;
    const incarnation = fw.getIncarnation();
    let n = 0;
    try {
      while (!this.o.recorder.isStopped) {
        const sends: Array<Promise<boolean>> = [];
        for (let i = 0; i < (this.o.burst ?? 3); i++) sends.push(this.send(fw, ctx, incarnation, ++n));
        if ((await Promise.all(sends)).includes(false)) return;
        if (!this.exited) await this.pause();
      }
    } finally {
      this.streamingNow = false;
    }
  }

  private send(fw: BackedUpFramework, ctx: EpochContext, incarnation: number, n: number): Promise<boolean> {
    const rec = this.o.recorder;
    const value = `${this.id}.${incarnation}.${n}`;
    // The state changes and update() is called in one synchronous turn (the Backupable contract).
    this.state.push(value);
    const issued: Issued = { task: this.id, node: this.o.node, incarnation, value, position: this.state.length };
    rec.issued.push(issued);
    return fw.update(ctx, enc.encode(value)).then(
      (log) => {
        rec.outcome({ ...issued, acked: true, seq: log.seq });
        return true;
      },
      (err: unknown) => {
        const code = TaskGraphError.is(err) ? err.code : 'not a TaskGraphError';
        rec.outcome({ ...issued, acked: false, code, message: err instanceof Error ? err.message : String(err) });
        return false;
      },
    );
  }

  private pause(): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        this.timer = undefined;
        this.wake = undefined;
        resolve();
      };
      this.wake = done;
      this.timer = setTimeout(done, this.o.paceMs);
    });
  }
}

export class StandbyTaskBuilder implements TaskBuilder {
  constructor(private readonly o: StandbyOptions) {}
  getTask(): Task {
    return new StandbyTask(this.o);
  }
}
