/**
 * The MapReduce benchmark's harness works: a tiny run (the corpus once, a few
 * splits) of `taskgraph run mapreduce` on a real etcd with 1 and 2 worker
 * processes beside the plain count, checking the shape of every line, that each
 * framework run passed its count check, that the phases add up, that the summary's
 * ratios are made of the runs' figures, and that the projection follows its
 * formula. No timing is asserted; speed is what the benchmark reports.
 */
import { cpus } from 'node:os';
import { describe, expect, it } from 'vitest';
import { ErrorCodes } from '@taskgraph/api';
import { brownCorpus, plainWordCount } from '@taskgraph/workloads';
import { DEFAULTS, TARGETS, checkOptions, runMapReduceBench } from '../mapreduce-bench.js';
import type { PlainLine, RoundResult } from '../mapreduce-bench.js';
import { USAGE, UsageError, parseCommandLine } from '../mapreduce-cli.js';
import type { FrameworkRunResult } from '../mapreduce-job.js';
import { idleCores, readCpuTimes } from '../src/machine-idle.js';
import { PROJECTION_BANDWIDTH_BYTES_PER_S, PROJECTION_WORKERS, project } from '../mapreduce-projection.js';
import { runCommand } from './run-command.js';


function openHandles(): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const kind of process.getActiveResourcesInfo()) {
    if (kind === 'TCPServerWrap' || kind === 'TCPSocketWrap' || kind === 'Timeout' || kind === 'ProcessWrap') counts[kind] = (counts[kind] ?? 0) + 1;
  }
  return counts;
}

describe('helpers', () => {
  it('parses the command line and refuses what it cannot run', () => {
    expect(parseCommandLine([])).toEqual(DEFAULTS);
    expect(parseCommandLine(['--help'])).toBe('help');
    expect(parseCommandLine(['--workers', '1,3', '--splits', '8', '--reducers', '2', '--repeat', '2', '--rounds', '3', '--ttl-ms', '4000'])).toEqual({
      workers: [1, 3],
      splits: 8,
      reducers: 2,
      repeat: 2,
      rounds: 3,
      ttlMs: 4000,
    });
    expect(() => parseCommandLine(['--workers', 'two'])).toThrow(UsageError);
    expect(() => parseCommandLine(['--splits', '0'])).toThrow(UsageError);
    expect(() => parseCommandLine(['--bogus'])).toThrow(UsageError);
    const invalid = expect.objectContaining({ code: ErrorCodes.InvalidArgument }) as Error;
    expect(() => checkOptions({ ...DEFAULTS, workers: [] })).toThrow(invalid);
    expect(() => checkOptions({ ...DEFAULTS, reducers: 0 })).toThrow(invalid);
  });

  it('projects in waves of W splits and W partitions, the remote share of each partition over the network', () => {
    const costs = { splits: 10, reducers: 4, map_s_per_split: 0.1, reduce_s_per_partition: 0.2, fetch_bytes_per_partition: 1_250_000 };
    const net = 1_250_000 / PROJECTION_BANDWIDTH_BYTES_PER_S;
    const points = project(costs, 2);
    expect(points.map((p) => p.workers)).toEqual([...PROJECTION_WORKERS]);
    // One worker: the measured phases again, nothing fetched remotely.
    expect(points[0]).toEqual({ workers: 1, job_s: 1.8, speedup: 1.11, job_s_reducers_scaled: 1.8, speedup_reducers_scaled: 1.11 });
    // Two: 5 waves of maps, 2 of reduces, half of each partition remote.
    expect(points[1]!.job_s).toBeCloseTo(5 * 0.1 + 2 * (0.2 + net / 2), 3);
    // Eight: 2 waves of maps; 4 reducers run at once, or 8 smaller ones with R scaled.
    expect(points[3]!.job_s).toBeCloseTo(2 * 0.1 + (0.2 + (7 / 8) * net), 3);
    expect(points[3]!.job_s_reducers_scaled).toBeCloseTo(2 * 0.1 + (0.1 + (7 / 8) * net * 0.5), 3);
    expect(points[3]!.speedup).toBeCloseTo(2 / points[3]!.job_s, 1);
  });
});

