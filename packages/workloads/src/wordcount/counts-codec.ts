/**
 * A codec for word counts (Map<string, number>), the payload a reducer pulls from
 * each mapper. JSON spends its time building and parsing an object; this layout is
 * read and written with one pass over the bytes:
 *
 *   'W' 'C' 0x01                 magic and version
 *   varint n                     number of words
 *   n x { varint len, len bytes of UTF-8 word, varint count }
 *
 * varint is unsigned LEB128 (7 bits a byte, low first), canonical (no trailing
 * zero byte), at most 2^53 - 1. Words are decoded strictly (invalid UTF-8 and a
 * word twice are refused); counts are non-negative safe integers. decode throws
 * DecodeFailedError on any byte string that is not exactly one such encoding.
 */
import { DecodeFailedError, InvalidArgumentError } from '@taskgraph/api';
import type { Codec } from '@taskgraph/api';

// The layout's constants are shared with table-codec.ts, which writes and reads it without strings.
export const MAGIC_0 = 0x57;
export const MAGIC_1 = 0x43;
export const VERSION = 0x01;
export const HEADER = 3;
export const MAX_VARINT_BYTES = 8; // 8 x 7 bits hold 2^53

const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

class Writer {
  bytes: Uint8Array;
  at = 0;

  constructor(capacity: number) {
    this.bytes = new Uint8Array(capacity);
  }

  ensure(more: number): void {
    if (this.at + more <= this.bytes.length) return;
    let n = this.bytes.length * 2;
    while (n < this.at + more) n *= 2;
    const bigger = new Uint8Array(n);
    bigger.set(this.bytes.subarray(0, this.at));
    this.bytes = bigger;
  }

  varint(v: number): void {
    this.ensure(MAX_VARINT_BYTES);
    this.at = writeVarint(this.bytes, this.at, v);
  }

  word(word: string): void {
    const len = word.length;
    let ascii = true;
    for (let i = 0; i < len; i++) {
      if (word.charCodeAt(i) >= 0x80) {
        ascii = false;
        break;
      }
    }
    if (!ascii) {
      // A lone surrogate has no UTF-8 form; encoding it would decode to another word.
      if (hasLoneSurrogate(word)) throw new InvalidArgumentError('a word with a lone surrogate cannot be encoded', { details: { word } });
      const bytes = utf8.encode(word);
      this.varint(bytes.length);
      this.ensure(bytes.length);
      this.bytes.set(bytes, this.at);
      this.at += bytes.length;
      return;
    }
    this.varint(len);
    this.ensure(len);
    const b = this.bytes;
    const at = this.at;
    for (let i = 0; i < len; i++) b[at + i] = word.charCodeAt(i);
    this.at = at + len;
  }
}

function encodeCounts(counts: Map<string, number>): Uint8Array {
  // Sized for ASCII words of typical length; the writer grows past it if needed.
  const w = new Writer(HEADER + MAX_VARINT_BYTES + counts.size * 12);
  w.bytes[0] = MAGIC_0;
  w.bytes[1] = MAGIC_1;
  w.bytes[2] = VERSION;
  w.at = HEADER;
  w.varint(counts.size);
  for (const [word, count] of counts) {
    if (!Number.isSafeInteger(count) || count < 0) {
      throw new InvalidArgumentError(`a count must be a non-negative safe integer, got ${count} for ${JSON.stringify(word)}`, {
        details: { word, count },
      });
    }
    w.word(word);
    w.varint(count);
  }
  return w.bytes.slice(0, w.at);
}

function hasLoneSurrogate(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0xd800 || c > 0xdfff) continue;
    const next = i + 1 < s.length ? s.charCodeAt(i + 1) : 0;
    if (c > 0xdbff || next < 0xdc00 || next > 0xdfff) return true;
    i++;
  }
  return false;
}

