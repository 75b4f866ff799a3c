/**
 * The baseline of `bench:mapreduce`: a plain single-process word count of the
 * Brown corpus repeated to at least 200 MB, with the same tokenizer the mappers
 * use. `runPlainCount` is what the benchmark calls; run directly, this file
 * prints its one JSON line:
 *
 *   tsx bench/mapreduce-plain.ts [--repeat k]   (default: the fewest copies >= 200 MB)
 *
 * Exit 0 when it ran, 1 when it failed, 2 on bad arguments.
 */
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { brownCorpus, countsDigest, plainWordCount, repeatsFor } from '@taskgraph/workloads';

/** The text the benchmark counts at least (the corpus repeated, so start-up is not what is measured). */
export const MIN_BENCH_BYTES = 200_000_000;

export interface PlainCountResult {
  readonly bench: 'mapreduce';
  readonly mode: 'plain';
  readonly repeat: number;
  readonly bytes: number;
  readonly seconds: number;
  readonly mb_per_s: number;
  readonly distinct_words: number;
  /** countsDigest of the count: equal digests, equal counts. */
  readonly digest: string;
}

/** Counts the corpus repeated `repeat` times (default: to at least 200 MB) in this process and times it. */
export function runPlainCount(options: { repeat?: number } = {}): PlainCountResult {
  const corpus = brownCorpus();
  const repeat = options.repeat ?? repeatsFor(corpus.files, MIN_BENCH_BYTES);
  const names = corpus.files.map((f) => f.name);
  const files = Array.from({ length: repeat }, () => names).flat();
  const bytes = repeat * corpus.files.reduce((a, f) => a + f.bytes, 0);
  const started = process.hrtime.bigint();
  const counts = plainWordCount(corpus.dir, files);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  return {
    bench: 'mapreduce',
    mode: 'plain',
    repeat,
    bytes,
    seconds: round(seconds, 3),
    mb_per_s: round(bytes / 1e6 / seconds, 1),
    distinct_words: counts.size,
    digest: countsDigest(counts),
  };
}

function round(v: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

function main(argv: readonly string[]): number {
  let repeat: number | undefined;
  try {
    const { values } = parseArgs({ args: [...argv], options: { repeat: { type: 'string' } } });
    if (values.repeat !== undefined) {
      repeat = Number(values.repeat);
      if (!Number.isSafeInteger(repeat) || repeat < 1) throw new Error(`--repeat must be a positive integer, got ${JSON.stringify(values.repeat)}`);
    }
  } catch (err) {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\nusage: tsx bench/mapreduce-plain.ts [--repeat k]\n`);
    return 2;
  }
  try {
    process.stdout.write(`${JSON.stringify(runPlainCount(repeat === undefined ? {} : { repeat }))}\n`);
    return 0;
  } catch (err) {
    process.stderr.write(`mapreduce-plain failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    return 1;
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.exitCode = main(process.argv.slice(2));
}
