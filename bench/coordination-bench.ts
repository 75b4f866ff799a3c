/**
 * The coordination benchmark: the framework's use of etcd against bare etcd3, on
 * one etcd the benchmark starts itself (loopback, temporary data dir).
 *
 *  (a) epoch advance: incEpoch -> every task entered the new epoch, at 8 and 64
 *      tasks, beside a bare compare-and-put seen through a watch;
 *  (b) failover at TTL 2 s: SIGKILL of the owning process -> a standby published
 *      the task, beside etcd's own expiry of a 2 s lease, and the witnessed
 *      failover (the dead node's session ended by its supervisor);
 *  (c) store writes per task per epoch of the regression job (meta flags and
 *      start-up excluded), over enough epochs to span two meta generations;
 *  (d) one meta hop (flagMeta -> metaReady) on etcd x gRPC, with and without the
 *      fast path, beside a bare gRPC unary call.
 *
 * Produces one result per measurement and a summary against the targets.
 */
import { InvalidArgumentError } from '@taskgraph/api';
import type { Logger } from '@taskgraph/api';
import { startEtcd } from '@taskgraph/testkit';
import type { EtcdServer } from '@taskgraph/testkit';
import { readEtcdVersion } from './coordination-etcd.js';
import { runEpochAdvance } from './coordination-epoch.js';
import type { EpochAdvanceResult } from './coordination-epoch.js';
import { runFailover } from './coordination-failover.js';
import type { FailoverResult } from './coordination-failover.js';
import { runMetaHop } from './coordination-meta.js';
import type { MetaHopResult } from './coordination-meta.js';
import { runStoreWrites } from './coordination-writes.js';
import type { StoreWritesResult } from './coordination-writes.js';
import { round } from './src/load.js';

export const TARGETS = {
  epoch_advance_ratio_64: 2,
  failover_over_ttl_s: 1,
  witnessed_failover_s: 0.2,
  writes_per_task_epoch: 2,
  meta_hop_ratio: 3,
  meta_cleanup_writes_per_task_epoch: 0.1,
} as const;

export const PARTS = ['epoch', 'failover', 'writes', 'meta'] as const;
export type Part = (typeof PARTS)[number];

export interface CoordinationOptions {
  readonly parts: readonly Part[];
  /** (a) the job sizes, in tasks. */
  readonly epochTasks: readonly number[];
  /** (a) timed advances per size, bare round trips, alternating rounds. */
  readonly epochs: number;
  /**
   * (a) untimed task-epochs first (advances = this / tasks): enough for the JIT to
   * have compiled the hot paths, which takes the same number of node events at
   * every size.
   */
  readonly warmupTaskEpochs: number;
  readonly bareRounds: number;
  readonly rounds: number;
  /** (a) nodes per etcd client (1: each node its own). */
  readonly nodesPerClient: number;
  /** (a) pause between advances. */
  readonly gapMs: number;
  /** (b) */
  readonly failoverReps: number;
  readonly ttlMs: number;
  readonly standbys: number;
  /** (c) */
  readonly regressionTasks: number;
  readonly regressionEpochs: number;
  /** (d) timed meta hops per path, untimed ones first, and the metas flagged per epoch. */
  readonly metaHops: number;
  readonly metaWarmup: number;
  readonly metasPerEpoch: number;
  readonly progress?: (line: string) => void;
  /** The framework's logger (nodes, controller). Default silent. */
  readonly logger?: Logger;
}

export const DEFAULTS: CoordinationOptions = {
  parts: PARTS,
  epochTasks: [8, 64],
  epochs: 200,
  warmupTaskEpochs: 2000,
  bareRounds: 400,
  rounds: 4,
  nodesPerClient: 1,
  gapMs: 50,
  failoverReps: 8,
  ttlMs: 2000,
  standbys: 2,
  regressionTasks: 15,
  // Epochs 1..33 counted: two whole meta generations (16 epochs each) and their deletions.
  regressionEpochs: 34,
  metaHops: 400,
  metaWarmup: 100,
  metasPerEpoch: 25,
};

export type CoordinationResult = EpochAdvanceResult | FailoverResult | StoreWritesResult | MetaHopResult;

