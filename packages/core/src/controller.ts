/**
 * The controller: creates a job in the store (idempotently), reports and watches
 * its state, waits for it to finish, and removes it.
 */
import { ConflictError, DecodeFailedError, InvalidArgumentError, NotFoundError, TaskGraphError, abortError, systemClock } from '@taskgraph/api';
import type { Clock, Coordinator, Entry, Logger } from '@taskgraph/api';
import { Backoff, sleep } from '@taskgraph/backend-kit';
import {
  FORMAT_VERSION,
  assertValidJobName,
  assertValidLinkType,
  assertValidNumTasks,
  checkBackupTasks,
  MAX_BACKUPS,
  decodeAddr,
  decodeBackup,
  decodeCount,
  decodeEpoch,
  decodeNode,
  decodeSpec,
  decodeStatus,
  encodeEpoch,
  encodeJson,
  keys,
  parseTaskKey,
} from './layout.js';
import type { JobSpec, JobStatusValue, NodeValue } from './layout.js';
import { createLogger } from './logger.js';
import { casUpdate } from './store-ops.js';

export interface JobDefinition {
  readonly numTasks: number;
  readonly linkTypes: readonly string[];
  /** Backups per task (hot standby): 0 (the default) to MAX_BACKUPS. */
  readonly backups?: number;
  /** The tasks that get those backups (default: every task). A master/worker job backs up only its master: `[0]`. */
  readonly backupTasks?: readonly number[];
}

/** A backup of a task, as the store shows it. */
export interface BackupState {
  readonly slot: number;
  readonly nodeId: string;
  readonly address: string;
  /** The backup slot's fencing token. */
  readonly token: string;
  /** `ready` once it holds the state of the primary named by `primaryToken`. */
  readonly state: 'syncing' | 'ready';
  readonly primaryToken?: string;
}

export interface TaskState {
  readonly task: number;
  /** The node running the task now, if any. */
  readonly nodeId?: string;
  readonly address?: string;
  /** The current incarnation's fencing token. */
  readonly token?: string;
  /** How many times the task has been claimed. */
  readonly incarnations: number;
  /** Its live backups, by slot. */
  readonly backups: readonly BackupState[];
}

export interface JobStatus {
  readonly job: string;
  readonly spec: JobSpec;
  readonly epoch: number;
  readonly state: JobStatusValue['state'];
  readonly reason?: string;
  readonly tasks: readonly TaskState[];
  /** Every live node. */
  readonly nodes: readonly NodeValue[];
  /** Live nodes that are neither a primary nor a backup (cold standbys). */
  readonly standbys: readonly NodeValue[];
  /** Values in the store that could not be read (reported, not fatal). */
  readonly problems: readonly string[];
}

export interface ControllerOptions {
  readonly coordinator: Coordinator;
  readonly job: string;
  readonly clock?: Clock;
  readonly logger?: Logger;
}

export class Controller {
  readonly job: string;
  private readonly coordinator: Coordinator;
  private readonly clock: Clock;
  private readonly logger: Logger;

  constructor(options: ControllerOptions) {
    assertValidJobName(options.job);
    this.job = options.job;
    this.coordinator = options.coordinator;
    this.clock = options.clock ?? systemClock;
    this.logger = (options.logger ?? createLogger()).child({ job: this.job, role: 'controller' });
  }

