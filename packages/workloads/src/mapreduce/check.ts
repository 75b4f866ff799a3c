/**
 * The answer a MapReduce word count must give: a single-process count of the same
 * files, cut into the same partitions, and the check of what the master reported.
 */
import { brownCorpus, makeSplits } from '../wordcount/corpus.js';
import type { Split } from '../wordcount/corpus.js';
import { partitionOf } from '../wordcount/partition.js';
import { countsDigest, plainWordCount, topWords } from '../wordcount/plain.js';
import type { MapReduceRecord } from './master.js';

export interface MapReduceJobOptions {
  /** M: how many splits the input is cut into. */
  readonly splits: number;
  /** R: how many reducers (partitions of the words). */
  readonly reducers: number;
  /** How many copies of the corpus make the input. */
  readonly repeat: number;
  /** How many top words to report. */
  readonly top: number;
}

/** The job's input: the Brown corpus, `repeat` times, cut into `splits` splits. */
export function mapReduceSplits(o: Pick<MapReduceJobOptions, 'splits' | 'repeat'>): { dir: string; splits: Split[] } {
  const corpus = brownCorpus();
  return { dir: corpus.dir, splits: makeSplits(corpus.files, { splits: o.splits, repeat: o.repeat }) };
}

export interface ExpectedCount {
  readonly words: number;
  readonly distinct: number;
  readonly digests: readonly string[];
  readonly top: ReadonlyArray<readonly [string, number]>;
}

/** The single-process count of the job's input, partitioned as the reducers partition it. */
export function expectedWordCount(o: MapReduceJobOptions): ExpectedCount {
  const { dir, splits } = mapReduceSplits(o);
  const counts = plainWordCount(dir, splits.flatMap((s) => s.files));
  const parts = Array.from({ length: o.reducers }, () => new Map<string, number>());
  let words = 0;
  for (const [word, n] of counts) {
    parts[partitionOf(word, o.reducers)]!.set(word, n);
    words += n;
  }
  return { words, distinct: counts.size, digests: parts.map(countsDigest), top: topWords(counts, o.top) };
}

export interface MapReduceVerdict {
  readonly ok: boolean;
  readonly message: string;
}

const isResult = (r: unknown): r is Extract<MapReduceRecord, { kind: 'result' }> => typeof r === 'object' && r !== null && (r as { kind?: unknown }).kind === 'result';

/** Compares the master's result with the single-process count (every master that finished must agree). */
export function checkMapReduce(o: MapReduceJobOptions, records: readonly unknown[], expected: ExpectedCount = expectedWordCount(o)): MapReduceVerdict {
  const results = records.filter(isResult);
  if (results.length === 0) return { ok: false, message: 'FAIL: no master reported a result' };
  const topText = expected.top.map(([w, n]) => `${w} ${n}`).join(', ');
  for (const r of results) {
    const wrong: string[] = [];
    if (r.words !== expected.words) wrong.push(`${r.words} words, expected ${expected.words}`);
    if (r.distinct !== expected.distinct) wrong.push(`${r.distinct} distinct words, expected ${expected.distinct}`);
    const badParts = expected.digests.flatMap((d, i) => (r.digests[i] === d ? [] : [i]));
    if (badParts.length > 0 || r.digests.length !== expected.digests.length) wrong.push(`the counts of partition(s) ${badParts.join(', ') || '(count)'} differ from the single-process count`);
    if (JSON.stringify(r.top) !== JSON.stringify(expected.top)) wrong.push(`top words ${JSON.stringify(r.top)}, expected ${topText}`);
    if (wrong.length > 0) return { ok: false, message: `FAIL: ${wrong.join('; ')}` };
  }
  const r = results.at(-1)!;
  return {
    ok: true,
    message:
      `PASS: count exact (equal to a single-process count): ${r.words} words, ${r.distinct} distinct, ${r.maps} splits, ${r.reducers} reducers, ` +
      `${r.reexecutions} split re-execution(s), master incarnation ${r.masterIncarnation}; top: ${topText}`,
  };
}

/** One line for a progress record (what `taskgraph run` prints while the job runs). */
export function describeProgress(record: unknown): string | undefined {
  if (typeof record !== 'object' || record === null || (record as { kind?: unknown }).kind !== 'progress') return undefined;
  const p = record as Extract<MapReduceRecord, { kind: 'progress' }>;
  return `mapreduce: splits mapped ${p.mapsDone}/${p.maps} | reducers done ${p.reducesDone}/${p.reduces} | re-executions ${p.reexecutions} | master incarnation ${p.masterIncarnation}`;
}
