import { TaskGraphError } from '@taskgraph/api';
import { MemoryStore, createMemoryCoordinator } from '@taskgraph/coord-memory';
import { LocalCluster, nodeResources, silentLogger } from '@taskgraph/core';
import { LocalNetwork, createLocalTransport } from '@taskgraph/transport-local';
import { describe, expect, it } from 'vitest';
import {
  OFFER_RANGE,
  RUNNING_STATS_LINK_TYPES,
  RunningStatsTaskBuilder,
  checkRunningStats,
  expectedStats,
  fold,
  freshState,
  initialDigest,
  mix32,
  offerOf,
  runningStatsLinkages,
  statsNeighbours,
  statsOf,
} from '../src/index.js';
import type { RunningStatsOptions, RunningStatsRecord } from '../src/index.js';

async function runStats(o: { numTasks: number; backups: number; standbys: number } & Omit<RunningStatsOptions, 'numTasks' | 'onRecord'>) {
  const store = new MemoryStore();
  const network = new LocalNetwork();
  const records: RunningStatsRecord[] = [];
  const cluster = new LocalCluster({
    job: 'running-stats-test',
    numTasks: o.numTasks,
    linkTypes: RUNNING_STATS_LINK_TYPES,
    backups: o.backups,
    standbys: o.standbys,
    controllerCoordinator: await createMemoryCoordinator({ store, namespace: 'tg' }),
    resources: async () => nodeResources(await createMemoryCoordinator({ store, namespace: 'tg' }), await createLocalTransport({ network })),
    builder: () => new RunningStatsTaskBuilder({ ...o, onRecord: (r) => records.push(r) }),
    linkages: () => runningStatsLinkages(o),
    // Kills free their slot at once; a long TTL only keeps a busy machine from losing leases.
    node: { sessionTtlMs: 5000 },
    logger: silentLogger,
  });
  try {
    await cluster.start();
    const status = await cluster.waitUntilDone();
    return { status, records, verdict: checkRunningStats(o, records) };
  } finally {
    await cluster.close();
  }
}

