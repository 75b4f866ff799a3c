/**
 * The exact answers of the hot-standby scenarios, checked against what the
 * recorder saw: which states a task may end with given the updates that were
 * acknowledged, and how its primaries followed each other.
 */
import assert from 'node:assert/strict';
import type { RoleChange } from '@taskgraph/api';
import type { StandbyRecorder, StandbyTask } from './standby-probe.js';

/**
 * A task's final state must be, in order: for each incarnation of its primary that
 * issued values (in incarnation order), a prefix of the values it issued, in the
 * order it issued them, holding every value of it that was acknowledged. So no
 * acknowledged value is lost, none is there twice, nothing is out of order, and a
 * value that was never acknowledged is there only if every value its primary
 * issued before it is (the backup that was promoted had applied it). Each
 * acknowledged value also sits at the position its seq names.
 */
export function checkFinalState(rec: StandbyRecorder, task: number, state: readonly string[]): void {
  const byIncarnation = new Map<number, string[]>();
  for (const i of rec.issued) {
    if (i.task !== task) continue;
    const list = byIncarnation.get(i.incarnation) ?? [];
    list.push(i.value);
    byIncarnation.set(i.incarnation, list);
  }
  const acked = rec.acked(task);
  assert.ok(acked.length > 0, `task ${task}: some updates were acknowledged`);
  let at = 0;
  for (const incarnation of [...byIncarnation.keys()].sort((a, b) => a - b)) {
    const values = byIncarnation.get(incarnation)!;
    let held = 0;
    while (at < state.length && held < values.length && state[at] === values[held]) {
      at++;
      held++;
    }
    const ackedHere = acked.filter((a) => a.incarnation === incarnation).map((a) => values.indexOf(a.value));
    const lastAcked = Math.max(-1, ...ackedHere);
    assert.ok(
      held > lastAcked,
      `task ${task}: the state holds the first ${held} values incarnation ${incarnation} issued, but its value #${lastAcked + 1} (${values[lastAcked]}) was acknowledged`,
    );
  }
  assert.equal(at, state.length, `task ${task}: the state has values that break the order of issue from position ${at + 1}: ${state.slice(at, at + 5).join(', ')}`);
  for (const a of acked) {
    assert.equal(a.seq, a.position, `task ${task}: ${a.value} was acknowledged with seq ${a.seq}, issued at position ${a.position}`);
    assert.equal(state[a.seq - 1], a.value, `task ${task}: acknowledged ${a.value} (seq ${a.seq}) is at its position`);
  }
}

/** The task objects of `task` that became its primary, by incarnation. */
export function primariesOf(rec: StandbyRecorder, task: number): Array<{ readonly object: StandbyTask; readonly change: RoleChange; readonly held: number }> {
  const out: Array<{ object: StandbyTask; change: RoleChange; held: number }> = [];
  for (const object of rec.tasks.values()) {
    if (object.id !== task) continue;
    for (const e of object.events) if (e.kind === 'primary') out.push({ object, change: e.change, held: e.held });
  }
  return out.sort((a, b) => a.change.incarnation - b.change.incarnation);
}

/**
 * The task's first primary started fresh and each later one was a backup promoted
 * with its state: `promoted: true`, the next incarnation, and a `seq` that is the
 * number of values its state held, at least the last seq acknowledged before it
 * and at most the last one issued before it.
 */
export function checkPromotions(rec: StandbyRecorder, task: number, takeovers: number): void {
  const primaries = primariesOf(rec, task);
  assert.equal(primaries.length, takeovers + 1, `task ${task}: ${takeovers} takeovers after its first primary (incarnations ${primaries.map((p) => p.change.incarnation).join(', ')})`);
  primaries.forEach(({ change, held, object }, k) => {
    assert.equal(change.role, 'primary');
    assert.equal(change.incarnation, k + 1, `task ${task}: its primaries' incarnations follow each other`);
    if (k === 0) {
      assert.deepEqual({ promoted: change.promoted, seq: change.seq }, { promoted: false, seq: 0 }, `task ${task}: its first primary started fresh`);
      return;
    }
    assert.equal(change.promoted, true, `task ${task}: incarnation ${change.incarnation} (node ${object.node}) was a promoted backup`);
    assert.equal(change.seq, held, `task ${task}: incarnation ${change.incarnation}'s seq is the number of values its state held`);
    const earlier = (o: { task: number; incarnation: number }) => o.task === task && o.incarnation < change.incarnation;
    const lastAcked = Math.max(0, ...rec.outcomes.filter((o) => earlier(o) && o.acked).map((o) => o.position));
    const lastIssued = Math.max(0, ...rec.issued.filter(earlier).map((o) => o.position));
    assert.ok(
      change.seq >= lastAcked && change.seq <= lastIssued,
      `task ${task}: incarnation ${change.incarnation} was promoted at seq ${change.seq}; acknowledged before it: ${lastAcked}, issued: ${lastIssued}`,
    );
  });
}

/** Each backup's state equals its primary's (once the streams stopped and the backups are in sync). */
export function checkBackupsMirror(task: number, primary: StandbyTask, backups: readonly StandbyTask[], count: number): void {
  assert.equal(backups.length, count, `task ${task} has ${count} backups at the end`);
  for (const b of backups) {
    const differ = b.state.findIndex((v, i) => v !== primary.state[i]);
    const at = differ >= 0 ? differ : Math.min(b.state.length, primary.state.length);
    assert.ok(
      b.state.length === primary.state.length && differ < 0,
      `task ${task}: the backup on node ${b.node} mirrors the primary on node ${primary.node} ` +
        `(it holds ${b.state.length} values, the primary ${primary.state.length}; from position ${at + 1}: ` +
        `[${b.state.slice(at, at + 4).join(', ')}] against [${primary.state.slice(at, at + 4).join(', ')}])`,
    );
  }
}
