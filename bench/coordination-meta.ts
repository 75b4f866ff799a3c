/**
 * Part (d) of the coordination benchmark: one meta hop, from `flagMeta` called on
 * task 0 until task 1's `metaReady` runs, for two nodes in this process on real etcd
 * coordinators (one client each) and the gRPC transport on loopback. Measured with
 * the fast path (the meta pushed to the receiver's node beside its store copy) and
 * without it (the store copy only: a write, then the receiver's watch event), and
 * beside it, in alternating rounds, a bare @grpc/grpc-js unary call of 64 B: the
 * floor of one hop between two processes' event loops. `meta_hop_ratio` is the fast
 * path's p50 over the bare call's p50.
 */
import { InternalError } from '@taskgraph/api';
import type { EpochContext, Framework, Logger, Task, Topology } from '@taskgraph/api';
import { LocalCluster, silentLogger } from '@taskgraph/core';
import type { NodeResources } from '@taskgraph/core';
import { createEtcdCoordinator } from '@taskgraph/coord-etcd';
import type { EtcdCoordinator } from '@taskgraph/coord-etcd';
import { createGrpcTransport } from '@taskgraph/transport-grpc';
import { firstEnded } from './coordination-epoch.js';
import { runId, spread } from './coordination-etcd.js';
import { startRawGrpc } from './src/raw-grpc.js';
import { round } from './src/load.js';

export interface MetaHopOptions {
  readonly endpoints: readonly string[];
  /** Timed hops per path (and bare calls), over all rounds. */
  readonly hops: number;
  /** Untimed hops first, per path. */
  readonly warmupHops: number;
  readonly rounds: number;
  /** Metas flagged per epoch before the sender advances it (a record holds an epoch's metas). */
  readonly metasPerEpoch: number;
  readonly progress: (line: string) => void;
  readonly logger?: Logger;
}

export interface MetaHopResult {
  readonly part: 'meta_hop';
  /** flagMeta called -> the receiver's metaReady ran, with the fast path. */
  readonly push: { readonly hops: number; readonly p50_ms: number; readonly p99_ms: number; readonly by_push: number; readonly by_store: number };
  /** The same with metaPush off: the store write and the receiver's watch event. */
  readonly store: { readonly hops: number; readonly p50_ms: number; readonly p99_ms: number };
  /** A bare grpc-js unary call of 64 B on loopback. */
  readonly bare_grpc: { readonly calls: number; readonly p50_ms: number; readonly p99_ms: number };
  /** push.p50_ms / bare_grpc.p50_ms */
  readonly meta_hop_ratio: number;
  /** store.p50_ms / push.p50_ms: what the fast path saves. */
  readonly store_over_push: number;
}

const LINK = 'Down';
const START_TIMEOUT_MS = 60_000;
const HOP_TIMEOUT_MS = 30_000;

/** Task 0's only neighbour is task 1. */
class Down implements Topology {
  #id = 0;
  setTaskId(id: number): void {
    this.#id = id;
  }
  getNeighbors(): readonly number[] {
    return this.#id === 0 ? [1] : [];
  }
}

/** What the two tasks report to the benchmark, in this process. */
class HopProbe {
  sender: { fw: Framework; ctx: EpochContext } | undefined;
  receiverEpoch = -1;
  readonly #waiting = new Map<string, () => void>();
  readonly #arrived = new Set<string>();
  #epochWaiter: { epoch: number; resolve: () => void } | undefined;

  entered(task: number, fw: Framework, ctx: EpochContext): void {
    if (task === 0) this.sender = { fw, ctx };
    else this.receiverEpoch = ctx.epoch;
    const w = this.#epochWaiter;
    if (w && this.sender?.ctx.epoch === w.epoch && this.receiverEpoch === w.epoch) w.resolve();
  }

  meta(meta: string): void {
    const resolve = this.#waiting.get(meta);
    if (resolve) resolve();
    else this.#arrived.add(meta);
  }

