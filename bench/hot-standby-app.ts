/**
 * The application of the hot-standby benchmark. Task 0 runs as `taskgraph node`
 * processes (its primary and backups, which the benchmark SIGKILLs); task 1 is the
 * prober, which the benchmark runs in its own process and through which it calls
 * task 0 with `dataRequest`, as any task of the job would.
 *
 * Task 0, `--arg mode=state`: holds `mib` MiB of state (hot-standby-state.ts),
 * built when it becomes the primary without a backup's state (the first primary,
 * or a cold standby that takes over), restored from a snapshot on a backup. Its
 * `probe` method answers one word of the state, and waits for the state to be
 * there: the task serves only once it has its state.
 *
 * Task 0, `--arg mode=stream`: the primary streams updates (`in_flight` at a time),
 * each a pair (incarnation, n) appended to its state, and reports every one
 * `update()` acknowledged as a `TG-RESULT` record. Its `finish` method stops the
 * stream, waits for the updates in flight, and answers the whole state.
 */
import { InvalidArgumentError } from '@taskgraph/api';
import type { BackedUpFramework, Backupable, EpochContext, RoleChange, Task, TaskBuilder, UpdateLog } from '@taskgraph/api';
import { bytesCodec, defineApp, defineMethod, jsonCodec, serve } from '@taskgraph/core';
import type { AppContext } from '@taskgraph/core';
import { IDLE_LINK, NoNeighbors } from './coordination-idle-app.js';
import { buildStateInSlices } from './hot-standby-state.js';
import { Once } from './src/once.js';

export const LINK = IDLE_LINK;
export const STATE_TASK = 0;
export const PROBE_TASK = 1;

export interface ProbeAnswer {
  /** The incarnation of the task that answered (a new one after a failover). */
  readonly incarnation: number;
  readonly index: number;
  readonly word: number;
}

/** `probe(i)`: word i of task 0's state. */
export const PROBE = defineMethod<number, ProbeAnswer>('probe', { input: jsonCodec<number>(), output: jsonCodec<ProbeAnswer>() });
/** `finish()`: stop streaming; answers the state (see `decodeFinish`). */
export const FINISH = defineMethod<null, Uint8Array>('finish', { input: jsonCodec<null>(), output: bytesCodec });

/** A state-mode primary built its state (a fresh primary, or a cold standby that took over). */
export interface BuiltRecord {
  readonly kind: 'built';
  readonly incarnation: number;
  readonly ms: number;
}

/** A stream-mode primary's `update()` resolved for the pair (incarnation, n). */
export interface AckRecord {
  readonly kind: 'ack';
  readonly incarnation: number;
  readonly n: number;
  readonly seq: number;
}

export function isBuiltRecord(r: unknown): r is BuiltRecord {
  const v = r as Partial<BuiltRecord> | null;
  return typeof v === 'object' && v !== null && v.kind === 'built' && typeof v.incarnation === 'number' && typeof v.ms === 'number';
}

export function isAckRecord(r: unknown): r is AckRecord {
  const v = r as Partial<AckRecord> | null;
  return typeof v === 'object' && v !== null && v.kind === 'ack' && typeof v.incarnation === 'number' && typeof v.n === 'number' && typeof v.seq === 'number';
}

export interface FinishAnswer {
  /** Updates the answering primary saw acknowledged (and reported). */
  readonly acked: number;
  readonly incarnation: number;
  /** The state: (incarnation, n) pairs, flat. */
  readonly pairs: Uint32Array;
}

export function encodeFinish(a: FinishAnswer): Uint8Array {
  const out = new Uint32Array(2 + a.pairs.length);
  out[0] = a.acked;
  out[1] = a.incarnation;
  out.set(a.pairs, 2);
  return new Uint8Array(out.buffer);
}

export function decodeFinish(bytes: Uint8Array): FinishAnswer {
  if (bytes.byteLength < 8 || bytes.byteLength % 8 !== 0) throw new InvalidArgumentError(`a finish answer of ${bytes.byteLength} bytes`);
  const words = new Uint32Array(bytes.slice().buffer);
  return { acked: words[0]!, incarnation: words[1]!, pairs: words.subarray(2) };
}

