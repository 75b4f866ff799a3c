/**
 * `taskgraph job create | list | status | watch | delete`: the controller from the
 * command line, with `-o table|wide|json|yaml` on the read commands.
 */
import { InvalidArgumentError, NotFoundError } from '@taskgraph/api';
import { createController, listJobs, resolveCoordinator } from '@taskgraph/core';
import type { Controller, JobSpec, JobStatus } from '@taskgraph/core';
import { stringify as yaml } from 'yaml';
import type { CliConfig } from '../config.js';
import { loadApp } from '../app-loader.js';
import { jobSize } from './run.js';
import { loadPlugins } from '../plugins.js';
import { redactor, scrubbedLogger } from '../secrets.js';
import { CLEAR_SCREEN, paint, PLAIN, type Terminal } from '../terminal.js';

export const OUTPUT_FORMATS = ['table', 'wide', 'json', 'yaml'] as const;
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

export interface JobCommandOptions {
  readonly action: string;
  /** The job's name (empty for `list`). */
  readonly job: string;
  readonly config: CliConfig;
  readonly tasks?: number;
  /** For a master/worker application (`--app`): its workers. */
  readonly workers?: number;
  readonly backups?: number;
  readonly linkTypes?: readonly string[];
  readonly app?: string;
  /** How read commands print (default `table`). */
  readonly output?: OutputFormat;
  readonly out?: (line: string) => void;
  readonly signal?: AbortSignal;
  /** A terminal redraws `watch` in place and colours; default plain lines. */
  readonly terminal?: Terminal;
}

/** Failovers so far: claims of each task after its first. */
function failoversOf(s: JobStatus): number {
  return s.tasks.reduce((n, t) => n + Math.max(0, t.incarnations - 1), 0);
}

function stateText(s: JobStatus, t: Terminal): string {
  const style = s.state === 'done' ? 'green' : s.state === 'running' ? 'yellow' : 'red';
  return paint(t, style, `${s.state}${s.reason ? ` (${s.reason})` : ''}`);
}

/**
 * A job's status as a table: `wide` adds each node's address and fencing token.
 */
export function formatStatus(s: JobStatus, wide = false, t: Terminal = PLAIN): string {
  const lines = [
    `job ${s.job}: ${stateText(s, t)}, epoch ${s.epoch}, ${s.spec.numTasks} tasks` +
      `${s.spec.backups ? `, ${backupsText(s.spec)}` : ''}, link types ${s.spec.linkTypes.join(', ')}, ${failoversOf(s)} failover(s)`,
  ];
  const row = (task: string, role: string, node: string, address: string, token: string, last: string) =>
    wide ? `${task.padEnd(5)} ${role.padEnd(12)} ${node.padEnd(25)} ${address.padEnd(26)} ${token.padEnd(11)} ${last}` : `${task.padEnd(5)} ${role.padEnd(12)} ${node.padEnd(25)} ${last}`;
  lines.push(row('task', 'role', 'node', 'address', 'token', 'incarnations'));
  for (const task of s.tasks) {
    const incarnations = task.incarnations > 1 ? paint(t, 'cyan', String(task.incarnations)) : String(task.incarnations);
    lines.push(row(String(task.task), 'primary', task.nodeId ?? '-', task.address ?? '-', task.token ?? '-', incarnations));
    for (const b of task.backups) lines.push(row('', `backup ${b.slot}`, b.nodeId, b.address, b.token, b.state));
  }
  lines.push(`nodes: ${s.nodes.length} live, ${s.standbys.length} standby${s.standbys.length ? ` (${s.standbys.map((n) => n.nodeId).join(', ')})` : ''}`);
  for (const p of s.problems) lines.push(paint(t, 'red', `problem: ${p}`));
  return lines.join('\n');
}

/** A status in an output format. */
export function renderStatus(s: JobStatus, format: OutputFormat, t: Terminal = PLAIN): string {
  switch (format) {
    case 'json':
      return JSON.stringify(s);
    case 'yaml':
      return yaml(s).trimEnd();
    default:
      return formatStatus(s, format === 'wide', t);
  }
}

/**
 * What changed from one status to the next, one line per change: the epoch, the
 * state, each task's owner (a failover names the old and new node and the
 * incarnation), each backup, the live nodes and standbys. Empty when nothing shown changed.
 */
