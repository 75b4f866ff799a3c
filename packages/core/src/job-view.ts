/**
 * A job's status as the controller shows it, kept from the store's changes: each
 * change decodes only its own key and updates only what that key says (a task's
 * owner, a node, the epoch), and a status is made from what is kept, so a watcher
 * of a job pays O(change) per event, not a re-read of every key. Keys nobody shows
 * (meta, locks' records) cost a prefix check. A status stays valid after later
 * changes: its arrays are replaced, never changed, when something in them changes.
 */
import { DecodeFailedError } from '@taskgraph/api';
import type { Entry, WatchEvent } from '@taskgraph/api';
import { decodeAddr, decodeBackup, decodeCount, decodeEpoch, decodeNode, decodeSpec, decodeStatus, keys, parseTaskKey } from './layout.js';
import type { AddrValue, BackupValue, JobSpec, JobStatusValue, NodeValue } from './layout.js';

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

const byKey = ([a]: readonly [string, unknown], [b]: readonly [string, unknown]): number => (a < b ? -1 : a > b ? 1 : 0);

/** What the store says of one task, decoded. */
interface TaskRecord {
  addr: AddrValue | undefined;
  incarnations: number;
  /** By the slot in the key. */
  readonly backups: Map<number, BackupValue>;
}

export class JobView {
  private readonly specKey: string;
  private readonly epochKey: string;
  private readonly statusKey: string;
  private readonly nodesPrefix: string;
  private readonly tasksPrefix: string;
  /** Every key of the job, whatever it is (a job with keys but no spec is unreadable). */
  private readonly entries = new Map<string, Entry>();
  private spec: JobSpec | undefined;
  private specError: DecodeFailedError | undefined;
  private epoch = -1;
  private state: JobStatusValue = { state: 'running' };
  private readonly records = new Map<number, TaskRecord>();
  private readonly nodes = new Map<string, NodeValue>();
  /** How many primary and backup records name each node: a node with none is a standby. */
  private readonly roles = new Map<string, number>();
  private readonly problems = new Map<string, string>();
  /** Tasks whose TaskState must be made again before the next status. */
  private readonly dirtyTasks = new Set<number>();
  private tasksOut: readonly TaskState[] = [];
  private nodesOut: readonly NodeValue[] | undefined;
  private standbysOut: readonly NodeValue[] | undefined;
  private problemsOut: readonly string[] | undefined;
  private last: JobStatus | undefined;

  constructor(private readonly job: string) {
    this.specKey = keys.spec(job);
    this.epochKey = keys.epoch(job);
    this.statusKey = keys.status(job);
    this.nodesPrefix = keys.nodes(job);
    this.tasksPrefix = keys.tasks(job);
  }

  /** Replaces everything with `entries` (the job's keys read in one list). */
  reset(entries: readonly Entry[]): void {
    this.entries.clear();
    for (const e of entries) this.entries.set(e.key, e);
    this.rebuild();
  }

  /** One change of one of the job's keys. */
  apply(ev: WatchEvent): void {
    if (ev.type === 'put') this.entries.set(ev.key, { key: ev.key, value: ev.value, version: ev.version });
    else if (!this.entries.delete(ev.key)) return;
    if (ev.key === this.specKey) {
      // Rare (a job is made once): everything that depends on its size is read again.
      this.rebuild();
      return;
    }
    this.decode(ev.key, ev.type === 'put' ? ev.value : undefined);
  }

  /**
   * The status now: undefined when the job has no keys at all; a DecodeFailedError
   * when its spec is missing or unreadable while other keys remain. The same object
   * as the last call when nothing it shows has changed since.
   */
  status(): JobStatus | undefined {
    if (!this.spec) {
      if (this.entries.size === 0) return undefined;
      throw (
        this.specError ??
        new DecodeFailedError(
          `job ${this.job} is unreadable: its spec (${this.specKey}) is missing while ${this.entries.size} other key(s) of the job remain; delete the job and run it again`,
          { details: { key: this.specKey } },
        )
      );
    }
    if (this.last && this.dirtyTasks.size === 0 && this.nodesOut && this.standbysOut && this.problemsOut) return this.last;
    const spec = this.spec;
    if (this.dirtyTasks.size > 0) {
      const tasks = this.tasksOut.slice();
      for (const t of this.dirtyTasks) if (t < spec.numTasks) tasks[t] = this.taskState(t);
      this.dirtyTasks.clear();
      this.tasksOut = tasks;
    }
    // In key order, as a list returns them, whatever order they came in.
    const nodes = (this.nodesOut ??= [...this.nodes].sort(byKey).map(([, n]) => n));
    const standbys = (this.standbysOut ??= nodes.filter((n) => !this.roles.has(n.nodeId)));
    const problems = (this.problemsOut ??= [...this.problems].sort(byKey).map(([, m]) => m));
    this.last = {
      job: this.job,
      spec,
      epoch: this.epoch,
      state: this.state.state,
      ...(this.state.reason ? { reason: this.state.reason } : {}),
      tasks: this.tasksOut,
      nodes,
      standbys,
      problems,
    };
    return this.last;
  }

