/**
 * MapReduce word count over the Brown corpus as an application module for the
 * `taskgraph` command (a master/worker application: give it --workers):
 *
 *   taskgraph run ./apps/mapreduce/dist/app.js --workers 4 --standbys 1 --coordinator memory://
 *
 * Arguments (`--arg key=value`): splits (M, default 32), reducers (R, default 4),
 * repeat (copies of the corpus, default 1), top (words to show, default 10), and
 * pause-map=WORKER (the first incarnation of WORKER, at its first map, reports
 * `{ pause: 'start' }` and stops its own process with SIGSTOP, as a long GC pause
 * would stop it mid-map; whoever runs the job sends SIGCONT). The
 * master prints progress lines; `verify` compares the count with a single-process
 * count of the same text and prints `PASS: count exact ...` and the top words.
 */
import { InvalidArgumentError } from '@taskgraph/api';
import { defineMasterWorkerApp } from '@taskgraph/core';
import type { AppContext } from '@taskgraph/core';
import { MapReduceMaster, MapReduceWorker, brownCorpus, checkMapReduce, describeProgress, mapReduceSplits } from '@taskgraph/workloads';
import type { MapReduceJobOptions, MapReduceWorkerOptions } from '@taskgraph/workloads';

function intArg(ctx: Pick<AppContext, 'args'>, name: string, dflt: number, min: number, max: number): number {
  const v = ctx.args[name];
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`mapreduce: --arg ${name}=${v} must be an integer from ${min} to ${max}`);
  return n;
}

/** The job's options from the arguments (the same on every node and in `verify`). */
export function mapReduceOptions(ctx: Pick<AppContext, 'args'>): MapReduceJobOptions {
  const known = new Set(['splits', 'reducers', 'repeat', 'top', 'pause-map']);
  for (const k of Object.keys(ctx.args)) if (!known.has(k)) throw new InvalidArgumentError(`mapreduce: unknown --arg ${k} (known: ${[...known].join(', ')})`);
  return {
    splits: intArg(ctx, 'splits', 32, 1, 100_000),
    reducers: intArg(ctx, 'reducers', 4, 1, 1024),
    repeat: intArg(ctx, 'repeat', 1, 1, 1000),
    top: intArg(ctx, 'top', 10, 0, 1000),
  };
}

/** The `before` hook of `--arg pause-map=WORKER`: that worker's first incarnation stops its process at its first map. */
function pauseMap(ctx: AppContext): MapReduceWorkerOptions['before'] {
  const v = ctx.args['pause-map'];
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) throw new InvalidArgumentError(`mapreduce: --arg pause-map=${v} must be a worker id`);
  const worker = Number(v);
  let paused = false;
  return (phase, workerId, split, incarnation) => {
    if (paused || phase !== 'map' || workerId !== worker || incarnation !== 1) return;
    paused = true;
    ctx.report({ pause: 'start', worker, split, pid: process.pid });
    // Stops this whole process right here, mid-map; it goes on when continued.
    process.kill(process.pid, 'SIGSTOP');
  };
}

export const mapReduceApp = defineMasterWorkerApp({
  name: 'mapreduce',
  master: (ctx) => {
    const o = mapReduceOptions(ctx);
    return new MapReduceMaster({ splits: mapReduceSplits(o).splits, reducers: o.reducers, top: o.top, report: (r) => ctx.report(r) });
  },
  worker: (ctx) => {
    const before = pauseMap(ctx);
    return new MapReduceWorker({ corpusDir: brownCorpus().dir, ...(before ? { before } : {}) });
  },
  verify: (ctx, results) => checkMapReduce(mapReduceOptions(ctx), results),
  checkArgs: (ctx) => {
    mapReduceOptions(ctx);
    pauseMap(ctx);
  },
  describeRecord: describeProgress,
});

export default mapReduceApp;