  async arrival(meta: string): Promise<void> {
    if (this.#arrived.delete(meta)) return;
    await withTimeout(new Promise<void>((resolve) => this.#waiting.set(meta, resolve)), `meta ${meta} did not arrive`);
    this.#waiting.delete(meta);
  }

  async bothIn(epoch: number, timeoutMs = HOP_TIMEOUT_MS): Promise<void> {
    if (this.sender?.ctx.epoch === epoch && this.receiverEpoch === epoch) return;
    await withTimeout(new Promise<void>((resolve) => (this.#epochWaiter = { epoch, resolve })), `the tasks did not both enter epoch ${epoch}`, timeoutMs);
    this.#epochWaiter = undefined;
  }
}

async function withTimeout(p: Promise<void>, what: string, ms = HOP_TIMEOUT_MS): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new InternalError(`${what} within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

class HopTask implements Task {
  #fw: Framework | undefined;
  constructor(
    private readonly id: number,
    private readonly probe: HopProbe,
  ) {}
  init(_taskId: number, framework: Framework): void {
    this.#fw = framework;
  }
  enterEpoch(ctx: EpochContext): void {
    this.probe.entered(this.id, this.#fw!, ctx);
  }
  metaReady(_ctx: EpochContext, _from: number, _linkType: string, meta: string): void {
    this.probe.meta(meta);
  }
  exit(): void {}
}

/** A two-task job on etcd x gRPC whose sender flags metas one at a time. */
class HopJob {
  #seq = 0;
  private constructor(
    readonly cluster: LocalCluster,
    private readonly probe: HopProbe,
    private readonly controller: EtcdCoordinator,
    private guard: <T>(p: Promise<T>) => Promise<T>,
  ) {}

  static async start(o: MetaHopOptions, metaPush: boolean): Promise<HopJob> {
    const namespace = `bench-meta-${metaPush ? 'push' : 'store'}-${runId()}`;
    const logger = o.logger ?? silentLogger;
    const coordinatorOptions = { hosts: [...o.endpoints], namespace, logger };
    const probe = new HopProbe();
    const controller = await createEtcdCoordinator(coordinatorOptions);
    const cluster = new LocalCluster({
      job: 'meta-hop',
      numTasks: 2,
      linkTypes: [LINK],
      standbys: 0,
      controllerCoordinator: controller,
      replaceLostNodes: false,
      node: { sessionTtlMs: 5000, metaPush },
      logger,
      resources: async (): Promise<NodeResources> => {
        const coordinator = await createEtcdCoordinator(coordinatorOptions);
        const transport = await createGrpcTransport({ host: '127.0.0.1', logger });
        return {
          coordinator,
          transport,
          close: async () => {
            await Promise.allSettled([transport.close(), coordinator.close()]);
          },
        };
      },
      builder: () => ({ getTask: (id: number) => new HopTask(id, probe) }),
      linkages: () => ({ [LINK]: new Down() }),
    });
    const job = new HopJob(cluster, probe, controller, (p) => p);
    try {
      await cluster.start();
      const ended = firstEnded(cluster);
      job.guard = <T>(p: Promise<T>): Promise<T> => Promise.race([p, ended]);
      await job.guard(probe.bothIn(0, START_TIMEOUT_MS));
    } catch (err) {
      await job.close();
      throw err;
    }
    return job;
  }

  async close(): Promise<void> {
    await this.cluster.close();
    await this.controller.deletePrefix('meta-hop/').catch(() => undefined);
    await this.controller.close();
  }

  /** ms from flagMeta to the receiver's metaReady; the sender moves to the next epoch every `perEpoch` metas. */
  async hop(perEpoch: number): Promise<number> {
    const s = this.probe.sender;
    if (!s) throw new InternalError('the sender has not started');
    const meta = `m${++this.#seq}`;
    const arrived = this.probe.arrival(meta);
    const t0 = performance.now();
    const flagged = s.fw.flagMeta(s.ctx, LINK, meta);
    await this.guard(arrived);
    const ms = performance.now() - t0;
    await this.guard(flagged);
    if (this.#seq % perEpoch === 0) {
      const next = s.ctx.epoch + 1;
      await this.guard(s.fw.incEpoch(s.ctx));
      await this.guard(this.probe.bothIn(next));
    }
    return ms;
  }

  stats(): { byPush: number; byStore: number } {
    let byPush = 0;
    let byStore = 0;
    for (const n of this.cluster.nodes) {
      byPush += n.node.stats.metasByPush;
      byStore += n.node.stats.metasByStore;
    }
    return { byPush, byStore };
  }
}

export async function runMetaHop(o: MetaHopOptions): Promise<MetaHopResult> {
  const raw = await startRawGrpc(4 * 1024 * 1024);
  const jobs: HopJob[] = [];
  try {
    const push = await HopJob.start(o, true);
    jobs.push(push);
    const store = await HopJob.start(o, false);
    jobs.push(store);
    o.progress('meta hop: two jobs up (fast path on and off), warming up');
    const payload = Buffer.alloc(64, 7);
    const bareCall = async (): Promise<number> => {
      const t0 = performance.now();
      await raw.call(payload);
      return performance.now() - t0;
    };
    for (let i = 0; i < o.warmupHops; i++) {
      await push.hop(o.metasPerEpoch);
      await store.hop(o.metasPerEpoch);
      await bareCall();
    }
    const before = push.stats();
    const samples = { push: [] as number[], store: [] as number[], bare: [] as number[] };
    const perRound = Math.max(1, Math.ceil(o.hops / o.rounds));
    for (let r = 0; r < o.rounds; r++) {
      for (let i = 0; i < perRound; i++) samples.push.push(await push.hop(o.metasPerEpoch));
      for (let i = 0; i < perRound; i++) samples.bare.push(await bareCall());
      for (let i = 0; i < perRound; i++) samples.store.push(await store.hop(o.metasPerEpoch));
      o.progress(`meta hop: round ${r + 1}/${o.rounds}`);
    }
    const after = push.stats();
    const p = spread(samples.push);
    const s = spread(samples.store);
    const b = spread(samples.bare);
    return {
      part: 'meta_hop',
      push: { hops: samples.push.length, p50_ms: p.p50, p99_ms: p.p99, by_push: after.byPush - before.byPush, by_store: after.byStore - before.byStore },
      store: { hops: samples.store.length, p50_ms: s.p50, p99_ms: s.p99 },
      bare_grpc: { calls: samples.bare.length, p50_ms: b.p50, p99_ms: b.p99 },
      meta_hop_ratio: round(p.p50 / b.p50, 2),
      store_over_push: round(s.p50 / p.p50, 2),
    };
  } finally {
    await Promise.allSettled(jobs.map((j) => j.close()));
    await raw.close();
  }
}