/** Task 0 in state mode: a large state that is built, mirrored, and served word by word. */
class StateTask implements Task, Backupable {
  #framework: BackedUpFramework | undefined;
  #words: Uint32Array | undefined;
  readonly #ready = new Once<void>();
  readonly methods = [
    serve(PROBE, async (_ctx: EpochContext, index: number): Promise<ProbeAnswer> => {
      await this.#ready.promise;
      const words = this.#words!;
      if (!Number.isInteger(index) || index < 0 || index >= words.length) throw new InvalidArgumentError(`probe: no word ${index} in ${words.length}`);
      return { incarnation: this.#framework!.getIncarnation(), index, word: words[index]! };
    }),
  ];

  constructor(
    private readonly bytes: number,
    private readonly seed: number,
    private readonly ctx: AppContext,
  ) {}

  init(_taskId: number, framework: BackedUpFramework): void {
    this.#framework = framework;
  }

  async becamePrimary(_ctx: EpochContext, change: RoleChange): Promise<void> {
    // A promoted backup has the state already; a fresh primary must make it.
    if (change.promoted) return;
    const started = performance.now();
    this.#words = await buildStateInSlices(this.seed, this.bytes);
    this.#ready.resolve();
    this.ctx.report({ kind: 'built', incarnation: change.incarnation, ms: Math.round(performance.now() - started) } satisfies BuiltRecord);
  }

  enterEpoch(): void {}
  metaReady(): void {}
  exit(): void {}

  async snapshot(): Promise<Uint8Array> {
    // The state never changes once built (this task makes no updates, so the seq stays 0):
    // waiting for the build is safe, and the words can be handed over without a copy.
    await this.#ready.promise;
    const w = this.#words!;
    return new Uint8Array(w.buffer, w.byteOffset, w.byteLength);
  }

  restore(snapshot: Uint8Array): void {
    // A view needs 4-byte alignment; the framework's buffers usually have it, a copy makes sure.
    const aligned = snapshot.byteOffset % 4 === 0 ? snapshot : snapshot.slice();
    this.#words = new Uint32Array(aligned.buffer, aligned.byteOffset, Math.floor(aligned.byteLength / 4));
    this.#ready.resolve();
  }

  applyUpdate(log: UpdateLog): void {
    throw new InvalidArgumentError(`the state task makes no updates, yet update ${log.seq} arrived`);
  }
}

/** (incarnation, n) pairs in a growing array. */
class Pairs {
  #words = new Uint32Array(1 << 16);
  #length = 0;

  static from(bytes: Uint8Array): Pairs {
    const p = new Pairs();
    const words = new Uint32Array(bytes.slice().buffer);
    p.#grow(words.length);
    p.#words.set(words);
    p.#length = words.length;
    return p;
  }

  push(incarnation: number, n: number): void {
    this.#grow(this.#length + 2);
    this.#words[this.#length++] = incarnation;
    this.#words[this.#length++] = n;
  }

  /** A copy of the pairs, flat. */
  copy(): Uint32Array {
    return this.#words.slice(0, this.#length);
  }

