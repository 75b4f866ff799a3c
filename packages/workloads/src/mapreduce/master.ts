/**
 * The MapReduce master: hands splits to idle workers (one piece of work per worker
 * at a time), then, once every split is mapped, hands out the reducers with the
 * place of every split's output. When a worker fails, the splits whose output it
 * held are mapped again (as Google's MapReduce does), its work in flight goes back
 * to the queue, and reduces that may be pulling from it are cancelled and queued
 * again. A map answer is recorded only for the incarnation that holds the output,
 * and only while the master still counts on that call: a late answer (a worker
 * that was paused past its lease) is refused.
 *
 * Its state (see `state.ts`) survives a failover: shipped to hot backups with
 * `update()`, and written to the master store for a cold successor, which also
 * drops the outputs of workers that died meanwhile.
 */
import { ApplicationError, TaskGraphError } from '@taskgraph/api';
import type { EpochContext, MasterFrame, MasterStart, MasterTask, UpdateLog, WorkerEvent } from '@taskgraph/api';
import type { Split } from '../wordcount/corpus.js';
import { CANCEL, MAP, REDUCE } from './protocol.js';
import type { ReduceResult } from './protocol.js';
import { applyChange, decodeChange, decodeState, emptyState, encodeChange, encodeState, isMapDone, parseJson } from './state.js';
import type { Change, MasterState } from './state.js';
import { isReduceResult } from './protocol.js';

/** What the master reports while it runs, and once at the end. */
export type MapReduceRecord =
  | {
      readonly kind: 'progress';
      readonly mapsDone: number;
      readonly maps: number;
      readonly reducesDone: number;
      readonly reduces: number;
      readonly reexecutions: number;
      readonly masterIncarnation: number;
      /** True when every change counted here is acknowledged (by the backups and the store). */
      readonly settled: boolean;
      /** Per worker, how many splits' output it holds. */
      readonly held: readonly number[];
    }
  | {
      readonly kind: 'result';
      readonly words: number;
      readonly distinct: number;
      /** Per reducer, the countsDigest of its partition. */
      readonly digests: readonly string[];
      readonly top: ReadonlyArray<readonly [string, number]>;
      readonly maps: number;
      readonly reducers: number;
      readonly reexecutions: number;
      readonly masterIncarnation: number;
    };

export interface MapReduceMasterOptions {
  readonly splits: readonly Split[];
  readonly reducers: number;
  /** How many top words to report. */
  readonly top: number;
  readonly report: (record: MapReduceRecord) => void;
  /**
   * The first dispatch waits until this many workers have joined (default: all of
   * them), or `startWaitMs` (default 10 000) has passed: splits handed out while the
   * others still start would all go to the first.
   */
  readonly startWorkers?: number;
  readonly startWaitMs?: number;
}

interface InFlight {
  readonly kind: 'map' | 'reduce';
  /** The split or the reducer. */
  readonly id: number;
  readonly workerId: number;
  readonly incarnation: number;
  readonly attempt: number;
  readonly ac: AbortController;
}

const enc = new TextEncoder();
/** After this many failed attempts in a row at one piece of work, the master gives up with an ApplicationError. */
export const MAX_FAILURES = 10;

export class MapReduceMaster implements MasterTask {
  private frame!: MasterFrame;
  private state: MasterState;
  /** The workers that announced themselves and did not fail since: id -> incarnation. */
  private readonly ready = new Map<number, number>();
  private readonly inFlight = new Map<number, InFlight>();
  private attempts = 0;
  private wakeUp: (() => void) | undefined;
  /** A failure of the master's own bookkeeping (its lease lost while writing, say): run ends with it. */
  private failure: unknown;
  private lastProgress = '';
  /** Failed attempts per piece of work (`map/<s>`, `reduce/<r>`), since its last success. */
  private readonly failures = new Map<string, number>();
  /** State changes applied but not yet acknowledged by the backups and the store. */
  private unsettled = 0;

  constructor(private readonly o: MapReduceMasterOptions) {
    this.state = emptyState(o.splits.length, o.reducers);
  }

  setup(frame: MasterFrame): void {
    this.frame = frame;
  }