  /**
   * Creates the job. Idempotent: creating an existing job with the same definition
   * succeeds; a different definition is a ConflictError.
   */
  async createJob(def: JobDefinition): Promise<JobSpec> {
    assertValidNumTasks(def?.numTasks);
    if (!Array.isArray(def.linkTypes) || def.linkTypes.length === 0) throw new InvalidArgumentError('linkTypes must be a non-empty array');
    for (const lt of def.linkTypes) assertValidLinkType(lt);
    if (new Set(def.linkTypes).size !== def.linkTypes.length) throw new InvalidArgumentError('linkTypes has duplicates');
    const backups = def.backups ?? 0;
    if (!Number.isInteger(backups) || backups < 0 || backups > MAX_BACKUPS) {
      throw new InvalidArgumentError(`backups must be an integer from 0 to ${MAX_BACKUPS}, got ${String(def.backups)}`);
    }
    const backupTasks = def.backupTasks === undefined ? undefined : checkBackupTasks(def.backupTasks, def.numTasks, 'backupTasks');
    const existing = await this.readSpec();
    if (existing) return this.sameOrConflict(existing, def, backupTasks);
    // The spec goes last: nodes wait for it, so they never see a half-made job.
    await this.createIfMissing(keys.epoch(this.job), encodeEpoch(0));
    await this.createIfMissing(keys.status(this.job), encodeJson({ state: 'running', updated: new Date().toISOString() }));
    const spec: JobSpec = {
      formatVersion: FORMAT_VERSION,
      numTasks: def.numTasks,
      linkTypes: [...def.linkTypes],
      backups,
      ...(backupTasks ? { backupTasks } : {}),
      created: new Date().toISOString(),
    };
    try {
      await this.coordinator.create(keys.spec(this.job), encodeJson(spec));
      this.logger.info('job created', { numTasks: spec.numTasks, linkTypes: spec.linkTypes.join(','), backups, ...(backupTasks ? { backupTasks: backupTasks.join(',') } : {}) });
      return spec;
    } catch (err) {
      if (!TaskGraphError.is(err, 'ALREADY_EXISTS')) throw err;
      const raced = await this.readSpec();
      if (!raced) throw err;
      return this.sameOrConflict(raced, def, backupTasks);
    }
  }

  /** The job's state now, or undefined when there is no such job. */
  async status(): Promise<JobStatus | undefined> {
    const { entries } = await this.coordinator.list(keys.job(this.job));
    return this.build(entries);
  }

  /** Emits the job's state on every change, until the signal aborts or the job is deleted. */
  async *watch(signal: AbortSignal): AsyncIterable<JobStatus> {
    const state = new Map<string, Entry>();
    const backoff = new Backoff(50, 2000);
    let after: string | undefined;
    while (!signal.aborted) {
      try {
        if (after === undefined) {
          const snap = await this.coordinator.list(keys.job(this.job));
          state.clear();
          for (const e of snap.entries) state.set(e.key, e);
          after = snap.revision;
          const s = this.build([...state.values()]);
          if (!s) return;
          yield s;
        }
        for await (const batch of this.coordinator.watch(keys.job(this.job), { after, signal })) {
          for (const ev of batch.events) {
            if (ev.type === 'put') state.set(ev.key, { key: ev.key, value: ev.value, version: ev.version });
            else state.delete(ev.key);
          }
          after = batch.revision;
          const s = this.build([...state.values()]);
          if (!s) return;
          yield s;
        }
      } catch (err) {
        if (signal.aborted) return;
        if (TaskGraphError.is(err, 'COMPACTED')) after = undefined;
        else if (!TaskGraphError.is(err) || !err.retryable) throw err;
        await sleep(this.clock, backoff.next(), signal).catch(() => undefined);
      }
    }
  }

