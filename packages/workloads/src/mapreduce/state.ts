/**
 * The MapReduce master's state: for each split, where its map output lives (the
 * worker and the incarnation that holds it), and for each reducer, its result. Only
 * finished work is state; work in flight is not (a new master re-assigns it). The
 * state changes by `Change`s, which the master applies, ships to its hot backups
 * and writes to its store, so a backup or a cold successor rebuilds the same state.
 */
import { DecodeFailedError } from '@taskgraph/api';
import { isReduceResult } from './protocol.js';
import type { ReduceResult } from './protocol.js';

export interface MapDone {
  readonly workerId: number;
  readonly incarnation: number;
  readonly words: number;
}

export interface MasterState {
  readonly maps: Array<MapDone | null>;
  readonly reduces: Array<ReduceResult | null>;
  /** Splits whose output was lost with its worker and had to be mapped again. */
  reexecutions: number;
}

export type Change =
  | { readonly kind: 'map-done'; readonly split: number; readonly done: MapDone }
  | { readonly kind: 'maps-lost'; readonly splits: readonly number[] }
  | { readonly kind: 'reduce-done'; readonly result: ReduceResult };

export function emptyState(splits: number, reducers: number): MasterState {
  return { maps: Array.from({ length: splits }, () => null), reduces: Array.from({ length: reducers }, () => null), reexecutions: 0 };
}

export function applyChange(state: MasterState, change: Change): void {
  switch (change.kind) {
    case 'map-done':
      state.maps[change.split] = change.done;
      return;
    case 'maps-lost':
      for (const s of change.splits) state.maps[s] = null;
      state.reexecutions += change.splits.length;
      return;
    case 'reduce-done':
      state.reduces[change.result.reducer] = change.result;
      return;
  }
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isNat = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

export function isMapDone(v: unknown): v is MapDone {
  return isObj(v) && isNat(v['workerId']) && isNat(v['incarnation']) && isNat(v['words']);
}

function isChange(v: unknown, state: MasterState): v is Change {
  if (!isObj(v)) return false;
  const inMaps = (s: unknown) => isNat(s) && s < state.maps.length;
  if (v['kind'] === 'map-done') return inMaps(v['split']) && isMapDone(v['done']);
  if (v['kind'] === 'maps-lost') return Array.isArray(v['splits']) && v['splits'].every(inMaps);
  if (v['kind'] === 'reduce-done') return isReduceResult(v['result']) && v['result'].reducer < state.reduces.length;
  return false;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

function parseJson(bytes: Uint8Array, what: string): unknown {
  try {
    return JSON.parse(dec.decode(bytes));
  } catch (err) {
    throw new DecodeFailedError(`mapreduce: ${what} is not JSON`, { cause: err });
  }
}

export const encodeChange = (change: Change): Uint8Array => enc.encode(JSON.stringify(change));

export function decodeChange(bytes: Uint8Array, state: MasterState): Change {
  const v = parseJson(bytes, 'a state change');
  if (!isChange(v, state)) throw new DecodeFailedError('mapreduce: a malformed state change');
  return v;
}

export const encodeState = (state: MasterState): Uint8Array => enc.encode(JSON.stringify(state));

export { parseJson };

export function decodeState(bytes: Uint8Array, splits: number, reducers: number): MasterState {
  const v = parseJson(bytes, 'a state snapshot');
  if (
    !isObj(v) ||
    !Array.isArray(v['maps']) ||
    v['maps'].length !== splits ||
    !v['maps'].every((m) => m === null || isMapDone(m)) ||
    !Array.isArray(v['reduces']) ||
    v['reduces'].length !== reducers ||
    !v['reduces'].every((r) => r === null || isReduceResult(r)) ||
    !isNat(v['reexecutions'])
  ) {
    throw new DecodeFailedError('mapreduce: a malformed state snapshot');
  }
  return v as unknown as MasterState;
}
