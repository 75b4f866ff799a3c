/**
 * The single-process reference count: the answer a distributed word count must
 * equal, and the baseline its speed is compared to. It uses the same tokenizer
 * and counting table as the mappers, reads the files synchronously (nothing else
 * runs beside it) into one reused buffer, and keeps one table for the whole input.
 */
import { createHash } from 'node:crypto';
import { corpusFilePath } from './corpus.js';
import { FileBuffer } from './file-buffer.js';
import { scanWords } from './tokenize.js';
import { WordTable } from './word-table.js';

/** The word counts of corpus files `files` of `dir` (names; a name given twice is counted twice). */
export function plainWordCount(dir: string, files: readonly string[]): Map<string, number> {
  const paths = files.map((name) => corpusFilePath(dir, name));
  const table = new WordTable();
  const reader = new FileBuffer();
  for (const path of paths) scanWords(reader.read(path), table);
  const counts = new Map<string, number>();
  table.addInto(counts);
  return counts;
}

/** The k most frequent words, by count descending, then word ascending (code unit order). */
export function topWords(counts: ReadonlyMap<string, number>, k: number): [string, number][] {
  return [...counts].sort(byCountThenWord).slice(0, Math.max(0, k));
}

function byCountThenWord(a: [string, number], b: [string, number]): number {
  if (a[1] !== b[1]) return b[1] - a[1];
  return a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0;
}

/**
 * One string for a whole count, whatever the Map's insertion order: the sha256
 * (hex) of the lines "word\tcount\n", sorted by word in code unit order. Two counts
 * are equal exactly when their digests are (but for a sha256 collision).
 */
export function countsDigest(counts: ReadonlyMap<string, number>): string {
  const words = [...counts.keys()].sort();
  const hash = createHash('sha256');
  for (const word of words) hash.update(`${word}\t${counts.get(word)}\n`);
  return hash.digest('hex');
}
