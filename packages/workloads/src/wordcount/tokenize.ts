/**
 * What a word is, for the word count, and the scanner that finds them.
 *
 * The text is the Brown corpus's POS-tagged form: tokens such as
 * `The/at Fulton/np-tl County/nn-tl ./.` separated by whitespace. A WORD is found so:
 * 1. the text is split into tokens at ASCII whitespace (space, tab, LF, VT, FF, CR);
 * 2. of each token, the part before its LAST `/` is kept (the tag is dropped); a
 *    token without `/` is kept whole (`and/or/cc` keeps `and/or`);
 * 3. in that part, each maximal run of ASCII letters is one word, lower-cased
 *    (ASCII only); an apostrophe with an ASCII letter on both sides stays inside
 *    the run (`don't`, `Atlanta's` -> `atlanta's`, `rock'n'roll`), any other
 *    character ends it: digits, hyphens, punctuation, non-ASCII characters and
 *    other apostrophes (`'tis` -> `tis`, `''` -> nothing, `term-end` -> `term`, `end`).
 *
 * Every byte that matters to the rule is ASCII, and no byte of a multi-byte UTF-8
 * character is, so the rule reads the same on a string and on its UTF-8 bytes: the
 * scanner works on bytes, which spares decoding the corpus.
 */
import { FNV_OFFSET_BASIS, FNV_PRIME } from './partition.js';
import { WordTable } from './word-table.js';

// Every byte's role in the rule, looked up once per byte (a table load beats the
// range compares of isLetter/isSpace on this hot loop).
// 0: any other byte.
const LETTER = 1;
const SPACE = 2;
const SLASH = 3;
const APOSTROPHE = 4;
const ROLE = new Uint8Array(256);
for (let c = 0x41; c <= 0x5a; c++) {
  ROLE[c] = LETTER;
  ROLE[c + 0x20] = LETTER;
}
for (const c of [0x20, 0x09, 0x0a, 0x0b, 0x0c, 0x0d]) ROLE[c] = SPACE;
ROLE[0x2f] = SLASH;
ROLE[0x27] = APOSTROPHE;

/** Counts the words of `bytes` (UTF-8 or ASCII text) into `table`. */
export function scanWords(bytes: Uint8Array, table: WordTable): void {
  const role = ROLE;
  const n = bytes.length;
  let i = 0;
  while (i < n) {
    if (role[bytes[i]!] === SPACE) {
      i++;
      continue;
    }
    const tokenStart = i;
    let slash = -1;
    for (; i < n; i++) {
      const r = role[bytes[i]!];
      if (r === SPACE) break;
      if (r === SLASH) slash = i;
    }
    const end = slash >= 0 ? slash : i;
    let j = tokenStart;
    while (j < end) {
      if (role[bytes[j]!] !== LETTER) {
        j++;
        continue;
      }
      const wordStart = j;
      // The hash of the lower-cased word is built here, while the bytes are hot;
      // it is also the FNV-1a hash that partitionOf computes.
      let h = FNV_OFFSET_BASIS;
      for (; j < end; j++) {
        const c = bytes[j]!;
        const r = role[c];
        if (r !== LETTER && !(r === APOSTROPHE && j + 1 < end && role[bytes[j + 1]!] === LETTER)) break;
        h = Math.imul(h ^ (c | 0x20), FNV_PRIME);
      }
      table.increment(bytes, wordStart, j, h >>> 0);
    }
  }
}

/** Adds the words of `text`, counted by the rule above, to `into`. */
export function countWords(text: string, into: Map<string, number>): void {
  const table = new WordTable();
  scanWords(Buffer.from(text, 'utf8'), table);
  table.addInto(into);
}
