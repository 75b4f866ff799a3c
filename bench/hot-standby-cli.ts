/**
 * The command line of `npm run bench:hot-standby`: one JSON line per measurement
 * and a JSON summary line on stdout, progress on stderr. Exit 0 when the benchmark
 * ran, whether or not the targets were met (the numbers are the result); 1 when it
 * failed; 2 on bad arguments.
 */
import { parseArgs } from 'node:util';
import { createLogger } from '@taskgraph/core';
import { DEFAULTS, PARTS, checkOptions, runHotStandby } from './hot-standby-bench.js';
import type { HotStandbyOptions, Part } from './hot-standby-bench.js';
import type { LoadSpec } from './src/load.js';

export const USAGE =
  'usage: bench:hot-standby [--parts failover,update,lost] [--ttl-ms 2000] [--failover-reps 6] [--state-mib 64] ' +
  '[--payloads 64,65536] [--backups 1,2] [--in-flight 1] [--rounds 6] [--round-ms 800 | --round-calls N] ' +
  '[--warmup-ms 300 | --warmup-calls N] [--kills 6] [--stream-in-flight 4]';

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

function phase(name: string, ms: string | undefined, calls: string | undefined, fallback: Omit<LoadSpec, 'inFlight'>): Omit<LoadSpec, 'inFlight'> {
  if (ms === undefined && calls === undefined) return fallback;
  return {
    ...(ms === undefined ? {} : { durationMs: int(`${name}-ms`, ms, 0) }),
    ...(calls === undefined ? {} : { calls: int(`${name}-calls`, calls, 0) }),
  };
}

/** The options a command line asks for, or 'help'. Throws UsageError on a bad one. */
export function parseCommandLine(argv: readonly string[]): HotStandbyOptions | 'help' {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      options: {
        parts: { type: 'string' },
        'ttl-ms': { type: 'string' },
        'failover-reps': { type: 'string' },
        'state-mib': { type: 'string' },
        payloads: { type: 'string' },
        backups: { type: 'string' },
        'in-flight': { type: 'string' },
        rounds: { type: 'string' },
        'round-ms': { type: 'string' },
        'round-calls': { type: 'string' },
        'warmup-ms': { type: 'string' },
        'warmup-calls': { type: 'string' },
        kills: { type: 'string' },
        'stream-in-flight': { type: 'string' },
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
    ttlMs: int('ttl-ms', values['ttl-ms'], DEFAULTS.ttlMs),
    failoverReps: int('failover-reps', values['failover-reps'], DEFAULTS.failoverReps),
    stateMib: int('state-mib', values['state-mib'], DEFAULTS.stateMib),
    payloads: ints('payloads', values.payloads, DEFAULTS.payloads),
    backups: ints('backups', values.backups, DEFAULTS.backups),
    inFlight: ints('in-flight', values['in-flight'], DEFAULTS.inFlight),
    rounds: int('rounds', values.rounds, DEFAULTS.rounds),
    round: phase('round', values['round-ms'], values['round-calls'], DEFAULTS.round),
    warmup: phase('warmup', values['warmup-ms'], values['warmup-calls'], DEFAULTS.warmup),
    kills: int('kills', values.kills, DEFAULTS.kills),
    streamInFlight: int('stream-in-flight', values['stream-in-flight'], DEFAULTS.streamInFlight),
  };
}

/** Runs the command; resolves with the exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  let options: HotStandbyOptions | 'help';
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
    process.stderr.write(`[hot-standby] ${line}\n`);
  };
  try {
    const { summary } = await runHotStandby({ ...options, progress, logger: createLogger({ level: 'warn' }) }, (result) => {
      process.stdout.write(`${JSON.stringify(result)}\n`);
    });
    process.stdout.write(`${JSON.stringify(summary)}\n`);
    return 0;
  } catch (err) {
    process.stderr.write(`[hot-standby] the benchmark failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    return 1;
  }
}