export interface Summary {
  readonly summary: true;
  readonly epoch_advance_ratio_64: number | null;
  readonly failover_over_ttl_s: number | null;
  /** SIGKILL -> the standby's address when the supervisor ends the dead node's session (p50). */
  readonly witnessed_failover_s: number | null;
  readonly writes_per_task_epoch: number | null;
  /** Deletions of old metas, per task per epoch (in the writes part's window). */
  readonly meta_cleanup_writes_per_task_epoch: number | null;
  /** flagMeta -> metaReady p50 on etcd x gRPC over a bare gRPC unary call's p50. */
  readonly meta_hop_ratio: number | null;
  readonly targets: typeof TARGETS;
  readonly met: { readonly [K in keyof typeof TARGETS]: boolean };
  /** framework p50 / bare p50 of every epoch-advance size measured, by tasks. */
  readonly epoch_advance_ratios: Readonly<Record<string, number>>;
  readonly etcd_version: string;
  readonly elapsed_s: number;
}

function atMost(v: number | null, target: number): boolean {
  return v !== null && v <= target;
}

function positiveInt(name: string, v: number, min = 1): void {
  if (!Number.isInteger(v) || v < min) throw new InvalidArgumentError(`${name} must be an integer >= ${min}, got ${String(v)}`);
}

export function checkOptions(o: CoordinationOptions): void {
  if (o.parts.length === 0 || o.parts.some((p) => !PARTS.includes(p))) {
    throw new InvalidArgumentError(`parts must be some of ${PARTS.join(', ')}, got ${JSON.stringify(o.parts)}`);
  }
  if (o.epochTasks.length === 0) throw new InvalidArgumentError('give at least one job size for the epoch advance');
  for (const t of o.epochTasks) positiveInt('every epoch-advance job size', t);
  positiveInt('epochs', o.epochs);
  positiveInt('warmupTaskEpochs', o.warmupTaskEpochs, 0);
  positiveInt('bareRounds', o.bareRounds);
  positiveInt('rounds', o.rounds);
  positiveInt('nodesPerClient', o.nodesPerClient);
  positiveInt('gapMs', o.gapMs, 0);
  positiveInt('failoverReps', o.failoverReps);
  positiveInt('standbys', o.standbys);
  if (!Number.isInteger(o.ttlMs) || o.ttlMs < 2000 || o.ttlMs % 1000 !== 0) {
    throw new InvalidArgumentError(`ttlMs must be whole seconds, at least etcd's 2000 ms, got ${String(o.ttlMs)}`);
  }
  positiveInt('regressionTasks', o.regressionTasks, 2);
  positiveInt('regressionEpochs', o.regressionEpochs, 2);
  positiveInt('metaHops', o.metaHops);
  positiveInt('metaWarmup', o.metaWarmup, 0);
  positiveInt('metasPerEpoch', o.metasPerEpoch);
}