  private rebuild(): void {
    this.spec = undefined;
    this.specError = undefined;
    this.epoch = -1;
    this.state = { state: 'running' };
    this.records.clear();
    this.nodes.clear();
    this.roles.clear();
    this.problems.clear();
    this.dirtyTasks.clear();
    this.invalidate();
    const specEntry = this.entries.get(this.specKey);
    if (specEntry) {
      try {
        this.spec = decodeSpec(specEntry.key, specEntry.value);
      } catch (err) {
        this.specError = new DecodeFailedError(`job ${this.job} is unreadable: ${(err as Error).message}`, { cause: err, details: { key: specEntry.key } });
      }
    }
    const spec = this.spec;
    this.tasksOut = spec ? Array.from({ length: spec.numTasks }, (_, task) => ({ task, incarnations: 0, backups: [] })) : [];
    for (const e of this.entries.values()) if (e.key !== this.specKey) this.decode(e.key, e.value);
  }

  private invalidate(): void {
    this.last = undefined;
    this.nodesOut = undefined;
    this.standbysOut = undefined;
    this.problemsOut = undefined;
  }

  /** Takes in the key's new value (undefined: deleted). */
  private decode(key: string, value: Uint8Array | undefined): void {
    if (key === this.epochKey) {
      const epoch = this.read(key, value, decodeEpoch) ?? -1;
      if (epoch !== this.epoch) this.last = undefined;
      this.epoch = epoch;
    } else if (key === this.statusKey) {
      this.state = this.read(key, value, decodeStatus) ?? { state: 'running' };
      this.last = undefined;
    } else if (key.startsWith(this.tasksPrefix)) {
      const tk = parseTaskKey(this.job, key);
      if (!tk || !this.spec || tk.task >= this.spec.numTasks) return;
      const record = this.recordOf(tk.task);
      if (tk.kind === 'addr') {
        this.countRole(record.addr?.nodeId, -1);
        record.addr = this.read(key, value, decodeAddr);
        this.countRole(record.addr?.nodeId, +1);
      } else if (tk.kind === 'backup') {
        this.countRole(record.backups.get(tk.slot)?.nodeId, -1);
        const b = this.read(key, value, decodeBackup);
        if (b) record.backups.set(tk.slot, b);
        else record.backups.delete(tk.slot);
        this.countRole(b?.nodeId, +1);
      } else {
        record.incarnations = this.read(key, value, decodeCount) ?? 0;
      }
      this.dirtyTasks.add(tk.task);
    } else if (key.startsWith(this.nodesPrefix)) {
      const n = this.read(key, value, decodeNode);
      if (n) this.nodes.set(key, n);
      else this.nodes.delete(key);
      this.nodesOut = undefined;
      this.standbysOut = undefined;
      this.last = undefined;
    }
  }

  /** Decodes a value; a corrupt one becomes a problem (and undefined), a readable or deleted one clears its problem. */
  private read<T>(key: string, value: Uint8Array | undefined, f: (key: string, v: Uint8Array) => T): T | undefined {
    const had = this.problems.delete(key);
    let out: T | undefined;
    if (value) {
      try {
        out = f(key, value);
      } catch (err) {
        this.problems.set(key, (err as Error).message);
      }
    }
    if (had || this.problems.has(key)) {
      this.problemsOut = undefined;
      this.last = undefined;
    }
    return out;
  }

  private recordOf(task: number): TaskRecord {
    let r = this.records.get(task);
    if (!r) this.records.set(task, (r = { addr: undefined, incarnations: 0, backups: new Map() }));
    return r;
  }

  private countRole(nodeId: string | undefined, delta: 1 | -1): void {
    if (nodeId === undefined) return;
    const n = (this.roles.get(nodeId) ?? 0) + delta;
    const was = this.roles.has(nodeId);
    if (n > 0) this.roles.set(nodeId, n);
    else this.roles.delete(nodeId);
    if (was !== n > 0) this.standbysOut = undefined;
  }

  private taskState(task: number): TaskState {
    const r = this.records.get(task);
    if (!r) return { task, incarnations: 0, backups: [] };
    const backups = [...r.backups.values()].sort((a, b) => a.slot - b.slot);
    const a = r.addr;
    return { task, incarnations: r.incarnations, backups, ...(a ? { nodeId: a.nodeId, address: a.address, token: a.token } : {}) };
  }
}