  /** Resolves with the final state once the job is done or failed. */
  async waitUntilDone(signal?: AbortSignal): Promise<JobStatus> {
    const ctrl = new AbortController();
    const onAbort = () => ctrl.abort(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      for await (const s of this.watch(ctrl.signal)) {
        if (s.state !== 'running') return s;
      }
      if (signal?.aborted) throw abortError(signal, 'waitUntilDone');
      throw new NotFoundError(`job ${this.job} was deleted before it finished`);
    } finally {
      ctrl.abort();
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Marks the job done or failed: every node calls exit() and stops. */
  async finish(state: 'done' | 'failed' = 'done', reason?: string, signal: AbortSignal = new AbortController().signal): Promise<void> {
    const value = encodeJson({ state, updated: new Date().toISOString(), ...(reason ? { reason } : {}) });
    await casUpdate(this.coordinator, keys.status(this.job), () => value, { clock: this.clock, signal });
  }

  /** Removes every key of the job. Nodes still running see their job vanish and their writes fail. */
  async destroy(): Promise<void> {
    await this.coordinator.deletePrefix(keys.job(this.job));
    this.logger.info('job destroyed');
  }

  private async readSpec(): Promise<JobSpec | undefined> {
    const e = await this.coordinator.get(keys.spec(this.job));
    return e ? decodeSpec(e.key, e.value) : undefined;
  }

  private sameOrConflict(existing: JobSpec, def: JobDefinition, backupTasks: readonly number[] | undefined): JobSpec {
    const same =
      existing.numTasks === def.numTasks &&
      existing.backups === (def.backups ?? 0) &&
      String(existing.backupTasks) === String(backupTasks) &&
      existing.linkTypes.length === def.linkTypes.length &&
      existing.linkTypes.every((l, i) => l === def.linkTypes[i]);
    if (!same) {
      throw new ConflictError(
        `job ${this.job} already exists with numTasks=${existing.numTasks} linkTypes=${existing.linkTypes.join(',')} backups=${existing.backups}; ` +
          `delete it first or choose another name`,
        { details: { numTasks: existing.numTasks, linkTypes: existing.linkTypes, backups: existing.backups } },
      );
    }
    return existing;
  }

  private async createIfMissing(key: string, value: Uint8Array): Promise<void> {
    try {
      await this.coordinator.create(key, value);
    } catch (err) {
      if (!TaskGraphError.is(err, 'ALREADY_EXISTS')) throw err;
    }
  }

  private build(entries: readonly Entry[]): JobStatus | undefined {
    const problems: string[] = [];
    const get = (k: string) => entries.find((e) => e.key === k);
    const specEntry = get(keys.spec(this.job));
    if (!specEntry) {
      if (entries.length === 0) return undefined;
      // Something of the job is there but not its spec: deleted behind the job's back (or a delete half done).
      throw new DecodeFailedError(
        `job ${this.job} is unreadable: its spec (${keys.spec(this.job)}) is missing while ${entries.length} other key(s) of the job remain; delete the job and run it again`,
        { details: { key: keys.spec(this.job) } },
      );
    }
    let spec: JobSpec;
    try {
      spec = decodeSpec(specEntry.key, specEntry.value);
    } catch (err) {
      throw new DecodeFailedError(`job ${this.job} is unreadable: ${(err as Error).message}`, { cause: err, details: { key: specEntry.key } });
    }
    let epoch = -1;
    let state: JobStatusValue = { state: 'running' };
    const read = <T>(k: string, f: (key: string, v: Uint8Array) => T): T | undefined => {
      const e = get(k);
      if (!e) return undefined;
      try {
        return f(e.key, e.value);
      } catch (err) {
        problems.push((err as Error).message);
        return undefined;
      }
    };
    epoch = read(keys.epoch(this.job), decodeEpoch) ?? epoch;
    state = read(keys.status(this.job), decodeStatus) ?? state;
    const tasks: Array<{ -readonly [K in keyof TaskState]: TaskState[K] } & { backups: BackupState[] }> = [];
    for (let i = 0; i < spec.numTasks; i++) tasks.push({ task: i, incarnations: 0, backups: [] });
    const nodes: NodeValue[] = [];
    for (const e of entries) {
      const tk = parseTaskKey(this.job, e.key);
      if (tk && tk.task < spec.numTasks) {
        const t = tasks[tk.task]!;
        if (tk.kind === 'addr') {
          const a = read(e.key, decodeAddr);
          if (a) Object.assign(t, { nodeId: a.nodeId, address: a.address, token: a.token });
        } else if (tk.kind === 'backup') {
          const b = read(e.key, decodeBackup);
          if (b) t.backups.push(b);
        } else {
          t.incarnations = read(e.key, decodeCount) ?? t.incarnations;
        }
      } else if (e.key.startsWith(keys.nodes(this.job))) {
        const n = read(e.key, decodeNode);
        if (n) nodes.push(n);
      }
    }
    for (const t of tasks) t.backups.sort((a, b) => a.slot - b.slot);
    const busy = new Set(tasks.flatMap((t) => [t.nodeId, ...t.backups.map((b) => b.nodeId)]).filter((x): x is string => x !== undefined));
    return {
      job: this.job,
      spec,
      epoch,
      state: state.state,
      ...(state.reason ? { reason: state.reason } : {}),
      tasks,
      nodes,
      standbys: nodes.filter((n) => !busy.has(n.nodeId)),
      problems,
    };
  }
}

export function createController(options: ControllerOptions): Controller {
  return new Controller(options);
}
