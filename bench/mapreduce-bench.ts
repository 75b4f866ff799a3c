/**
 * The MapReduce benchmark: the word count over the Brown corpus repeated to at
 * least 200 MB, as separate worker processes on a real etcd the benchmark starts
 * itself (mapreduce-job.ts), with 1, 2 and 4 workers, beside the plain
 * single-process count of the same text (mapreduce-plain.ts) in the same run.
 * Rounds alternate: plain, 1 worker, 2, 4, plain, 1, ... so a burst of load from
 * elsewhere spoils a round of each rather than one side. The summary compares
 * medians, and projects the job time on more cores (mapreduce-projection.ts)
 * from the one-worker run's per-split costs and the map output's weight
 * (mapreduce-output.ts).
 */
import { cpus, loadavg } from 'node:os';
import { InvalidArgumentError } from '@taskgraph/api';
import { startEtcd } from '@taskgraph/testkit';
import type { EtcdServer } from '@taskgraph/testkit';
import { brownCorpus, repeatsFor } from '@taskgraph/workloads';
import { readEtcdVersion, runId } from './coordination-etcd.js';
import { runFramework } from './mapreduce-job.js';
import type { FrameworkRunResult } from './mapreduce-job.js';
import { measureMapOutput } from './mapreduce-output.js';
import type { MapOutputWeight } from './mapreduce-output.js';
import { MIN_BENCH_BYTES, runPlainCount } from './mapreduce-plain.js';
import type { PlainCountResult } from './mapreduce-plain.js';
import { PROJECTION_BANDWIDTH_BYTES_PER_S, project } from './mapreduce-projection.js';
import type { PerSplitCosts, ProjectionPoint } from './mapreduce-projection.js';
import { round } from './src/load.js';
import { idleCores, readCpuTimes } from './src/machine-idle.js';

/** From the issue: framework time over plain time with one worker; plain time over framework time with two. */
export const TARGETS = { overhead_1_worker: 1.3, speedup_2_workers: 1.6 } as const;

export interface MapReduceBenchOptions {
  /** Worker counts to run; 1 and 2 are needed for the targets. */
  readonly workers: readonly number[];
  readonly splits: number;
  readonly reducers: number;
  /** Copies of the corpus; undefined: the fewest that make MIN_BENCH_BYTES. */
  readonly repeat?: number;
  readonly rounds: number;
  readonly ttlMs?: number;
  readonly progress?: (line: string) => void;
}

/**
 * 16 splits of ~13 MB for the 209 MB input: each split costs a dispatch (two hops
 * between processes and a store write) whose wait grows with the machine's load;
 * with 32 splits of 6.5 MB it was ~15% of a one-worker map phase on a busy machine.
 * 16 still gives 4 waves of maps with 4 workers.
 */
export const DEFAULTS: MapReduceBenchOptions = { workers: [1, 2, 4], splits: 16, reducers: 4, rounds: 3 };

/** The plain count's line, with the machine's idle cores while it ran. */
export type PlainLine = PlainCountResult & { readonly idle_cores: number | null };
export type RoundResult = (PlainLine | FrameworkRunResult) & { readonly round: number };

export interface Summary {
  readonly summary: true;
  readonly bytes: number;
  readonly repeat: number;
  readonly splits: number;
  readonly reducers: number;
  readonly rounds: number;
  /** Medians over the rounds. */
  readonly plain_s: number;
  readonly job_s: Readonly<Record<string, number>>;
  readonly end_to_end_s: Readonly<Record<string, number>>;
  /** plain_s / job_s with 2 workers (null when 2 was not run). */
  readonly speedup_2_workers: number | null;
  /** job_s with 1 worker / plain_s. */
  readonly overhead_1_worker: number | null;
  readonly speedup_4_workers: number | null;
  /** The same two figures on end_to_end_s (process start-up included). */
  readonly speedup_2_workers_end_to_end: number | null;
  readonly overhead_1_worker_end_to_end: number | null;
  readonly targets: typeof TARGETS;
  readonly met: { readonly overhead_1_worker: boolean; readonly speedup_2_workers: boolean };
  /** The one-worker run's per-split costs and the map output's weight; null without a one-worker run. */
  readonly costs: (PerSplitCosts & MapOutputWeight) | null;
  readonly projection: readonly ProjectionPoint[] | null;
  readonly projection_bandwidth_bytes_per_s: number;
  readonly cores: number;
  /** Median idle cores of the machine while the plain count and each framework job ran (what other work left free). */
  readonly idle_cores: Readonly<Record<string, number | null>>;
  /** 1-minute load average before and after: other work on the machine. */
  readonly load_avg_start: number;
  readonly load_avg_end: number;
  readonly etcd_version: string;
  readonly elapsed_s: number;
}

function positiveInt(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 1) throw new InvalidArgumentError(`${name} must be a positive integer, got ${String(v)}`);
}

export function checkOptions(o: MapReduceBenchOptions): void {
  if (o.workers.length === 0) throw new InvalidArgumentError('workers must name at least one worker count');
  for (const w of o.workers) positiveInt('workers', w);
  positiveInt('splits', o.splits);
  positiveInt('reducers', o.reducers);
  positiveInt('rounds', o.rounds);
  if (o.repeat !== undefined) positiveInt('repeat', o.repeat);
  if (o.ttlMs !== undefined) positiveInt('ttlMs', o.ttlMs);
}

function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

function medianOrNull(values: ReadonlyArray<number | null>): number | null {
  const known = values.filter((v): v is number => v !== null);
  return known.length === 0 ? null : round(median(known), 2);
}

