import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { brownCorpus, countsDigest, fnv1a32, partitionOf, plainWordCount, topWords } from '../src/index.js';

describe('plainWordCount', () => {
  const corpus = brownCorpus();

  it('counts the corpus: "the" first, and a file given twice counts twice', () => {
    const one = plainWordCount(corpus.dir, ['ca01']);
    const two = plainWordCount(corpus.dir, ['ca01', 'ca01']);
    expect(two.size).toBe(one.size);
    for (const [w, c] of one) expect(two.get(w)).toBe(2 * c);
    expect(topWords(one, 1)[0]![0]).toBe('the');
    expect(one.get('fulton')).toBeGreaterThan(0);
    expect(one.has('np')).toBe(false); // tags are not words
  });
});

describe('topWords', () => {
  it('orders by count descending, then word ascending, and takes k', () => {
    const counts = new Map([
      ['b', 2],
      ['a', 2],
      ['c', 5],
      ['d', 1],
    ]);
    expect(topWords(counts, 3)).toEqual([
      ['c', 5],
      ['a', 2],
      ['b', 2],
    ]);
    expect(topWords(counts, 10)).toHaveLength(4);
    expect(topWords(counts, 0)).toEqual([]);
  });
});

describe('countsDigest', () => {
  it('is the sha256 of the sorted word\\tcount lines', () => {
    const expected = createHash('sha256').update('a\t1\nb\t2\n').digest('hex');
    expect(countsDigest(new Map([['b', 2], ['a', 1]]))).toBe(expected);
    expect(countsDigest(new Map())).toBe(createHash('sha256').digest('hex'));
  });

  it('does not depend on insertion order, and tells different counts apart (fast-check)', () => {
    const counts = fc.dictionary(fc.string({ minLength: 1, maxLength: 6 }), fc.nat({ max: 1000 }), { maxKeys: 30 });
    fc.assert(
      fc.property(counts, fc.nat(), (obj, pick) => {
        const entries = Object.entries(obj);
        const forward = new Map(entries);
        const backward = new Map([...entries].reverse());
        expect(countsDigest(backward)).toBe(countsDigest(forward));
        if (entries.length > 0) {
          const [word, count] = entries[pick % entries.length]!;
          const changed = new Map(forward).set(word, count + 1);
          expect(countsDigest(changed)).not.toBe(countsDigest(forward));
          const fewer = new Map(forward);
          fewer.delete(word);
          expect(countsDigest(fewer)).not.toBe(countsDigest(forward));
        }
      }),
    );
  });
});

describe('partitionOf', () => {
  it('is FNV-1a 32-bit over the UTF-8 bytes (published test vectors)', () => {
    expect(fnv1a32('')).toBe(0x811c9dc5);
    expect(fnv1a32('a')).toBe(0xe40c292c);
    expect(fnv1a32('foobar')).toBe(0xbf9cf968);
    // Non-ASCII hashes its UTF-8 bytes, not its UTF-16 units.
    let h = 0x811c9dc5;
    for (const b of Buffer.from('caf\u00e9', 'utf8')) h = Math.imul(h ^ b, 0x01000193);
    expect(fnv1a32('caf\u00e9')).toBe(h >>> 0);
  });

  it('is fnv1a32 mod R, in 0..R-1 (fast-check)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 20 }), fc.integer({ min: 1, max: 1000 }), (word, r) => {
        const p = partitionOf(word, r);
        expect(p).toBe(fnv1a32(word) % r);
        expect(p).toBeGreaterThanOrEqual(0);
        expect(p).toBeLessThan(r);
      }),
    );
  });
});
