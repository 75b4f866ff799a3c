import { TaskGraphError } from '@taskgraph/api';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { WordTable, brownCorpus, countSplit, countSplitTable, countsCodec, encodeTablePartitions, makeSplits, mergeEncodedCounts, scanWords } from '../src/index.js';

function tableOf(text: string): WordTable {
  const table = new WordTable();
  scanWords(Buffer.from(text, 'utf8'), table);
  return table;
}

function mapOf(table: WordTable): Map<string, number> {
  const m = new Map<string, number>();
  table.addInto(m);
  return m;
}

function mergeError(bytes: Uint8Array, table = new WordTable()): unknown {
  try {
    mergeEncodedCounts(bytes, table);
  } catch (err) {
    return err;
  }
  return undefined;
}

const bytes = (...b: number[]): Uint8Array => Uint8Array.from(b);
// Texts of corpus-like tokens: letters of both cases, apostrophes, tags, punctuation.
const text = fc.array(fc.constantFrom('The/at', "don't", 'DON\'T/vb', 'cat', 'a-b', "'tis", 'Z/z', 'x', 'e\u00e9e', '...', '\n'), { maxLength: 80 }).map((t) => t.join(' '));

describe('encodeTablePartitions', () => {
  it('gives the bytes countsCodec.encode gives for each partition (fast-check)', () => {
    fc.assert(
      fc.property(text, fc.integer({ min: 1, max: 7 }), (t, r) => {
        const table = tableOf(t);
        const expected = table.partitions(r).map((p) => [...countsCodec.encode(p)]);
        expect(encodeTablePartitions(table, r).map((b) => [...b])).toEqual(expected);
      }),
      { numRuns: 300 },
    );
  });

  it('gives the same bytes on real corpus splits', async () => {
    const corpus = brownCorpus();
    const splits = makeSplits(corpus.files, { splits: 40 }).slice(0, 2);
    for (const split of splits) {
      const expected = (await countSplit(corpus.dir, split, 4)).map((p) => Buffer.from(countsCodec.encode(p)));
      const got = encodeTablePartitions(await countSplitTable(corpus.dir, split), 4).map((b) => Buffer.from(b));
      expect(got).toEqual(expected);
    }
  });

  it('refuses a number of reducers that is not a positive integer', () => {
    for (const r of [0, -1, 1.5]) expect(TaskGraphError.is(captured(() => encodeTablePartitions(new WordTable(), r)), 'INVALID_ARGUMENT')).toBe(true);
  });
});

describe('mergeEncodedCounts', () => {
  it('sums encodings into the table as decoding and adding up the maps would (fast-check)', () => {
    fc.assert(
      fc.property(fc.array(text, { minLength: 1, maxLength: 5 }), (texts) => {
        const table = new WordTable();
        const expected = new Map<string, number>();
        for (const t of texts) {
          const encoded = countsCodec.encode(mapOf(tableOf(t)));
          mergeEncodedCounts(encoded, table);
          for (const [w, n] of countsCodec.decode(encoded)) expected.set(w, (expected.get(w) ?? 0) + n);
        }
        expect(mapOf(table)).toEqual(expected);
      }),
      { numRuns: 300 },
    );
  });

  it('adds to words the table counted itself, and keeps counting them with the tokenizer', () => {
    const table = tableOf("the cat don't");
    mergeEncodedCounts(countsCodec.encode(new Map([['the', 5], ['dog', 2]])), table);
    scanWords(Buffer.from('THE dog'), table);
    expect(mapOf(table)).toEqual(new Map([['the', 7], ['cat', 1], ["don't", 1], ['dog', 3]]));
  });

  it('refuses what countsCodec.decode refuses, with DecodeFailedError', () => {
    const good = countsCodec.encode(new Map([['the', 3], ['cat', 1]]));
    const refused = (b: Uint8Array) => TaskGraphError.is(mergeError(b), 'DECODE_FAILED');
    for (let n = 0; n < good.length; n++) expect(refused(good.subarray(0, n))).toBe(true); // every truncation
    expect(refused(Uint8Array.from([...good, 0]))).toBe(true); // trailing byte
    expect(refused(bytes(0x57, 0x44, 0x01, 0))).toBe(true); // bad magic
    expect(refused(bytes(0x57, 0x43, 0x02, 0))).toBe(true); // unknown version
    expect(refused(bytes(0x57, 0x43, 0x01, 2, 1, 0x61, 1, 1, 0x61, 2))).toBe(true); // a word twice
    expect(refused(bytes(0x57, 0x43, 0x01, 1, 1, 0x61, 0x81, 0x00))).toBe(true); // non-canonical varint
    expect(refused(bytes(0x57, 0x43, 0x01, 1, 1, 0x61, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10))).toBe(true); // 2^53
    expect(refused(bytes(0x57, 0x43, 0x01, 0xff, 0xff, 0xff, 0xff, 0x0f))).toBe(true); // 2^32 words claimed in 8 bytes
    expect(mergeError(good)).toBeUndefined();
  });

  it('refuses a word the tokenizer cannot produce (upper case, digits, non-ASCII), which the table would not keep as it is', () => {
    for (const word of ['The', 'a1', '\u00e9t\u00e9', 'a b']) {
      expect(TaskGraphError.is(mergeError(countsCodec.encode(new Map([[word, 1]]))), 'DECODE_FAILED')).toBe(true);
    }
  });

  it('refuses a word twice even when the table held it before', () => {
    const table = tableOf('the');
    expect(TaskGraphError.is(mergeError(bytes(0x57, 0x43, 0x01, 2, 3, 0x74, 0x68, 0x65, 1, 3, 0x74, 0x68, 0x65, 1), table), 'DECODE_FAILED')).toBe(true);
  });
});

describe('WordTable.add', () => {
  it("adds a count to a stored word and answers the word's entry index", () => {
    const table = tableOf('b a b');
    const word = Buffer.from('b');
    expect(table.add(word, 0, 1, tableHash('b'), 10)).toBe(0);
    expect(table.add(Buffer.from('zz'), 0, 2, tableHash('zz'), 4)).toBe(2);
    expect(mapOf(table)).toEqual(new Map([['b', 12], ['a', 1], ['zz', 4]]));
    const v = table.view();
    expect(v.size).toBe(3);
    expect([...v.counts.subarray(0, 3)]).toEqual([12, 1, 4]);
  });
});

function tableHash(word: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < word.length; i++) h = Math.imul(h ^ word.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

function captured(f: () => unknown): unknown {
  try {
    f();
  } catch (err) {
    return err;
  }
  return undefined;
}
