/**
 * One job as the dashboard shows it, kept from the store's changes. Each change
 * decodes its own key only and marks what it touched (a task, a node, a link, the
 * job's header); `takeDelta()` then makes views of the marked things only. So a
 * store event costs O(change), however large the job: a 1,000-task job whose task 7
 * fails over makes a delta with task 7 (and the nodes whose role changed) in it.
 * `snapshot()` is the one O(job) call, made once per new page and after a re-list.
 *
 * What the store does not hold is not invented: the links between tasks are the
 * ones meta notifications travelled on (the topology itself lives in the nodes'
 * code, not in the store), and request rates come only from a RequestRateSource.
 */
import type { Entry, WatchEvent } from '@taskgraph/api';
import { cut, decodeAddr, decodeBackup, decodeCount, decodeEpoch, decodeNode, decodeSpec, decodeStatus, parseJobKey } from './records.js';
import type { AddrRecord, BackupRecord, JobKey, NodeRecord, SpecRecord, StatusRecord } from './records.js';

/** The most events a job keeps (a new page gets these); older ones are dropped. */
export const MAX_EVENTS = 200;
/** The most link types one link lists. */
const MAX_LINK_TYPES = 16;

export interface BackupView {
  readonly slot: number;
  readonly node: string;
  readonly state: 'syncing' | 'ready';
}

export interface TaskView {
  readonly id: number;
  /** The node running the task now (its primary); absent while nobody does. */
  readonly node?: string;
  readonly address?: string;
  /** The running incarnation (the primary's record), else the claim counter. */
  readonly incarnation: number;
  /** How many times the task was claimed (`tasks/<id>/incarnation`). */
  readonly claims: number;
  readonly backups: readonly BackupView[];
  /** Failovers this dashboard saw happen (incarnation changes). */
  readonly failovers: number;
  /** Requests per second, when a RequestRateSource gives it. */
  readonly rate?: number;
}

/** A link between two tasks that a meta notification travelled on. */
export interface EdgeView {
  /** `<low>-<high>`: one link per pair of tasks, whichever way metas went. */
  readonly id: string;
  /** The lower task id. */
  readonly source: number;
  readonly target: number;
  readonly linkTypes: readonly string[];
  /** The last epoch a meta travelled on it in. */
  readonly lastEpoch: number;
}

export interface NodeView {
  /** The id in the node's key (`<job>/nodes/<id>`). */
  readonly id: string;
  readonly address: string;
  readonly host: string;
  readonly pid: number;
  readonly role: 'primary' | 'backup' | 'standby';
}

export type EventKind = 'failover' | 'primary-lost' | 'job-state' | 'job-created' | 'job-deleted';

export interface DashboardEvent {
  readonly id: number;
  /** Wall time the dashboard saw it (ISO 8601). */
  readonly time: string;
  readonly kind: EventKind;
  readonly task?: number;
  readonly incarnation?: number;
  /** The node the task ran on before, if known. */
  readonly from?: string;
  /** The node it runs on now. */
  readonly to?: string;
  /** The new primary was one of the task's backups (a hot promotion). */
  readonly promoted?: boolean;
  /** One line for people. */
  readonly text: string;
}

export type JobState = 'running' | 'done' | 'failed' | 'unknown';

export interface SpecView {
  readonly numTasks: number;
  readonly linkTypes: readonly string[];
  readonly backups: number;
  readonly backupTasks?: readonly number[];
  readonly created: string;
}

export interface RatesInfo {
  /** Whether a RequestRateSource feeds this dashboard (the store has no rates). */
  readonly available: boolean;
  readonly label?: string;
}

export interface JobSnapshot {
  readonly job: string;
  /** The job has a readable spec. */
  readonly exists: boolean;
  readonly spec?: SpecView;
  /** -1 while the store has no readable epoch. */
  readonly epoch: number;
  readonly state: JobState;
  readonly reason?: string;
  readonly tasks: readonly TaskView[];
  readonly edges: readonly EdgeView[];
  readonly nodes: readonly NodeView[];
  readonly events: readonly DashboardEvent[];
  /** [key, message] of each value in the store that could not be read. */
  readonly problems: ReadonlyArray<readonly [string, string]>;
  readonly rates: RatesInfo;
}

