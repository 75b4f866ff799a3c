/**
 * `npm run bench:data-plane`: prints one JSON line per case and a JSON summary
 * line on stdout, progress on stderr. Exits 0 when the benchmark ran, whether or
 * not the targets were met (the numbers are the result); 1 when it failed; 2 on
 * bad arguments.
 *
 * Options: --payloads 64,65536,1048576  --in-flight 1,16,64  --rounds 6
 *          --round-ms 800 | --round-calls N   --warmup-ms 300 | --warmup-calls N
 *          --transport grpcs://127.0.0.1:0?ca=..&cert=..&key=..[&secretFile=..] (the framework side's
 *          security; TASKGRAPH_JOB_SECRET and TASKGRAPH_TLS_* apply too)
 */
import { parseArgs } from 'node:util';
import { createLogger } from '@taskgraph/core';
import { DEFAULT_IN_FLIGHT, DEFAULT_PAYLOADS, DEFAULT_ROUND, DEFAULT_WARMUP, runDataPlane } from './src/data-plane.js';
import type { DataPlaneOptions } from './src/data-plane.js';
import type { LoadSpec } from './src/load.js';

const USAGE =
  'usage: bench:data-plane [--payloads 64,65536,1048576] [--in-flight 1,16,64] [--rounds 6] ' +
  '[--round-ms 800 | --round-calls N] [--warmup-ms 300 | --warmup-calls N] [--transport grpc(s)://127.0.0.1:0?...]';

class UsageError extends Error {}

function list(name: string, text: string | undefined, fallback: readonly number[]): readonly number[] {
  if (text === undefined) return fallback;
  const values = text.split(',').map((s) => Number(s.trim()));
  if (values.length === 0 || values.some((v) => !Number.isInteger(v) || v < 0)) {
    throw new UsageError(`--${name} must be a comma-separated list of non-negative integers, got ${JSON.stringify(text)}`);
  }
  return values;
}

function count(name: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`--${name} must be a positive integer, got ${JSON.stringify(text)}`);
  return n;
}

function phase(ms: number | undefined, calls: number | undefined, fallback: Omit<LoadSpec, 'inFlight'>): Omit<LoadSpec, 'inFlight'> {
  if (ms === undefined && calls === undefined) return fallback;
  return { ...(ms === undefined ? {} : { durationMs: ms }), ...(calls === undefined ? {} : { calls }) };
}

function parse(argv: readonly string[]): DataPlaneOptions | 'help' {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      payloads: { type: 'string' },
      'in-flight': { type: 'string' },
      rounds: { type: 'string' },
      'round-ms': { type: 'string' },
      'round-calls': { type: 'string' },
      'warmup-ms': { type: 'string' },
      'warmup-calls': { type: 'string' },
      transport: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) return 'help';
  const rounds = count('rounds', values.rounds);
  return {
    payloads: list('payloads', values.payloads, DEFAULT_PAYLOADS),
    inFlight: list('in-flight', values['in-flight'], DEFAULT_IN_FLIGHT),
    ...(rounds === undefined ? {} : { rounds }),
    round: phase(count('round-ms', values['round-ms']), count('round-calls', values['round-calls']), DEFAULT_ROUND),
    warmup: phase(count('warmup-ms', values['warmup-ms']), count('warmup-calls', values['warmup-calls']), DEFAULT_WARMUP),
    ...(values.transport === undefined ? {} : { transportUrl: values.transport }),
  };
}

async function main(): Promise<number> {
  let options: DataPlaneOptions | 'help';
  try {
    options = parse(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (options === 'help') {
    process.stderr.write(`${USAGE}\n`);
    return 0;
  }
  const progress = (line: string): void => {
    process.stderr.write(`[data-plane] ${line}\n`);
  };
  const logger = createLogger({ level: 'warn' });
  try {
    const { summary } = await runDataPlane({ ...options, progress, logger }, (result) => {
      process.stdout.write(`${JSON.stringify(result)}\n`);
    });
    process.stdout.write(`${JSON.stringify(summary)}\n`);
    return 0;
  } catch (err) {
    process.stderr.write(`[data-plane] the benchmark failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    return 1;
  }
}

process.exitCode = await main();