describe('running statistics: the arithmetic', () => {
  it('mix32 is a 32-bit word, deterministic, and sensitive to both inputs', () => {
    expect(mix32(1, 2)).toBe(mix32(1, 2));
    expect(mix32(1, 2)).not.toBe(mix32(2, 1));
    for (const [a, b] of [[0, 0], [0xffffffff, 7], [123, -5]] as const) {
      const h = mix32(a, b);
      expect(Number.isInteger(h) && h >= 0 && h < 2 ** 32).toBe(true);
    }
  });

  it('fold counts each value once, keeps the digest the epoch began with, and is the same on replay', () => {
    const s0 = freshState(3);
    expect(s0).toMatchObject({ foldedEpoch: -1, epochs: 0, count: 0, min: null, max: null, digest: initialDigest(3) });
    const s1 = fold(s0, { epoch: 0, values: [[1, 10], [7, 990]] });
    expect(s1).toMatchObject({ foldedEpoch: 0, epochs: 1, count: 2, sum: 1000, sumSq: 100 + 990 * 990, min: 10, max: 990, prevDigest: s0.digest });
    expect(s1.digest).not.toBe(s0.digest);
    const s2 = fold(s1, { epoch: 1, values: [[1, 0]] });
    expect(s2).toMatchObject({ foldedEpoch: 1, epochs: 2, count: 3, sum: 1000, min: 0, max: 990, prevDigest: s1.digest });
    // Same values, another order: another digest (the fold is a history, not a set).
    expect(fold(s0, { epoch: 0, values: [[7, 990], [1, 10]] }).digest).not.toBe(s1.digest);
    expect(fold(s0, { epoch: 0, values: [[1, 10], [7, 990]] })).toEqual(s1);
    // A kill after a fold is part of the state (a promoted backup must not repeat it), not of the statistics.
    const killed = fold(s1, { epoch: 1, values: [[1, 0]], kill: true });
    expect(killed.kills).toEqual([1]);
    expect(statsOf(killed)).toEqual(statsOf(s2));
  });

  it('offers are in 0..OFFER_RANGE-1 and change with the epoch', () => {
    const offers = Array.from({ length: 50 }, (_, e) => offerOf(initialDigest(0), e));
    expect(offers.every((v) => Number.isInteger(v) && v >= 0 && v < OFFER_RANGE)).toBe(true);
    expect(new Set(offers).size).toBeGreaterThan(40);
  });

  it('the reference: a task folds one value per neighbour per epoch, each the neighbour’s offer from its digest at that epoch', () => {
    expect(statsNeighbours(7, 2, 0)).toEqual([1, 2]);
    expect(statsNeighbours(7, 2, 1)).toEqual([0, 3, 4]);
    expect(statsNeighbours(7, 2, 6)).toEqual([2]);
    // Two tasks, epoch 0 only: each folds the other's first offer.
    const [a, b] = expectedStats(2, 0);
    const v1 = offerOf(initialDigest(1), 0);
    const v0 = offerOf(initialDigest(0), 0);
    expect(a).toEqual(statsOf(fold(freshState(0), { epoch: 0, values: [[1, v1]] })));
    expect(b).toMatchObject({ epochs: 1, count: 1, sum: v0, sumSq: v0 * v0, min: v0, max: v0 });
    // Epoch 1's offers come from the digests after epoch 0.
    const [a1] = expectedStats(2, 1);
    const b0 = fold(freshState(1), { epoch: 0, values: [[0, v0]] });
    expect(a1!.sum).toBe(v1 + offerOf(b0.digest, 1));
    // 15 tasks, 11 epochs: every edge carries a value both ways every epoch.
    const all = expectedStats(15, 10);
    expect(all.every((s) => s.epochs === 11)).toBe(true);
    expect(all.reduce((n, s) => n + s.count, 0)).toBe(2 * 14 * 11);
    expect(all.map((s) => s.count)).toEqual(Array.from({ length: 15 }, (_, t) => statsNeighbours(15, 2, t).length * 11));
  });

  it('the answer is pinned: a change to the arithmetic shows here', () => {
    expect(expectedStats(15, 10)[0]).toEqual({ epochs: 11, count: 22, sum: 10670, sumSq: 7059630, min: 49, max: 946, digest: 713291424 });
    expect(expectedStats(15, 10)[14]).toEqual({ epochs: 11, count: 11, sum: 6293, sumSq: 4312439, min: 95, max: 855, digest: 2985662617 });
  });

  it('the builder rejects bad options with INVALID_ARGUMENT', () => {
    const bad: RunningStatsOptions[] = [
      { numTasks: 0 },
      { numTasks: 3, numEpochs: -1 },
      { numTasks: 3, fanout: 0 },
      { numTasks: 3, killAt: [{ epoch: 1, task: 3 }] },
      { numTasks: 3, numEpochs: 4, killAt: [{ epoch: 5, task: 0 }] },
      { numTasks: 3, killAt: [{ epoch: 1, task: 1 }, { epoch: 1, task: 1 }] },
    ];
    for (const o of bad) {
      let caught: unknown;
      try {
        new RunningStatsTaskBuilder(o);
      } catch (err) {
        caught = err;
      }
      expect(TaskGraphError.is(caught, 'INVALID_ARGUMENT'), JSON.stringify(o)).toBe(true);
    }
  });
});

describe('running statistics: the verdict', () => {
  const o = { numTasks: 3, numEpochs: 2 };
  const exact = expectedStats(3, 2).map((final, task) => ({ task, final }));

  it('passes the exact answer, counting promotions and neighbour events, and skips records it does not know', () => {
    const v = checkRunningStats(o, [
      ...exact,
      { task: 1, event: 'promoted', seq: 2, incarnation: 2, epoch: 1 },
      { task: 0, event: 'neighbor-failed', neighbor: 1, incarnation: 1, epoch: 1 },
      { task: 0, event: 'neighbor-restarted', neighbor: 1, incarnation: 2, epoch: 1 },
      exact[1],
      'noise',
      { task: 2, final: { epochs: 'x' } },
    ]);
    expect(v.ok).toBe(true);
    expect(v.message).toBe(
      'PASS: exact statistics for 3 tasks over 3 epochs (every sum and digest as the reference run); 1 promotion(s) with the state: task 1 at seq 2 in epoch 1; neighbour events: 1 failed, 1 restarted',
    );
  });

  it('names a lost state, the tasks it made wrong, missing reports and faults not carried out', () => {
    const lostState = { ...exact[2]!.final, epochs: 1, sum: 5 };
    const v = checkRunningStats({ ...o, killAt: [{ epoch: 1, task: 2 }, { epoch: 2, task: 0 }] }, [
      exact[0],
      { task: 2, final: lostState },
      { task: 2, event: 'cold-start', incarnation: 2, epoch: 1 },
      { task: 2, event: 'kill', epoch: 1 },
    ]);
    expect(v.ok).toBe(false);
    expect(v.lost).toEqual([2]);
    expect(v.wrong).toEqual([2]);
    expect(v.missing).toEqual([1]);
    expect(v.message).toBe(
      'FAIL: state LOST: task 2 holds 1 of 3 epochs (restarted cold in epoch 1, incarnation 2): its primary died and no backup held its state, so it started from nothing (with --backups 1 a promoted backup keeps it); ' +
        '1 of 3 tasks differ from the reference (task 2: epochs 1, expected 3); no final statistics from task(s) 1; not carried out: kill-at 2:0; no promotion; 1 cold start(s): task 2 in epoch 1; neighbour events: 0 failed, 0 restarted',
    );
  });

  it('two different final reports of one task are wrong even if one is right', () => {
    const v = checkRunningStats(o, [...exact, { task: 0, final: { ...exact[0]!.final, digest: 1 } }]);
    expect(v.ok).toBe(false);
    expect(v.wrong).toEqual([0]);
    expect(v.message).toContain('task 0: digest 1, expected');
  });
});

