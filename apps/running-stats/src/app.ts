/**
 * The running-statistics job as an application module for the `taskgraph` command:
 *
 *   taskgraph run ./apps/running-stats/dist/app.js --tasks 7 --backups 1 --standbys 1 --arg kill-at=4:2
 *
 * Arguments (`--arg key=value`): epochs (default 10), fanout (2),
 * kill-at=EPOCH:TASK[,EPOCH:TASK...] (the primary of TASK
 * kills itself in EPOCH once its fold there is acknowledged). `verify` prints
 * `PASS: ...` only when every task's statistics are exact, and says `state LOST`
 * when a task's state did not survive a kill.
 */
import { InvalidArgumentError } from '@taskgraph/api';
import { defineApp } from '@taskgraph/core';
import type { AppContext } from '@taskgraph/core';
import { RUNNING_STATS_LINK_TYPES, RunningStatsTaskBuilder, checkRunningStats, runningStatsLinkages } from '@taskgraph/workloads';
import type { KillAt } from '@taskgraph/workloads';

type Args = Pick<AppContext, 'args'>;

function intArg(ctx: Args, name: string, dflt: number, min: number): number {
  const v = ctx.args[name];
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`running-stats: --arg ${name}=${v} must be an integer >= ${min}`);
  return n;
}

function killAt(ctx: Args): KillAt[] {
  const v = ctx.args['kill-at'];
  if (v === undefined || v === '') return [];
  return v.split(',').map((item) => {
    const m = /^(\d+):(\d+)$/.exec(item.trim());
    if (!m) throw new InvalidArgumentError(`running-stats: --arg kill-at=${v} must be EPOCH:TASK[,EPOCH:TASK...]`);
    return { epoch: Number(m[1]), task: Number(m[2]) };
  });
}

/** The job's options from the arguments (the same on every node and in `verify`). */
function options(ctx: Pick<AppContext, 'args' | 'numTasks'>) {
  return {
    numTasks: ctx.numTasks,
    numEpochs: intArg(ctx, 'epochs', 10, 0),
    fanout: intArg(ctx, 'fanout', 2, 1),
    killAt: killAt(ctx),
  };
}

export const runningStatsApp = defineApp({
  name: 'running-stats',
  linkTypes: RUNNING_STATS_LINK_TYPES,
  taskBuilder: (ctx) => new RunningStatsTaskBuilder({ ...options(ctx), onRecord: (r) => ctx.report(r) }),
  linkages: (ctx) => runningStatsLinkages(options(ctx)),
  verify: (ctx, results) => {
    const verdict = checkRunningStats(options(ctx), results);
    const hint = verdict.lost.length > 0 ? ' (a task keeps its state through a kill only with backups: run with --backups 1)' : '';
    return { ok: verdict.ok, message: verdict.message + hint };
  },
});

export default runningStatsApp;