const ratio = (a: number | undefined, b: number | undefined): number | null => (a === undefined || b === undefined ? null : round(a / b, 3));

/** Runs the benchmark; `onResult` gets each run's line as soon as it is known. */
export async function runMapReduceBench(
  options: MapReduceBenchOptions = DEFAULTS,
  onResult: (result: RoundResult) => void = () => undefined,
): Promise<{ results: RoundResult[]; summary: Summary }> {
  checkOptions(options);
  const o = options;
  const progress = o.progress ?? (() => undefined);
  const started = performance.now();
  const loadStart = loadavg()[0]!;
  const repeat = o.repeat ?? repeatsFor(brownCorpus().files, MIN_BENCH_BYTES);
  const results: RoundResult[] = [];
  const plain: PlainLine[] = [];
  const framework: FrameworkRunResult[] = [];
  let etcd: EtcdServer | undefined;
  try {
    progress('starting etcd on loopback');
    etcd = await startEtcd({ name: 'bench' });
    const id = runId();
    for (let r = 0; r < o.rounds; r++) {
      const cpuBefore = readCpuTimes();
      const counted = runPlainCount({ repeat });
      const p: PlainLine = { ...counted, idle_cores: idleCores(cpuBefore, readCpuTimes()) };
      progress(`round ${r}: plain count of ${p.bytes} bytes: ${p.seconds} s (${p.mb_per_s} MB/s), ${String(p.idle_cores)} idle cores`);
      plain.push(p);
      results.push({ ...p, round: r });
      onResult({ ...p, round: r });
      for (const workers of o.workers) {
        progress(`round ${r}: taskgraph run mapreduce --workers ${workers} (splits ${o.splits}, reducers ${o.reducers}, repeat ${repeat})`);
        const f = await runFramework({
          workers,
          splits: o.splits,
          reducers: o.reducers,
          repeat,
          etcdAddress: etcd.clientAddress,
          runName: `bench-mr-${id}-r${r}-w${workers}`,
          ...(o.ttlMs === undefined ? {} : { ttlMs: o.ttlMs }),
        });
        progress(
          `round ${r}: ${workers} worker(s): job ${f.job_s} s (map ${f.map_phase_s}, reduce ${f.reduce_phase_s}), end to end ${f.end_to_end_s} s, ` +
            `${String(f.idle_cores)} idle cores; ${f.verdict.slice(0, 60)}...`,
        );
        framework.push(f);
        results.push({ ...f, round: r });
        onResult({ ...f, round: r });
      }
    }
    const plainS = median(plain.map((p) => p.seconds));
    const idle: Record<string, number | null> = { plain: medianOrNull(plain.map((p) => p.idle_cores)) };
    const jobS: Record<string, number> = {};
    const endS: Record<string, number> = {};
    for (const w of o.workers) {
      const runs = framework.filter((f) => f.workers === w);
      jobS[w] = round(median(runs.map((f) => f.job_s)), 3);
      endS[w] = round(median(runs.map((f) => f.end_to_end_s)), 3);
      idle[w] = medianOrNull(runs.map((f) => f.idle_cores));
    }
    let costs: Summary['costs'] = null;
    let projection: ProjectionPoint[] | null = null;
    const single = framework.filter((f) => f.workers === 1);
    if (single.length > 0) {
      progress('map output: the mappers\' code over the same splits in this process, to weigh what the reducers fetch');
      const weight = await measureMapOutput({ splits: o.splits, reducers: o.reducers, repeat });
      const perSplit: PerSplitCosts = {
        splits: o.splits,
        reducers: o.reducers,
        map_s_per_split: round(median(single.map((f) => f.map_phase_s)) / o.splits, 4),
        reduce_s_per_partition: round(median(single.map((f) => f.reduce_phase_s)) / o.reducers, 4),
        fetch_bytes_per_partition: weight.fetch_bytes_per_partition_max,
      };
      costs = { ...perSplit, ...weight };
      projection = project(perSplit, plainS);
    }
    const summary: Summary = {
      summary: true,
      bytes: plain[0]!.bytes,
      repeat,
      splits: o.splits,
      reducers: o.reducers,
      rounds: o.rounds,
      plain_s: round(plainS, 3),
      job_s: jobS,
      end_to_end_s: endS,
      speedup_2_workers: ratio(plainS, jobS[2]),
      overhead_1_worker: ratio(jobS[1], plainS),
      speedup_4_workers: ratio(plainS, jobS[4]),
      speedup_2_workers_end_to_end: ratio(plainS, endS[2]),
      overhead_1_worker_end_to_end: ratio(endS[1], plainS),
      targets: TARGETS,
      met: {
        overhead_1_worker: jobS[1] !== undefined && jobS[1] / plainS <= TARGETS.overhead_1_worker,
        speedup_2_workers: jobS[2] !== undefined && plainS / jobS[2] >= TARGETS.speedup_2_workers,
      },
      costs,
      projection,
      projection_bandwidth_bytes_per_s: PROJECTION_BANDWIDTH_BYTES_PER_S,
      cores: cpus().length,
      idle_cores: idle,
      load_avg_start: round(loadStart, 2),
      load_avg_end: round(loadavg()[0]!, 2),
      etcd_version: await readEtcdVersion(etcd.clientUrl),
      elapsed_s: round((performance.now() - started) / 1000, 1),
    };
    return { results, summary };
  } finally {
    progress('stopping etcd');
    await etcd?.cleanup();
  }
}
