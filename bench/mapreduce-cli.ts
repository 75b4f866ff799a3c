/**
 * The command line of `npm run bench:mapreduce`: one JSON line per run (the plain
 * count, each framework run) and a JSON summary line on stdout, progress on
 * stderr. Exit 0 when the benchmark ran, whether or not the targets were met (the
 * numbers are the result); 1 when it failed (a run did not pass its count check);
 * 2 on bad arguments.
 */
import { parseArgs } from 'node:util';
import { DEFAULTS, checkOptions, runMapReduceBench } from './mapreduce-bench.js';
import type { MapReduceBenchOptions } from './mapreduce-bench.js';

export const USAGE = 'usage: bench:mapreduce [--workers 1,2,4] [--splits 16] [--reducers 4] [--repeat k (default: >= 200 MB)] [--rounds 3] [--ttl-ms N]';

export class UsageError extends Error {}

function int(name: string, text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`--${name} must be a positive integer, got ${JSON.stringify(text)}`);
  return n;
}

/** The options a command line asks for, or 'help'. Throws UsageError on a bad one. */
export function parseCommandLine(argv: readonly string[]): MapReduceBenchOptions | 'help' {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      options: {
        workers: { type: 'string' },
        splits: { type: 'string' },
        reducers: { type: 'string' },
        repeat: { type: 'string' },
        rounds: { type: 'string' },
        'ttl-ms': { type: 'string' },
        help: { type: 'boolean', default: false },
      },
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (values.help) return 'help';
  return {
    workers: values.workers === undefined ? DEFAULTS.workers : values.workers.split(',').map((s) => int('workers', s.trim())),
    splits: values.splits === undefined ? DEFAULTS.splits : int('splits', values.splits),
    reducers: values.reducers === undefined ? DEFAULTS.reducers : int('reducers', values.reducers),
    rounds: values.rounds === undefined ? DEFAULTS.rounds : int('rounds', values.rounds),
    ...(values.repeat === undefined ? {} : { repeat: int('repeat', values.repeat) }),
    ...(values['ttl-ms'] === undefined ? {} : { ttlMs: int('ttl-ms', values['ttl-ms']) }),
  };
}

/** Runs the command; resolves with the exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  let options: MapReduceBenchOptions | 'help';
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
    process.stderr.write(`[mapreduce] ${line}\n`);
  };
  try {
    const { summary } = await runMapReduceBench({ ...options, progress }, (result) => {
      process.stdout.write(`${JSON.stringify(result)}\n`);
    });
    process.stdout.write(`${JSON.stringify(summary)}\n`);
    return 0;
  } catch (err) {
    process.stderr.write(`[mapreduce] the benchmark failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    return 1;
  }
}
