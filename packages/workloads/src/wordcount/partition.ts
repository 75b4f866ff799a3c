/**
 * Which reducer a word belongs to. Mappers and reducers run in different
 * processes (and possibly different builds), so the function must not depend on
 * anything but the word's bytes: FNV-1a 32-bit over its UTF-8 bytes, mod R.
 */
import { InvalidArgumentError } from '@taskgraph/api';

export const FNV_OFFSET_BASIS = 0x811c9dc5;
export const FNV_PRIME = 0x01000193;

const utf8 = new TextEncoder();

/** FNV-1a 32-bit of the UTF-8 bytes of `s`, as an unsigned integer. */
export function fnv1a32(s: string): number {
  let h = FNV_OFFSET_BASIS;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    // Words are ASCII; anything else goes through the encoder so the hash is the
    // one of the UTF-8 bytes, not of UTF-16 code units.
    if (c >= 0x80) return fnv1a32Bytes(utf8.encode(s));
    h = Math.imul(h ^ c, FNV_PRIME);
  }
  return h >>> 0;
}

function fnv1a32Bytes(bytes: Uint8Array): number {
  let h = FNV_OFFSET_BASIS;
  for (const b of bytes) h = Math.imul(h ^ b, FNV_PRIME);
  return h >>> 0;
}

/** The reducer (0..R-1) of `word`. */
export function partitionOf(word: string, reducers: number): number {
  checkReducers(reducers);
  return fnv1a32(word) % reducers;
}

/** Throws InvalidArgumentError unless `reducers` is a positive safe integer. */
export function checkReducers(reducers: number): void {
  if (!Number.isSafeInteger(reducers) || reducers < 1) {
    throw new InvalidArgumentError(`the number of reducers must be a positive integer, got ${reducers}`, {
      details: { reducers },
    });
  }
}
