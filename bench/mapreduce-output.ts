/**
 * What the map phase produces for `bench:mapreduce`'s projection: the bytes the
 * reducers fetch (every split's partitions, encoded as the mappers encode them),
 * measured by running the mappers' own code (countSplitTable, then
 * encodeTablePartitions) in this process over the job's splits. The time it
 * takes is reported too: the map work of a split without the framework around it.
 */
import { brownCorpus, countSplitTable, encodeTablePartitions, makeSplits } from '@taskgraph/workloads';
import { round } from './src/load.js';

export interface MapOutputWeight {
  /** Every partition of every split, encoded: what the reducers pull, summed. */
  readonly fetch_bytes_total: number;
  /** The same per reducer (the largest partition and the mean). */
  readonly fetch_bytes_per_partition_max: number;
  readonly fetch_bytes_per_partition_mean: number;
  /** The mappers' code in this process, per split (count, partition, encode), mean. */
  readonly inprocess_map_s_per_split: number;
}

export async function measureMapOutput(o: { readonly splits: number; readonly reducers: number; readonly repeat: number }): Promise<MapOutputWeight> {
  const corpus = brownCorpus();
  const splits = makeSplits(corpus.files, { splits: o.splits, repeat: o.repeat });
  const perPartition = new Array<number>(o.reducers).fill(0);
  const started = performance.now();
  for (const split of splits) {
    const parts = encodeTablePartitions(await countSplitTable(corpus.dir, split), o.reducers);
    parts.forEach((p, r) => (perPartition[r]! += p.byteLength));
  }
  const seconds = (performance.now() - started) / 1000;
  const total = perPartition.reduce((a, b) => a + b, 0);
  return {
    fetch_bytes_total: total,
    fetch_bytes_per_partition_max: Math.max(...perPartition),
    fetch_bytes_per_partition_mean: Math.round(total / o.reducers),
    inprocess_map_s_per_split: round(seconds / splits.length, 4),
  };
}
