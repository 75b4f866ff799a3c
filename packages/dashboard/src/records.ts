/**
 * The job's records in the store, as the dashboard reads them: which key is what,
 * and the decoding of each value. The layout is core's (`packages/core/src/layout.ts`,
 * format 2); core exports the key builders but not its decoders, and the dashboard
 * depends on `@taskgraph/api` only, so the few decoders it needs are here. They are
 * lenient where showing something beats showing nothing, and strict where a value
 * would mislead (a token that is not a number, an incarnation that is not one).
 *
 * Everything read here is untrusted input: strings are cut to a bounded length
 * (they are escaped on the page, never interpreted), numbers are checked.
 */
import { DecodeFailedError } from '@taskgraph/api';

/** The store format this reader knows (core's FORMAT_VERSION). */
export const FORMAT_VERSION = 2;

/** Job names are DNS labels (core's assertValidJobName). */
export const JOB_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** The longest string from the store the dashboard passes on; longer ones are cut. */
export const MAX_TEXT = 256;

export function isJobName(name: unknown): name is string {
  return typeof name === 'string' && JOB_NAME.test(name);
}

/** What one key under `<job>/` is. */
export type JobKey =
  | { readonly kind: 'spec' }
  | { readonly kind: 'epoch' }
  | { readonly kind: 'status' }
  | { readonly kind: 'node'; readonly nodeId: string }
  | { readonly kind: 'addr'; readonly task: number }
  | { readonly kind: 'incarnation'; readonly task: number }
  | { readonly kind: 'backup'; readonly task: number; readonly slot: number }
  | { readonly kind: 'meta'; readonly to: number; readonly epoch: number; readonly from: number; readonly linkType: string }
  | { readonly kind: 'other' };

const OTHER: JobKey = Object.freeze({ kind: 'other' });
const TASK_KEY = /^tasks\/(0|[1-9]\d{0,8})\/(?:(addr|incarnation)|backups\/(0|[1-9]\d{0,3}))$/;
// meta/<to>/<gen>/<epoch>/<from>/<linkType>
const META_KEY = /^meta\/(0|[1-9]\d{0,8})\/\d{1,15}\/(0|[1-9]\d{0,14})\/(0|[1-9]\d{0,8})\/([A-Za-z][A-Za-z0-9_-]{0,63})$/;

/** Parses a key of `job` (the key with `<job>/` still on it). O(length of the key). */
export function parseJobKey(job: string, key: string): JobKey {
  if (key.length <= job.length + 1 || !key.startsWith(job) || key.charCodeAt(job.length) !== 47 /* / */) return OTHER;
  const rest = key.slice(job.length + 1);
  switch (rest) {
    case 'spec':
      return { kind: 'spec' };
    case 'state/epoch':
      return { kind: 'epoch' };
    case 'state/status':
      return { kind: 'status' };
  }
  if (rest.startsWith('nodes/')) {
    const nodeId = rest.slice('nodes/'.length);
    return nodeId === '' || nodeId.includes('/') ? OTHER : { kind: 'node', nodeId: cut(nodeId) };
  }
  if (rest.startsWith('tasks/')) {
    const m = TASK_KEY.exec(rest);
    if (!m) return OTHER;
    const task = Number(m[1]);
    if (m[3] !== undefined) return { kind: 'backup', task, slot: Number(m[3]) };
    return { kind: m[2] as 'addr' | 'incarnation', task };
  }
  if (rest.startsWith('meta/')) {
    const m = META_KEY.exec(rest);
    if (!m) return OTHER;
    return { kind: 'meta', to: Number(m[1]), epoch: Number(m[2]), from: Number(m[3]), linkType: m[4]! };
  }
  return OTHER;
}

export interface SpecRecord {
  readonly formatVersion: number;
  readonly numTasks: number;
  readonly linkTypes: readonly string[];
  readonly backups: number;
  /** The tasks that have backup slots; undefined: every task. */
  readonly backupTasks?: readonly number[];
  readonly created: string;
}

export interface StatusRecord {
  readonly state: 'running' | 'done' | 'failed';
  readonly reason?: string;
}

export interface AddrRecord {
  readonly nodeId: string;
  readonly address: string;
  readonly token: string;
  readonly incarnation: number;
}

export interface BackupRecord {
  readonly nodeId: string;
  readonly address: string;
  readonly token: string;
  readonly slot: number;
  readonly state: 'syncing' | 'ready';
}

