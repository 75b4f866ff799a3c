/**
 * The job's layout in the coordination store, and the (de)serialisation of every
 * value core writes there. A corrupt value is reported as DecodeFailedError naming
 * its key, never a crash.
 *
 *   <job>/spec                                 {formatVersion, numTasks, linkTypes, backups, backupTasks?, created}
 *   <job>/state/epoch                          decimal epoch, advanced by compare-and-set
 *   <job>/state/status                         {state: running|done|failed, reason?}
 *   <job>/nodes/<nodeId>                       ephemeral {address, pid, host, started}
 *   <job>/tasks/<id>/addr                      ephemeral {nodeId, address, token, incarnation}: the primary
 *   <job>/tasks/<id>/incarnation               how many times the task was claimed
 *   <job>/tasks/<id>/backups/<slot>            ephemeral {nodeId, address, token, slot, state, primaryToken?}: a backup
 *   <job>/meta/<to>/<gen>/<epoch>/<from>/<linkType>
 *                                              ephemeral (sender's session) {token, metas: [...]};
 *                                              gen = floor(epoch / META_GENERATION_EPOCHS)
 *   lock <job>/tasks/<id>                      held by the task's primary; token = fencing token
 *   lock <job>/tasks/<id>/backup-slot/<slot>   held by one backup of the task (slots 0..backups-1)
 *
 * `epoch` and `status` live under `state/` and meta is keyed by receiver first, so a
 * node watches exactly what concerns it: `state/`, `tasks/` and its own `meta/<id>/`.
 * Meta records are grouped in generations of META_GENERATION_EPOCHS epochs so that a
 * receiver clears its old ones with one prefix delete per generation rather than one
 * per epoch (format 2; format 1 had no generation level).
 */
import { DecodeFailedError, InvalidArgumentError } from '@taskgraph/api';

export const FORMAT_VERSION = 2;

/**
 * Epochs per meta generation. A receiver deletes its metas one whole generation at a
 * time, once the epoch has left it: 1/16 of a store write per task per epoch, and at
 * most two generations (32 epochs) of metas in the store per receiver.
 */
export const META_GENERATION_EPOCHS = 16;

/** The meta generation `epoch` belongs to. */
export function metaGeneration(epoch: number): number {
  return Math.floor(epoch / META_GENERATION_EPOCHS);
}

const JOB_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const LINK_TYPE = /^[A-Za-z][A-Za-z0-9_-]{0,63}$/;
const NODE_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/** Job names are DNS labels, so they are valid in every backend (and as Kubernetes labels). */
export function assertValidJobName(job: unknown): asserts job is string {
  if (typeof job !== 'string' || !JOB_NAME.test(job)) {
    throw new InvalidArgumentError(
      `job name ${JSON.stringify(job)} is invalid: use 1-63 lowercase letters, digits and "-", starting and ending with a letter or digit`,
    );
  }
}

export function assertValidLinkType(linkType: unknown): asserts linkType is string {
  if (typeof linkType !== 'string' || !LINK_TYPE.test(linkType)) {
    throw new InvalidArgumentError(
      `link type ${JSON.stringify(linkType)} is invalid: use 1-64 letters, digits, "_" and "-", starting with a letter`,
    );
  }
}

export function assertValidNodeId(nodeId: unknown): asserts nodeId is string {
  if (typeof nodeId !== 'string' || !NODE_ID.test(nodeId)) {
    throw new InvalidArgumentError(`node id ${JSON.stringify(nodeId)} is invalid: use letters, digits, ".", "_" and "-" (at most 128)`);
  }
}

export function assertValidNumTasks(n: unknown): asserts n is number {
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 1_000_000) {
    throw new InvalidArgumentError(`numTasks must be an integer from 1 to 1000000, got ${String(n)}`);
  }
}