/** What changed since the last delta or snapshot. Absent fields did not change. */
export interface JobDelta {
  readonly job: string;
  readonly epoch?: number;
  readonly state?: JobState;
  /** null: the reason went away. */
  readonly reason?: string | null;
  readonly tasks?: readonly TaskView[];
  readonly edges?: readonly EdgeView[];
  readonly nodes?: readonly NodeView[];
  readonly nodesGone?: readonly string[];
  readonly events?: readonly DashboardEvent[];
  readonly problems?: ReadonlyArray<readonly [string, string]>;
  readonly problemsGone?: readonly string[];
}

/** How much view-making the model did: the O(change) claim, counted. */
export interface ModelWork {
  events: number;
  taskViews: number;
  edgeViews: number;
  nodeViews: number;
  snapshots: number;
}

interface TaskRecord {
  addr: AddrRecord | undefined;
  claims: number;
  readonly backups: Map<number, BackupRecord>;
  failovers: number;
  /** The highest incarnation already shown: a higher one arriving is a failover. */
  shownIncarnation: number;
  /** The node of the last primary seen (kept after its record goes). */
  lastNode: string | undefined;
  rate: number | undefined;
}

interface EdgeRecord {
  readonly source: number;
  readonly target: number;
  readonly linkTypes: string[];
  lastEpoch: number;
}

interface Roles {
  primary: number;
  backup: number;
}

export interface JobModelOptions {
  readonly rates?: RatesInfo;
  /** Wall time for events (tests pass a fixed one). */
  readonly now?: () => Date;
}

export class JobModel {
  readonly work: ModelWork = { events: 0, taskViews: 0, edgeViews: 0, nodeViews: 0, snapshots: 0 };
  private spec: SpecRecord | undefined;
  private epoch = -1;
  private status: StatusRecord | undefined;
  private tasks = new Map<number, TaskRecord>();
  private edges = new Map<string, EdgeRecord>();
  private nodes = new Map<string, NodeRecord>();
  private roles = new Map<string, Roles>();
  private problems = new Map<string, string>();
  private events: DashboardEvent[] = [];
  private eventSeq = 0;
  private rates: RatesInfo;
  /** reset() ran once: later resets are re-lists, whose differences are news. */
  private listed = false;
  private readonly now: () => Date;

  // What changed since the last takeDelta().
  private needsSnapshot = false;
  private headerDirty = false;
  private readonly dirtyTasks = new Set<number>();
  private readonly dirtyEdges = new Set<string>();
  private readonly dirtyNodes = new Set<string>();
  private readonly dirtyProblems = new Set<string>();
  private newEvents: DashboardEvent[] = [];

  constructor(
    readonly job: string,
    options: JobModelOptions = {},
  ) {
    this.rates = options.rates ?? { available: false };
    this.now = options.now ?? (() => new Date());
  }

