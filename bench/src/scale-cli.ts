/** The command line of `bench:scale` (see scale.ts). */
import { parseArgs } from 'node:util';
import { DEFAULTS, PARTS, runScaleBench } from './scale-bench.js';
import type { PartName, ScaleBenchOptions } from './scale-bench.js';

export const USAGE = `usage: bench:scale [--parts ${Object.keys(PARTS).join(',')}] [--sizes 63,255,1023] [--etcd-sizes 8,64,256,1000] [--max-processes 16] [--ttl-ms 10000] [--failover-min-tasks 60] [--node-nice 5] [--epochs 10]`;

export class UsageError extends Error {}

function ints(name: string, text: string, min: number): number[] {
  const out = text.split(',').map((s) => Number(s.trim()));
  if (out.length === 0 || out.some((n) => !Number.isInteger(n) || n < min)) throw new UsageError(`--${name} must be integers >= ${min}, comma-separated; got ${JSON.stringify(text)}`);
  return out;
}

function nice(text: string): number {
  const n = Number(text.trim());
  if (!Number.isInteger(n) || n < 0 || n > 19) throw new UsageError(`--node-nice must be an integer from 0 to 19; got ${JSON.stringify(text)}`);
  return n;
}

/** The options a command line asks for, or 'help'. Throws UsageError on a bad one. */
export function parseCommandLine(argv: readonly string[]): ScaleBenchOptions | 'help' {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      options: {
        parts: { type: 'string' },
        sizes: { type: 'string' },
        'etcd-sizes': { type: 'string' },
        'max-processes': { type: 'string' },
        'ttl-ms': { type: 'string' },
        'failover-min-tasks': { type: 'string' },
        'node-nice': { type: 'string' },
        epochs: { type: 'string' },
        help: { type: 'boolean', default: false },
      },
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (values.help) return 'help';
  const parts = values.parts === undefined ? DEFAULTS.parts : values.parts.split(',').map((s) => s.trim());
  for (const p of parts) if (!(p in PARTS)) throw new UsageError(`--parts: unknown part ${JSON.stringify(p)} (known: ${Object.keys(PARTS).join(', ')})`);
  return {
    parts: parts as PartName[],
    // Two tasks at least: the regression job is a tree with a master.
    embeddedSizes: values.sizes === undefined ? DEFAULTS.embeddedSizes : ints('sizes', values.sizes, 2),
    etcdSizes: values['etcd-sizes'] === undefined ? DEFAULTS.etcdSizes : ints('etcd-sizes', values['etcd-sizes'], 2),
    maxProcesses: values['max-processes'] === undefined ? DEFAULTS.maxProcesses : ints('max-processes', values['max-processes'], 2)[0]!,
    // The TTLs etcd grants: at least a second (it rounds to seconds).
    ttlMs: values['ttl-ms'] === undefined ? DEFAULTS.ttlMs : ints('ttl-ms', values['ttl-ms'], 2000)[0]!,
    failoverMinTasks: values['failover-min-tasks'] === undefined ? DEFAULTS.failoverMinTasks : ints('failover-min-tasks', values['failover-min-tasks'], 1)[0]!,
    nodeNice: values['node-nice'] === undefined ? DEFAULTS.nodeNice : nice(values['node-nice']),
    epochs: values.epochs === undefined ? DEFAULTS.epochs : ints('epochs', values.epochs, 1)[0]!,
  };
}

/** Runs the command; resolves with the exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  let options: ScaleBenchOptions | 'help';
  try {
    options = parseCommandLine(argv);
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (options === 'help') {
    process.stderr.write(`${USAGE}\n`);
    return 0;
  }
  const progress = (line: string): void => {
    process.stderr.write(`[scale] ${line}\n`);
  };
  try {
    const { summary } = await runScaleBench({ ...options, progress }, (line) => process.stdout.write(`${JSON.stringify(line)}\n`));
    process.stdout.write(`${JSON.stringify(summary)}\n`);
    return 0;
  } catch (err) {
    process.stderr.write(`[scale] the benchmark failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    return 1;
  }
}
