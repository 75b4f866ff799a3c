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
  for (let i = 0; i < words.length; i++) words[i] = stateWord(seed, i);
  return words;
}