  /**
   * Replaces everything with the job's keys as one list read them. The first time,
   * nothing counts as an event; after that (a re-list after the watch fell behind),
   * a task found in a higher incarnation than shown is reported as a failover. What
   * this dashboard saw before (failover counts, rates, events) is kept.
   */
  reset(entries: readonly Entry[]): void {
    const first = !this.listed;
    this.listed = true;
    const old = this.tasks;
    const hadSpec = this.spec !== undefined;
    this.spec = undefined;
    this.epoch = -1;
    this.status = undefined;
    this.tasks = new Map();
    this.edges = new Map();
    this.nodes = new Map();
    this.roles = new Map();
    this.problems = new Map();
    // The spec first: which tasks exist depends on it.
    for (const e of entries) if (parseJobKey(this.job, e.key).kind === 'spec') this.take(e.key, e.value, false);
    for (const e of entries) {
      const k = parseJobKey(this.job, e.key);
      if (k.kind !== 'spec') this.takeKey(k, e.key, e.value, false);
    }
    for (const [id, rec] of this.tasks) {
      const before = old.get(id);
      const running = rec.addr?.incarnation ?? 0;
      if (before) {
        rec.failovers = before.failovers;
        rec.rate = before.rate;
        rec.lastNode ??= before.lastNode;
        if (!first && rec.addr && running > before.shownIncarnation && before.shownIncarnation > 0) this.failover(id, rec, rec.addr, before.lastNode, before.shownIncarnation);
      }
      rec.shownIncarnation = Math.max(rec.shownIncarnation, running, rec.claims, before?.shownIncarnation ?? 0);
    }
    for (const [id, before] of old) {
      if (!this.tasks.has(id) && (before.failovers > 0 || before.rate !== undefined)) {
        const rec = this.recordOf(id);
        rec.failovers = before.failovers;
        rec.rate = before.rate;
        rec.shownIncarnation = before.shownIncarnation;
        rec.lastNode = before.lastNode;
      }
    }
    if (!first && hadSpec !== (this.spec !== undefined)) this.addEvent({ kind: this.spec ? 'job-created' : 'job-deleted', text: this.spec ? `job ${this.job} created` : `job ${this.job} deleted` });
    this.needsSnapshot = true;
  }

  /** One change of one of the job's keys, seen live. */
  apply(ev: WatchEvent): void {
    this.work.events++;
    this.take(ev.key, ev.type === 'put' ? ev.value : undefined, true);
  }

  /** Rates from a RequestRateSource: undefined clears a task's rate. */
  setRates(rates: Iterable<readonly [task: number, perSecond: number | undefined]>): void {
    for (const [task, rate] of rates) {
      if (!Number.isInteger(task) || task < 0 || task > 1_000_000) continue;
      const value = typeof rate === 'number' && Number.isFinite(rate) && rate >= 0 ? rate : undefined;
      const rec = this.tasks.get(task) ?? (value === undefined ? undefined : this.recordOf(task));
      if (!rec || rec.rate === value) continue;
      rec.rate = value;
      this.dirtyTasks.add(task);
    }
  }

  /** True when a snapshot must go to every page instead of a delta (the job was made, replaced or re-listed). */
  get wantsSnapshot(): boolean {
    return this.needsSnapshot;
  }

  /** True when takeDelta() would return something. */
  get dirty(): boolean {
    return (
      this.needsSnapshot ||
      this.headerDirty ||
      this.dirtyTasks.size > 0 ||
      this.dirtyEdges.size > 0 ||
      this.dirtyNodes.size > 0 ||
      this.dirtyProblems.size > 0 ||
      this.newEvents.length > 0
    );
  }