export function describeChanges(before: JobStatus, after: JobStatus): string[] {
  const lines: string[] = [];
  if (after.state !== before.state) lines.push(`state ${before.state} -> ${after.state}${after.reason ? ` (${after.reason})` : ''}`);
  if (after.epoch !== before.epoch) lines.push(`epoch ${before.epoch} -> ${after.epoch}`);
  const old = new Map(before.tasks.map((t) => [t.task, t]));
  for (const t of after.tasks) {
    const was = old.get(t.task);
    if (was === undefined) continue;
    if (t.incarnations !== was.incarnations) {
      lines.push(
        was.nodeId !== undefined || t.incarnations > 1
          ? `task ${t.task}: failover ${was.nodeId ?? '(none)'} -> ${t.nodeId ?? '(none)'}, incarnation ${t.incarnations}`
          : `task ${t.task}: claimed by ${t.nodeId ?? '(none)'}, incarnation ${t.incarnations}`,
      );
    } else if (t.nodeId !== was.nodeId) {
      lines.push(t.nodeId === undefined ? `task ${t.task}: ${was.nodeId ?? '(none)'} left` : `task ${t.task}: now at ${t.nodeId}`);
    }
    const oldBackups = new Map(was.backups.map((b) => [b.slot, b]));
    const newSlots = new Set(t.backups.map((b) => b.slot));
    for (const b of t.backups) {
      const ob = oldBackups.get(b.slot);
      if (ob === undefined || ob.nodeId !== b.nodeId) lines.push(`task ${t.task} backup ${b.slot}: ${b.nodeId} (${b.state})`);
      else if (ob.state !== b.state) lines.push(`task ${t.task} backup ${b.slot}: ${b.nodeId} ${ob.state} -> ${b.state}`);
    }
    for (const ob of was.backups) if (!newSlots.has(ob.slot)) lines.push(`task ${t.task} backup ${ob.slot}: ${ob.nodeId} left`);
  }
  if (after.nodes.length !== before.nodes.length || after.standbys.length !== before.standbys.length) {
    lines.push(`nodes: ${after.nodes.length} live, ${after.standbys.length} standby`);
  }
  for (const p of after.problems) if (!before.problems.includes(p)) lines.push(`problem: ${p}`);
  return lines;
}

/** "2 backups each", "1 backup of task 0". */
function backupsText(spec: JobSpec): string {
  const b = `${spec.backups} backup${spec.backups === 1 ? '' : 's'}`;
  if (!spec.backupTasks) return `${b} each`;
  return `${b} of task${spec.backupTasks.length === 1 ? '' : 's'} ${spec.backupTasks.join(', ')}${spec.backupTasks.length === 1 ? '' : ' each'}`;
}

/** One row of `job list`. */
export interface JobSummary {
  readonly job: string;
  readonly state: string;
  readonly epoch: number;
  readonly tasks: number;
  readonly backups: number;
  readonly nodes: number;
  readonly standbys: number;
  readonly failovers: number;
  readonly created: string;
}

function summaryOf(s: JobStatus): JobSummary {
  return {
    job: s.job,
    state: s.state,
    epoch: s.epoch,
    tasks: s.spec.numTasks,
    backups: s.spec.backups,
    nodes: s.nodes.length,
    standbys: s.standbys.length,
    failovers: failoversOf(s),
    created: s.spec.created,
  };
}

function renderList(rows: readonly JobSummary[], format: OutputFormat): string {
  if (format === 'json') return JSON.stringify(rows);
  if (format === 'yaml') return yaml(rows).trimEnd();
  if (rows.length === 0) return 'no jobs';
  const wide = format === 'wide';
  const header = ['NAME', 'STATE', 'EPOCH', 'TASKS', 'NODES', 'FAILOVERS', ...(wide ? ['BACKUPS', 'STANDBYS', 'CREATED'] : [])];
  const table = rows.map((r) => [r.job, r.state, String(r.epoch), String(r.tasks), String(r.nodes), String(r.failovers), ...(wide ? [String(r.backups), String(r.standbys), r.created] : [])]);
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => (row[i] ?? '').length)));
  return [header, ...table].map((row) => row.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n');
}

