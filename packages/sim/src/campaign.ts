/**
 * Many seeds across the workloads: the CI run and the nightly one. Reports the seed
 * count, the faults injected by kind, the violations (each with its replay command),
 * and the simulator's speed.
 */
import type { FaultKind } from './faults.js';
import { simulate } from './simulate.js';
import type { SimulateResult } from './simulate.js';
import { WORKLOADS, loadMapReduceInput } from './workloads.js';
import type { WorkloadName } from './workloads.js';

export interface CampaignOptions {
  /** Seeds per run in all (spread round-robin over the workloads). */
  readonly seeds: number;
  readonly firstSeed?: number;
  readonly workloads?: readonly WorkloadName[];
  /** Called with each failing run as it is found. */
  readonly onFailure?: (r: SimulateResult) => void;
  /** Called every `progressEvery` seeds. */
  readonly onProgress?: (done: number) => void;
  readonly progressEvery?: number;
}

export interface CampaignSummary {
  readonly seeds: number;
  readonly byWorkload: Readonly<Record<string, number>>;
  readonly faults: Readonly<Partial<Record<FaultKind, number>>>;
  readonly violations: number;
  /** How many times each invariant was checked, over all seeds. */
  readonly checked: Readonly<Record<string, number>>;
  readonly failedSeeds: ReadonlyArray<{ readonly seed: number; readonly workload: WorkloadName; readonly replay: string }>;
  readonly steps: number;
  readonly virtualSeconds: number;
  readonly wallSeconds: number;
  readonly seedsPerSecond: number;
}

export function replayCommand(workload: WorkloadName, seed: number, keep?: readonly number[]): string {
  return `npm run sim -- --workload ${workload} --seed ${seed}${keep ? ` --keep ${keep.join(',') || 'none'}` : ''}`;
}

export async function campaign(o: CampaignOptions): Promise<CampaignSummary> {
  const workloads = o.workloads ?? WORKLOADS;
  if (workloads.includes('mapreduce')) await loadMapReduceInput();
  const first = o.firstSeed ?? 1;
  const byWorkload: Record<string, number> = {};
  const faults: Partial<Record<FaultKind, number>> = {};
  const failedSeeds: Array<{ seed: number; workload: WorkloadName; replay: string }> = [];
  let violations = 0;
  const checked: Record<string, number> = {};
  let steps = 0;
  let virtualMs = 0;
  const started = process.hrtime.bigint();
  for (let i = 0; i < o.seeds; i++) {
    const seed = first + i;
    const workload = workloads[i % workloads.length]!;
    const r = await simulate({ seed, workload });
    byWorkload[workload] = (byWorkload[workload] ?? 0) + 1;
    for (const [k, n] of Object.entries(r.injected)) faults[k as FaultKind] = (faults[k as FaultKind] ?? 0) + (n ?? 0);
    steps += r.steps;
    for (const [k, n] of Object.entries(r.checked)) checked[k] = (checked[k] ?? 0) + n;
    virtualMs += r.virtualMs;
    if (!r.ok) {
      violations += r.violations.length;
      failedSeeds.push({ seed, workload, replay: replayCommand(workload, seed) });
      o.onFailure?.(r);
    }
    if (o.onProgress && (i + 1) % (o.progressEvery ?? 100) === 0) o.onProgress(i + 1);
  }
  const wallSeconds = Number(process.hrtime.bigint() - started) / 1e9;
  return {
    seeds: o.seeds,
    byWorkload,
    faults,
    violations,
    checked,
    failedSeeds,
    steps,
    virtualSeconds: Math.round(virtualMs / 1000),
    wallSeconds: Math.round(wallSeconds * 10) / 10,
    seedsPerSecond: Math.round((o.seeds / wallSeconds) * 10) / 10,
  };
}
