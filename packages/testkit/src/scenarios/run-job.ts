/**
 * Runs one whole job of a scenario on a backend pair: a LocalCluster (whose
 * supervisor replaces lost nodes) with the scenario's tasks, backups and standbys,
 * and the scenario's fault injection running beside it until the job is over.
 */
import type { Logger, TaskBuilder, Topology } from '@taskgraph/api';
import { LocalCluster } from '@taskgraph/core';
import type { ScenarioBackend } from './backend.js';

let jobSeq = 0;
export function jobName(kind: string): string {
  return `sc-${kind}-${process.pid}-${++jobSeq}`;
}

export interface RunOptions {
  readonly numTasks: number;
  readonly standbys: number;
  /** Backups per task (hot standby). Default 0. */
  readonly backups?: number;
  /** The tasks that get the backups (default: every task). */
  readonly backupTasks?: readonly number[];
  readonly kind: string;
  readonly builder: (index: number) => TaskBuilder;
  readonly linkTypes: readonly string[];
  readonly linkages: () => Record<string, Topology>;
  /** Runs beside the job (faults, checks); awaited once the job is over. */
  readonly during?: (cluster: LocalCluster) => Promise<void>;
  readonly maxReplacements?: number;
}

export async function runJob(backend: ScenarioBackend, logger: Logger, o: RunOptions) {
  const controllerCoordinator = await backend.controller();
  const cluster = new LocalCluster({
    job: jobName(o.kind),
    numTasks: o.numTasks,
    linkTypes: o.linkTypes,
    standbys: o.standbys,
    backups: o.backups ?? 0,
    ...(o.backupTasks ? { backupTasks: o.backupTasks } : {}),
    controllerCoordinator,
    resources: (i) => backend.resources(i),
    builder: o.builder,
    linkages: o.linkages,
    node: { sessionTtlMs: backend.sessionTtlMs, attemptTimeoutMs: Math.max(2000, backend.sessionTtlMs) },
    maxReplacements: o.maxReplacements ?? 100,
    logger,
  });
  try {
    await cluster.start();
    const during = o.during?.(cluster);
    // Awaited below; a failure before the job ends must not count as unhandled meanwhile.
    during?.catch(() => undefined);
    const status = await cluster.waitUntilDone();
    await during;
    return { status, cluster };
  } finally {
    await cluster.close();
    await cluster.controller.destroy().catch(() => undefined);
    await controllerCoordinator.close();
  }
}