export const keys = {
  job: (job: string) => `${job}/`,
  spec: (job: string) => `${job}/spec`,
  state: (job: string) => `${job}/state/`,
  epoch: (job: string) => `${job}/state/epoch`,
  status: (job: string) => `${job}/state/status`,
  nodes: (job: string) => `${job}/nodes/`,
  node: (job: string, nodeId: string) => `${job}/nodes/${nodeId}`,
  tasks: (job: string) => `${job}/tasks/`,
  addr: (job: string, task: number) => `${job}/tasks/${task}/addr`,
  incarnation: (job: string, task: number) => `${job}/tasks/${task}/incarnation`,
  taskLock: (job: string, task: number) => `${job}/tasks/${task}`,
  backupLock: (job: string, task: number, slot: number) => `${job}/tasks/${task}/backup-slot/${slot}`,
  backups: (job: string, task: number) => `${job}/tasks/${task}/backups/`,
  backup: (job: string, task: number, slot: number) => `${job}/tasks/${task}/backups/${slot}`,
  metaFor: (job: string, to: number) => `${job}/meta/${to}/`,
  metaGeneration: (job: string, to: number, generation: number) => `${job}/meta/${to}/${generation}/`,
  meta: (job: string, to: number, epoch: number, from: number, linkType: string) =>
    `${job}/meta/${to}/${metaGeneration(epoch)}/${epoch}/${from}/${linkType}`,
};

/** What a key under `<job>/tasks/` is. */
export type TaskKey = { kind: 'addr' | 'incarnation'; task: number } | { kind: 'backup'; task: number; slot: number } | undefined;

export function parseTaskKey(job: string, key: string): TaskKey {
  const prefix = keys.tasks(job);
  if (!key.startsWith(prefix)) return undefined;
  const m = /^(\d+)\/(?:(addr|incarnation)|backups\/(\d+))$/.exec(key.slice(prefix.length));
  if (!m) return undefined;
  if (m[3] !== undefined) return { kind: 'backup', task: Number(m[1]), slot: Number(m[3]) };
  return { kind: m[2] as 'addr' | 'incarnation', task: Number(m[1]) };
}

export interface MetaKey {
  readonly to: number;
  readonly epoch: number;
  readonly from: number;
  readonly linkType: string;
}

export function parseMetaKey(job: string, key: string): MetaKey | undefined {
  const prefix = `${job}/meta/`;
  if (!key.startsWith(prefix)) return undefined;
  const m = /^(\d+)\/(\d+)\/(\d+)\/(\d+)\/([A-Za-z][A-Za-z0-9_-]*)$/.exec(key.slice(prefix.length));
  if (!m) return undefined;
  const epoch = Number(m[3]);
  // A record filed under the wrong generation would escape its generation's delete.
  if (Number(m[2]) !== metaGeneration(epoch)) return undefined;
  return { to: Number(m[1]), epoch, from: Number(m[4]), linkType: m[5]! };
}

export interface JobSpec {
  readonly formatVersion: number;
  readonly numTasks: number;
  readonly linkTypes: readonly string[];
  /** Backup slots per task (hot standby); 0 when the spec has none. */
  readonly backups: number;
  /** The tasks that have those backup slots, sorted; absent: every task (a master/worker job backs up its master only). */
  readonly backupTasks?: readonly number[];
  readonly created: string;
}

/** The backup slots of `task` under `spec`. */
export function backupSlotsOf(spec: Pick<JobSpec, 'backups' | 'backupTasks'>, task: number): number {
  if (spec.backups === 0) return 0;
  return spec.backupTasks === undefined || spec.backupTasks.includes(task) ? spec.backups : 0;
}

/** Checks a list of backed-up tasks against the job's size; returns it sorted. */
export function checkBackupTasks(tasks: unknown, numTasks: number, what: string): number[] {
  if (!Array.isArray(tasks) || tasks.length === 0) throw new InvalidArgumentError(`${what} must be a non-empty array of task ids`);
  for (const t of tasks) {
    if (typeof t !== 'number' || !Number.isInteger(t) || t < 0 || t >= numTasks) throw new InvalidArgumentError(`${what}: task ${String(t)} does not exist (tasks are 0..${numTasks - 1})`);
  }
  const sorted = [...new Set(tasks as number[])].sort((a, b) => a - b);
  if (sorted.length !== tasks.length) throw new InvalidArgumentError(`${what} has duplicates`);
  return sorted;
}

