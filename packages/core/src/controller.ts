/**
 * The controller: creates a job in the store (idempotently), reports and watches
 * its state, waits for it to finish, and removes it.
 */
import { abortError, ConflictError, InvalidArgumentError, NotFoundError, randomOf, systemClock, TaskGraphError, wallNow } from '@taskgraph/api';
import type { Clock, Coordinator, Logger } from '@taskgraph/api';
import { Backoff, sleep } from '@taskgraph/backend-kit';
import {
  FORMAT_VERSION,
  assertValidJobName,
  assertValidLinkType,
  assertValidNumTasks,
  checkBackupTasks,
  MAX_BACKUPS,
  decodeSpec,
  encodeEpoch,
  encodeJson,
  keys,
} from './layout.js';
import type { JobSpec } from './layout.js';
import { JobView } from './job-view.js';
import type { JobStatus } from './job-view.js';
import { createLogger } from './logger.js';
import { casUpdate } from './store-ops.js';

export type { BackupState, JobStatus, TaskState } from './job-view.js';

export interface JobDefinition {
  readonly numTasks: number;
  readonly linkTypes: readonly string[];
  /** Backups per task (hot standby): 0 (the default) to MAX_BACKUPS. */
  readonly backups?: number;
  /** The tasks that get those backups (default: every task). A master/worker job backs up only its master: `[0]`. */
  readonly backupTasks?: readonly number[];
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
    await this.createIfMissing(keys.status(this.job), encodeJson({ state: 'running', updated: new Date(wallNow(this.clock)).toISOString() }));
    const spec: JobSpec = {
      formatVersion: FORMAT_VERSION,
      numTasks: def.numTasks,
      linkTypes: [...def.linkTypes],
      backups,
      ...(backupTasks ? { backupTasks } : {}),
      created: new Date(wallNow(this.clock)).toISOString(),
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
    const view = new JobView(this.job);
    view.reset(entries);
    return view.status();
  }

  /**
   * Emits the job's state whenever it changes, until the signal aborts or the job is
   * deleted. Each store change costs what that change says (see JobView); changes
   * that show nowhere in the status (meta, say) emit nothing.
   */
  async *watch(signal: AbortSignal): AsyncIterable<JobStatus> {
    const view = new JobView(this.job);
    const backoff = new Backoff(50, 2000, randomOf(this.clock));
    let after: string | undefined;
    let emitted: JobStatus | undefined;
    while (!signal.aborted) {
      try {
        if (after === undefined) {
          const snap = await this.coordinator.list(keys.job(this.job));
          view.reset(snap.entries);
          after = snap.revision;
          const s = view.status();
          if (!s) return;
          emitted = s;
          yield s;
        }
        for await (const batch of this.coordinator.watch(keys.job(this.job), { after, signal })) {
          for (const ev of batch.events) view.apply(ev);
          after = batch.revision;
          const s = view.status();
          if (!s) return;
          if (s === emitted) continue;
          emitted = s;
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
    const value = encodeJson({ state, updated: new Date(wallNow(this.clock)).toISOString(), ...(reason ? { reason } : {}) });
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
}

export function createController(options: ControllerOptions): Controller {
  return new Controller(options);
}

/** Characters a job name may start with: a store list needs a non-empty prefix. */
const JOB_FIRST_CHARS = 'abcdefghijklmnopqrstuvwxyz0123456789';
const SPEC_KEY = /^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)\/spec$/;

/**
 * The names of the jobs in the store (those with a spec), sorted. Reads every key under
 * each possible first character of a job name, so its cost is the store's size: for
 * tools and people, not for a node's hot path.
 */
export async function listJobs(coordinator: Coordinator): Promise<string[]> {
  const jobs: string[] = [];
  for (const c of JOB_FIRST_CHARS) {
    const { entries } = await coordinator.list(c);
    for (const e of entries) {
      const m = SPEC_KEY.exec(e.key);
      if (m) jobs.push(m[1] as string);
    }
  }
  return jobs.sort();
}
