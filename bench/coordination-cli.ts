/**
 * The command line of `npm run bench:coordination`: one JSON line per
 * measurement and a JSON summary line on stdout, progress on stderr. Exit 0 when
 * the benchmark ran, whether or not the targets were met (the numbers are the
 * result); 1 when it failed; 2 on bad arguments.
 */
import { parseArgs } from 'node:util';
import { createLogger } from '@taskgraph/core';
import { DEFAULTS, PARTS, checkOptions, runCoordination } from './coordination-bench.js';
import type { CoordinationOptions, Part } from './coordination-bench.js';

export const USAGE =
  'usage: bench:coordination [--parts epoch,failover,writes,meta] [--tasks 8,64] [--epochs 200] [--warmup-task-epochs 2000] ' +
  '[--bare-rounds 400] [--rounds 4] [--nodes-per-client 1] [--gap-ms 50] [--failover-reps 8] [--ttl-ms 2000] ' +
  '[--standbys 2] [--regression-tasks 15] [--regression-epochs 34] [--meta-hops 400] [--meta-warmup 100] [--metas-per-epoch 25]';

export class UsageError extends Error {}

function int(name: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`--${name} must be a non-negative integer, got ${JSON.stringify(text)}`);
  return n;
}

function ints(name: string, text: string | undefined, fallback: readonly number[]): readonly number[] {
  if (text === undefined) return fallback;
  return text.split(',').map((s) => int(name, s.trim(), 0));
}

/** The options a command line asks for, or 'help'. Throws UsageError on a bad one. */
export function parseCommandLine(argv: readonly string[]): CoordinationOptions | 'help' {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      options: {
        parts: { type: 'string' },
        tasks: { type: 'string' },
        epochs: { type: 'string' },
        'warmup-task-epochs': { type: 'string' },
        'bare-rounds': { type: 'string' },
        rounds: { type: 'string' },
        'nodes-per-client': { type: 'string' },
        'gap-ms': { type: 'string' },
        'failover-reps': { type: 'string' },
        'ttl-ms': { type: 'string' },
        standbys: { type: 'string' },
        'regression-tasks': { type: 'string' },
        'regression-epochs': { type: 'string' },
        'meta-hops': { type: 'string' },
        'meta-warmup': { type: 'string' },
        'metas-per-epoch': { type: 'string' },
        help: { type: 'boolean', default: false },
      },
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (values.help) return 'help';
  let parts: readonly Part[] = DEFAULTS.parts;
  if (values.parts !== undefined) {
    const list = values.parts.split(',').map((s) => s.trim());
    const bad = list.find((p) => !(PARTS as readonly string[]).includes(p));
    if (bad !== undefined || list.length === 0) throw new UsageError(`--parts takes some of ${PARTS.join(',')}, got ${JSON.stringify(values.parts)}`);
    parts = list as Part[];
  }
  return {
    parts,
    epochTasks: ints('tasks', values.tasks, DEFAULTS.epochTasks),
    epochs: int('epochs', values.epochs, DEFAULTS.epochs),
    warmupTaskEpochs: int('warmup-task-epochs', values['warmup-task-epochs'], DEFAULTS.warmupTaskEpochs),
    bareRounds: int('bare-rounds', values['bare-rounds'], DEFAULTS.bareRounds),
    rounds: int('rounds', values.rounds, DEFAULTS.rounds),
    nodesPerClient: int('nodes-per-client', values['nodes-per-client'], DEFAULTS.nodesPerClient),
    gapMs: int('gap-ms', values['gap-ms'], DEFAULTS.gapMs),
    failoverReps: int('failover-reps', values['failover-reps'], DEFAULTS.failoverReps),
    ttlMs: int('ttl-ms', values['ttl-ms'], DEFAULTS.ttlMs),
    standbys: int('standbys', values.standbys, DEFAULTS.standbys),
    regressionTasks: int('regression-tasks', values['regression-tasks'], DEFAULTS.regressionTasks),
    regressionEpochs: int('regression-epochs', values['regression-epochs'], DEFAULTS.regressionEpochs),
    metaHops: int('meta-hops', values['meta-hops'], DEFAULTS.metaHops),
    metaWarmup: int('meta-warmup', values['meta-warmup'], DEFAULTS.metaWarmup),
    metasPerEpoch: int('metas-per-epoch', values['metas-per-epoch'], DEFAULTS.metasPerEpoch),
  };
}

/** Runs the command; resolves with the exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  let options: CoordinationOptions | 'help';
  try {
    options = parseCommandLine(argv);
    if (options !== 'help') checkOptions(options);
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (options === 'help') {
    process.stderr.write(`${USAGE}\n`);
    return 0;
  }
  const progress = (line: string): void => {
    process.stderr.write(`[coordination] ${line}\n`);
  };
  try {
    const { summary } = await runCoordination({ ...options, progress, logger: createLogger({ level: 'warn' }) }, (result) => {
      process.stdout.write(`${JSON.stringify(result)}\n`);
    });
    process.stdout.write(`${JSON.stringify(summary)}\n`);
    return 0;
  } catch (err) {
    process.stderr.write(`[coordination] the benchmark failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    return 1;
  }
}
