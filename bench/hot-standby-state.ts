/**
 * The large state of the hot-standby benchmark's failover part: `bytes` of 32-bit
 * words, word i a hash of (seed, i). Built the same way by the first primary and
 * by a cold standby that takes over (the rebuild a hot backup spares), and any
 * single word can be checked by the benchmark without holding the state itself.
 */

/** Word `i` of the state made from `seed`: murmur3's 32-bit finaliser of i and the seed. */
export function stateWord(seed: number, i: number): number {
  let h = (i + Math.imul(seed, 0x9e3779b9)) | 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** The whole state: `bytes / 4` words. */
export function buildState(seed: number, bytes: number): Uint32Array {
  const words = new Uint32Array(Math.floor(bytes / 4));
  fill(words, seed, 0, words.length);
  return words;
}

/** Words of 1 MiB: a few ms of work each. */
const SLICE_WORDS = 256 * 1024;

/**
 * The same state, built a slice at a time with the event loop free between slices,
 * as a node must build it: 64 MiB in one go blocks it for a quarter of a second or
 * more, and on a busy machine past the session TTL, so the node that took the task
 * over would lose it again.
 */
export async function buildStateInSlices(seed: number, bytes: number): Promise<Uint32Array> {
  const words = new Uint32Array(Math.floor(bytes / 4));
  for (let from = 0; from < words.length; from += SLICE_WORDS) {
    fill(words, seed, from, Math.min(words.length, from + SLICE_WORDS));
    await new Promise((resolve) => setImmediate(resolve));
  }
  return words;
}

function fill(words: Uint32Array, seed: number, from: number, to: number): void {
  for (let i = from; i < to; i++) words[i] = stateWord(seed, i);
}
