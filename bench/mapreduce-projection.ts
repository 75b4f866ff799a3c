/**
 * `bench:mapreduce`'s projection of the job time on more cores, from per-split
 * costs measured in the one-worker run (where nothing runs in parallel, so a
 * phase's time divided by its pieces is the cost of one piece, dispatch and
 * bookkeeping included):
 *
 *   map_s_per_split        = map phase / M
 *   reduce_s_per_partition = reduce phase / R   (its fetches on loopback included)
 *
 * With W workers, each on a core of its own, the phases run in waves:
 *
 *   T(W) = ceil(M / W) * map_s_per_split
 *        + ceil(R / W) * (reduce_s_per_partition + (W - 1) / W * fetch_bytes_per_partition / bandwidth)
 *
 * The second term of the reduce is the part of a partition that crosses a network
 * (1/W of the map output is local to the reducer). The model assumes the master and
 * the store are never the bottleneck and that per-piece costs do not change with W;
 * it ignores stragglers within a wave. It is given for the job's own R and for
 * R = max(R, W) (a reducer per worker; the per-partition cost scaled by R / R').
 */
import { round } from './src/load.js';

/** The network the projection assumes between machines: 1 Gb/s. */
export const PROJECTION_BANDWIDTH_BYTES_PER_S = 125_000_000;
export const PROJECTION_WORKERS = [1, 2, 4, 8, 16, 32, 64] as const;

export interface PerSplitCosts {
  readonly splits: number;
  readonly reducers: number;
  readonly map_s_per_split: number;
  readonly reduce_s_per_partition: number;
  readonly fetch_bytes_per_partition: number;
}

export interface ProjectionPoint {
  readonly workers: number;
  /** T(W) with the job's R. */
  readonly job_s: number;
  readonly speedup: number;
  /** T(W) with R' = max(R, W) reducers. */
  readonly job_s_reducers_scaled: number;
  readonly speedup_reducers_scaled: number;
}

function jobTime(c: PerSplitCosts, workers: number, reducers: number): number {
  const scale = c.reducers / reducers;
  const remote = ((workers - 1) / workers) * c.fetch_bytes_per_partition * scale;
  const reduce = c.reduce_s_per_partition * scale + remote / PROJECTION_BANDWIDTH_BYTES_PER_S;
  return Math.ceil(c.splits / workers) * c.map_s_per_split + Math.ceil(reducers / workers) * reduce;
}

/** T(W) and the speed-up over the plain count for W in `workers`. */
export function project(c: PerSplitCosts, plainS: number, workers: readonly number[] = PROJECTION_WORKERS): ProjectionPoint[] {
  return workers.map((w) => {
    const t = jobTime(c, w, c.reducers);
    const scaled = jobTime(c, w, Math.max(c.reducers, w));
    return {
      workers: w,
      job_s: round(t, 3),
      speedup: round(plainS / t, 2),
      job_s_reducers_scaled: round(scaled, 3),
      speedup_reducers_scaled: round(plainS / scaled, 2),
    };
  });
}
