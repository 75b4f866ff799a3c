/**
 * Fault schedules. A schedule is drawn from the seed before the run starts: each
 * fault has a time, a kind, a duration and its own parameters (a target is an index
 * into the nodes alive when it strikes). Removing faults from a schedule (shrinking)
 * leaves the others as they were.
 */
import type { Rng } from './rng.js';

export const FAULT_KINDS = [
  'crash',
  'pause',
  'store-partition',
  'peer-partition',
  'message-delay',
  'message-drop',
  'message-duplicate',
  'store-outage',
  'unknown-outcome',
  'clock-jump',
] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

export interface Fault {
  readonly kind: FaultKind;
  /** Virtual ms from the start of the run. */
  readonly at: number;
  /** How long it lasts (0 for instant faults; a crash's restart delay). */
  readonly durationMs: number;
  /** Index into the live nodes when it strikes (modulo their count). */
  readonly target: number;
  /** A second target (the peers cut off), or a count (operations hit), or ms (a clock jump). */
  readonly param: number;
  /** A probability for message faults. */
  readonly probability: number;
}

export interface ScheduleOptions {
  /** Faults are drawn in [0, horizonMs). */
  readonly horizonMs: number;
  readonly ttlMs: number;
  readonly maxFaults: number;
  /**
   * Keep node faults (crash, pause, partitions, store outages) this far apart and
   * store outages under half a TTL, so a task always keeps a live copy (hot standby):
   * an outage past the TTL ends every session at once, primaries and backups alike.
   */
  readonly spacingMs?: number;
}

const NODE_FAULTS: ReadonlySet<FaultKind> = new Set(['crash', 'pause', 'store-partition', 'peer-partition', 'store-outage']);

export function drawSchedule(rng: Rng, o: ScheduleOptions): Fault[] {
  const n = rng.int(0, o.maxFaults);
  const faults: Fault[] = [];
  let lastNodeFaultEnd = -Infinity;
  for (let i = 0; i < n; i++) {
    const kind = rng.pick(FAULT_KINDS);
    let at = rng.between(0, o.horizonMs);
    const ttl = o.ttlMs;
    const drawn =
      kind === 'crash'
        ? rng.between(ttl / 4, 2 * ttl)
        : kind === 'pause'
          ? rng.between(ttl / 4, 2.5 * ttl)
          : kind === 'store-partition' || kind === 'peer-partition' || kind === 'store-outage'
            ? rng.between(ttl / 5, 2 * ttl)
            : kind === 'message-delay' || kind === 'message-drop' || kind === 'message-duplicate'
              ? rng.between(ttl / 2, 3 * ttl)
              : 0;
    const durationMs = o.spacingMs !== undefined && kind === 'store-outage' ? Math.min(drawn, ttl / 2) : drawn;
    const param = kind === 'unknown-outcome' ? rng.int(1, 3) : kind === 'clock-jump' ? rng.between(1, ttl / 2) : rng.int(0, 1000);
    const probability = kind === 'message-drop' ? rng.between(0.05, 0.5) : kind === 'message-duplicate' ? rng.between(0.1, 0.6) : rng.between(0.2, 1);
    if (o.spacingMs !== undefined && NODE_FAULTS.has(kind)) {
      // Sequential and apart: the previous node fault is over and its task re-protected.
      at = Math.max(at, lastNodeFaultEnd + o.spacingMs);
      lastNodeFaultEnd = at + durationMs;
    }
    faults.push({ kind, at: round(at), durationMs: round(durationMs), target: rng.int(0, 1000), param: kind === 'clock-jump' ? round(param) : param, probability: round(probability, 3) });
  }
  return faults.sort((a, b) => a.at - b.at || FAULT_KINDS.indexOf(a.kind) - FAULT_KINDS.indexOf(b.kind));
}

function round(x: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** When the last fault is over (its heal, or the restart after a crash). */
export function healedAt(faults: readonly Fault[]): number {
  return faults.reduce((m, f) => Math.max(m, f.at + f.durationMs), 0);
}

export function describeFault(f: Fault): string {
  const base = `${f.at}ms ${f.kind}`;
  switch (f.kind) {
    case 'crash':
      return `${base} node#${f.target} (restart after ${f.durationMs}ms)`;
    case 'pause':
    case 'store-partition':
      return `${base} node#${f.target} for ${f.durationMs}ms`;
    case 'peer-partition':
      return `${base} node#${f.target} from node#${f.param} for ${f.durationMs}ms`;
    case 'message-delay':
    case 'message-drop':
    case 'message-duplicate':
      return `${base} p=${f.probability} for ${f.durationMs}ms`;
    case 'store-outage':
      return `${base} for ${f.durationMs}ms`;
    case 'unknown-outcome':
      return `${base} x${f.param}`;
    case 'clock-jump':
      return `${base} node#${f.target} +${f.param}ms`;
  }
}