/** Runs the parts asked for; `onResult` gets each result as soon as it is known. */
export async function runCoordination(
  options: CoordinationOptions = DEFAULTS,
  onResult: (result: CoordinationResult) => void = () => undefined,
): Promise<{ results: CoordinationResult[]; summary: Summary }> {
  checkOptions(options);
  const o = options;
  const progress = o.progress ?? (() => undefined);
  const started = performance.now();
  const results: CoordinationResult[] = [];
  const emit = (r: CoordinationResult): void => {
    results.push(r);
    onResult(r);
  };
  let etcd: EtcdServer | undefined;
  try {
    progress('starting etcd on loopback');
    etcd = await startEtcd({ name: 'bench' });
    const common = { endpoints: etcd.endpoints, progress, ...(o.logger ? { logger: o.logger } : {}) };

    if (o.parts.includes('epoch')) {
      for (const tasks of o.epochTasks) {
        progress(`epoch advance: ${tasks} tasks, ${o.epochs} timed advances, ${o.bareRounds} bare round trips`);
        const r = await runEpochAdvance({
          ...common,
          ...(etcd.pid === undefined ? {} : { etcdPid: etcd.pid }),
          tasks,
          epochs: o.epochs,
          warmupEpochs: Math.ceil(o.warmupTaskEpochs / tasks),
          bareRounds: o.bareRounds,
          rounds: o.rounds,
          nodesPerClient: o.nodesPerClient,
          gapMs: o.gapMs,
          sessionTtlMs: 5000,
        });
        progress(
          `epoch advance ${tasks} tasks: framework p50 ${r.framework.p50_ms} ms p99 ${r.framework.p99_ms} ms | bare p50 ${r.bare.p50_ms} ms ` +
            `(fan-out to ${tasks}: ${r.bare_fanout.p50_ms} ms) | ratio ${r.ratio_p50}`,
        );
        emit(r);
      }
    }
    if (o.parts.includes('failover')) {
      progress(`failover: TTL ${o.ttlMs} ms, ${o.failoverReps} repetitions, ${o.standbys} standbys (node processes run from source through tsx)`);
      const r = await runFailover({ ...common, clientAddress: etcd.clientAddress, ttlMs: o.ttlMs, repetitions: o.failoverReps, standbys: o.standbys });
      progress(
        `failover: p50 ${r.framework.p50_s} s max ${r.framework.max_s} s | bare lease expiry p50 ${r.bare.p50_s} s | over TTL ${r.failover_over_ttl_s} s | ` +
          `witnessed p50 ${r.witnessed.p50_s} s max ${r.witnessed.max_s} s`,
      );
      emit(r);
    }
    if (o.parts.includes('writes')) {
      progress(`store writes: the regression job, ${o.regressionTasks} tasks, epochs 0..${o.regressionEpochs}`);
      const r = await runStoreWrites({ ...common, tasks: o.regressionTasks, epochs: o.regressionEpochs, sessionTtlMs: 5000 });
      progress(`store writes: ${r.writes_per_task_epoch} per task per epoch (${r.writes_per_task_epoch_with_meta} with meta flags)`);
      emit(r);
    }
    if (o.parts.includes('meta')) {
      progress(`meta hop: ${o.metaHops} timed hops per path, etcd x gRPC, beside bare gRPC unary calls`);
      const r = await runMetaHop({ ...common, hops: o.metaHops, warmupHops: o.metaWarmup, rounds: o.rounds, metasPerEpoch: o.metasPerEpoch });
      progress(
        `meta hop: fast path p50 ${r.push.p50_ms} ms p99 ${r.push.p99_ms} ms | store only p50 ${r.store.p50_ms} ms | bare gRPC p50 ${r.bare_grpc.p50_ms} ms | ` +
          `ratio ${r.meta_hop_ratio}`,
      );
      emit(r);
    }

    const epochResults = results.filter((r): r is EpochAdvanceResult => r.part === 'epoch_advance');
    const ratios: Record<string, number> = {};
    for (const r of epochResults) ratios[String(r.tasks)] = r.ratio_p50;
    const ratio64 = ratios['64'] ?? null;
    const failover = results.find((r): r is FailoverResult => r.part === 'failover');
    const writes = results.find((r): r is StoreWritesResult => r.part === 'store_writes');
    const overTtl = failover ? failover.failover_over_ttl_s : null;
    const witnessed = failover ? failover.witnessed.p50_s : null;
    const perTaskEpoch = writes ? writes.writes_per_task_epoch : null;
    const cleanup = writes ? writes.per_task_epoch.meta_cleanup : null;
    const hop = results.find((r): r is MetaHopResult => r.part === 'meta_hop');
    const hopRatio = hop ? hop.meta_hop_ratio : null;
    const summary: Summary = {
      summary: true,
      epoch_advance_ratio_64: ratio64,
      failover_over_ttl_s: overTtl,
      witnessed_failover_s: witnessed,
      writes_per_task_epoch: perTaskEpoch,
      meta_cleanup_writes_per_task_epoch: cleanup,
      meta_hop_ratio: hopRatio,
      targets: TARGETS,
      met: {
        epoch_advance_ratio_64: atMost(ratio64, TARGETS.epoch_advance_ratio_64),
        failover_over_ttl_s: atMost(overTtl, TARGETS.failover_over_ttl_s),
        witnessed_failover_s: atMost(witnessed, TARGETS.witnessed_failover_s),
        writes_per_task_epoch: atMost(perTaskEpoch, TARGETS.writes_per_task_epoch),
        meta_hop_ratio: atMost(hopRatio, TARGETS.meta_hop_ratio),
        meta_cleanup_writes_per_task_epoch: atMost(cleanup, TARGETS.meta_cleanup_writes_per_task_epoch),
      },
      epoch_advance_ratios: ratios,
      etcd_version: await readEtcdVersion(etcd.clientUrl),
      elapsed_s: round((performance.now() - started) / 1000, 1),
    };
    return { results, summary };
  } finally {
    progress('stopping etcd');
    await etcd?.cleanup();
  }
}
