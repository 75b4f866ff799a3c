/**
 * `bench:scale` as parts, each a function that runs its sizes, hands each run's
 * line to `emit` as it ends, and returns its summary keys: the embedded default in
 * one process, then jobs on one real etcd in up to 16 node-host processes.
 */
import { cpus } from 'node:os';
import { startEtcd } from '@taskgraph/testkit';
import type { EtcdServer } from '@taskgraph/testkit';
import { runEtcdScale } from '../scale-etcd.js';
import type { EtcdScaleResult } from '../scale-etcd.js';
import { runEmbedded } from './scale-embedded.js';
import type { EmbeddedRunResult } from './scale-embedded.js';
import { growthExponent } from './scale-fit.js';

export const TARGETS = {
  embedded_1023_s: 30,
  embedded_growth_exponent: 1.2,
  claim_1000_s: 10,
  epoch_advance_1000_ms: 30,
  process_failover_over_ttl_s: 1,
  rss_mb_per_node: 2,
} as const;

export interface ScaleBenchOptions {
  readonly parts: readonly PartName[];
  /** Tasks per job in the embedded part. */
  readonly embeddedSizes: readonly number[];
  /** Tasks per job in the etcd part (10% standbys are added). */
  readonly etcdSizes: readonly number[];
  /** At most this many node processes in the etcd part. */
  readonly maxProcesses: number;
  /** The etcd part's session TTL. */
  readonly ttlMs: number;
  /** The etcd part measures a whole process's failover where one holds at least this many tasks. */
  readonly failoverMinTasks: number;
  /**
   * The etcd part's node processes run at this nice value, so that etcd, which
   * production runs on machines of its own, is not starved by 16 clients on the
   * benchmark's cores (0: the same priority as etcd).
   */
  readonly nodeNice: number;
  /** Epochs per job (the job runs epochs 0..epochs). */
  readonly epochs: number;
  readonly progress?: (line: string) => void;
}

export type EtcdScaleLine = Omit<EtcdScaleResult, 'part'> & { readonly bench: 'scale'; readonly mode: 'etcd' };
export type ScaleLine = EmbeddedRunResult | EtcdScaleLine;

export interface PartContext {
  readonly options: ScaleBenchOptions;
  readonly emit: (line: ScaleLine) => void;
  readonly progress: (line: string) => void;
}

/** A part's summary keys (flat, prefixed with the part's name). */
export type PartSummary = Record<string, number | null | boolean | Record<string, number>>;

export const PARTS = {
  embedded: runEmbeddedPart,
  etcd: runEtcdPart,
} as const satisfies Record<string, (ctx: PartContext) => Promise<PartSummary>>;

export type PartName = keyof typeof PARTS;

export const DEFAULTS: ScaleBenchOptions = {
  parts: ['embedded', 'etcd'],
  embeddedSizes: [63, 255, 1023],
  etcdSizes: [8, 64, 256, 1000],
  maxProcesses: 16,
  ttlMs: 10_000,
  failoverMinTasks: 60,
  nodeNice: 5,
  epochs: 10,
};

export interface ScaleSummary {
  readonly summary: true;
  readonly bench: 'scale';
  readonly [key: string]: unknown;
}

/** Runs every part asked for, in order; resolves with all lines and the summary. Throws when a run's answer is wrong. */
export async function runScaleBench(options: ScaleBenchOptions, emit: (line: ScaleLine) => void = () => undefined): Promise<{ lines: ScaleLine[]; summary: ScaleSummary }> {
  const lines: ScaleLine[] = [];
  const progress = options.progress ?? (() => undefined);
  const keys: PartSummary = {};
  for (const part of options.parts) {
    Object.assign(
      keys,
      await PARTS[part]({
        options,
        progress,
        emit: (line) => {
          lines.push(line);
          emit(line);
        },
      }),
    );
  }
  const met: Record<string, boolean | null> = {};
  for (const [key, target] of Object.entries(TARGETS)) {
    const value = keys[key];
    met[key] = typeof value === 'number' ? value <= target : null;
  }
  return { lines, summary: { summary: true, bench: 'scale', epochs: options.epochs, ...keys, targets: TARGETS, met, cores: cpus().length } };
}

/**
 * The regression job on the embedded default at each size: `embedded_<n>_s` is the
 * whole run (job creation to the last node's end) at 1,023 tasks, and the growth
 * exponent is fitted to the steady time per epoch (start-up, which claims every
 * task, is reported beside it with its own exponent).
 */
