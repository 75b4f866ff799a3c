/**
 * Shrinking: given a failing run, drop faults from its schedule one at a time and
 * keep each removal after which the run still fails, until no single fault can go.
 * What is left is the smallest schedule (by this greedy measure) that still fails;
 * the rest of the run (delays, ordering) still comes from the same seed.
 */
import type { Fault } from './faults.js';
import { simulate } from './simulate.js';
import type { SimulateOptions, SimulateResult } from './simulate.js';

export interface ShrinkResult {
  /** Indexes into the seed's own schedule of the faults kept (for `--keep`). */
  readonly kept: readonly number[];
  readonly faults: readonly Fault[];
  readonly result: SimulateResult;
  /** Runs it took. */
  readonly runs: number;
}

export async function shrink(o: SimulateOptions, fails: (r: SimulateResult) => boolean = (r) => !r.ok): Promise<ShrinkResult> {
  const first = await simulate(o);
  if (!fails(first)) throw new Error(`seed ${o.seed} (${o.workload}) does not fail; nothing to shrink`);
  let kept = first.faults.map((_, i) => i);
  let result = first;
  let runs = 1;
  for (let i = kept.length - 1; i >= 0; i--) {
    const trial = kept.filter((_, j) => j !== i);
    const r = await simulate({ ...o, faults: trial.map((k) => first.faults[k]!) });
    runs++;
    if (fails(r)) {
      kept = trial;
      result = r;
    }
  }
  return { kept, faults: kept.map((k) => first.faults[k]!), result, runs };
}
