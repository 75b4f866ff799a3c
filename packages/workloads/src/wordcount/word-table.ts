/**
 * The counting table behind the tokenizer: an open-addressing hash table keyed by
 * the word's bytes in the source buffer. A word seen again costs a probe and a
 * byte compare, no string and no Map lookup; a string is made once per DISTINCT
 * word, when the table is turned into Maps. That is what makes the single-process
 * count (the benchmark's baseline) and the mappers fast: the corpus has ~50,000
 * distinct words and ~1,000,000 occurrences per copy.
 *
 * Keys are stored lower-cased. The table only ever receives words as the tokenizer
 * defines them (ASCII letters and inner apostrophes), for which `byte | 0x20` is
 * the lower case (and leaves the apostrophe, 0x27, as it is).
 */
import { checkReducers } from './partition.js';

const INITIAL_CAPACITY = 1 << 12;

export interface WordTableView {
  readonly size: number;
  readonly arena: Uint8Array;
  readonly starts: Int32Array;
  readonly lengths: Int32Array;
  readonly hashes: Uint32Array;
  readonly counts: Float64Array;
}

export class WordTable {
  /** Entry index + 1 per slot; 0 is an empty slot. */
  private slots = new Int32Array(INITIAL_CAPACITY);
  private mask = INITIAL_CAPACITY - 1;
  private hashes = new Uint32Array(INITIAL_CAPACITY >> 1);
  private starts = new Int32Array(INITIAL_CAPACITY >> 1);
  private lengths = new Int32Array(INITIAL_CAPACITY >> 1);
  // Float64: counts stay exact far past 2^32 (the benchmark repeats the corpus).
  private counts = new Float64Array(INITIAL_CAPACITY >> 1);
  private arena = new Uint8Array(INITIAL_CAPACITY * 4);
  private arenaUsed = 0;
  private entries = 0;

  /** Distinct words counted so far. */
  get size(): number {
    return this.entries;
  }

  /**
   * Counts one occurrence of the word `src[start..end)`, whose FNV-1a 32-bit hash
   * over its lower-cased bytes is `hash` (the tokenizer computes it while it scans).
   */
  increment(src: Uint8Array, start: number, end: number, hash: number): void {
    const len = end - start;
    const slots = this.slots;
    const mask = this.mask;
    // FNV-1a's low bits are weak for short keys; fold the high half in.
    let slot = (hash ^ (hash >>> 16)) & mask;
    for (;;) {
      const e = slots[slot]! - 1;
      if (e < 0) break;
      if (this.hashes[e] === hash && this.lengths[e] === len && this.sameKey(e, src, start, len)) {
        this.counts[e]! += 1;
        return;
      }
      slot = (slot + 1) & mask;
    }
    this.insert(slot, src, start, len, hash);
  }

  /**
   * Adds `count` to the word `src[start..end)`, whose bytes are already as the
   * table stores them (lower-cased: a key read back from `view()`, say), with
   * `hash` its FNV-1a hash. Returns the word's entry index (0..size-1), so a caller
   * can tell a word it has added before.
   */
  add(src: Uint8Array, start: number, end: number, hash: number, count: number): number {
    const len = end - start;
    let slot = (hash ^ (hash >>> 16)) & this.mask;
    for (;;) {
      const e = this.slots[slot]! - 1;
      if (e < 0) break;
      if (this.hashes[e] === hash && this.lengths[e] === len && this.sameKey(e, src, start, len)) {
        this.counts[e]! += count;
        return e;
      }
      slot = (slot + 1) & this.mask;
    }
    const e = this.entries;
    this.insert(slot, src, start, len, hash);
    this.counts[e] = count;
    return e;
  }