export async function runJobCommand(o: JobCommandOptions): Promise<number> {
  if (!o.config.coordinator) throw new InvalidArgumentError('no coordinator: pass --coordinator URL or set TASKGRAPH_COORDINATOR');
  const out = o.out ?? ((line: string) => process.stdout.write(`${line}\n`));
  const format = o.output ?? 'table';
  const terminal = o.terminal ?? PLAIN;
  const redact = redactor(o.config);
  const logger = scrubbedLogger(o.config.logLevel ?? 'warn', redact);
  await loadPlugins(o.config.plugins);
  const coordinator = await resolveCoordinator(o.config.coordinator, { logger });
  try {
    if (o.action === 'list') {
      const rows: JobSummary[] = [];
      for (const job of await listJobs(coordinator)) {
        const s = await createController({ coordinator, job, logger }).status();
        if (s) rows.push(summaryOf(s));
      }
      out(renderList(rows, format));
      return 0;
    }
    const ctl = createController({ coordinator, job: o.job, logger });
    switch (o.action) {
      case 'create': {
        const app = o.app ? await loadApp(o.app) : undefined;
        const linkTypes = o.linkTypes ?? app?.linkTypes;
        if (!linkTypes) throw new InvalidArgumentError('job create needs --link-types A,B or --app NAME');
        if (o.workers !== undefined && !app) throw new InvalidArgumentError('job create --workers needs --app NAME (a master/worker application)');
        const numTasks = app ? jobSize(app, o) : o.tasks;
        if (numTasks === undefined) throw new InvalidArgumentError('job create needs --tasks N');
        const backupTasks = o.backups ? app?.backupTasks?.(numTasks) : undefined;
        const spec = await ctl.createJob({ numTasks, linkTypes, ...(o.backups !== undefined ? { backups: o.backups } : {}), ...(backupTasks ? { backupTasks } : {}) });
        if (format === 'json') out(JSON.stringify(spec));
        else if (format === 'yaml') out(yaml(spec).trimEnd());
        else out(`job ${o.job} ready: ${spec.numTasks} tasks, ${backupsText(spec)}, link types ${spec.linkTypes.join(', ')}`);
        return 0;
      }
      case 'status': {
        const s = await ctl.status();
        if (!s) throw new NotFoundError(`job ${o.job} does not exist`);
        out(renderStatus(s, format, terminal));
        return 0;
      }
      case 'watch':
        return await watchJob(ctl, o.job, format, terminal, out, o.signal ?? new AbortController().signal);
      case 'delete': {
        if ((await ctl.status()) === undefined) throw new NotFoundError(`job ${o.job} does not exist`);
        await ctl.destroy();
        out(`job ${o.job} deleted`);
        return 0;
      }
      default:
        throw new InvalidArgumentError(`unknown job action "${o.action}": use create, list, status, watch or delete`);
    }
  } finally {
    await coordinator.close();
  }
}

/**
 * Prints the job's status, then only what changes, until the job ends (0 when it is
 * done, 1 when it failed) or the signal aborts. On a terminal a table is redrawn in
 * place; piped, a table becomes one line per change; json and yaml print each new
 * status (a line of JSON, or a YAML document).
 */
async function watchJob(ctl: Controller, job: string, format: OutputFormat, terminal: Terminal, out: (line: string) => void, signal: AbortSignal): Promise<number> {
  let last: JobStatus | undefined;
  let lastText = '';
  const tableInPlace = terminal.tty && (format === 'table' || format === 'wide');
  for await (const s of ctl.watch(signal)) {
    const text = renderStatus(s, format, terminal);
    if (text !== lastText) {
      if (tableInPlace) terminal.write(`${CLEAR_SCREEN}${text}\n`);
      else if (last === undefined || format === 'json') out(text);
      else if (format === 'yaml') out(`---\n${text}`);
      else for (const line of describeChanges(last, s)) out(`${new Date().toISOString().slice(11, 19)} ${line}`);
    }
    last = s;
    lastText = text;
    if (s.state !== 'running') return s.state === 'done' ? 0 : 1;
  }
  if (last === undefined) throw new NotFoundError(`job ${job} does not exist`);
  return 0;
}