/** The most backups a task may have. */
export const MAX_BACKUPS = 16;

export interface JobStatusValue {
  readonly state: 'running' | 'done' | 'failed';
  readonly reason?: string;
  readonly updated?: string;
}

export interface AddrValue {
  readonly nodeId: string;
  readonly address: string;
  readonly token: string;
  readonly incarnation: number;
}

export type BackupState = 'syncing' | 'ready';

/** A backup's record: where it is, its slot token, and whether it holds the primary's state. */
export interface BackupValue {
  readonly nodeId: string;
  readonly address: string;
  /** The backup slot's fencing token. */
  readonly token: string;
  readonly slot: number;
  /** `ready` once it holds the state of the primary named by `primaryToken`. */
  readonly state: BackupState;
  readonly primaryToken?: string;
}

export interface NodeValue {
  readonly nodeId: string;
  readonly address: string;
  readonly pid: number;
  readonly host: string;
  readonly started: string;
}

export interface MetaValue {
  readonly token: string;
  readonly metas: readonly string[];
}

const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true });

export function encodeJson(value: unknown): Uint8Array {
  return enc.encode(JSON.stringify(value));
}

function parse(key: string, bytes: Uint8Array): unknown {
  return parseText(key, utf8(key, bytes));
}

function utf8(key: string, bytes: Uint8Array): string {
  try {
    return dec.decode(bytes);
  } catch (err) {
    throw new DecodeFailedError(`corrupt value at ${key}: not UTF-8 JSON`, { cause: err, details: { key } });
  }
}

function parseText(key: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new DecodeFailedError(`corrupt value at ${key}: not UTF-8 JSON`, { cause: err, details: { key } });
  }
}

/** How many decoded records a memo keeps before it starts over. */
const MEMO_LIMIT = 8192;

/**
 * Decodes the records every node of a process reads alike (each node's address book
 * reads every task's address and backup records, so N nodes decode each one N
 * times): the same text is parsed and checked once, and the frozen result shared.
 * Only readable values are kept; a corrupt one is reported afresh each time.
 */
function memoized<T extends object>(check: (key: string, value: unknown) => T): (key: string, bytes: Uint8Array) => T {
  let memo = new Map<string, T>();
  return (key, bytes) => {
    const text = utf8(key, bytes);
    const hit = memo.get(text);
    if (hit) return hit;
    const out = Object.freeze(check(key, parseText(key, text)));
    if (memo.size >= MEMO_LIMIT) memo = new Map();
    memo.set(text, out);
    return out;
  };
}

