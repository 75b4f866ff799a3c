/**
 * The hot-standby scenarios: tasks whose primaries stream updates to live backups
 * while primaries are killed or cut off the store and backups are killed and
 * replaced. Each checks an exact answer: every task's final state against the
 * updates that were acknowledged, every takeover a promotion with the state, and
 * the role and neighbour events each task object heard, in order.
 */
import assert from 'node:assert/strict';
import type { Logger } from '@taskgraph/api';
import type { ClusterNode, LocalCluster } from '@taskgraph/core';
import { eventually } from '../eventually.js';
import type { TestApi } from '../types.js';
import type { ScenarioBackend } from './backend.js';
import { runJob } from './run-job.js';
import { checkBackupsMirror, checkFinalState, checkPromotions, primariesOf } from './standby-checks.js';
import { STANDBY_LINK_TYPES, StandbyRecorder, StandbyTaskBuilder, standbyLinkages } from './standby-probe.js';
import type { StandbyEvent, StandbyTask, StreamOutcome } from './standby-probe.js';

interface Final {
  readonly primaries: readonly StandbyTask[];
  readonly backups: ReadonlyArray<readonly StandbyTask[]>;
}

interface Drive {
  readonly cluster: LocalCluster;
  readonly rec: StandbyRecorder;
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

export function standbyScenarios(test: TestApi, backend: ScenarioBackend, logger: Logger, timeout: number): void {
  const ttl = backend.sessionTtlMs;
  // About a hundred bursts per session TTL: a scenario that waits out a TTL streams a few hundred values.
  const paceMs = Math.max(5, ttl / 100);
  // Store reads (the job's status) are polled, not hammered.
  const poll = { timeoutMs: timeout / 3, intervalMs: 100 };

  function taskOf(rec: StandbyRecorder, node: ClusterNode | undefined): StandbyTask | undefined {
    return node === undefined ? undefined : rec.tasks.get(node.index);
  }

  function nodeAt(cluster: LocalCluster, index: number): ClusterNode {
    const n = cluster.nodes.find((c) => c.index === index);
    assert.ok(n, `node ${index} is in the cluster`);
    return n;
  }

  /**
   * Every task in `tasks` has a running primary and `backups` backups in sync with
   * it, as the store shows them and as the nodes themselves do (a node that is
   * leaving may still have its records in the store).
   */
  async function inSync(cluster: LocalCluster, tasks: readonly number[], backups: number): Promise<boolean> {
    const s = await cluster.controller.status();
    return tasks.every((t) => {
      const ts = s?.tasks[t];
      const live = cluster.backupsOf(t).map((b) => b.node.nodeId).sort();
      return (
        ts?.token !== undefined &&
        cluster.ownerOf(t)?.node.nodeId === ts.nodeId &&
        ts.backups.length === backups &&
        ts.backups.every((b) => b.state === 'ready' && b.primaryToken === ts.token) &&
        JSON.stringify(ts.backups.map((b) => b.nodeId).sort()) === JSON.stringify(live)
      );
    });
  }

  /**
   * Kills a node inside the `count`-th acknowledgement of `task` from now (so the
   * rest of the burst is in flight): `pick` names the node from that outcome.
   * Resolves with the node and the number of acks it had got then.
   */
  function killOnAck(rec: StandbyRecorder, cluster: LocalCluster, task: number, count: number, pick: (o: StreamOutcome) => ClusterNode | undefined) {
    return new Promise<{ victim: ClusterNode; ackedBefore: number }>((resolve, reject) => {
      let seen = 0;
      const off = rec.onOutcome((o) => {
        if (o.task !== task || !o.acked || ++seen < count) return;
        off();
        const victim = pick(o);
        if (!victim) {
          reject(new Error(`task ${task}: no node to kill at its ${count}th acknowledgement`));
          return;
        }
        const ackedBefore = rec.outcomes.filter((x) => x.node === victim.index && x.acked).length;
        void victim.node.kill();
        resolve({ victim, ackedBefore });
      });
    });
  }

  /** Kills the next node promoted to `task`'s primary inside its becamePrimary, before its backups re-synced with it. */
  function killOnPromotion(rec: StandbyRecorder, cluster: LocalCluster, task: number) {
    return new Promise<ClusterNode>((resolve) => {
      const off = rec.onEvent((object, e) => {
        if (object.id !== task || e.kind !== 'primary' || !e.change.promoted) return;
        off();
        const victim = nodeAt(cluster, object.node);
        void victim.node.kill();
        resolve(victim);
      });
    });
  }

  /** Resolves once `task` has had `count` more acknowledgements. */
  function acks(rec: StandbyRecorder, task: number, count: number): Promise<void> {
    const target = rec.acked(task).length + count;
    return eventually(`task ${task} has ${target} acknowledged updates`, () => rec.acked(task).length >= target, { timeoutMs: timeout / 3 }).then(() => undefined);
  }

  interface StandbyRunOptions {
    readonly kind: string;
    readonly numTasks: number;
    readonly backups: number;
    readonly standbys: number;
    /** Faults, once every task's backups are in sync; the streams stop after it. */
    readonly drive: (d: Drive) => Promise<void>;
  }

  /**
   * Runs the workload: waits until every task's backups are in sync, drives the
   * faults, stops the streams, waits until every backup is in sync again, takes
   * the final primaries and backups, and ends the job from a primary. Then checks
   * every task's final state and that its backups mirror it.
   */
  async function runStandby(o: StandbyRunOptions) {
    const rec = new StandbyRecorder();
    const tasks = range(o.numTasks);
    let final: Final | undefined;
    const { status, cluster } = await runJob(backend, logger, {
      kind: o.kind,
      numTasks: o.numTasks,
      backups: o.backups,
      standbys: o.standbys,
      builder: (node) => new StandbyTaskBuilder({ recorder: rec, node, paceMs }),
      linkTypes: STANDBY_LINK_TYPES,
      linkages: () => standbyLinkages(o.numTasks),
      during: async (cluster) => {
        try {
          await eventually('every task has its backups in sync', () => inSync(cluster, tasks, o.backups), poll);
          await o.drive({ cluster, rec });
          rec.stop();
          await eventually(
            'every stream stopped and every backup is in sync',
            async () => tasks.every((t) => taskOf(rec, cluster.ownerOf(t))?.streaming === false) && (await inSync(cluster, tasks, o.backups)),
            poll,
          );
          const primaries = tasks.map((t) => taskOf(rec, cluster.ownerOf(t))!);
          final = { primaries, backups: tasks.map((t) => cluster.backupsOf(t).map((b) => taskOf(rec, b)!)) };
          await primaries[0]!.shutdown();
        } catch (err) {
          // The job must end for the run to return and report the failure.
          await cluster.controller.finish('failed', 'the scenario failed').catch(() => undefined);
          throw err;
        }
      },
    });
    assert.equal(status.state, 'done');
    assert.ok(final);
    for (const t of tasks) {
      checkFinalState(rec, t, final.primaries[t]!.state);
      checkBackupsMirror(t, final.primaries[t]!, final.backups[t]!, o.backups);
    }
    return { rec, cluster, final };
  }

  /** No acknowledgement reached a killed node after its kill. */
  function checkNoAckAfterKill(rec: StandbyRecorder, killed: ReadonlyArray<{ victim: ClusterNode; ackedBefore: number }>): void {
    for (const { victim, ackedBefore } of killed) {
      const mine = rec.outcomes.filter((o) => o.node === victim.index);
      assert.equal(mine.filter((o) => o.acked).length, ackedBefore, `node ${victim.index}: no update acknowledged after it was killed`);
      assert.ok(mine.some((o) => !o.acked), `node ${victim.index} was streaming when killed: an update was refused`);
    }
  }

  test.describe('hot standby', () => {
    for (const backups of [1, 2]) {
      const kills = backups === 1 ? 3 : 4;
      test.it(
        `the primary of a task is killed ${kills} times while it streams (backups ${backups}, a cold standby): every takeover is a promotion, no acknowledged update lost or applied twice`,
        async () => {
          const onAck: Array<{ victim: ClusterNode; ackedBefore: number }> = [];
          const victims: ClusterNode[] = [];
          const { rec } = await runStandby({
            kind: `kill${backups}`,
            numTasks: 2,
            backups,
            standbys: 1,
            drive: async ({ cluster, rec }) => {
              const primaryOf = (o: StreamOutcome) => nodeAt(cluster, o.node);
              for (let round = 0; round < (backups === 1 ? kills : kills / 2); round++) {
                if (round > 0) await eventually('task 1 has a primary and its backups in sync again', () => inSync(cluster, [1], backups), poll);
                // Inside an acknowledgement, with the rest of the burst in flight.
                const killing = killOnAck(rec, cluster, 1, 10, primaryOf);
                // With two backups, the promoted one is killed too, inside its becamePrimary (before the
                // other backup re-synced with it): that backup still holds every acknowledged update.
                const second = backups === 2 ? killOnPromotion(rec, cluster, 1) : undefined;
                const killed = await killing;
                onAck.push(killed);
                victims.push(killed.victim);
                if (second) victims.push(await second);
              }
              await eventually('task 1 has a primary and its backups in sync again', () => inSync(cluster, [1], backups), poll);
              await acks(rec, 1, 10);
            },
          });
          for (const v of victims) assert.equal((await v.finished).outcome?.reason, 'killed', `node ${v.index} was killed`);
          checkNoAckAfterKill(rec, onAck);
          checkPromotions(rec, 1, kills);
          checkPromotions(rec, 0, 0);
        },
        timeout,
      );
    }

    test.it(
      'a primary cut off from the store while it streams loses its lease: none of its updates is acknowledged once it knows, each is refused with LeaseLostError, and its backup is promoted with every acknowledged update',
      async () => {
        let victim: ClusterNode | undefined;
        let cutAt = 0;
        // Each outcome of the victim's updates, with where the victim's node was in its life then.
        const seen: Array<StreamOutcome & { readonly phase: string }> = [];
        const { rec } = await runStandby({
          kind: 'isolate',
          numTasks: 2,
          backups: 1,
          standbys: 1,
          drive: async ({ cluster, rec }) => {
            await acks(rec, 1, 10);
            const target = cluster.ownerOf(1);
            assert.ok(target, 'task 1 has a primary');
            victim = target;
            rec.onOutcome((o) => {
              if (o.node === target.index) seen.push({ ...o, phase: target.node.state });
            });
            cutAt = rec.outcomes.filter((o) => o.node === target.index && o.acked).length;
            const heal = await backend.isolate(target.resources);
            try {
              assert.equal((await target.finished).outcome?.reason, 'lease-lost', 'the cut-off primary left when its lease was lost');
              await eventually('a backup of task 1 took over and has a backup in sync', () => inSync(cluster, [1], 1), poll);
            } finally {
              await heal();
            }
            await acks(rec, 1, 10);
          },
        });
        assert.ok(victim);
        const mine = rec.outcomes.filter((o) => o.node === victim!.index);
        assert.ok(mine.filter((o) => o.acked).length > cutAt, 'the victim streamed on after the cut, until its lease was lost');
        const late = seen.filter((o) => o.phase === 'leaving' || o.phase === 'done');
        assert.deepEqual(late.filter((o) => o.acked), [], 'no update was acknowledged once the victim knew its lease was lost');
        assert.ok(late.length > 0, 'the victim called update() after its lease was lost');
        checkPromotions(rec, 1, 1);
        checkPromotions(rec, 0, 0);
        // BackedUpFramework.update() is documented to reject with LeaseLostError once the node's session is lost.
        assert.deepEqual(
          late.map((o) => (o.acked ? 'acked' : `${o.code}: ${o.message}`)).filter((refusal) => !refusal.startsWith('LEASE_LOST')),
          [],
          'each of those updates was refused with LeaseLostError',
        );
      },
      timeout,
    );

    test.it(
      'a backup killed mid-stream is replaced by a spare node, which catches up from a snapshot and then the updates; the stream never waits a session TTL; a later primary kill promotes the new backup with the exact state',
      async () => {
        let killedBackup: ClusterNode | undefined;
        let holdersAtKill: number[] = [];
        let recruit: ClusterNode | undefined;
        const ackTimes: number[] = [];
        const { rec } = await runStandby({
          kind: 'backup',
          numTasks: 2,
          backups: 1,
          standbys: 1,
          drive: async ({ cluster, rec }) => {
            const stopTiming = rec.onOutcome((o) => {
              if (o.task === 1 && o.acked && killedBackup) ackTimes.push(performance.now());
            });
            const { victim } = await killOnAck(rec, cluster, 1, 10, () => {
              holdersAtKill = cluster.nodes.filter((n) => n.node.state === 'running' || n.node.state === 'backup').map((n) => n.index);
              return cluster.backupsOf(1)[0];
            });
            killedBackup = victim;
            ackTimes.push(performance.now());
            await eventually('a spare node took the free backup slot of task 1 and is in sync', () => inSync(cluster, [1], 1), poll);
            recruit = cluster.backupsOf(1)[0];
            await acks(rec, 1, 10);
            stopTiming();
            await killOnAck(rec, cluster, 1, 5, (o) => nodeAt(cluster, o.node));
            await eventually('the new backup was promoted and has a backup in sync', () => inSync(cluster, [1], 1), poll);
            await acks(rec, 1, 10);
          },
        });
        assert.ok(killedBackup && recruit);
        assert.equal((await killedBackup.finished).outcome?.reason, 'killed');
        // The standby that waited, or the supervisor's replacement if it joined first: a node that held no slot.
        assert.ok(!holdersAtKill.includes(recruit.index), `the new backup (node ${recruit.index}) held no slot when the backup was killed (holders: ${holdersAtKill.join(', ')})`);
        const object = rec.tasks.get(recruit.index);
        assert.ok(object);
        assert.deepEqual(
          object.events.map((e) => `${e.kind}${e.kind === 'primary' ? ` promoted=${e.change.promoted} incarnation=${e.change.incarnation}` : ''}`),
          ['backup', 'primary promoted=true incarnation=2'],
          'the new backup became a backup, then the primary with its state',
        );
        const held = primariesOf(rec, 1)[1]!.held;
        const restores = rec.restores.filter((r) => r.node === recruit!.index);
        assert.equal(restores.length, 1, 'the new backup restored one snapshot');
        const fromSnapshot = restores[0]!.values.length;
        const applied = rec.applied.filter((a) => a.node === recruit!.index);
        assert.ok(applied.length >= 10, `the new backup applied the updates after its snapshot (${applied.length})`);
        assert.deepEqual(
          applied.map((a) => a.seq),
          range(held - fromSnapshot).map((i) => fromSnapshot + 1 + i),
          `after a snapshot of ${fromSnapshot} values it applied seq ${fromSnapshot + 1} to ${held}, each once, in order`,
        );
        const final = primariesOf(rec, 1)[1]!.object.state;
        assert.deepEqual([...restores[0]!.values, ...applied.map((a) => a.value)], final.slice(0, held), 'the snapshot and the updates it applied are the state it was promoted with');
        // The dead backup is dropped when its session ends (at once: it was killed), the standby then syncs.
        const longest = Math.max(...ackTimes.slice(1).map((t, i) => t - ackTimes[i]!));
        assert.ok(longest < ttl, `the stream never waited a session TTL (${ttl} ms) for an acknowledgement while the backup was replaced (longest wait ${Math.round(longest)} ms)`);
        checkPromotions(rec, 1, 1);
        checkPromotions(rec, 0, 0);
      },
      timeout,
    );

    test.it(
      'neighbour fail/restart and switch events: each task object hears exactly its sequence (7 tasks on a tree and a ring, backups 1; task 1 then task 0 killed)',
      async () => {
        // Who hears of a task's primary, and as which link types (tree fanout 2 and ring of 7, in that order):
        //   task 1: 0 (Children, Next), 2 (Prev), 3 (Parents), 4 (Parents);
        //   task 0: 1 (Parents, Prev), 2 (Parents), 6 (Next).
        const heardOf1: Record<number, string> = { 0: 'Children,Next', 2: 'Prev', 3: 'Parents', 4: 'Parents' };
        const heardOf0: Record<number, string> = { 1: 'Parents,Prev', 2: 'Parents', 6: 'Next' };
        const numTasks = 7;
        const { rec } = await runStandby({
          kind: 'events',
          numTasks,
          backups: 1,
          standbys: 1,
          drive: async ({ cluster, rec }) => {
            const restartedHeard = (about: number, receivers: readonly number[]) =>
              receivers.every((r) => taskOf(rec, cluster.ownerOf(r))?.events.some((e) => e.kind === 'restarted' && e.event.task === about));
            for (const [killed, heard] of [
              [1, heardOf1],
              [0, heardOf0],
            ] as const) {
              await cluster.kill(killed);
              const receivers = Object.keys(heard).map(Number);
              await eventually(
                `task ${killed}'s backup was promoted, its neighbours ${receivers.join(', ')} heard it restart, and a new backup is in sync`,
                async () => restartedHeard(killed, receivers) && (await inSync(cluster, [killed], 1)),
                poll,
              );
            }
          },
        });
        const line = (e: StandbyEvent): string => {
          switch (e.kind) {
            case 'primary':
              return `primary promoted=${e.change.promoted} incarnation=${e.change.incarnation}`;
            case 'backup':
              return `backup promoted=${e.change.promoted}`;
            default:
              return `${e.kind} ${e.event.task} ${e.event.linkTypes.join(',')} ${e.event.incarnation}`;
          }
        };
        const told = (about: number, links: string | undefined) => (links === undefined ? [] : [`failed ${about} ${links} 1`, `restarted ${about} ${links} 2`]);
        for (const object of rec.tasks.values()) {
          const t = object.id;
          const first = object.events[0];
          let expected: string[];
          if (first?.kind === 'primary') {
            // A first primary hears of every neighbour killed while it runs; tasks 0 and 1 are killed, 1 first.
            expected = [`primary promoted=false incarnation=1`, ...(t === 1 ? [] : [...told(1, heardOf1[t]), ...(t === 0 ? [] : told(0, heardOf0[t]))])];
          } else if (object.events.some((e) => e.kind === 'primary')) {
            // The promoted backup of task 1 runs when task 0 is killed; task 0's runs after both kills.
            expected = ['backup promoted=false', 'primary promoted=true incarnation=2', ...(t === 1 ? told(0, heardOf0[1]) : [])];
          } else {
            // Backups (and the standbys recruited as backups) hear no neighbour events.
            expected = ['backup promoted=false'];
          }
          assert.deepEqual(object.events.map(line), expected, `task ${t} on node ${object.node}: its events`);
        }
        for (const t of [0, 1]) checkPromotions(rec, t, 1);
        for (const t of range(numTasks).slice(2)) checkPromotions(rec, t, 0);
        const promotedBackups = [...rec.tasks.values()].filter((o) => o.events[0]?.kind === 'backup' && o.events.length > 1);
        assert.deepEqual(promotedBackups.map((o) => o.id).sort(), [0, 1], 'one backup of each killed task was promoted');
      },
      timeout,
    );
  });
}
