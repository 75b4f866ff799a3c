/**
 * taskgraph-sim: runs simulated jobs.
 *
 *   taskgraph-sim --seeds 200                      200 seeds across the workloads (CI)
 *   taskgraph-sim --seeds 100000 --first-seed 7    a night's run
 *   taskgraph-sim --workload regression --seed 10  replays one seed (the trace hash is printed)
 *   taskgraph-sim --workload regression --seed 10 --shrink
 *   taskgraph-sim --workload regression --seed 10 --keep 0,2
 *
 * Exit code 0 when no invariant was violated, 1 when one was, 2 on bad usage.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { describeFault } from './faults.js';
import { campaign, replayCommand } from './campaign.js';
import { shrink } from './shrink.js';
import { simulate } from './simulate.js';
import type { SimulateResult } from './simulate.js';
import { WORKLOADS } from './workloads.js';
import type { WorkloadName } from './workloads.js';

function integer(min: number): (v: string) => number {
  return (v) => {
    if (!/^\d+$/.test(v) || Number(v) < min || !Number.isSafeInteger(Number(v))) throw new InvalidArgumentError(`expected an integer >= ${min}`);
    return Number(v);
  };
}

function indexes(v: string): number[] {
  if (v === 'none') return [];
  if (!/^\d+(,\d+)*$/.test(v)) throw new InvalidArgumentError('expected fault indexes such as 0,2 (or none)');
  return v.split(',').map(Number);
}

function printFailure(r: SimulateResult, write: (s: string) => void): void {
  write(`FAIL seed ${r.seed} (${r.workload}): ${r.violations.length} violation(s), trace ${r.traceHash.slice(0, 16)}`);
  for (const v of r.violations.slice(0, 10)) write(`  ${v.split('\n').join('\n    ')}`);
  write(`  faults: ${r.faults.map(describeFault).join('; ') || 'none'}`);
  write(`  replay: ${replayCommand(r.workload, r.seed)}`);
}

export async function main(argv: readonly string[], out: (s: string) => void = (s) => void process.stdout.write(`${s}\n`)): Promise<number> {
  const program = new Command('taskgraph-sim')
    .description('Runs whole TaskGraph jobs on virtual time under seeded fault schedules and checks the invariants and exact answers.')
    .addOption(new Option('--workload <name>', 'one workload (default: all, round-robin)').choices(['all', ...WORKLOADS]).default('all'))
    .option('--seeds <n>', 'how many seeds to run', integer(1), 200)
    .option('--first-seed <n>', 'the first seed of a multi-seed run', integer(0), 1)
    .option('--seed <n>', 'run (replay) this one seed', integer(0))
    .option('--keep <indexes>', "with --seed: run only these faults of the seed's schedule (a shrunk failure)", indexes)
    .option('--shrink', 'with --seed: remove faults while the run still fails, and print the smallest schedule')
    .option('--json', 'print the summary as JSON only')
    .option('--log', "with --seed: print the nodes' log lines (virtual time, node name)")
    .exitOverride()
    .configureOutput({ writeOut: (s) => out(s.trimEnd()), writeErr: (s) => out(s.trimEnd()) });
  try {
    program.parse(argv, { from: 'user' });
  } catch (err) {
    const code = (err as { exitCode?: number }).exitCode;
    return code === 0 ? 0 : 2;
  }
  const opts = program.opts<{ workload: 'all' | WorkloadName; seeds: number; firstSeed: number; seed?: number; keep?: number[]; shrink?: boolean; json?: boolean; log?: boolean }>();
  if (opts.seed !== undefined) {
    if (opts.workload === 'all') {
      out('error: --seed needs --workload (the failure line names it)');
      return 2;
    }
    const base = { seed: opts.seed, workload: opts.workload, ...(opts.keep ? { keep: opts.keep } : {}), ...(opts.log ? { log: out } : {}) };
    if (opts.shrink) {
      const s = await shrink(base);
      printFailure(s.result, out);
      out(`shrunk in ${s.runs} runs to ${s.faults.length} fault(s): ${s.faults.map(describeFault).join('; ') || 'none'}`);
      out(`replay: ${replayCommand(opts.workload, opts.seed, s.kept)}`);
      return 1;
    }
    const r = await simulate(base);
    if (opts.json) out(JSON.stringify({ ...r, violations: r.violations }));
    else if (r.ok) out(`PASS seed ${r.seed} (${r.workload}): ${r.steps} steps, ${r.virtualMs} ms virtual, faults: ${r.faults.map(describeFault).join('; ') || 'none'}; trace ${r.traceHash}`);
    else {
      printFailure(r, out);
      out(`  trace ${r.traceHash}`);
    }
    return r.ok ? 0 : 1;
  }
  const summary = await campaign({
    seeds: opts.seeds,
    firstSeed: opts.firstSeed,
    ...(opts.workload === 'all' ? {} : { workloads: [opts.workload] }),
    onFailure: (r) => (opts.json ? undefined : printFailure(r, out)),
    ...(opts.json ? {} : { onProgress: (n: number) => out(`${n} seeds...`), progressEvery: Math.max(100, Math.ceil(opts.seeds / 20)) }),
  });
  out(JSON.stringify(summary));
  if (!opts.json) {
    const faults = Object.entries(summary.faults).map(([k, n]) => `${k} ${n}`).join(', ');
    out(`${summary.violations === 0 ? 'PASS' : 'FAIL'}: ${summary.seeds} seeds (${Object.entries(summary.byWorkload).map(([w, n]) => `${w} ${n}`).join(', ')}), faults injected: ${faults}; ${summary.violations} violations; ${summary.seedsPerSecond} seeds/s`);
  }
  return summary.violations === 0 ? 0 : 1;
}