function corrupt(key: string, what: string): DecodeFailedError {
  return new DecodeFailedError(`corrupt value at ${key}: ${what}`, { details: { key } });
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

export function decodeSpec(key: string, bytes: Uint8Array): JobSpec {
  const v = parse(key, bytes);
  if (!isObj(v)) throw corrupt(key, 'not an object');
  const { formatVersion, numTasks, linkTypes, created, backups = 0 } = v;
  if (formatVersion !== FORMAT_VERSION) throw corrupt(key, `unsupported formatVersion ${String(formatVersion)} (this runtime reads ${FORMAT_VERSION})`);
  if (typeof numTasks !== 'number' || !Number.isInteger(numTasks) || numTasks < 1) throw corrupt(key, 'bad numTasks');
  if (!Array.isArray(linkTypes) || !linkTypes.every((l) => typeof l === 'string')) throw corrupt(key, 'bad linkTypes');
  if (typeof backups !== 'number' || !Number.isInteger(backups) || backups < 0 || backups > MAX_BACKUPS) throw corrupt(key, 'bad backups');
  const spec: JobSpec = { formatVersion, numTasks, linkTypes: linkTypes as string[], backups, created: typeof created === 'string' ? created : '' };
  if (v['backupTasks'] === undefined) return spec;
  try {
    return { ...spec, backupTasks: checkBackupTasks(v['backupTasks'], numTasks, 'backupTasks') };
  } catch {
    throw corrupt(key, 'bad backupTasks');
  }
}

export function decodeEpoch(key: string, bytes: Uint8Array): number {
  let text: string;
  try {
    text = dec.decode(bytes);
  } catch (err) {
    throw new DecodeFailedError(`corrupt value at ${key}: not UTF-8`, { cause: err, details: { key } });
  }
  if (!/^(0|[1-9]\d{0,14})$/.test(text)) throw corrupt(key, `epoch ${JSON.stringify(text.slice(0, 40))} is not a decimal integer`);
  return Number(text);
}

export function encodeEpoch(epoch: number): Uint8Array {
  return enc.encode(String(epoch));
}

export function decodeStatus(key: string, bytes: Uint8Array): JobStatusValue {
  const v = parse(key, bytes);
  if (!isObj(v) || (v['state'] !== 'running' && v['state'] !== 'done' && v['state'] !== 'failed')) throw corrupt(key, 'bad job status');
  const out: JobStatusValue = { state: v['state'] };
  return typeof v['reason'] === 'string' ? { ...out, reason: v['reason'] } : out;
}

export const decodeAddr: (key: string, bytes: Uint8Array) => AddrValue = memoized((key, v): AddrValue => {
  if (!isObj(v)) throw corrupt(key, 'not an object');
  const { nodeId, address, token, incarnation } = v;
  if (typeof nodeId !== 'string' || typeof address !== 'string' || typeof token !== 'string' || !/^\d+$/.test(token)) {
    throw corrupt(key, 'bad task address');
  }
  return { nodeId, address, token, incarnation: typeof incarnation === 'number' ? incarnation : 0 };
});

export const decodeBackup: (key: string, bytes: Uint8Array) => BackupValue = memoized((key, v): BackupValue => {
  if (!isObj(v)) throw corrupt(key, 'not an object');
  const { nodeId, address, token, slot, state, primaryToken } = v;
  if (typeof nodeId !== 'string' || typeof address !== 'string' || typeof token !== 'string' || !/^\d+$/.test(token)) throw corrupt(key, 'bad backup record');
  if (typeof slot !== 'number' || !Number.isInteger(slot) || slot < 0 || (state !== 'syncing' && state !== 'ready')) throw corrupt(key, 'bad backup record');
  if (primaryToken !== undefined && (typeof primaryToken !== 'string' || !/^\d+$/.test(primaryToken))) throw corrupt(key, 'bad backup record');
  return { nodeId, address, token, slot, state, ...(primaryToken === undefined ? {} : { primaryToken }) };
});

export function decodeNode(key: string, bytes: Uint8Array): NodeValue {
  const v = parse(key, bytes);
  if (!isObj(v) || typeof v['nodeId'] !== 'string' || typeof v['address'] !== 'string') throw corrupt(key, 'bad node record');
  return {
    nodeId: v['nodeId'],
    address: v['address'],
    pid: typeof v['pid'] === 'number' ? v['pid'] : 0,
    host: typeof v['host'] === 'string' ? v['host'] : '',
    started: typeof v['started'] === 'string' ? v['started'] : '',
  };
}

export function decodeMeta(key: string, bytes: Uint8Array): MetaValue {
  const v = parse(key, bytes);
  if (!isObj(v) || typeof v['token'] !== 'string' || !/^\d+$/.test(v['token']) || !Array.isArray(v['metas']) || !v['metas'].every((m) => typeof m === 'string')) {
    throw corrupt(key, 'bad meta record');
  }
  return { token: v['token'], metas: v['metas'] as string[] };
}

export function decodeCount(key: string, bytes: Uint8Array): number {
  const v = parse(key, bytes);
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw corrupt(key, 'bad counter');
  return v;
}
