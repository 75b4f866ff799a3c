/**
 * `taskgraph job create | status | watch | delete <job>`: the controller from the
 * command line.
 */
import { InvalidArgumentError } from '@taskgraph/api';
import { createController, resolveCoordinator } from '@taskgraph/core';
import type { JobSpec, JobStatus } from '@taskgraph/core';
import type { CliConfig } from '../config.js';
import { loadApp } from '../app-loader.js';
import { jobSize } from './run.js';
import { loadPlugins } from '../plugins.js';
import { redactor, scrubbedLogger } from '../secrets.js';

export interface JobCommandOptions {
  readonly action: string;
  readonly job: string;
  readonly config: CliConfig;
  readonly tasks?: number;
  /** For a master/worker application (`--app`): its workers. */
  readonly workers?: number;
  readonly backups?: number;
  readonly linkTypes?: readonly string[];
  readonly app?: string;
  readonly json?: boolean;
  readonly out?: (line: string) => void;
  readonly signal?: AbortSignal;
}

export function formatStatus(s: JobStatus): string {
  const lines = [
    `job ${s.job}: ${s.state}${s.reason ? ` (${s.reason})` : ''}, epoch ${s.epoch}, ${s.spec.numTasks} tasks` +
      `${s.spec.backups ? `, ${backupsText(s.spec)}` : ''}, link types ${s.spec.linkTypes.join(', ')}`,
  ];
  lines.push('task  role         node                      address                    token       incarnations');
  for (const t of s.tasks) {
    lines.push(
      `${String(t.task).padEnd(5)} ${'primary'.padEnd(12)} ${(t.nodeId ?? '-').padEnd(25)} ${(t.address ?? '-').padEnd(26)} ${(t.token ?? '-').padEnd(11)} ${t.incarnations}`,
    );
    for (const b of t.backups) {
      lines.push(`${''.padEnd(5)} ${`backup ${b.slot}`.padEnd(12)} ${b.nodeId.padEnd(25)} ${b.address.padEnd(26)} ${b.token.padEnd(11)} ${b.state}`);
    }
  }
  lines.push(`nodes: ${s.nodes.length} live, ${s.standbys.length} standby${s.standbys.length ? ` (${s.standbys.map((n) => n.nodeId).join(', ')})` : ''}`);
  for (const p of s.problems) lines.push(`problem: ${p}`);
  return lines.join('\n');
}

/** "2 backups each", "1 backup of task 0". */
function backupsText(spec: JobSpec): string {
  const b = `${spec.backups} backup${spec.backups === 1 ? '' : 's'}`;
  if (!spec.backupTasks) return `${b} each`;
  return `${b} of task${spec.backupTasks.length === 1 ? '' : 's'} ${spec.backupTasks.join(', ')}${spec.backupTasks.length === 1 ? '' : ' each'}`;
}

export async function runJobCommand(o: JobCommandOptions): Promise<number> {
  if (!o.config.coordinator) throw new InvalidArgumentError('no coordinator: pass --coordinator URL or set TASKGRAPH_COORDINATOR');
  const out = o.out ?? ((line: string) => process.stdout.write(`${line}\n`));
  const redact = redactor(o.config);
  const logger = scrubbedLogger(o.config.logLevel ?? 'warn', redact);
  await loadPlugins(o.config.plugins);
  const coordinator = await resolveCoordinator(o.config.coordinator, { logger });
  try {
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
        out(o.json ? JSON.stringify(spec) : `job ${o.job} ready: ${spec.numTasks} tasks, ${backupsText(spec)}, link types ${spec.linkTypes.join(', ')}`);
        return 0;
      }
      case 'status': {
        const s = await ctl.status();
        if (!s) {
          out(o.json ? 'null' : `job ${o.job} does not exist`);
          return 1;
        }
        out(o.json ? JSON.stringify(s) : formatStatus(s));
        return 0;
      }
      case 'watch': {
        let seen = false;
        for await (const s of ctl.watch(o.signal ?? new AbortController().signal)) {
          seen = true;
          out(o.json ? JSON.stringify(s) : `${new Date().toISOString()} ${formatStatus(s)}\n`);
          if (s.state !== 'running') return s.state === 'done' ? 0 : 1;
        }
        if (!seen) out(`job ${o.job} does not exist`);
        return seen ? 0 : 1;
      }
      case 'delete':
        await ctl.destroy();
        out(`job ${o.job} deleted`);
        return 0;
      default:
        throw new InvalidArgumentError(`unknown job action "${o.action}": use create, status, watch or delete`);
    }
  } finally {
    await coordinator.close();
  }
}
