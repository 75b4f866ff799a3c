import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { WordTable, brownCorpus, countWords, plainWordCount, scanWords } from '../src/index.js';

/** The word rule written the obvious, slow way: the oracle the scanner must agree with. */
function referenceCount(text: string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const token of text.split(/[ \t\n\v\f\r]+/)) {
    const slash = token.lastIndexOf('/');
    const part = slash >= 0 ? token.slice(0, slash) : token;
    for (const m of part.matchAll(/[A-Za-z]+(?:'[A-Za-z]+)*/g)) {
      const word = m[0].toLowerCase();
      counts.set(word, (counts.get(word) ?? 0) + 1);
    }
  }
  return counts;
}

function count(text: string): Map<string, number> {
  const counts = new Map<string, number>();
  countWords(text, counts);
  return counts;
}

function sorted(counts: ReadonlyMap<string, number>): [string, number][] {
  return [...counts].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}

describe('countWords: the word rule', () => {
  it('drops the tag after the last slash', () => {
    expect(sorted(count('The/at Fulton/np-tl County/nn-tl ./.'))).toEqual([
      ['county', 1],
      ['fulton', 1],
      ['the', 1],
    ]);
    expect(sorted(count('and/or/cc'))).toEqual([
      ['and', 1],
      ['or', 1],
    ]);
    expect(count('/nn //x ab/')).toEqual(new Map([['ab', 1]]));
  });

  it('keeps a token without a slash whole', () => {
    expect(sorted(count('Hello world'))).toEqual([
      ['hello', 1],
      ['world', 1],
    ]);
  });

  it('keeps an apostrophe between two letters, and only there', () => {
    expect(sorted(count("don't/vb Atlanta's/np$ rock'n'roll 'tis/x dogs'/nns ''/'' a''b o'/x"))).toEqual([
      ['a', 1],
      ['atlanta\'s', 1],
      ['b', 1],
      ['dogs', 1],
      ["don't", 1],
      ['o', 1],
      ["rock'n'roll", 1],
      ['tis', 1],
    ]);
  });

  it('drops digits and punctuation, which split words', () => {
    expect(sorted(count('1961/cd 3rd/od term-end/nn over-all/jj a.m./rb $12/nns x1y ,/, ``/``'))).toEqual([
      ['a', 1],
      ['all', 1],
      ['end', 1],
      ['m', 1],
      ['over', 1],
      ['rd', 1],
      ['term', 1],
      ['x', 1],
      ['y', 1],
    ]);
  });

  it('lower-cases ASCII only; non-ASCII characters split words and never become letters', () => {
    expect(sorted(count('THE/at The/at the/at'))).toEqual([['the', 3]]);
    // U+0130 lower-cases to "i" plus a combining dot in JavaScript; here it is no letter.
    expect(sorted(count('caf\u00e9 \u0130stanbul na\u00efve/jj'))).toEqual([
      ['caf', 1],
      ['na', 1],
      ['stanbul', 1],
      ['ve', 1],
    ]);
  });

  it('splits tokens at every kind of ASCII whitespace, not at other spaces', () => {
    expect(sorted(count('a\tb\nc\rd\ve\ff g\u00a0h'))).toEqual(
      ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'].map((w) => [w, 1]),
    );
    // A no-break space does not end a token: "x/nn\u00a0y/nn" is one token, whose tag is only the last "nn".
    expect(sorted(count('x/nn\u00a0y/nn'))).toEqual([
      ['nn', 1],
      ['x', 1],
      ['y', 1],
    ]);
  });

  it('adds to the counts already in the map', () => {
    const counts = new Map([['the', 5]]);
    countWords('the/at cat/nn', counts);
    expect(sorted(counts)).toEqual([
      ['cat', 1],
      ['the', 6],
    ]);
  });

  it('counts nothing in an empty or blank text', () => {
    expect(count('')).toEqual(new Map());
    expect(count(' \n\t ')).toEqual(new Map());
  });

  it('agrees with the reference rule on any text (fast-check)', () => {
    const pieces = fc.constantFrom('a', 'Z', 'q', "'", '/', ' ', '\n', '\t', '-', '1', '.', '\u00e9', '\u0130', '\u00a0', 'nn', 'AT');
    const text = fc.oneof(fc.array(pieces, { maxLength: 60 }).map((p) => p.join('')), fc.string({ unit: 'binary', maxLength: 60 }));
    fc.assert(
      fc.property(text, (t) => {
        expect(sorted(count(t))).toEqual(sorted(referenceCount(t)));
      }),
      { numRuns: 500 },
    );
  });

  it('agrees with the reference rule on real corpus files, and grows its table past its first size', () => {
    const corpus = brownCorpus();
    const names = corpus.files.slice(0, 40).map((f) => f.name);
    const text = names.map((n) => readFileSync(join(corpus.dir, n), 'utf8')).join('\n');
    const reference = referenceCount(text);
    expect(reference.size).toBeGreaterThan(5000);
    expect(sorted(count(text))).toEqual(sorted(reference));
    expect(sorted(plainWordCount(corpus.dir, names))).toEqual(sorted(reference));
  });

  it('scans bytes to the same table as text', () => {
    const table = new WordTable();
    scanWords(Buffer.from("It/pps 's/bez the/at cat's/nn$ hat/nn ./. The/at", 'utf8'), table);
    const counts = new Map<string, number>();
    table.addInto(counts);
    expect(table.size).toBe(5);
    expect(sorted(counts)).toEqual(sorted(count("It/pps 's/bez the/at cat's/nn$ hat/nn ./. The/at")));
  });
});