class Reader {
  at = HEADER;
  /**
   * The whole input as latin1 (ISO-8859-1: exactly one character a byte, so offsets
   * agree), decoded once: an ASCII word is
   * then a slice of it, which is much cheaper than a decoder call or a string built
   * a character at a time for each of tens of thousands of short words.
   */
  private readonly text: string;

  constructor(readonly bytes: Uint8Array) {
    this.text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1');
  }

  varint(what: string): number {
    return readVarint(this.bytes, this, what);
  }

  word(): string {
    const len = this.varint('word length');
    const b = this.bytes;
    const start = this.at;
    const end = start + len;
    if (end > b.length) throw bad('truncated word', start);
    this.at = end;
    let ascii = true;
    for (let i = start; i < end; i++) {
      if (b[i]! >= 0x80) {
        ascii = false;
        break;
      }
    }
    if (ascii) return this.text.slice(start, end);
    try {
      return strictUtf8.decode(b.subarray(start, end));
    } catch (err) {
      throw bad('a word is not valid UTF-8', start, err);
    }
  }
}


function decodeCounts(bytes: Uint8Array): Map<string, number> {
  if (bytes.length < HEADER || bytes[0] !== MAGIC_0 || bytes[1] !== MAGIC_1) throw bad('not a word-count encoding (bad magic)', 0);
  if (bytes[2] !== VERSION) throw bad(`unknown version ${bytes[2]}`, 2);
  const r = new Reader(bytes);
  const n = r.varint('word count');
  // Each entry takes 2 bytes at least: a claim of more entries than that is a lie,
  // and must not make the decoder loop or allocate for it.
  if (n > (bytes.length - r.at) / 2) throw bad(`${n} words cannot fit in ${bytes.length} bytes`, r.at);
  const counts = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const word = r.word();
    const count = r.varint('count');
    counts.set(word, count);
    if (counts.size !== i + 1) throw bad(`the word ${JSON.stringify(word)} appears twice`, r.at);
  }
  if (r.at !== bytes.length) throw bad(`${bytes.length - r.at} bytes after the last word`, r.at);
  return counts;
}

/** Writes `v` (a safe integer >= 0) as a varint at `at` (room for MAX_VARINT_BYTES is the caller's); returns the end. */
export function writeVarint(b: Uint8Array, at: number, v: number): number {
  // Division, not shifts: counts may pass 2^31.
  while (v >= 0x80) {
    b[at++] = (v % 0x80) | 0x80;
    v = Math.floor(v / 0x80);
  }
  b[at++] = v;
  return at;
}

/** Reads a canonical varint at `r.at` and moves `r.at` past it; DecodeFailedError naming `what` when it is not one. */
export function readVarint(b: Uint8Array, r: { at: number }, what: string): number {
  let v = 0;
  let scale = 1;
  for (let i = 0; i < MAX_VARINT_BYTES; i++) {
    if (r.at >= b.length) throw bad(`truncated ${what}`, r.at);
    const byte = b[r.at++]!;
    v += (byte & 0x7f) * scale;
    if (byte < 0x80) {
      if (byte === 0 && i > 0) throw bad(`non-canonical ${what}`, r.at - 1);
      if (v > Number.MAX_SAFE_INTEGER) throw bad(`${what} past 2^53 - 1`, r.at - 1);
      return v;
    }
    scale *= 0x80;
  }
  throw bad(`${what} longer than ${MAX_VARINT_BYTES} bytes`, r.at);
}

export function bad(message: string, offset: number, cause?: unknown): DecodeFailedError {
  return new DecodeFailedError(`word counts: ${message} (at byte ${offset})`, {
    details: { codec: COUNTS_CODEC_NAME, offset },
    ...(cause === undefined ? {} : { cause }),
  });
}

export const COUNTS_CODEC_NAME = 'wordcount:counts/v1';

/** Word counts as bytes; see the layout above. */
export const countsCodec: Codec<Map<string, number>> = {
  name: COUNTS_CODEC_NAME,
  encode: encodeCounts,
  decode: decodeCounts,
};