describe('idle cores', () => {
  it('is the idle share of the CPU time between two readings, times the CPUs', () => {
    expect(idleCores({ idle: 100, total: 1000, cpus: 2 }, { idle: 150, total: 1100, cpus: 2 })).toBe(1);
    expect(idleCores({ idle: 0, total: 0, cpus: 4 }, { idle: 0, total: 400, cpus: 4 })).toBe(0);
    expect(idleCores({ idle: 0, total: 10, cpus: 2 }, { idle: 0, total: 10, cpus: 2 })).toBeNull();
    expect(idleCores(null, { idle: 0, total: 10, cpus: 2 })).toBeNull();
    const now = readCpuTimes();
    if (process.platform === 'linux') expect(now).toMatchObject({ cpus: cpus().length });
  });
});

describe('runMapReduceBench', () => {
  it('runs the job as 1 and 2 worker processes on a real etcd beside the plain count, each run checked', { timeout: 300_000 }, async () => {
    const before = openHandles();
    const seen: RoundResult[] = [];
    const lines: string[] = [];
    const { results, summary } = await runMapReduceBench({ workers: [1, 2], splits: 3, reducers: 2, repeat: 1, rounds: 1, progress: (l) => lines.push(l) }, (r) => seen.push(r));
    expect(seen).toEqual(results);
    expect(results.map((r) => [r.mode, r.round])).toEqual([
      ['plain', 0],
      ['framework', 0],
      ['framework', 0],
    ]);
    expect(lines.some((l) => l.startsWith('starting etcd'))).toBe(true);

    const corpus = brownCorpus();
    const plain = results[0] as PlainLine & { round: number };
    expect(plain).toMatchObject({ bench: 'mapreduce', mode: 'plain', repeat: 1, bytes: corpus.files.reduce((a, f) => a + f.bytes, 0) });
    expect(Object.keys(plain)).toContain('idle_cores');
    const expectedWords = [...plainWordCount(corpus.dir, corpus.files.map((f) => f.name)).values()].reduce((a, b) => a + b, 0);

    const runs = results.slice(1) as Array<FrameworkRunResult & { round: number }>;
    expect(runs.map((r) => r.workers)).toEqual([1, 2]);
    for (const r of runs) {
      expect(Object.keys(r)).toEqual([
        'bench',
        'mode',
        'workers',
        'splits',
        'reducers',
        'repeat',
        'job_s',
        'end_to_end_s',
        'startup_s',
        'workers_late_s',
        'map_phase_s',
        'reduce_phase_s',
        'command_s',
        'mapped_at_s',
        'reduced_at_s',
        'reexecutions',
        'idle_cores',
        'pass',
        'verdict',
        'round',
      ]);
      expect(r).toMatchObject({ bench: 'mapreduce', mode: 'framework', splits: 3, reducers: 2, repeat: 1, pass: true, reexecutions: 0 });
      // The count the command checked is the plain count of the same text.
      expect(r.verdict).toMatch(new RegExp(`^PASS: count exact .*: ${expectedWords} words, ${plain.distinct_words} distinct, 3 splits, 2 reducers`));
      // On Linux the machine's idle cores are read from /proc/stat: between none and all of them.
      expect(r.idle_cores).toBeGreaterThanOrEqual(0);
      expect(r.idle_cores).toBeLessThanOrEqual(cpus().length + 0.01);
      expect(r.mapped_at_s).toHaveLength(3);
      expect(r.reduced_at_s).toHaveLength(2);
      // The phases tile the job, the job and start-up make the end to end, and the command outlasts it.
      expect(r.map_phase_s + r.reduce_phase_s).toBeCloseTo(r.job_s, 2);
      expect(r.startup_s + r.job_s).toBeCloseTo(r.end_to_end_s, 2);
      expect(r.command_s).toBeGreaterThanOrEqual(r.end_to_end_s);
      // Null only when the last worker came so late that the job was done before it claimed its task.
      if (r.workers_late_s !== null) expect(r.workers_late_s).toBeGreaterThanOrEqual(0);
      if (r.workers_late_s !== null) expect(r.workers_late_s).toBeLessThanOrEqual(r.job_s);
      expect(r.mapped_at_s.at(-1)).toBeCloseTo(r.map_phase_s, 2);
      expect(r.reduced_at_s.at(-1)).toBeCloseTo(r.job_s, 2);
    }
    const one = runs[0]!;
    const two = runs[1]!;

    expect(summary).toMatchObject({
      summary: true,
      bytes: plain.bytes,
      repeat: 1,
      splits: 3,
      reducers: 2,
      rounds: 1,
      plain_s: plain.seconds,
      job_s: { 1: one.job_s, 2: two.job_s },
      end_to_end_s: { 1: one.end_to_end_s, 2: two.end_to_end_s },
      speedup_4_workers: null,
      targets: TARGETS,
      cores: expect.any(Number) as number,
    });
    expect(summary.idle_cores).toEqual({ plain: plain.idle_cores, 1: one.idle_cores, 2: two.idle_cores });
    expect(summary.speedup_2_workers).toBeCloseTo(plain.seconds / two.job_s, 2);
    expect(summary.overhead_1_worker).toBeCloseTo(one.job_s / plain.seconds, 2);
    expect(summary.speedup_2_workers_end_to_end).toBeCloseTo(plain.seconds / two.end_to_end_s, 2);
    expect(summary.overhead_1_worker_end_to_end).toBeCloseTo(one.end_to_end_s / plain.seconds, 2);
    expect(summary.met).toEqual({
      overhead_1_worker: one.job_s / plain.seconds <= TARGETS.overhead_1_worker,
      speedup_2_workers: plain.seconds / two.job_s >= TARGETS.speedup_2_workers,
    });
    const costs = summary.costs!;
    expect(costs).toMatchObject({ splits: 3, reducers: 2 });
    expect(costs.map_s_per_split).toBeCloseTo(one.map_phase_s / 3, 3);
    expect(costs.reduce_s_per_partition).toBeCloseTo(one.reduce_phase_s / 2, 3);
    expect(costs.fetch_bytes_total).toBeGreaterThan(0);
    expect(costs.fetch_bytes_per_partition).toBe(costs.fetch_bytes_per_partition_max);
    expect(costs.fetch_bytes_per_partition_max).toBeGreaterThanOrEqual(costs.fetch_bytes_per_partition_mean);
    expect(summary.projection).toEqual(project(costs, plain.seconds));
    expect(summary.etcd_version).toMatch(/^\d+\.\d+/);

    // Node processes, etcd, sockets and timers are all gone.
    const leftOver = (): string[] => Object.entries(openHandles()).flatMap(([kind, n]) => (n > (before[kind] ?? 0) ? [kind] : []));
    expect(leftOver()).toEqual([]);
  });
});

describe('the command', () => {
  const runCli = (args: readonly string[]) => runCommand('mapreduce.ts', args);

  it('prints only JSON lines on stdout, the summary last, and exits 0', { timeout: 120_000 }, async () => {
    const { code, stdout, stderr } = await runCli(['--workers', '1', '--splits', '2', '--reducers', '1', '--repeat', '1', '--rounds', '1']);
    expect(code, stderr).toBe(0);
    const lines = stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatchObject({ mode: 'plain', round: 0 });
    expect(lines[1]).toMatchObject({ mode: 'framework', workers: 1, pass: true });
    expect(lines[2]).toMatchObject({ summary: true, targets: TARGETS, speedup_2_workers: null, speedup_4_workers: null });
    expect(stderr).toContain('[mapreduce]');
  });

  it('exits 2 with the usage on a bad argument', async () => {
    const { code, stdout, stderr } = await runCli(['--reducers', 'x']);
    expect(code).toBe(2);
    expect(stdout).toBe('');
    expect(stderr).toContain(USAGE);
  });
});