  /**
   * What changed since the last call, as views of the changed things only
   * (undefined: nothing did). When a snapshot is due, clears the marks and
   * returns 'snapshot': send snapshot() instead.
   */
  takeDelta(): JobDelta | 'snapshot' | undefined {
    if (this.needsSnapshot) {
      this.clearMarks();
      return 'snapshot';
    }
    if (!this.dirty) return undefined;
    const out: {
      -readonly [K in keyof JobDelta]: JobDelta[K];
    } = { job: this.job };
    if (this.headerDirty) {
      out.epoch = this.epoch;
      out.state = this.state();
      out.reason = this.status?.reason ?? null;
    }
    const numTasks = this.spec?.numTasks ?? 0;
    if (this.dirtyTasks.size > 0) {
      const tasks: TaskView[] = [];
      for (const id of this.dirtyTasks) if (id < numTasks) tasks.push(this.taskView(id));
      if (tasks.length > 0) out.tasks = tasks.sort((a, b) => a.id - b.id);
    }
    if (this.dirtyEdges.size > 0) {
      const edges: EdgeView[] = [];
      for (const id of this.dirtyEdges) {
        const e = this.edges.get(id);
        if (e && e.target < numTasks) edges.push(this.edgeView(id, e));
      }
      if (edges.length > 0) out.edges = edges;
    }
    if (this.dirtyNodes.size > 0) {
      const put: NodeView[] = [];
      const gone: string[] = [];
      for (const id of this.dirtyNodes) {
        const n = this.nodes.get(id);
        if (n) put.push(this.nodeView(id, n));
        else gone.push(id);
      }
      if (put.length > 0) out.nodes = put;
      if (gone.length > 0) out.nodesGone = gone;
    }
    if (this.dirtyProblems.size > 0) {
      const put: Array<readonly [string, string]> = [];
      const gone: string[] = [];
      for (const key of this.dirtyProblems) {
        const m = this.problems.get(key);
        if (m === undefined) gone.push(cut(key));
        else put.push([cut(key), m]);
      }
      if (put.length > 0) out.problems = put;
      if (gone.length > 0) out.problemsGone = gone;
    }
    if (this.newEvents.length > 0) out.events = this.newEvents.slice(-MAX_EVENTS);
    this.clearMarks();
    // Marks on things no page shows (a task beyond the job, say) make no delta.
    return Object.keys(out).length > 1 ? out : undefined;
  }