async function runEmbeddedPart(ctx: PartContext): Promise<PartSummary> {
  const runs: EmbeddedRunResult[] = [];
  for (const tasks of ctx.options.embeddedSizes) {
    ctx.progress(`embedded: ${tasks} tasks x ${ctx.options.epochs} epochs`);
    const r = await runEmbedded({ tasks, epochs: ctx.options.epochs });
    ctx.emit(r);
    ctx.progress(`embedded: ${tasks} tasks in ${r.total_s} s (start-up ${r.startup_s} s, ${r.s_per_epoch} s per epoch)${r.pass ? '' : ' WRONG SUMS'}`);
    if (!r.pass) throw new Error(`the embedded run of ${tasks} tasks did not produce the exact sums`);
    runs.push(r);
  }
  const by = (f: (r: EmbeddedRunResult) => number): Record<string, number> => Object.fromEntries(runs.map((r) => [String(r.tasks), f(r)]));
  return {
    embedded_1023_s: runs.find((r) => r.tasks === 1023)?.total_s ?? null,
    embedded_growth_exponent: growthExponent(runs.map((r) => ({ size: r.tasks, cost: r.s_per_epoch }))),
    embedded_startup_growth_exponent: growthExponent(runs.map((r) => ({ size: r.tasks, cost: r.startup_s }))),
    embedded_total_s: by((r) => r.total_s),
    embedded_startup_s: by((r) => r.startup_s),
    embedded_s_per_epoch: by((r) => r.s_per_epoch),
    embedded_cpu_s: by((r) => r.cpu_s),
  };
}

/**
 * Jobs on one real etcd (started here on loopback), each in at most `maxProcesses`
 * node-host processes: claim time, epoch advance, writes and etcd CPU per epoch,
 * resident memory per node, and the failover of the process holding the most tasks.
 * The summary's keys are the largest job's (`claim_1000_s` is the 1,000-task job's).
 */
async function runEtcdPart(ctx: PartContext): Promise<PartSummary> {
  const runs: EtcdScaleResult[] = [];
  let etcd: EtcdServer | undefined;
  try {
    ctx.progress('etcd: starting etcd on loopback');
    etcd = await startEtcd({ name: 'bench-scale' });
    for (const tasks of ctx.options.etcdSizes) {
      ctx.progress(`etcd: ${tasks} tasks (+10% standbys) in at most ${ctx.options.maxProcesses} processes, ${ctx.options.epochs} epochs`);
      const r = await runEtcdScale({
        endpoints: etcd.endpoints,
        clientAddress: etcd.clientAddress,
        etcdPid: etcd.pid,
        tasks,
        maxProcesses: ctx.options.maxProcesses,
        epochs: ctx.options.epochs,
        ttlMs: ctx.options.ttlMs,
        failoverMinTasks: ctx.options.failoverMinTasks,
        nodeNice: ctx.options.nodeNice,
        progress: (line) => ctx.progress(`etcd: ${line}`),
      });
      const { part: _part, ...figures } = r;
      ctx.emit({ bench: 'scale', mode: 'etcd', ...figures });
      ctx.progress(
        `etcd: ${tasks} tasks claimed in ${r.claim_s} s (${r.claim_after_first_join_s} s after the first join), epoch advance p50 ${r.epoch_advance.p50_ms} ms` +
          (r.failover ? `, failover of ${r.failover.killed_tasks} tasks ${r.failover.over_ttl_s} s over the TTL` : ''),
      );
      runs.push(r);
    }
  } finally {
    await etcd?.cleanup();
  }
  const largest = runs.at(-1);
  const withFailover = runs.filter((r) => r.failover !== null).at(-1);
  const by = (f: (r: EtcdScaleResult) => number | null): Record<string, number> =>
    Object.fromEntries(runs.flatMap((r) => {
      const v = f(r);
      return v === null ? [] : [[String(r.tasks), v]];
    }));
  const perNode = runs.map((r) => r.rss_mb.per_node).filter((v): v is number => v !== null);
  return {
    claim_1000_s: runs.find((r) => r.tasks === 1000)?.claim_s ?? null,
    epoch_advance_1000_ms: runs.find((r) => r.tasks === 1000)?.epoch_advance.p50_ms ?? null,
    process_failover_over_ttl_s: withFailover?.failover?.over_ttl_s ?? null,
    // The largest job's figure: the per-node cost with the most nodes per process.
    rss_mb_per_node: largest?.rss_mb.per_node ?? (perNode.length ? Math.max(...perNode) : null),
    etcd_claim_s: by((r) => r.claim_s),
    etcd_claim_after_first_join_s: by((r) => r.claim_after_first_join_s),
    etcd_epoch_advance_p50_ms: by((r) => r.epoch_advance.p50_ms),
    etcd_epoch_advance_p99_ms: by((r) => r.epoch_advance.p99_ms),
    etcd_writes_per_task_epoch: by((r) => r.writes_per_task_epoch),
    etcd_cpu_ms_per_epoch: by((r) => r.etcd_cpu_ms_per_epoch),
    etcd_rss_mb_per_node: by((r) => r.rss_mb.per_node),
  };
}
