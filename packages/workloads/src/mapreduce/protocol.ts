/**
 * What the MapReduce master and workers say to each other. Every input from the
 * wire is checked (a malformed one fails as DecodeFailedError at the edge).
 *
 * - MAP (master -> worker): count a split's words, partitioned by reducer, and keep
 *   the partitions in memory; the answer names the incarnation that holds them.
 * - FETCH (worker -> worker): one partition of one split, from the incarnation that
 *   holds it (another incarnation answers NotFound: the output died with its node).
 * - REDUCE (master -> worker): pull partition r of every split from where it lives,
 *   merge, and answer the partition's digest, size and top words.
 * - CANCEL (master -> worker): stop a reduce attempt (a source it pulls from died).
 */
import type { MethodSpec } from '@taskgraph/api';
import { bytesCodec, defineMethod, jsonCodec } from '@taskgraph/core';

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isNat = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

export interface MapInput {
  readonly split: { readonly id: number; readonly files: readonly string[] };
  readonly reducers: number;
}
export interface MapOutput {
  readonly split: number;
  /** The incarnation of the worker that holds the output. */
  readonly incarnation: number;
  readonly words: number;
}
export interface FetchInput {
  readonly split: number;
  readonly reducer: number;
  readonly incarnation: number;
}
export interface Source {
  readonly split: number;
  readonly workerId: number;
  readonly incarnation: number;
}
export interface ReduceInput {
  readonly reducer: number;
  readonly attempt: number;
  readonly top: number;
  readonly sources: readonly Source[];
}
/** One reducer's answer: its partition of the word counts, summed up. */
export interface ReduceResult {
  readonly reducer: number;
  /** countsDigest of the partition's counts. */
  readonly digest: string;
  readonly distinct: number;
  readonly words: number;
  readonly top: ReadonlyArray<readonly [string, number]>;
}

const isSource = (v: unknown): v is Source => isObj(v) && isNat(v['split']) && isNat(v['workerId']) && isNat(v['incarnation']);
const isTop = (v: unknown): v is Array<[string, number]> => Array.isArray(v) && v.every((e) => Array.isArray(e) && e.length === 2 && typeof e[0] === 'string' && isNat(e[1]));

export function isReduceResult(v: unknown): v is ReduceResult {
  return isObj(v) && isNat(v['reducer']) && typeof v['digest'] === 'string' && /^[0-9a-f]{64}$/.test(v['digest']) && isNat(v['distinct']) && isNat(v['words']) && isTop(v['top']);
}

export const MAP: MethodSpec<MapInput, MapOutput> = defineMethod('mrMap', {
  input: jsonCodec((v): v is MapInput => {
    if (!isObj(v) || !isNat(v['reducers']) || v['reducers'] < 1 || !isObj(v['split'])) return false;
    const s = v['split'];
    return isNat(s['id']) && Array.isArray(s['files']) && s['files'].every((f) => typeof f === 'string');
  }),
  output: jsonCodec((v): v is MapOutput => isObj(v) && isNat(v['split']) && isNat(v['incarnation']) && isNat(v['words'])),
});

export const FETCH: MethodSpec<FetchInput, Uint8Array> = defineMethod('mrFetch', {
  input: jsonCodec((v): v is FetchInput => isObj(v) && isNat(v['split']) && isNat(v['reducer']) && isNat(v['incarnation'])),
  output: bytesCodec,
});

export const REDUCE: MethodSpec<ReduceInput, ReduceResult> = defineMethod('mrReduce', {
  input: jsonCodec((v): v is ReduceInput => isObj(v) && isNat(v['reducer']) && isNat(v['attempt']) && isNat(v['top']) && Array.isArray(v['sources']) && v['sources'].every(isSource)),
  output: jsonCodec(isReduceResult),
});

export const CANCEL: MethodSpec<{ readonly attempt: number }, boolean> = defineMethod('mrCancel', {
  input: jsonCodec((v): v is { attempt: number } => isObj(v) && isNat(v['attempt'])),
  output: jsonCodec((v): v is boolean => typeof v === 'boolean'),
});