  /**
   * The table's entries as they are stored, for code that writes them out without
   * a string per word (countsCodec's encodeTablePartitions): entry e is the word
   * `arena[starts[e] .. starts[e] + lengths[e])`, lower-cased ASCII, with hash
   * `hashes[e]` and count `counts[e]`, for e in 0..size-1, in the order first seen.
   * Valid until the table next changes.
   */
  view(): WordTableView {
    return { size: this.entries, arena: this.arena, starts: this.starts, lengths: this.lengths, hashes: this.hashes, counts: this.counts };
  }

  private sameKey(e: number, src: Uint8Array, start: number, len: number): boolean {
    const arena = this.arena;
    const at = this.starts[e]!;
    for (let i = 0; i < len; i++) {
      if (arena[at + i] !== (src[start + i]! | 0x20)) return false;
    }
    return true;
  }

  private insert(slot: number, src: Uint8Array, start: number, len: number, hash: number): void {
    const e = this.entries;
    if (e === this.hashes.length) this.growEntries();
    if (this.arenaUsed + len > this.arena.length) this.growArena(len);
    const at = this.arenaUsed;
    const arena = this.arena;
    for (let i = 0; i < len; i++) arena[at + i] = src[start + i]! | 0x20;
    this.arenaUsed = at + len;
    this.hashes[e] = hash;
    this.starts[e] = at;
    this.lengths[e] = len;
    this.counts[e] = 1;
    this.slots[slot] = e + 1;
    this.entries = e + 1;
    // Keep the load factor at or under 1/2 so probe runs stay short.
    if (this.entries * 2 > this.slots.length) this.rehash();
  }

  private growEntries(): void {
    const n = this.hashes.length * 2;
    this.hashes = grown(this.hashes, new Uint32Array(n));
    this.starts = grown(this.starts, new Int32Array(n));
    this.lengths = grown(this.lengths, new Int32Array(n));
    this.counts = grown(this.counts, new Float64Array(n));
  }

  private growArena(need: number): void {
    let n = this.arena.length * 2;
    while (n < this.arenaUsed + need) n *= 2;
    this.arena = grown(this.arena, new Uint8Array(n));
  }

  private rehash(): void {
    const capacity = this.slots.length * 2;
    const slots = new Int32Array(capacity);
    const mask = capacity - 1;
    for (let e = 0; e < this.entries; e++) {
      const hash = this.hashes[e]!;
      let slot = (hash ^ (hash >>> 16)) & mask;
      while (slots[slot] !== 0) slot = (slot + 1) & mask;
      slots[slot] = e + 1;
    }
    this.slots = slots;
    this.mask = mask;
  }

  /** Adds every word's count to `into`. */
  addInto(into: Map<string, number>): void {
    const keys = this.keysText();
    for (let e = 0; e < this.entries; e++) {
      const word = keys.slice(this.starts[e]!, this.starts[e]! + this.lengths[e]!);
      into.set(word, (into.get(word) ?? 0) + this.counts[e]!);
    }
  }

  /**
   * The counts split by reducer: map r holds the words w with partitionOf(w, R) = r.
   * The stored hash is the FNV-1a hash partitionOf uses, so no word is hashed again.
   */
  partitions(reducers: number): Map<string, number>[] {
    checkReducers(reducers);
    const out = Array.from({ length: reducers }, () => new Map<string, number>());
    const keys = this.keysText();
    for (let e = 0; e < this.entries; e++) {
      const at = this.starts[e]!;
      out[this.hashes[e]! % reducers]!.set(keys.slice(at, at + this.lengths[e]!), this.counts[e]!);
    }
    return out;
  }

  /**
   * All keys as one string, one character a byte (they are ASCII): one decode, and
   * each word is a slice of it, instead of a decoder call per distinct word.
   */
  private keysText(): string {
    return Buffer.from(this.arena.buffer, this.arena.byteOffset, this.arenaUsed).toString('latin1');
  }
}

function grown<T extends Uint8Array | Int32Array | Uint32Array | Float64Array>(from: T, to: T): T {
  to.set(from);
  return to;
}