  /** Everything, for a new page (O(job)). Does not clear the marks: pending changes still go out as a delta. */
  snapshot(): JobSnapshot {
    this.work.snapshots++;
    const spec = this.spec;
    const tasks: TaskView[] = [];
    const edges: EdgeView[] = [];
    if (spec) {
      for (let id = 0; id < spec.numTasks; id++) tasks.push(this.taskView(id));
      for (const [id, e] of this.edges) if (e.target < spec.numTasks) edges.push(this.edgeView(id, e));
    }
    const nodes = [...this.nodes].map(([id, n]) => this.nodeView(id, n)).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    return {
      job: this.job,
      exists: spec !== undefined,
      ...(spec ? { spec: specView(spec) } : {}),
      epoch: this.epoch,
      state: this.state(),
      ...(this.status?.reason ? { reason: this.status.reason } : {}),
      tasks,
      edges,
      nodes,
      events: this.events.slice(),
      problems: [...this.problems].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([k, m]) => [cut(k), m] as const),
      rates: this.rates,
    };
  }

  private clearMarks(): void {
    this.needsSnapshot = false;
    this.headerDirty = false;
    this.dirtyTasks.clear();
    this.dirtyEdges.clear();
    this.dirtyNodes.clear();
    this.dirtyProblems.clear();
    this.newEvents = [];
  }

  private state(): JobState {
    return this.status?.state ?? (this.spec ? 'running' : 'unknown');
  }

  private take(key: string, value: Uint8Array | undefined, live: boolean): void {
    this.takeKey(parseJobKey(this.job, key), key, value, live);
  }

  private takeKey(k: JobKey, key: string, value: Uint8Array | undefined, live: boolean): void {
    switch (k.kind) {
      case 'spec': {
        const spec = this.read(key, value, decodeSpec);
        if (sameSpec(spec, this.spec)) return;
        const created = spec !== undefined && this.spec === undefined;
        this.spec = spec;
        if (!live) return;
        this.needsSnapshot = true;
        if (created) this.addEvent({ kind: 'job-created', text: `job ${this.job} created with ${spec.numTasks} task${spec.numTasks === 1 ? '' : 's'}` });
        else if (spec === undefined && value === undefined) this.addEvent({ kind: 'job-deleted', text: `job ${this.job} deleted` });
        return;
      }
      case 'epoch': {
        const epoch = this.read(key, value, decodeEpoch) ?? -1;
        if (epoch !== this.epoch) {
          this.epoch = epoch;
          this.headerDirty = true;
        }
        return;
      }
      case 'status': {
        const before = this.state();
        this.status = this.read(key, value, decodeStatus);
        this.headerDirty = true;
        const after = this.state();
        if (live && after !== before && (after === 'done' || after === 'failed')) {
          this.addEvent({ kind: 'job-state', text: `job ${after}${this.status?.reason ? `: ${this.status.reason}` : ''}` });
        }
        return;
      }
      case 'node': {
        const n = this.read(key, value, decodeNode);
        if (n) this.nodes.set(k.nodeId, n);
        else if (!this.nodes.delete(k.nodeId)) return;
        this.dirtyNodes.add(k.nodeId);
        return;
      }
      case 'addr':
        this.takeAddr(k.task, key, value, live);
        return;
      case 'incarnation': {
        const rec = this.recordOf(k.task);
        rec.claims = this.read(key, value, decodeCount) ?? 0;
        this.dirtyTasks.add(k.task);
        return;
      }
      case 'backup': {
        const rec = this.recordOf(k.task);
        const before = rec.backups.get(k.slot);
        const b = this.read(key, value, decodeBackup);
        this.role(before?.nodeId, 'backup', -1);
        if (b) rec.backups.set(k.slot, b);
        else rec.backups.delete(k.slot);
        this.role(b?.nodeId, 'backup', +1);
        this.dirtyTasks.add(k.task);
        return;
      }
      case 'meta':
        if (value !== undefined) this.takeMeta(k.from, k.to, k.epoch, k.linkType);
        return;
      case 'other':
        return;
    }
  }

  private takeAddr(task: number, key: string, value: Uint8Array | undefined, live: boolean): void {
    const rec = this.recordOf(task);
    const before = rec.addr;
    const addr = this.read(key, value, decodeAddr);
    rec.addr = addr;
    this.role(before?.nodeId, 'primary', -1);
    this.role(addr?.nodeId, 'primary', +1);
    this.dirtyTasks.add(task);
    const inJob = this.spec !== undefined && task < this.spec.numTasks;
    if (addr) {
      if (live && inJob && addr.incarnation > rec.shownIncarnation && addr.incarnation > 1) this.failover(task, rec, addr, rec.lastNode, rec.shownIncarnation);
      rec.shownIncarnation = Math.max(rec.shownIncarnation, addr.incarnation);
      rec.lastNode = addr.nodeId;
    } else if (before && live && inJob && this.state() === 'running') {
      this.addEvent({
        kind: 'primary-lost',
        task,
        incarnation: before.incarnation,
        from: before.nodeId,
        text: `task ${task}: its primary ${before.nodeId} (incarnation ${before.incarnation}) is gone`,
      });
    }
  }

  private failover(task: number, rec: TaskRecord, addr: AddrRecord, from: string | undefined, shown: number): void {
    rec.failovers++;
    let promoted = false;
    for (const b of rec.backups.values()) if (b.nodeId === addr.nodeId) promoted = true;
    const was = shown > 0 ? `${shown} → ` : '';
    this.addEvent({
      kind: 'failover',
      task,
      incarnation: addr.incarnation,
      ...(from === undefined ? {} : { from }),
      to: addr.nodeId,
      promoted,
      text:
        `task ${task} failed over: incarnation ${was}${addr.incarnation}, ` +
        `${from === undefined ? '' : `${from} → `}${addr.nodeId}${promoted ? ' (a backup promoted)' : ''}`,
    });
  }

  private takeMeta(from: number, to: number, epoch: number, linkType: string): void {
    if (from === to) return;
    const source = Math.min(from, to);
    const target = Math.max(from, to);
    if (this.spec && target >= this.spec.numTasks) return;
    const id = `${source}-${target}`;
    let e = this.edges.get(id);
    if (!e) {
      e = { source, target, linkTypes: [], lastEpoch: epoch };
      this.edges.set(id, e);
      this.dirtyEdges.add(id);
    }
    if (!e.linkTypes.includes(linkType) && e.linkTypes.length < MAX_LINK_TYPES) {
      e.linkTypes.push(linkType);
      e.linkTypes.sort();
      this.dirtyEdges.add(id);
    }
    if (epoch > e.lastEpoch) {
      e.lastEpoch = epoch;
      this.dirtyEdges.add(id);
    }
  }

  private addEvent(e: Omit<DashboardEvent, 'id' | 'time'>): void {
    const ev: DashboardEvent = { id: ++this.eventSeq, time: this.now().toISOString(), ...e, text: cut(e.text) };
    this.events.push(ev);
    if (this.events.length > MAX_EVENTS) this.events.splice(0, this.events.length - MAX_EVENTS);
    this.newEvents.push(ev);
  }

  /** Decodes a value; a corrupt one becomes a problem (and undefined); a readable or deleted one clears its problem. */
  private read<T>(key: string, value: Uint8Array | undefined, decode: (key: string, bytes: Uint8Array) => T): T | undefined {
    const had = this.problems.delete(key);
    let out: T | undefined;
    if (value !== undefined) {
      try {
        out = decode(key, value);
      } catch (err) {
        this.problems.set(key, cut((err as Error).message));
      }
    }
    if (had || this.problems.has(key)) this.dirtyProblems.add(key);
    return out;
  }

  private recordOf(task: number): TaskRecord {
    let r = this.tasks.get(task);
    if (!r) {
      r = { addr: undefined, claims: 0, backups: new Map(), failovers: 0, shownIncarnation: 0, lastNode: undefined, rate: undefined };
      this.tasks.set(task, r);
    }
    return r;
  }

  private role(nodeId: string | undefined, kind: keyof Roles, delta: 1 | -1): void {
    if (nodeId === undefined) return;
    let r = this.roles.get(nodeId);
    if (!r) this.roles.set(nodeId, (r = { primary: 0, backup: 0 }));
    r[kind] += delta;
    if (r.primary <= 0 && r.backup <= 0) this.roles.delete(nodeId);
    if (this.nodes.has(nodeId)) this.dirtyNodes.add(nodeId);
  }

  private taskView(id: number): TaskView {
    this.work.taskViews++;
    const r = this.tasks.get(id);
    if (!r) return { id, incarnation: 0, claims: 0, backups: [], failovers: 0 };
    const a = r.addr;
    const backups: BackupView[] = [];
    for (const [slot, b] of r.backups) backups.push({ slot, node: b.nodeId, state: b.state });
    backups.sort((x, y) => x.slot - y.slot);
    return {
      id,
      // Not the fencing token: the page has no use for it, and the data plane keeps it from callers it does not trust.
      ...(a ? { node: a.nodeId, address: a.address } : {}),
      incarnation: a && a.incarnation > 0 ? a.incarnation : r.claims,
      claims: r.claims,
      backups,
      failovers: r.failovers,
      ...(r.rate === undefined ? {} : { rate: r.rate }),
    };
  }

  private edgeView(id: string, e: EdgeRecord): EdgeView {
    this.work.edgeViews++;
    return { id, source: e.source, target: e.target, linkTypes: e.linkTypes.slice(), lastEpoch: e.lastEpoch };
  }

  private nodeView(id: string, n: NodeRecord): NodeView {
    this.work.nodeViews++;
    const r = this.roles.get(id);
    return { id, address: n.address, host: n.host, pid: n.pid, role: r && r.primary > 0 ? 'primary' : r && r.backup > 0 ? 'backup' : 'standby' };
  }
}

function specView(s: SpecRecord): SpecView {
  return {
    numTasks: s.numTasks,
    linkTypes: s.linkTypes,
    backups: s.backups,
    ...(s.backupTasks ? { backupTasks: s.backupTasks } : {}),
    created: s.created,
  };
}

function sameSpec(a: SpecRecord | undefined, b: SpecRecord | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return (
    a.numTasks === b.numTasks &&
    a.backups === b.backups &&
    a.created === b.created &&
    String(a.linkTypes) === String(b.linkTypes) &&
    String(a.backupTasks) === String(b.backupTasks)
  );
}