  async run(ctx: EpochContext, start: MasterStart): Promise<void> {
    const log = this.frame.getLogger();
    if (!start.promoted) await this.rebuild();
    // Attempt ids stay unique across master incarnations (a worker may still run an old one).
    this.attempts = start.incarnation * 1_000_000;
    // Outputs held by incarnations that are gone now died with them.
    const live = this.frame.getWorkers();
    const gone = this.state.maps.flatMap((m, s) => (m && live[m.workerId]?.incarnation !== m.incarnation ? [s] : []));
    if (gone.length > 0) await this.record(ctx, { kind: 'maps-lost', splits: gone });
    await this.awaitWorkers(ctx.signal);
    log.info('mapreduce master running', { splits: this.state.maps.length, reducers: this.state.reduces.length, mapsDone: this.count('maps'), reducesDone: this.count('reduces'), promoted: start.promoted });
    this.progress();
    while (this.count('reduces') < this.state.reduces.length) {
      if (this.failure !== undefined) throw this.failure;
      this.dispatch(ctx);
      await this.changed(ctx.signal);
    }
    this.finish();
  }

  /** Waits for `startWorkers` workers to join, at most `startWaitMs`. */
  private async awaitWorkers(signal: AbortSignal): Promise<void> {
    const want = Math.min(this.o.startWorkers ?? Infinity, this.frame.getNumWorkers());
    // The frame's clock, not the platform's: a simulator drives this wait on virtual time.
    const clock = this.frame.getClock();
    const deadline = clock.now() + (this.o.startWaitMs ?? 10_000);
    while (this.ready.size < want && clock.now() < deadline) {
      const timer = clock.setTimeout(() => this.wake(), deadline - clock.now());
      try {
        await this.changed(signal);
      } finally {
        clock.clearTimeout(timer);
      }
    }
    if (this.ready.size < want) this.frame.getLogger().warn('starting without every worker', { ready: this.ready.size, wanted: want });
  }

  workerJoined(_ctx: EpochContext, e: WorkerEvent): void {
    this.ready.set(e.workerId, e.incarnation);
    this.wake();
  }

  workerRestarted(ctx: EpochContext, e: WorkerEvent): void {
    this.workerJoined(ctx, e);
  }

  async workerFailed(ctx: EpochContext, e: WorkerEvent): Promise<void> {
    if (this.ready.get(e.workerId) === e.incarnation) this.ready.delete(e.workerId);
    const job = this.inFlight.get(e.workerId);
    if (job && job.incarnation <= e.incarnation) this.drop(job);
    const lost = this.state.maps.flatMap((m, s) => (m && m.workerId === e.workerId && m.incarnation <= e.incarnation ? [s] : []));
    if (lost.length > 0) {
      this.frame.getLogger().info('map output lost with its worker: mapping again', { worker: e.workerId, incarnation: e.incarnation, splits: lost.length });
      await this.record(ctx, { kind: 'maps-lost', splits: lost });
      // Reduces in flight pull from every split: the lost ones are gone, so they start over.
      for (const j of [...this.inFlight.values()]) if (j.kind === 'reduce') this.cancelReduce(ctx, j);
    }
    this.wake();
  }

  exit(): void {
    for (const j of this.inFlight.values()) j.ac.abort();
    this.wake();
  }

  snapshot(): Uint8Array {
    return encodeState(this.state);
  }

  restore(snapshot: Uint8Array): void {
    this.state = decodeState(snapshot, this.o.splits.length, this.o.reducers);
  }

  applyUpdate(log: UpdateLog): void {
    applyChange(this.state, decodeChange(log.data, this.state));
  }

  /** A cold start: the state is what the previous masters wrote to the store. */
  private async rebuild(): Promise<void> {
    const state = emptyState(this.o.splits.length, this.o.reducers);
    const store = this.frame.store;
    for (const [key, value] of await store.list('map/')) {
      const s = Number(key.slice(4));
      const done = parseJson(value, key);
      if (Number.isInteger(s) && s < state.maps.length && isMapDone(done)) state.maps[s] = done;
    }
    for (const [key, value] of await store.list('reduce/')) {
      const result = parseJson(value, key);
      if (isReduceResult(result) && result.reducer < state.reduces.length) state.reduces[result.reducer] = result;
    }
    const re = await store.get('reexecutions');
    state.reexecutions = re ? Number(new TextDecoder().decode(re)) || 0 : 0;
    this.state = state;
  }