describe('running statistics: whole runs on the in-process backends', () => {
  it('computes the exact answer with 15 tasks (no faults, no backups)', async () => {
    const { status, verdict, records } = await runStats({ numTasks: 15, backups: 0, standbys: 0 });
    expect(status.state).toBe('done');
    expect(status.epoch).toBe(10);
    expect(verdict.message).toMatch(/^PASS: exact statistics for 15 tasks over 11 epochs/);
    expect(records.filter((r) => 'event' in r)).toEqual([]);
  });

  it('with a backup per task, primaries killed mid-job (the root and a subtree root) are replaced by promoted backups: exact answer', async () => {
    const killAt = [{ epoch: 3, task: 1 }, { epoch: 5, task: 0 }];
    const { status, verdict, records } = await runStats({ numTasks: 7, numEpochs: 8, backups: 1, standbys: 1, killAt });
    expect(verdict.message, verdict.message).toMatch(/^PASS: /);
    expect(verdict.kills.map((k) => `${k.epoch}:${k.task}`)).toEqual(['3:1', '5:0']);
    // Each killed task went on with its state: a promotion with the seq it had reached, no cold start.
    expect(verdict.coldStarts).toEqual([]);
    expect(verdict.promotions.map((p) => ({ task: p.task, epoch: p.epoch, incarnation: p.incarnation }))).toEqual([
      { task: 1, epoch: 3, incarnation: 2 },
      { task: 0, epoch: 5, incarnation: 2 },
    ]);
    // Every fold was acknowledged before the kill: the seq is the number of epochs folded.
    expect(verdict.promotions.map((p) => p.seq)).toEqual([4, 6]);
    expect(status.tasks[1]?.incarnations).toBe(2);
    expect(status.tasks[0]?.incarnations).toBe(2);
    // Task 1's neighbours (0, 3, 4) heard it fail and come back.
    const heard = (kind: string) =>
      records
        .filter((r): r is Extract<RunningStatsRecord, { neighbor: number }> => 'event' in r && r.event === kind && 'neighbor' in r && r.neighbor === 1)
        .map((r) => `${r.task}:${r.incarnation}`)
        .sort();
    expect(heard('neighbor-failed')).toEqual(['0:1', '3:1', '4:1']);
    expect(heard('neighbor-restarted')).toEqual(['0:2', '3:2', '4:2']);
  });

  it('without backups the same kill loses the task’s state, and the verdict says so', async () => {
    const { status, verdict } = await runStats({ numTasks: 7, numEpochs: 8, backups: 0, standbys: 1, killAt: [{ epoch: 3, task: 1 }] });
    expect(status.state).toBe('done');
    expect(verdict.ok).toBe(false);
    expect(verdict.lost).toEqual([1]);
    expect(verdict.promotions).toEqual([]);
    expect(verdict.coldStarts.map((c) => ({ task: c.task, epoch: c.epoch }))).toEqual([{ task: 1, epoch: 3 }]);
    // The cold replacement does not kill itself again: one kill, two incarnations.
    expect(verdict.kills).toHaveLength(1);
    expect(status.tasks[1]?.incarnations).toBe(2);
    // The lost digest spread: the tasks that read from task 1 afterwards are wrong too.
    expect(verdict.wrong).toEqual(expect.arrayContaining([0, 1, 3, 4]));
    expect(verdict.message).toMatch(/^FAIL: state LOST: task 1 holds 6 of 9 epochs \(restarted cold in epoch 3, incarnation 2\)/);
  });
});
