/**
 * `bench:scale` as parts, each a function that runs its sizes, hands each run's
 * line to `emit` as it ends, and returns its summary keys: the embedded default in
 * one process now; an etcd part (jobs in up to 16 node processes) adds itself to
 * PARTS with its own options, lines and keys, and the command and summary need no
 * other change.
 */
import { cpus } from 'node:os';
import { runEmbedded } from './scale-embedded.js';
import type { EmbeddedRunResult } from './scale-embedded.js';
import { growthExponent } from './scale-fit.js';

export const TARGETS = { embedded_1023_s: 30, embedded_growth_exponent: 1.2 } as const;

export interface ScaleBenchOptions {
  readonly parts: readonly PartName[];
  /** Tasks per job in the embedded part. */
  readonly embeddedSizes: readonly number[];
  /** Epochs per job (the job runs epochs 0..epochs). */
  readonly epochs: number;
  readonly progress?: (line: string) => void;
}

export type ScaleLine = EmbeddedRunResult;

export interface PartContext {
  readonly options: ScaleBenchOptions;
  readonly emit: (line: ScaleLine) => void;
  readonly progress: (line: string) => void;
}

/** A part's summary keys (flat, prefixed with the part's name). */
export type PartSummary = Record<string, number | null | boolean | Record<string, number>>;

export const PARTS = {
  embedded: runEmbeddedPart,
} as const satisfies Record<string, (ctx: PartContext) => Promise<PartSummary>>;

export type PartName = keyof typeof PARTS;

export const DEFAULTS: ScaleBenchOptions = { parts: ['embedded'], embeddedSizes: [63, 255, 1023], epochs: 10 };

export interface ScaleSummary {
  readonly summary: true;
  readonly bench: 'scale';
  readonly [key: string]: unknown;
}

/** Runs every part asked for, in order; resolves with all lines and the summary. Throws when a run's answer is wrong. */
export async function runScaleBench(options: ScaleBenchOptions, emit: (line: ScaleLine) => void = () => undefined): Promise<{ lines: ScaleLine[]; summary: ScaleSummary }> {
  const lines: ScaleLine[] = [];
  const progress = options.progress ?? (() => undefined);
  const keys: PartSummary = {};
  for (const part of options.parts) {
    Object.assign(
      keys,
      await PARTS[part]({
        options,
        progress,
        emit: (line) => {
          lines.push(line);
          emit(line);
        },
      }),
    );
  }
  const met: Record<string, boolean | null> = {};
  for (const [key, target] of Object.entries(TARGETS)) {
    const value = keys[key];
    met[key] = typeof value === 'number' ? value <= target : null;
  }
  return { lines, summary: { summary: true, bench: 'scale', epochs: options.epochs, ...keys, targets: TARGETS, met, cores: cpus().length } };
}

/**
 * The regression job on the embedded default at each size: `embedded_<n>_s` is the
 * whole run (job creation to the last node's end) at 1,023 tasks, and the growth
 * exponent is fitted to the steady time per epoch (start-up, which claims every
 * task, is reported beside it with its own exponent).
 */
async function runEmbeddedPart(ctx: PartContext): Promise<PartSummary> {
  const runs: EmbeddedRunResult[] = [];
  for (const tasks of ctx.options.embeddedSizes) {
    ctx.progress(`embedded: ${tasks} tasks x ${ctx.options.epochs} epochs`);
    const r = await runEmbedded({ tasks, epochs: ctx.options.epochs });
    ctx.emit(r);
    ctx.progress(`embedded: ${tasks} tasks in ${r.total_s} s (start-up ${r.startup_s} s, ${r.s_per_epoch} s per epoch)${r.pass ? '' : ' WRONG SUMS'}`);
    if (!r.pass) throw new Error(`the embedded run of ${tasks} tasks did not produce the exact sums`);
    runs.push(r);
  }
  const by = (f: (r: EmbeddedRunResult) => number): Record<string, number> => Object.fromEntries(runs.map((r) => [String(r.tasks), f(r)]));
  return {
    embedded_1023_s: runs.find((r) => r.tasks === 1023)?.total_s ?? null,
    embedded_growth_exponent: growthExponent(runs.map((r) => ({ size: r.tasks, cost: r.s_per_epoch }))),
    embedded_startup_growth_exponent: growthExponent(runs.map((r) => ({ size: r.tasks, cost: r.startup_s }))),
    embedded_total_s: by((r) => r.total_s),
    embedded_startup_s: by((r) => r.startup_s),
    embedded_s_per_epoch: by((r) => r.s_per_epoch),
    embedded_cpu_s: by((r) => r.cpu_s),
  };
}
