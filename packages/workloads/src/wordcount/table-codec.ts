/**
 * countsCodec's layout written straight from a WordTable and read straight into
 * one, with no string and no Map per word: what the mappers send and the reducers
 * merge. A mapper's partitions hold tens of thousands of words per split and a
 * reducer merges one partition of every split; making a string and a Map entry for
 * each, on both sides, cost more than counting the words did.
 *
 * - encodeTablePartitions gives, byte for byte, what countsCodec.encode gives for
 *   each Map of table.partitions(R) (same words, same order).
 * - mergeEncodedCounts refuses what countsCodec.decode refuses, with the same
 *   DecodeFailedError, and also any word the tokenizer cannot produce (a byte that
 *   is not a lower-case ASCII letter or an apostrophe), which a table built by the
 *   tokenizer could not hold as it is. On a refusal the table already holds part of
 *   the input: the caller drops it.
 */
import { InvalidArgumentError } from '@taskgraph/api';
import { HEADER, MAGIC_0, MAGIC_1, MAX_VARINT_BYTES, VERSION, bad, readVarint, writeVarint } from './counts-codec.js';
import { FNV_OFFSET_BASIS, FNV_PRIME, checkReducers } from './partition.js';
import type { WordTable } from './word-table.js';

/** The words of `table` split by reducer (hash mod R, as partitionOf), each partition encoded as countsCodec does. */
export function encodeTablePartitions(table: WordTable, reducers: number): Uint8Array[] {
  checkReducers(reducers);
  const v = table.view();
  const words = new Int32Array(reducers);
  const bytes = new Float64Array(reducers);
  for (let e = 0; e < v.size; e++) {
    const r = v.hashes[e]! % reducers;
    words[r]! += 1;
    // A word's length and count take at most MAX_VARINT_BYTES each.
    bytes[r]! += v.lengths[e]! + 2 * MAX_VARINT_BYTES;
  }
  const out = Array.from({ length: reducers }, (_, r) => new Uint8Array(HEADER + MAX_VARINT_BYTES + bytes[r]!));
  const at = new Int32Array(reducers);
  for (let r = 0; r < reducers; r++) {
    const b = out[r]!;
    b[0] = MAGIC_0;
    b[1] = MAGIC_1;
    b[2] = VERSION;
    at[r] = writeVarint(b, HEADER, words[r]!);
  }
  const arena = v.arena;
  for (let e = 0; e < v.size; e++) {
    const r = v.hashes[e]! % reducers;
    const b = out[r]!;
    const count = v.counts[e]!;
    if (!Number.isSafeInteger(count)) throw new InvalidArgumentError(`a count must be a safe integer, got ${count}`, { details: { count } });
    const len = v.lengths[e]!;
    let p = writeVarint(b, at[r]!, len);
    const start = v.starts[e]!;
    for (let i = 0; i < len; i++) b[p + i] = arena[start + i]!;
    p = writeVarint(b, p + len, count);
    at[r] = p;
  }
  return out.map((b, r) => b.slice(0, at[r]!));
}

// The bytes a word of the tokenizer is made of, as stored: a-z and the apostrophe.
const WORD_BYTE = new Uint8Array(256);
for (let c = 0x61; c <= 0x7a; c++) WORD_BYTE[c] = 1;
WORD_BYTE[0x27] = 1;

/** Adds the counts of one countsCodec encoding to `table`. Throws DecodeFailedError on what decode refuses. */
export function mergeEncodedCounts(bytes: Uint8Array, table: WordTable): void {
  if (bytes.length < HEADER || bytes[0] !== MAGIC_0 || bytes[1] !== MAGIC_1) throw bad('not a word-count encoding (bad magic)', 0);
  if (bytes[2] !== VERSION) throw bad(`unknown version ${bytes[2]}`, 2);
  const r = { at: HEADER };
  const n = readVarint(bytes, r, 'word count');
  if (n > (bytes.length - r.at) / 2) throw bad(`${n} words cannot fit in ${bytes.length} bytes`, r.at);
  // An entry index seen twice in one input is a word that appears twice.
  const seen = new Uint8Array(table.size + n);
  for (let i = 0; i < n; i++) {
    const len = readVarint(bytes, r, 'word length');
    const start = r.at;
    const end = start + len;
    if (end > bytes.length) throw bad('truncated word', start);
    let h = FNV_OFFSET_BASIS;
    for (let j = start; j < end; j++) {
      const c = bytes[j]!;
      if (WORD_BYTE[c] === 0) throw bad(`a word holds byte 0x${c.toString(16)}, which no word of the tokenizer does`, j);
      h = Math.imul(h ^ c, FNV_PRIME);
    }
    r.at = end;
    const count = readVarint(bytes, r, 'count');
    const e = table.add(bytes, start, end, h >>> 0, count);
    if (seen[e] === 1) throw bad(`the word ${JSON.stringify(Buffer.from(bytes.subarray(start, end)).toString('latin1'))} appears twice`, r.at);
    seen[e] = 1;
  }
  if (r.at !== bytes.length) throw bad(`${bytes.length - r.at} bytes after the last word`, r.at);
}