export interface NodeRecord {
  readonly nodeId: string;
  readonly address: string;
  readonly host: string;
  readonly pid: number;
  readonly started: string;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Cuts an untrusted string to MAX_TEXT characters. */
export function cut(s: string): string {
  return s.length <= MAX_TEXT ? s : `${s.slice(0, MAX_TEXT - 1)}…`;
}

function corrupt(key: string, what: string, cause?: unknown): DecodeFailedError {
  return new DecodeFailedError(`corrupt value at ${cut(key)}: ${what}`, { details: { key: cut(key) }, ...(cause === undefined ? {} : { cause }) });
}

function text(key: string, bytes: Uint8Array): string {
  try {
    return utf8.decode(bytes);
  } catch (err) {
    throw corrupt(key, 'not UTF-8', err);
  }
}

function json(key: string, bytes: Uint8Array): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(text(key, bytes));
  } catch (err) {
    if (err instanceof DecodeFailedError) throw err;
    throw corrupt(key, 'not JSON', err);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw corrupt(key, 'not a JSON object');
  return v as Record<string, unknown>;
}

const isCount = (v: unknown, max: number): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= max;
const isToken = (v: unknown): v is string => typeof v === 'string' && /^\d{1,40}$/.test(v);
const str = (v: unknown): string => (typeof v === 'string' ? cut(v) : '');

export function decodeSpec(key: string, bytes: Uint8Array): SpecRecord {
  const v = json(key, bytes);
  const { formatVersion, numTasks, linkTypes, backups = 0, backupTasks, created } = v;
  if (formatVersion !== FORMAT_VERSION) throw corrupt(key, `store format ${cut(String(formatVersion))}; this dashboard reads format ${FORMAT_VERSION}`);
  if (!isCount(numTasks, 1_000_000) || numTasks < 1) throw corrupt(key, 'bad numTasks');
  if (!Array.isArray(linkTypes) || linkTypes.length > 64 || !linkTypes.every((l) => typeof l === 'string')) throw corrupt(key, 'bad linkTypes');
  if (!isCount(backups, 16)) throw corrupt(key, 'bad backups');
  const spec: SpecRecord = { formatVersion, numTasks, linkTypes: linkTypes.map((l: string) => cut(l)), backups, created: str(created) };
  if (backupTasks === undefined) return spec;
  if (!Array.isArray(backupTasks) || !backupTasks.every((t) => isCount(t, numTasks - 1))) throw corrupt(key, 'bad backupTasks');
  return { ...spec, backupTasks: backupTasks as number[] };
}

export function decodeEpoch(key: string, bytes: Uint8Array): number {
  const t = text(key, bytes);
  if (!/^(0|[1-9]\d{0,14})$/.test(t)) throw corrupt(key, `epoch ${JSON.stringify(cut(t.slice(0, 40)))} is not a decimal integer`);
  return Number(t);
}

export function decodeStatus(key: string, bytes: Uint8Array): StatusRecord {
  const v = json(key, bytes);
  const state = v['state'];
  if (state !== 'running' && state !== 'done' && state !== 'failed') throw corrupt(key, 'bad job status');
  return typeof v['reason'] === 'string' ? { state, reason: cut(v['reason']) } : { state };
}

export function decodeAddr(key: string, bytes: Uint8Array): AddrRecord {
  const { nodeId, address, token, incarnation } = json(key, bytes);
  if (typeof nodeId !== 'string' || typeof address !== 'string' || !isToken(token)) throw corrupt(key, 'bad task address');
  return { nodeId: cut(nodeId), address: cut(address), token, incarnation: isCount(incarnation, Number.MAX_SAFE_INTEGER) ? incarnation : 0 };
}

export function decodeBackup(key: string, bytes: Uint8Array): BackupRecord {
  const { nodeId, address, token, slot, state } = json(key, bytes);
  if (typeof nodeId !== 'string' || typeof address !== 'string' || !isToken(token) || !isCount(slot, 1024) || (state !== 'syncing' && state !== 'ready')) {
    throw corrupt(key, 'bad backup record');
  }
  return { nodeId: cut(nodeId), address: cut(address), token, slot, state };
}

export function decodeNode(key: string, bytes: Uint8Array): NodeRecord {
  const v = json(key, bytes);
  if (typeof v['nodeId'] !== 'string' || typeof v['address'] !== 'string') throw corrupt(key, 'bad node record');
  return {
    nodeId: cut(v['nodeId']),
    address: cut(v['address']),
    host: str(v['host']),
    pid: isCount(v['pid'], 2 ** 32) ? v['pid'] : 0,
    started: str(v['started']),
  };
}

/** The incarnation counter: how many times the task was claimed (a JSON number). */
export function decodeCount(key: string, bytes: Uint8Array): number {
  const t = text(key, bytes);
  if (!/^(0|[1-9]\d{0,14})$/.test(t.trim())) throw corrupt(key, 'bad counter');
  return Number(t.trim());
}