  #grow(length: number): void {
    if (length <= this.#words.length) return;
    let size = this.#words.length;
    while (size < length) size *= 2;
    const bigger = new Uint32Array(size);
    bigger.set(this.#words.subarray(0, this.#length));
    this.#words = bigger;
  }
}

function pairBytes(incarnation: number, n: number): Uint8Array {
  return new Uint8Array(Uint32Array.of(incarnation, n).buffer);
}

/** Task 0 in stream mode: a primary that streams acknowledged updates until `finish`. */
class StreamTask implements Task, Backupable {
  #framework: BackedUpFramework | undefined;
  #pairs = new Pairs();
  #next = 0;
  #acked = 0;
  #stopping = false;
  #streaming: Promise<void> | undefined;
  readonly methods = [
    serve(FINISH, async (): Promise<Uint8Array> => {
      this.#stopping = true;
      await this.#streaming;
      return encodeFinish({ acked: this.#acked, incarnation: this.#framework!.getIncarnation(), pairs: this.#pairs.copy() });
    }),
  ];

  constructor(
    private readonly inFlight: number,
    private readonly ctx: AppContext,
  ) {}

  init(_taskId: number, framework: BackedUpFramework): void {
    this.#framework = framework;
  }

  enterEpoch(ctx: EpochContext): void {
    // In the background, so that the task's other callbacks still run; it ends with the epoch or at `finish`.
    this.#streaming ??= Promise.all(Array.from({ length: this.inFlight }, () => this.#stream(ctx))).then(() => undefined);
  }

  async #stream(ctx: EpochContext): Promise<void> {
    const framework = this.#framework!;
    const incarnation = framework.getIncarnation();
    while (!this.#stopping && !ctx.signal.aborted) {
      const n = ++this.#next;
      // The change and its update() in one synchronous turn, as Backupable asks.
      this.#pairs.push(incarnation, n);
      let log: UpdateLog;
      try {
        log = await framework.update(ctx, pairBytes(incarnation, n));
      } catch (err) {
        // Not acknowledged (the node is going, or lost its slot): the stream of this primary ends.
        framework.getLogger().warn('an update was not acknowledged; this primary stops streaming', { n, error: err instanceof Error ? err.message : String(err) });
        return;
      }
      this.#acked++;
      this.ctx.report({ kind: 'ack', incarnation, n, seq: log.seq } satisfies AckRecord);
      // With no backup in sync update() resolves at once, and a loop of resolved promises
      // would never let the node's timers and I/O (its keepalives) run: yield, as a
      // producer fed by I/O would.
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
  }

  metaReady(): void {}
  exit(): void {}

  snapshot(): Uint8Array {
    return new Uint8Array(this.#pairs.copy().buffer);
  }

  restore(snapshot: Uint8Array): void {
    this.#pairs = Pairs.from(snapshot);
  }

  applyUpdate(log: UpdateLog): void {
    const pair = new Uint32Array(log.data.slice().buffer);
    if (pair.length !== 2) throw new InvalidArgumentError(`update ${log.seq} has ${log.data.byteLength} bytes, not a pair`);
    this.#pairs.push(pair[0]!, pair[1]!);
  }
}

/** Task 1: gives the benchmark its framework and epoch context to call task 0 with. */
export class ProbeTask implements Task {
  framework: BackedUpFramework | undefined;
  ctx: EpochContext | undefined;
  readonly #entered = new Once<void>();

  /** Resolves once the task is in its first epoch (a primary). */
  get entered(): Promise<void> {
    return this.#entered.promise;
  }

  init(_taskId: number, framework: BackedUpFramework): void {
    this.framework = framework;
  }

  enterEpoch(ctx: EpochContext): void {
    this.ctx = ctx;
    this.#entered.resolve();
  }

  metaReady(): void {}
  exit(): void {}
}

function positiveArg(ctx: AppContext, name: string, fallback: number): number {
  const text = ctx.args[name];
  const n = text === undefined ? fallback : Number(text);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`--arg ${name}= must be a positive integer, got ${JSON.stringify(text)}`);
  return n;
}

export function hotStandbyBuilder(ctx: AppContext): TaskBuilder {
  const mode = ctx.args['mode'] ?? 'state';
  if (mode !== 'state' && mode !== 'stream') throw new InvalidArgumentError(`--arg mode= must be state or stream, got ${JSON.stringify(mode)}`);
  const bytes = positiveArg(ctx, 'mib', 64) * 1024 * 1024;
  const seed = positiveArg(ctx, 'seed', 1);
  const inFlight = positiveArg(ctx, 'in_flight', 4);
  return {
    getTask: (taskId) => {
      if (taskId !== STATE_TASK) return new ProbeTask();
      return mode === 'state' ? new StateTask(bytes, seed, ctx) : new StreamTask(inFlight, ctx);
    },
  };
}

export default defineApp({
  name: 'hot-standby-bench',
  linkTypes: [LINK],
  taskBuilder: hotStandbyBuilder,
  linkages: () => ({ [LINK]: new NoNeighbors() }),
});
