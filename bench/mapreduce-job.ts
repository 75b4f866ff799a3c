/**
 * One framework run of `bench:mapreduce`: the word count as users run it,
 * `taskgraph run mapreduce --workers N` from the built CLI on a real etcd with the
 * gRPC transport, so the master and every worker are separate node processes.
 * Its stdout is read line by line and each line stamped as it arrives; the
 * master's progress lines (describeProgress) give the phases:
 *
 *   spawn ──(start-up)── first progress record ──(map)── M/M mapped ──(reduce)── R/R done
 *                        └────────────────────── job ─────────────────────────────┘
 *   └────────────────────────────── end to end ───────────────────────────────────┘
 *
 * After R/R the command tears the nodes down and runs the application's verify,
 * which recomputes the plain count: that is in `command_s`, not in the job.
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { InternalError } from '@taskgraph/api';
import { round } from './src/load.js';
import { idleCores, readCpuTimes } from './src/machine-idle.js';
import type { CpuTimes } from './src/machine-idle.js';

const rootDir = fileURLToPath(new URL('..', import.meta.url));

export interface FrameworkRunOptions {
  readonly workers: number;
  readonly splits: number;
  readonly reducers: number;
  readonly repeat: number;
  /** `etcd://host:port` (a namespace per run is added). */
  readonly etcdAddress: string;
  /** Made unique per run: the job's name and its etcd namespace. */
  readonly runName: string;
  /** The nodes' session TTL; undefined: the CLI's default. */
  readonly ttlMs?: number;
  /** Each line the command prints (progress for a human). */
  readonly onLine?: (line: string) => void;
}

export interface FrameworkRunResult {
  readonly bench: 'mapreduce';
  readonly mode: 'framework';
  readonly workers: number;
  readonly splits: number;
  readonly reducers: number;
  readonly repeat: number;
  /** The master's first progress record -> the record of the last reduce done. */
  readonly job_s: number;
  /** Spawn of `taskgraph run` -> the last reduce done: the job plus every process's start-up. */
  readonly end_to_end_s: number;
  /** Spawn -> the first progress record (the run, etcd sessions, the master's node process up and running). */
  readonly startup_s: number;
  /**
   * How long after the first progress record the last node claimed its task (the
   * run's `tasks running N/N` line), 0 when all had before: the part of the job in
   * which a worker's process was still starting. Included in job_s. Null when the
   * run printed no such line.
   */
  readonly workers_late_s: number | null;
  /** First progress record -> every split mapped. */
  readonly map_phase_s: number;
  /** Every split mapped -> every reducer done. */
  readonly reduce_phase_s: number;
  /** The whole command: end to end, then the nodes' teardown and the verify (a plain recount). */
  readonly command_s: number;
  /** Seconds from the first progress record at which each split count was reached (index k-1: k splits mapped). */
  readonly mapped_at_s: readonly number[];
  /** The same for reducers done. */
  readonly reduced_at_s: readonly number[];
  readonly reexecutions: number;
  /** Idle cores of the machine over the job (see machine-idle.ts): what other work left free. */
  readonly idle_cores: number | null;
  readonly pass: true;
  /** The command's verdict line. */
  readonly verdict: string;
}

const PROGRESS = /^mapreduce: splits mapped (\d+)\/(\d+) \| reducers done (\d+)\/(\d+) \| re-executions (\d+)/;
const PASS = /^mapreduce: (PASS: count exact.*)$/;
const RUNNING = /^epoch \d+ \| tasks running (\d+)\/(\d+)/;

/** Runs the job once; throws (with the command's output) unless it ends with the PASS line and exit 0. */
export async function runFramework(o: FrameworkRunOptions): Promise<FrameworkRunResult> {
  const cli = `${rootDir}packages/cli/dist/cli.js`;
  const args = [cli, 'run', 'mapreduce', '--workers', String(o.workers), '--job', o.runName];
  args.push('--coordinator', `etcd://${o.etcdAddress}?namespace=${o.runName}`, '--transport', 'grpc://127.0.0.1:0');
  args.push('--arg', `splits=${o.splits}`, '--arg', `reducers=${o.reducers}`, '--arg', `repeat=${o.repeat}`, '--log-level', 'warn', '--timeout', '600');
  if (o.ttlMs !== undefined) args.push('--ttl', String(o.ttlMs));
  const spawned = performance.now();
  const child = spawn(process.execPath, args, { cwd: rootDir, stdio: ['ignore', 'pipe', 'pipe'] });
  const output: string[] = [];
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr = (stderr + c).slice(-4000)));
  let first: number | undefined;
  let mappedAll: number | undefined;
  let reducedAll: number | undefined;
  let allRunning: number | undefined;
  let cpuFirst: CpuTimes | null = null;
  let cpuEnd: CpuTimes | null = null;
  let reexecutions = 0;
  let verdict: string | undefined;
  const mappedAt: number[] = [];
  const reducedAt: number[] = [];
  createInterface({ input: child.stdout }).on('line', (line) => {
    const at = performance.now();
    output.push(line);
    o.onLine?.(line);
    const p = PROGRESS.exec(line);
    if (p) {
      const [mapped, maps, reduced, reduces, re] = p.slice(1).map(Number) as [number, number, number, number, number];
      if (first === undefined) {
        first = at;
        cpuFirst = readCpuTimes();
      }
      const since = (at - first) / 1000;
      // A re-execution takes a count back; the first time a count is reached is what is kept.
      if (mapped > 0 && mappedAt[mapped - 1] === undefined) mappedAt[mapped - 1] = since;
      if (reduced > 0 && reducedAt[reduced - 1] === undefined) reducedAt[reduced - 1] = since;
      if (mapped === maps && mappedAll === undefined) mappedAll = at;
      if (reduced === reduces && reducedAll === undefined) {
        reducedAll = at;
        cpuEnd = readCpuTimes();
      }
      reexecutions = re;
      return;
    }
    const running = RUNNING.exec(line);
    if (running && running[1] === running[2]) allRunning ??= at;
    const v = PASS.exec(line);
    if (v) verdict = v[1];
  });
  const code = await new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (c) => resolve(c));
  });
  const ended = performance.now();
  if (code !== 0 || verdict === undefined || first === undefined || mappedAll === undefined || reducedAll === undefined) {
    throw new InternalError(
      `taskgraph run mapreduce --workers ${o.workers} did not pass (exit ${String(code)}):\n${output.slice(-15).join('\n')}\n${stderr.trim()}`,
    );
  }
  const s = (from: number, to: number) => round((to - from) / 1000, 3);
  return {
    bench: 'mapreduce',
    mode: 'framework',
    workers: o.workers,
    splits: o.splits,
    reducers: o.reducers,
    repeat: o.repeat,
    job_s: s(first, reducedAll),
    end_to_end_s: s(spawned, reducedAll),
    startup_s: s(spawned, first),
    workers_late_s: allRunning === undefined ? null : Math.max(0, s(first, allRunning)),
    map_phase_s: s(first, mappedAll),
    reduce_phase_s: s(mappedAll, reducedAll),
    command_s: s(spawned, ended),
    mapped_at_s: mappedAt.map((t) => round(t, 3)),
    reduced_at_s: reducedAt.map((t) => round(t, 3)),
    reexecutions,
    idle_cores: idleCores(cpuFirst, cpuEnd),
    pass: true,
    verdict,
  };
}
