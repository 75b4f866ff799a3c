// The hot-standby scenarios' checks, on made-up histories: what they accept and
// what they catch (a lost or doubled update, a gap, a cold takeover).
import { describe, expect, it } from 'vitest';
import type { RoleChange } from '@taskgraph/api';
import { checkFinalState, checkPromotions } from '../src/scenarios/standby-checks.js';
import { StandbyRecorder, StandbyTask } from '../src/scenarios/standby-probe.js';

/** Task 1's primary of `incarnation` (on node `incarnation`) issued `count` values from `from`; the first `acked` were acknowledged. */
function stream(rec: StandbyRecorder, incarnation: number, from: number, count: number, acked: number): string[] {
  const values: string[] = [];
  for (let n = 1; n <= count; n++) {
    const issued = { task: 1, node: incarnation, incarnation, value: `1.${incarnation}.${n}`, position: from + n - 1 };
    rec.issued.push(issued);
    rec.outcome(n <= acked ? { ...issued, acked: true, seq: issued.position } : { ...issued, acked: false, code: 'CLOSED', message: 'killed' });
    values.push(issued.value);
  }
  return values;
}

/** Two primaries: the first issued 5 and 3 were acknowledged; the second took over at `promotedAt` and issued 2, both acknowledged. */
function history(promotedAt: number) {
  const rec = new StandbyRecorder();
  const first = stream(rec, 1, 1, 5, 3);
  const second = stream(rec, 2, promotedAt + 1, 2, 2);
  return { rec, first, second };
}

function primary(rec: StandbyRecorder, node: number, change: Omit<RoleChange, 'role' | 'token'>, held: number): void {
  const object = new StandbyTask({ recorder: rec, node, paceMs: 1 });
  object.id = 1;
  rec.tasks.set(node, object);
  rec.event(object, { kind: 'primary', change: { ...change, role: 'primary', token: String(node) }, held });
}

describe('checkFinalState', () => {
  it('accepts every acknowledged update in order, with or without unacknowledged ones the promoted backup had', () => {
    for (const promotedAt of [3, 4, 5]) {
      const { rec, first, second } = history(promotedAt);
      expect(() => checkFinalState(rec, 1, [...first.slice(0, promotedAt), ...second])).not.toThrow();
    }
  });

  it('catches a lost acknowledged update', () => {
    const { rec, first, second } = history(3);
    expect(() => checkFinalState(rec, 1, [...first.slice(0, 2), ...second])).toThrow(/value #3 \(1\.1\.3\) was acknowledged/);
    expect(() => checkFinalState(rec, 1, first.slice(0, 5))).toThrow(/incarnation 2/);
  });

  it('catches an update applied twice, a gap and a wrong order', () => {
    const { rec, first, second } = history(3);
    expect(() => checkFinalState(rec, 1, [...first.slice(0, 3), first[2]!, ...second])).toThrow(/incarnation 2 issued/);
    expect(() => checkFinalState(rec, 1, [...first.slice(0, 3), first[4]!, ...second])).toThrow(/incarnation 2 issued/);
    expect(() => checkFinalState(rec, 1, [...second, ...first.slice(0, 3)])).toThrow(/incarnation 1 issued/);
    expect(() => checkFinalState(rec, 1, [...first.slice(0, 3), ...second, first[3]!])).toThrow(/break the order of issue from position 6/);
  });

  it('catches an acknowledged update whose seq is not its position', () => {
    // The second primary numbered on from 4 while the state it was promoted with held 3 values.
    const { rec, first, second } = history(4);
    expect(() => checkFinalState(rec, 1, [...first.slice(0, 3), ...second])).toThrow(/seq 5/);
  });
});

describe('checkPromotions', () => {
  it('accepts a fresh first primary and a backup promoted with the acknowledged updates', () => {
    const { rec } = history(4);
    primary(rec, 1, { incarnation: 1, promoted: false, seq: 0 }, 0);
    primary(rec, 2, { incarnation: 2, promoted: true, seq: 4 }, 4);
    expect(() => checkPromotions(rec, 1, 1)).not.toThrow();
  });

  it('catches a cold takeover, a seq below the last acknowledged one, and a missing takeover', () => {
    const cold = history(0).rec;
    primary(cold, 1, { incarnation: 1, promoted: false, seq: 0 }, 0);
    primary(cold, 2, { incarnation: 2, promoted: false, seq: 0 }, 0);
    expect(() => checkPromotions(cold, 1, 1)).toThrow(/was a promoted backup/);

    const behind = history(2).rec;
    primary(behind, 1, { incarnation: 1, promoted: false, seq: 0 }, 0);
    primary(behind, 2, { incarnation: 2, promoted: true, seq: 2 }, 2);
    expect(() => checkPromotions(behind, 1, 1)).toThrow(/acknowledged before it: 3/);
    expect(() => checkPromotions(behind, 1, 2)).toThrow(/2 takeovers/);
  });
});
