/**
 * The framework's own methods on the data plane, for hot standby, and how their
 * messages travel: a small JSON header and the raw bytes after it, so a large
 * state is never base64'd. Application methods cannot take these names (they
 * start with `taskgraph_`, a prefix `declareMethods` refuses).
 */
import { DecodeFailedError } from '@taskgraph/api';

/** The prefix of the framework's own methods. */
export const INTERNAL_PREFIX = 'taskgraph_';

export const METHODS = {
  /** Primary -> backup: apply one update. */
  update: `${INTERNAL_PREFIX}update`,
  /** Backup -> primary: take a snapshot for me and count me in from its seq on. */
  snapshot: `${INTERNAL_PREFIX}snapshot`,
  /** Backup -> primary: the next piece of a snapshot too large for one message. */
  snapshotChunk: `${INTERNAL_PREFIX}snapshot_chunk`,
} as const;

export interface UpdateHeader {
  /** The sender's primary fencing token. */
  readonly primaryToken: string;
  readonly epoch: number;
  readonly seq: number;
}

export interface SnapshotRequest {
  /** The asking backup's slot token and slot, and where it serves updates. */
  readonly backupToken: string;
  readonly slot: number;
  readonly address: string;
  readonly nodeId: string;
}

export interface SnapshotHeader {
  readonly primaryToken: string;
  readonly incarnation: number;
  /** The snapshot holds every update up to this seq. */
  readonly seq: number;
  /** The whole snapshot's size; the first piece comes with this header. */
  readonly total: number;
  /** Names the snapshot for `snapshot_chunk` requests. */
  readonly id: string;
}

export interface ChunkRequest {
  readonly id: string;
  readonly offset: number;
}

const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true });

/** `[u32 header length][header JSON][body]`. */
export function frame(header: unknown, body: Uint8Array = new Uint8Array(0)): Uint8Array {
  const h = enc.encode(JSON.stringify(header));
  const out = new Uint8Array(4 + h.length + body.length);
  new DataView(out.buffer).setUint32(0, h.length);
  out.set(h, 4);
  out.set(body, 4 + h.length);
  return out;
}

/** Splits a frame; `check` validates the header's shape. */
export function unframe<T>(bytes: Uint8Array, what: string, check: (v: Record<string, unknown>) => boolean): { header: T; body: Uint8Array } {
  if (bytes.length < 4) throw new DecodeFailedError(`${what}: a frame of ${bytes.length} bytes`);
  const n = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(0);
  if (4 + n > bytes.length) throw new DecodeFailedError(`${what}: the header runs past the frame`);
  let header: unknown;
  try {
    header = JSON.parse(dec.decode(bytes.subarray(4, 4 + n)));
  } catch (err) {
    throw new DecodeFailedError(`${what}: the header is not UTF-8 JSON`, { cause: err });
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header) || !check(header as Record<string, unknown>)) {
    throw new DecodeFailedError(`${what}: a header of the wrong shape`);
  }
  return { header: header as T, body: bytes.subarray(4 + n) };
}

const isToken = (v: unknown): v is string => typeof v === 'string' && /^\d+$/.test(v);
const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** The longest fencing token an update frame carries, in decimal digits (a 64-bit token has at most 20). */
const MAX_TOKEN_DIGITS = 32;
/** An update frame's fixed part: the token's length, the epoch and the seq. */
const UPDATE_FIXED = 1 + 8 + 8;

/**
 * An update's frame. Binary rather than a JSON header: it is on the path of every
 * `update()`, so it is built and read with no text encoding beyond the token's
 * digits. Layout: u8 token length, the token's ASCII digits, f64 epoch, f64 seq
 * (big-endian), then the change's bytes. The returned `data` is the change's bytes
 * inside the frame (a copy of the caller's).
 */
export function frameUpdate(header: UpdateHeader, data: Uint8Array): { frame: Uint8Array; data: Uint8Array } {
  const token = header.primaryToken;
  if (!isToken(token) || token.length > MAX_TOKEN_DIGITS) throw new DecodeFailedError(`update: token ${JSON.stringify(token)} is not a decimal fencing token`);
  const start = 1 + token.length + 16;
  const out = new Uint8Array(start + data.length);
  out[0] = token.length;
  for (let i = 0; i < token.length; i++) out[1 + i] = token.charCodeAt(i);
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  view.setFloat64(1 + token.length, header.epoch);
  view.setFloat64(1 + token.length + 8, header.seq);
  out.set(data, start);
  return { frame: out, data: out.subarray(start) };
}

/** Reads an update frame; DecodeFailedError when it is not one. */
export function unframeUpdate(bytes: Uint8Array): { header: UpdateHeader; body: Uint8Array } {
  const n = bytes.length > 0 ? bytes[0]! : 0;
  if (n === 0 || n > MAX_TOKEN_DIGITS || bytes.length < UPDATE_FIXED + n) throw new DecodeFailedError(`update: a frame of ${bytes.length} bytes with a token of ${n} digits`);
  let token = '';
  for (let i = 1; i <= n; i++) {
    const c = bytes[i]!;
    if (c < 0x30 || c > 0x39) throw new DecodeFailedError('update: the token is not decimal digits');
    token += String.fromCharCode(c);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const epoch = view.getFloat64(1 + n);
  const seq = view.getFloat64(1 + n + 8);
  if (!isCount(epoch) || !isCount(seq) || seq === 0) throw new DecodeFailedError(`update: epoch ${epoch} and seq ${seq} must be whole numbers (seq from 1)`);
  return { header: { primaryToken: token, epoch, seq }, body: bytes.subarray(UPDATE_FIXED + n) };
}


export const isSnapshotRequest = (v: Record<string, unknown>): boolean =>
  isToken(v['backupToken']) && isCount(v['slot']) && typeof v['address'] === 'string' && typeof v['nodeId'] === 'string';
export const isSnapshotHeader = (v: Record<string, unknown>): boolean =>
  isToken(v['primaryToken']) && isCount(v['incarnation']) && isCount(v['seq']) && isCount(v['total']) && typeof v['id'] === 'string';
export const isChunkRequest = (v: Record<string, unknown>): boolean => typeof v['id'] === 'string' && isCount(v['offset']);
