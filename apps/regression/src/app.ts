/**
 * The regression job as an application module for the `taskgraph` command:
 *
 *   taskgraph run regression --tasks 15 --standbys 3 --coordinator etcd://127.0.0.1:2379
 *
 * Arguments (`--arg key=value`): epochs (default 10), fanout (2),
 * fail-enter-epoch=TASK:EPOCH, parent-fail=P, child-fail=P, seed=N, and
 * pause-serve=TASK:EPOCH (the first incarnation of TASK, while it serves
 * getGradient in EPOCH, reports `{ pause: 'start' }` and stops its own process with
 * SIGSTOP, as a long GC pause would stop it in the middle of a request; whoever
 * runs the job sends SIGCONT).
 */
import { InvalidArgumentError } from '@taskgraph/api';
import { defineApp } from '@taskgraph/core';
import type { AppContext } from '@taskgraph/core';
import { REGRESSION_LINK_TYPES, RegressionTaskBuilder, expectedSums, regressionLinkages, seededRandom } from '@taskgraph/workloads';
import type { RegressionFaults, RegressionOptions } from '@taskgraph/workloads';

function intArg(ctx: Pick<AppContext, 'args'>, name: string, dflt: number, min: number): number {
  const v = ctx.args[name];
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`regression: --arg ${name}=${v} must be an integer >= ${min}`);
  return n;
}

function probArg(ctx: AppContext, name: string): number | undefined {
  const v = ctx.args[name];
  if (v === undefined) return undefined;
  const p = Number(v);
  if (!(p >= 0 && p <= 1)) throw new InvalidArgumentError(`regression: --arg ${name}=${v} must be a probability in [0, 1]`);
  return p;
}

function faults(ctx: AppContext): RegressionFaults {
  const out: { -readonly [K in keyof RegressionFaults]: RegressionFaults[K] } = {};
  const fe = ctx.args['fail-enter-epoch'];
  if (fe !== undefined) {
    const m = /^(\d+):(\d+)$/.exec(fe);
    if (!m) throw new InvalidArgumentError(`regression: --arg fail-enter-epoch=${fe} must be TASK:EPOCH`);
    out.failEnterEpoch = { task: Number(m[1]), epoch: Number(m[2]) };
  }
  const pf = probArg(ctx, 'parent-fail');
  const cf = probArg(ctx, 'child-fail');
  if (pf !== undefined) out.parentDataFailProbability = pf;
  if (cf !== undefined) out.childDataFailProbability = cf;
  if (ctx.args['seed'] !== undefined) out.random = seededRandom(intArg(ctx, 'seed', 0, 0) + process.pid);
  return out;
}

function pauseServe(ctx: AppContext): NonNullable<RegressionOptions['beforeServe']> | undefined {
  const v = ctx.args['pause-serve'];
  if (v === undefined) return undefined;
  const m = /^(\d+):(\d+)$/.exec(v);
  if (!m) throw new InvalidArgumentError(`regression: --arg pause-serve=${v} must be TASK:EPOCH`);
  const [task, epoch] = [Number(m[1]), Number(m[2])];
  let paused = false;
  return (info) => {
    if (paused || info.taskId !== task || info.epoch !== epoch || info.incarnation !== 1 || info.method !== 'getGradient') return;
    paused = true;
    ctx.report({ pause: 'start', task, epoch, pid: process.pid });
    // Stops this whole process right here, mid-request; it goes on when continued.
    process.kill(process.pid, 'SIGSTOP');
  };
}

export const regressionApp = defineApp({
  name: 'regression',
  linkTypes: REGRESSION_LINK_TYPES,
  taskBuilder: (ctx) => {
    const beforeServe = pauseServe(ctx);
    return new RegressionTaskBuilder({
      numTasks: ctx.numTasks,
      numEpochs: intArg(ctx, 'epochs', 10, 0),
      fanout: intArg(ctx, 'fanout', 2, 1),
      faults: faults(ctx),
      onResult: (epoch, sum) => ctx.report({ epoch, sum }),
      ...(beforeServe ? { beforeServe } : {}),
    });
  },
  linkages: (ctx) => regressionLinkages({ numTasks: ctx.numTasks, fanout: intArg(ctx, 'fanout', 2, 1) }),
  verify: (ctx, results) => {
    const expected = expectedSums(ctx.numTasks, intArg(ctx, 'epochs', 10, 0));
    const got = new Map<number, number>();
    const conflicts: string[] = [];
    for (const r of results) {
      const { epoch, sum } = r as { epoch?: unknown; sum?: unknown };
      if (typeof epoch !== 'number' || typeof sum !== 'number') continue;
      if (got.has(epoch) && got.get(epoch) !== sum) conflicts.push(`epoch ${epoch}: ${got.get(epoch)} and ${sum}`);
      got.set(epoch, sum);
    }
    const sums = expected.map((_, e) => got.get(e));
    const ok = conflicts.length === 0 && sums.every((s, e) => s === expected[e]);
    return {
      ok,
      message: ok
        ? `sums are exact: ${sums.join(', ')}`
        : `sums are WRONG: got ${sums.map((s) => s ?? '-').join(', ')}; expected ${expected.join(', ')}${conflicts.length ? `; conflicting: ${conflicts.join('; ')}` : ''}`,
    };
  },
});

export default regressionApp;