  /** Applies a change, then ships it to the backups and writes it to the store. */
  private async record(ctx: EpochContext, change: Change): Promise<void> {
    applyChange(this.state, change);
    if (change.kind === 'map-done') this.failures.delete(`map/${change.split}`);
    if (change.kind === 'reduce-done') this.failures.delete(`reduce/${change.result.reducer}`);
    this.unsettled++;
    this.progress();
    const store = this.frame.store;
    const writes: Array<Promise<unknown>> = [];
    if (this.frame.getNumBackups() > 0) writes.push(this.frame.update(ctx, encodeChange(change)));
    switch (change.kind) {
      case 'map-done':
        writes.push(store.put(`map/${change.split}`, enc.encode(JSON.stringify(change.done))));
        break;
      case 'maps-lost':
        for (const s of change.splits) writes.push(store.delete(`map/${s}`));
        writes.push(store.put('reexecutions', enc.encode(String(this.state.reexecutions))));
        break;
      case 'reduce-done':
        writes.push(store.put(`reduce/${change.result.reducer}`, enc.encode(JSON.stringify(change.result))));
        break;
    }
    try {
      await Promise.all(writes);
    } finally {
      this.unsettled--;
    }
    this.progress();
  }

  /** Gives every idle ready worker a split to map, or (once all are mapped) a reducer. */
  private dispatch(ctx: EpochContext): void {
    const busy = new Set([...this.inFlight.values()].map((j) => `${j.kind}/${j.id}`));
    const allMapped = this.count('maps') === this.state.maps.length;
    for (const [workerId, incarnation] of this.ready) {
      if (this.inFlight.has(workerId)) continue;
      const split = this.state.maps.findIndex((m, s) => m === null && !busy.has(`map/${s}`));
      if (split >= 0) {
        busy.add(`map/${split}`);
        this.startMap(ctx, workerId, incarnation, split);
        continue;
      }
      if (!allMapped) continue;
      const reducer = this.state.reduces.findIndex((r, i) => r === null && !busy.has(`reduce/${i}`));
      if (reducer < 0) return;
      busy.add(`reduce/${reducer}`);
      this.startReduce(ctx, workerId, incarnation, reducer);
    }
  }

  private startMap(ctx: EpochContext, workerId: number, incarnation: number, split: number): void {
    const job = this.begin('map', split, workerId, incarnation);
    const s = this.o.splits[split]!;
    this.frame
      .notifyWorker(ctx, workerId, MAP, { split: { id: s.id, files: s.files }, reducers: this.o.reducers }, { signal: job.ac.signal })
      .then(
        async (out) => {
          if (!this.end(job)) return;
          // The answer counts only from the incarnation this master counts on (not a late one).
          const live = this.frame.getWorkers()[workerId];
          if (out.split !== split || live?.incarnation !== out.incarnation || this.ready.get(workerId) !== out.incarnation) {
            this.frame.getLogger().warn('a map answer from an incarnation that is over is refused', { split, worker: workerId, incarnation: out.incarnation });
            return;
          }
          // The state changes now and the next split goes out at once; the writes finish meanwhile.
          const recorded = this.record(ctx, { kind: 'map-done', split, done: { workerId, incarnation: out.incarnation, words: out.words } });
          this.wake();
          await recorded;
        },
        (err: unknown) => this.failed(job, err),
      )
      .catch((err: unknown) => this.fail(err))
      .finally(() => this.wake());
  }

  private startReduce(ctx: EpochContext, workerId: number, incarnation: number, reducer: number): void {
    const job = this.begin('reduce', reducer, workerId, incarnation);
    const sources = this.state.maps.map((m, split) => ({ split, workerId: m!.workerId, incarnation: m!.incarnation }));
    this.frame
      .notifyWorker(ctx, workerId, REDUCE, { reducer, attempt: job.attempt, top: this.o.top, sources }, { signal: job.ac.signal })
      .then(
        async (result: ReduceResult) => {
          if (!this.end(job) || result.reducer !== reducer) return;
          const recorded = this.record(ctx, { kind: 'reduce-done', result });
          this.wake();
          await recorded;
        },
        async (err: unknown) => {
          if (!this.failed(job, err)) return;
          // A source answered that it holds nothing (its worker restarted): those outputs are lost.
          const live = this.frame.getWorkers();
          const gone = sources.filter((src) => this.state.maps[src.split] !== null && live[src.workerId]?.incarnation !== src.incarnation).map((src) => src.split);
          if (gone.length > 0) await this.record(ctx, { kind: 'maps-lost', splits: gone });
        },
      )
      .catch((err: unknown) => this.fail(err))
      .finally(() => this.wake());
  }

