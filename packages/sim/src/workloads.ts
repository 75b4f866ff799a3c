/**
 * The jobs the simulator runs, each with its exact answer: the regression job, the
 * hot-standby example (running statistics with one backup per task) and MapReduce
 * word count on the master/worker paradigm.
 */
import type { TaskBuilder, Topology } from '@taskgraph/api';
import { masterWorkerBuilder, masterWorkerJob, masterWorkerLinkages } from '@taskgraph/core';
import {
  MapReduceMaster,
  MapReduceWorker,
  RegressionTaskBuilder,
  RunningStatsTaskBuilder,
  WordTable,
  checkMapReduce,
  checkRunningStats,
  expectedSums,
  expectedWordCount,
  mapReduceSplits,
  readSplitText,
  regressionLinkages,
  runningStatsLinkages,
  scanWords,
} from '@taskgraph/workloads';
import type { ExpectedCount, MapReduceJobOptions, MapReduceRecord } from '@taskgraph/workloads';

export const WORKLOADS = ['regression', 'hot-standby', 'mapreduce'] as const;
export type WorkloadName = (typeof WORKLOADS)[number];

/** One run's instance of a workload: what the job is, and the checks of its answer. */
export interface Workload {
  readonly name: WorkloadName;
  readonly numTasks: number;
  readonly linkTypes: readonly string[];
  readonly backups: number;
  readonly backupTasks?: readonly number[];
  /** Nodes started beyond one per slot (primaries and backups). */
  readonly standbys: number;
  builder(): TaskBuilder;
  linkages(): Readonly<Record<string, Topology>>;
  /** Called as results arrive: a wrong partial answer is a violation at once. */
  readonly violations: string[];
  /** After the job is done: undefined when the answer is exact, else why not. */
  verify(): string | undefined;
  /** Whether the fault schedule must leave every task a live copy (hot standby: a primary and its backup never both down). */
  readonly needsACopy: boolean;
}

const REGRESSION = { numTasks: 7, numEpochs: 6 } as const;

function regression(): Workload {
  const want = expectedSums(REGRESSION.numTasks, REGRESSION.numEpochs);
  const sums = new Map<number, number>();
  const violations: string[] = [];
  const options = {
    ...REGRESSION,
    onResult: (epoch: number, sum: number) => {
      if (sum !== want[epoch]) violations.push(`regression: epoch ${epoch} summed to ${sum}, not ${want[epoch]}`);
      sums.set(epoch, sum);
    },
  };
  return {
    name: 'regression',
    numTasks: REGRESSION.numTasks,
    linkTypes: ['Parents', 'Children'],
    backups: 0,
    standbys: 2,
    needsACopy: false,
    violations,
    builder: () => new RegressionTaskBuilder(options),
    linkages: () => regressionLinkages(options),
    verify: () => {
      const missing = want.map((_, e) => e).filter((e) => !sums.has(e));
      return missing.length === 0 ? undefined : `regression: no sum for epoch(s) ${missing.join(', ')}`;
    },
  };
}

const STATS = { numTasks: 5, numEpochs: 6 } as const;

function hotStandby(): Workload {
  const records: unknown[] = [];
  const options = { ...STATS, onRecord: (r: unknown) => void records.push(r) };
  return {
    name: 'hot-standby',
    numTasks: STATS.numTasks,
    linkTypes: ['Parents', 'Children'],
    backups: 1,
    standbys: 2,
    needsACopy: true,
    violations: [],
    builder: () => new RunningStatsTaskBuilder(options),
    linkages: () => runningStatsLinkages(options),
    verify: () => {
      const verdict = checkRunningStats(STATS, records);
      return verdict.ok ? undefined : `hot-standby: ${verdict.message}`;
    },
  };
}

const MAPREDUCE: MapReduceJobOptions = { splits: 6, reducers: 2, repeat: 1, top: 3 };
const WORKERS = 3;

/** The splits' word tables, read once per process before any simulation runs (no file I/O on virtual time). */
let corpus: Promise<{ dir: string; tables: Map<number, Uint8Array>; expected: ExpectedCount }> | undefined;

/** Reads the MapReduce input (real I/O, before simulating). */
export function loadMapReduceInput(): Promise<{ dir: string; tables: Map<number, Uint8Array>; expected: ExpectedCount }> {
  corpus ??= (async () => {
    const { dir, splits } = mapReduceSplits(MAPREDUCE);
    const tables = new Map<number, Uint8Array>();
    const enc = new TextEncoder();
    for (const s of splits) tables.set(s.id, enc.encode(await readSplitText(dir, s)));
    return { dir, tables, expected: expectedWordCount(MAPREDUCE) };
  })();
  return corpus;
}

function mapReduce(input: Awaited<ReturnType<typeof loadMapReduceInput>>): Workload {
  const { splits } = mapReduceSplits(MAPREDUCE);
  const records: MapReduceRecord[] = [];
  const job = masterWorkerJob(WORKERS, 1);
  const countSplit = (split: { readonly id: number }): WordTable => {
    const table = new WordTable();
    const bytes = input.tables.get(split.id);
    if (bytes === undefined) throw new RangeError(`no split ${split.id}`);
    scanWords(bytes, table);
    return table;
  };
  return {
    name: 'mapreduce',
    numTasks: job.numTasks,
    linkTypes: job.linkTypes,
    backups: job.backups ?? 0,
    ...(job.backupTasks ? { backupTasks: job.backupTasks } : {}),
    standbys: 2,
    needsACopy: true,
    violations: [],
    builder: () =>
      masterWorkerBuilder(WORKERS, {
        master: () => new MapReduceMaster({ splits, reducers: MAPREDUCE.reducers, top: MAPREDUCE.top, report: (r) => records.push(r) }),
        worker: () => new MapReduceWorker({ corpusDir: input.dir, countSplit }),
      }),
    linkages: () => masterWorkerLinkages(WORKERS),
    verify: () => {
      const verdict = checkMapReduce(MAPREDUCE, records, input.expected);
      return verdict.ok ? undefined : `mapreduce: ${verdict.message}`;
    },
  };
}

export async function makeWorkload(name: WorkloadName): Promise<Workload> {
  switch (name) {
    case 'regression':
      return regression();
    case 'hot-standby':
      return hotStandby();
    case 'mapreduce':
      return mapReduce(await loadMapReduceInput());
  }
}
