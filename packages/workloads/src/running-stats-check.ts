/**
 * The verdict on a running-statistics run: the tasks' reported records against the
 * reference answer. It says what went wrong in terms of the job: a task whose state
 * was lost (restarted from nothing, so it holds fewer epochs than the job ran, and
 * every neighbour that read from it afterwards is wrong too), tasks that differ
 * from the reference, missing or conflicting reports, a fault that was not injected.
 */
import { expectedStats } from './running-stats.js';
import type { KillAt, RunningStats, RunningStatsRecord } from './running-stats.js';

export interface RunningStatsCheckOptions {
  readonly numTasks: number;
  readonly numEpochs?: number;
  readonly fanout?: number;
  /** The faults the run was given: each must have been carried out. */
  readonly killAt?: readonly KillAt[];
}

type EventRecord<E> = Extract<RunningStatsRecord, { event: E }>;

export interface RunningStatsVerdict {
  readonly ok: boolean;
  /** One line: `PASS: ...` or `FAIL: ...`. */
  readonly message: string;
  /** Tasks whose state holds fewer epochs than the job ran. */
  readonly lost: readonly number[];
  /** Tasks whose final statistics differ from the reference (or conflict). */
  readonly wrong: readonly number[];
  readonly missing: readonly number[];
  readonly promotions: readonly EventRecord<'promoted'>[];
  readonly coldStarts: readonly EventRecord<'cold-start'>[];
  readonly kills: readonly EventRecord<'kill'>[];
  readonly neighborFailed: number;
  readonly neighborRestarted: number;
}

const FIELDS = ['epochs', 'count', 'sum', 'sumSq', 'min', 'max', 'digest'] as const;

const isInt = (v: unknown): v is number => Number.isSafeInteger(v);

function isStats(v: unknown): v is RunningStats {
  const s = v as Record<string, unknown> | null;
  return typeof s === 'object' && s !== null && FIELDS.every((f) => isInt(s[f]) || ((f === 'min' || f === 'max') && s[f] === null));
}

/** Reads one reported record; anything else (another app's, or garbage) is skipped. */
function parse(v: unknown): RunningStatsRecord | undefined {
  const r = v as Record<string, unknown> | null;
  if (typeof r !== 'object' || r === null || !isInt(r['task'])) return undefined;
  if ('final' in r) return isStats(r['final']) ? (r as RunningStatsRecord) : undefined;
  switch (r['event']) {
    case 'promoted':
      return isInt(r['seq']) && isInt(r['incarnation']) && isInt(r['epoch']) ? (r as RunningStatsRecord) : undefined;
    case 'cold-start':
      return isInt(r['incarnation']) && isInt(r['epoch']) ? (r as RunningStatsRecord) : undefined;
    case 'kill':
      return isInt(r['epoch']) ? (r as RunningStatsRecord) : undefined;
    case 'neighbor-failed':
    case 'neighbor-restarted':
      return isInt(r['neighbor']) && isInt(r['incarnation']) && isInt(r['epoch']) ? (r as RunningStatsRecord) : undefined;
    default:
      return undefined;
  }
}

function difference(got: RunningStats, want: RunningStats): string {
  const f = FIELDS.find((k) => got[k] !== want[k]);
  return f === undefined ? 'same' : `${f} ${String(got[f])}, expected ${String(want[f])}`;
}

const list = (xs: readonly number[]) => xs.join(', ');

/** Checks the records of a run against the reference answer. */
export function checkRunningStats(options: RunningStatsCheckOptions, records: readonly unknown[]): RunningStatsVerdict {
  const { numTasks, numEpochs = 10, fanout = 2, killAt = [] } = options;
  const expected = expectedStats(numTasks, numEpochs, fanout);
  const finals = new Map<number, RunningStats[]>();
  const promotions: EventRecord<'promoted'>[] = [];
  const coldStarts: EventRecord<'cold-start'>[] = [];
  const kills: EventRecord<'kill'>[] = [];
  let neighborFailed = 0;
  let neighborRestarted = 0;
  for (const raw of records) {
    const r = parse(raw);
    if (!r) continue;
    if ('final' in r) finals.set(r.task, [...(finals.get(r.task) ?? []), r.final]);
    else if (r.event === 'promoted') promotions.push(r);
    else if (r.event === 'cold-start') coldStarts.push(r);
    else if (r.event === 'kill') kills.push(r);
    else if (r.event === 'neighbor-failed') neighborFailed++;
    else neighborRestarted++;
  }

  const missing: number[] = [];
  const lost: number[] = [];
  const wrong: number[] = [];
  const details: string[] = [];
  for (let t = 0; t < numTasks; t++) {
    const got = finals.get(t) ?? [];
    const want = expected[t]!;
    if (got.length === 0) {
      missing.push(t);
      continue;
    }
    if (got.some((s) => s.epochs < want.epochs)) lost.push(t);
    const bad = got.find((s) => difference(s, want) !== 'same');
    if (bad) {
      wrong.push(t);
      if (details.length < 3) details.push(`task ${t}: ${difference(bad, want)}`);
    }
  }
  const notCarriedOut = killAt.filter((k) => !kills.some((x) => x.task === k.task && x.epoch === k.epoch));

  const ok = missing.length === 0 && wrong.length === 0 && notCarriedOut.length === 0;
  const events = `neighbour events: ${neighborFailed} failed, ${neighborRestarted} restarted`;
  const takeovers =
    promotions.length === 0
      ? 'no promotion'
      : `${promotions.length} promotion(s) with the state: ${promotions.map((p) => `task ${p.task} at seq ${p.seq} in epoch ${p.epoch}`).join(', ')}`;
  const cold = coldStarts.length === 0 ? '' : `; ${coldStarts.length} cold start(s): ${coldStarts.map((c) => `task ${c.task} in epoch ${c.epoch}`).join(', ')}`;
  const tail = `${takeovers}${cold}; ${events}`;
  let message: string;
  if (ok) {
    message = `PASS: exact statistics for ${numTasks} tasks over ${numEpochs + 1} epochs (every sum and digest as the reference run); ${tail}`;
  } else {
    const parts: string[] = [];
    if (lost.length > 0) {
      const why = lost.map((t) => {
        const held = Math.min(...(finals.get(t) ?? []).map((s) => s.epochs));
        const cold = coldStarts.find((c) => c.task === t);
        return `task ${t} holds ${held} of ${numEpochs + 1} epochs${cold ? ` (restarted cold in epoch ${cold.epoch}, incarnation ${cold.incarnation})` : ''}`;
      });
      parts.push(`state LOST: ${why.join('; ')}: its primary died and no backup held its state, so it started from nothing (with --backups 1 a promoted backup keeps it)`);
    }
    if (wrong.length > 0) parts.push(`${wrong.length} of ${numTasks} tasks differ from the reference (${details.join('; ')})`);
    if (missing.length > 0) parts.push(`no final statistics from task(s) ${list(missing)}`);
    if (notCarriedOut.length > 0) parts.push(`not carried out: ${notCarriedOut.map((k) => `kill-at ${k.epoch}:${k.task}`).join(', ')}`);
    message = `FAIL: ${parts.join('; ')}; ${tail}`;
  }
  return { ok, message, lost, wrong, missing, promotions, coldStarts, kills, neighborFailed, neighborRestarted };
}