  private begin(kind: InFlight['kind'], id: number, workerId: number, incarnation: number): InFlight {
    const job: InFlight = { kind, id, workerId, incarnation, attempt: ++this.attempts, ac: new AbortController() };
    this.inFlight.set(workerId, job);
    return job;
  }

  /** The call is over: true when the master still counted on it (it was not dropped). */
  private end(job: InFlight): boolean {
    if (this.inFlight.get(job.workerId) !== job) return false;
    this.inFlight.delete(job.workerId);
    return true;
  }

  /** The master no longer counts on this call (its worker failed, or its sources did). */
  private drop(job: InFlight): void {
    this.end(job);
    job.ac.abort();
  }

  private cancelReduce(ctx: EpochContext, job: InFlight): void {
    this.drop(job);
    // Tell the reducer to stop pulling (best effort: it may be gone; bounded, not awaited).
    const stop = new AbortController();
    const clock = this.frame.getClock();
    const timer = clock.setTimeout(() => stop.abort(), 5000);
    this.frame
      .notifyWorker(ctx, job.workerId, CANCEL, { attempt: job.attempt }, { signal: stop.signal })
      .catch(() => undefined)
      .finally(() => clock.clearTimeout(timer));
  }

  /** A call failed: true when the master still counted on it (the work goes back to the queue). */
  private failed(job: InFlight, err: unknown): boolean {
    if (!this.end(job)) return false;
    if (TaskGraphError.is(err, 'EPOCH_CHANGED', 'CLOSED', 'LEASE_LOST')) throw err;
    const key = `${job.kind}/${job.id}`;
    const n = (this.failures.get(key) ?? 0) + 1;
    this.failures.set(key, n);
    const message = err instanceof Error ? err.message : String(err);
    // A piece that fails again and again fails for a reason that retrying does not change (a worker's bug, a missing file).
    if (n >= MAX_FAILURES) throw new ApplicationError(`mapreduce: ${job.kind} ${job.id} failed ${n} times in a row; the last time: ${message}`, { cause: err });
    this.frame.getLogger().warn(`a ${job.kind} failed; it goes back to the queue`, { id: job.id, worker: job.workerId, failures: n, error: message });
    return true;
  }

  private fail(err: unknown): void {
    this.failure ??= err;
    this.wake();
  }

  private held(): number[] {
    const held = Array.from({ length: this.frame.getNumWorkers() }, () => 0);
    for (const m of this.state.maps) if (m && m.workerId < held.length) held[m.workerId]!++;
    return held;
  }

  private count(what: 'maps' | 'reduces'): number {
    return this.state[what].filter((x) => x !== null).length;
  }

  private changed(signal: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (signal.aborted) {
        reject(signal.reason as Error);
        return;
      }
      const onAbort = () => reject(signal.reason as Error);
      signal.addEventListener('abort', onAbort, { once: true });
      this.wakeUp = () => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      };
    });
  }

  private wake(): void {
    const w = this.wakeUp;
    this.wakeUp = undefined;
    w?.();
  }

  private progress(): void {
    const record: MapReduceRecord = {
      kind: 'progress',
      mapsDone: this.count('maps'),
      maps: this.state.maps.length,
      reducesDone: this.count('reduces'),
      reduces: this.state.reduces.length,
      reexecutions: this.state.reexecutions,
      masterIncarnation: this.frame.getIncarnation(),
      settled: this.unsettled === 0,
      held: this.held(),
    };
    const line = JSON.stringify(record);
    if (line === this.lastProgress) return;
    this.lastProgress = line;
    this.o.report(record);
  }

  private finish(): void {
    const results = this.state.reduces as ReduceResult[];
    const top = results.flatMap((r) => r.top).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)).slice(0, this.o.top);
    this.o.report({
      kind: 'result',
      words: results.reduce((n, r) => n + r.words, 0),
      distinct: results.reduce((n, r) => n + r.distinct, 0),
      digests: results.map((r) => r.digest),
      top,
      maps: this.state.maps.length,
      reducers: results.length,
      reexecutions: this.state.reexecutions,
      masterIncarnation: this.frame.getIncarnation(),
    });
  }
}
