/**
 * The scenario suite: whole jobs, with injected failures, on one coordinator x
 * transport pair. Every backend pair runs it from its own test file in a few
 * lines; each scenario checks the job's exact answer, not just that it finished.
 */
import assert from 'node:assert/strict';
import { LocalCluster, createLogger } from '@taskgraph/core';
import { REGRESSION_LINK_TYPES, RegressionTaskBuilder, expectedSums, regressionLinkages, seededRandom } from '@taskgraph/workloads';
import type { RegressionOptions } from '@taskgraph/workloads';
import { eventually } from '../eventually.js';
import type { TestApi } from '../types.js';
import type { ScenarioBackend } from './backend.js';
import { countHandles, leakedHandles } from './handles.js';
import {
  EpochAbortRecorder,
  EpochAbortTaskBuilder,
  PROBE_LINK_TYPES,
  ProbeRecorder,
  ProbeTaskBuilder,
  probeLinkages,
} from './probe-app.js';
import { jobName, runJob as runJobOn } from './run-job.js';
import { mapReduceScenarios } from './mapreduce-scenarios.js';
import { standbyScenarios } from './standby-scenarios.js';
import type { RunOptions } from './run-job.js';

export type { ScenarioBackend } from './backend.js';

function sortedSums(sums: Map<number, number>): number[] {
  return [...sums.entries()].sort((a, b) => a[0] - b[0]).map(([, s]) => s);
}

export function scenarioSuite(test: TestApi, backend: ScenarioBackend): void {
  const timeout = backend.timeoutMs ?? 120_000;
  const logger = backend.logger ?? createLogger({ level: (process.env['TASKGRAPH_LOG_LEVEL'] as 'debug' | undefined) ?? 'silent' });

  const runJob = (o: RunOptions) => runJobOn(backend, logger, o);

  function runRegression(numTasks: number, standbys: number, options: Omit<RegressionOptions, 'numTasks' | 'onResult'> = {}, extra: Partial<RunOptions> = {}) {
    const sums = new Map<number, number>();
    const starts: Array<{ task: number; incarnation: number }> = [];
    const result = runJob({
      numTasks,
      standbys,
      kind: 'regr',
      builder: () =>
        new RegressionTaskBuilder({
          numTasks,
          ...options,
          onResult: (e, s) => {
            if (sums.has(e)) assert.equal(s, sums.get(e), `epoch ${e} was summed twice with different results`);
            sums.set(e, s);
          },
          onTaskStart: (task, incarnation) => starts.push({ task, incarnation }),
        }),
      linkTypes: REGRESSION_LINK_TYPES,
      linkages: () => regressionLinkages({ numTasks }),
      ...extra,
    });
    return result.then((r) => ({ ...r, sums, starts }));
  }

  test.describe(`scenarios on ${backend.name}`, () => {
    test.it(
      'the regression job computes the exact sums (15 tasks, 2 standbys)',
      async () => {
        const { sums, status } = await runRegression(15, 2);
        assert.deepEqual(sortedSums(sums), expectedSums(15));
        assert.equal(status.state, 'done');
        assert.equal(status.epoch, 10);
      },
      timeout,
    );

    test.it(
      'the master fails in enterEpoch(1), a standby replaces it, and the sums are exact',
      async () => {
        const { sums, starts } = await runRegression(15, 2, { faults: { failEnterEpoch: { task: 0, epoch: 1 } } });
        assert.deepEqual(sortedSums(sums), expectedSums(15));
        assert.ok(starts.some((s) => s.task === 0 && s.incarnation === 2), 'task 0 ran a second incarnation');
      },
      timeout,
    );

    test.it(
      'slaves fail in parent- and child-data-ready with 3% probability; replacements keep the sums exact',
      async () => {
        const { sums, starts } = await runRegression(15, 2, {
          faults: { parentDataFailProbability: 0.03, childDataFailProbability: 0.03, random: seededRandom(7) },
        });
        assert.deepEqual(sortedSums(sums), expectedSums(15));
        const failovers = starts.filter((s) => s.incarnation > 1).length;
        assert.ok(failovers >= 1, `the injected faults caused failovers (saw ${failovers})`);
      },
      timeout,
    );

    test.it(
      'a node killed mid-job frees its slot at once; a standby takes over; exact sums',
      async () => {
        const { sums, starts } = await runRegression(15, 2, {}, {
          during: async (cluster) => {
            // Kill task 6's node as soon as the job is past epoch 2.
            await eventually('the job is running past epoch 2 with a node on task 6', async () => {
              const s = await cluster.controller.status();
              return s !== undefined && s.epoch >= 2 && s.state === 'running' && cluster.ownerOf(6) !== undefined;
            }, { timeoutMs: timeout / 2 });
            await cluster.kill(6);
          },
        });
        assert.deepEqual(sortedSums(sums), expectedSums(15));
        assert.ok(starts.some((s) => s.task === 6 && s.incarnation >= 2), 'task 6 was taken over');
      },
      timeout,
    );

    test.it(
      'a node cut off from the store while busy loses its lease; its late answer is fenced off; exact sums',
      async () => {
        let release!: () => void;
        const released = new Promise<void>((r) => (release = r));
        let blocked!: () => void;
        const isBlocked = new Promise<void>((r) => (blocked = r));
        const target = 3;
        let heal: (() => Promise<void>) | undefined;
        let victim: import('@taskgraph/core').ClusterNode | undefined;
        const { sums, starts } = await runRegression(
          15,
          2,
          {
            beforeServe: async ({ taskId, incarnation, method, epoch }) => {
              if (taskId === target && incarnation === 1 && method === 'getGradient' && epoch === 2) {
                blocked();
                await released;
              }
            },
          },
          {
            during: async (cluster) => {
              await isBlocked;
              victim = cluster.ownerOf(target);
              assert.ok(victim, `a node runs task ${target}`);
              heal = await backend.isolate(victim.resources);
              try {
                // The victim's session is lost by its local deadline; it leaves; a standby
                // claims the task once the server expires the session.
                await eventually(`a standby claims task ${target}`, () => {
                  const owner = cluster.ownerOf(target);
                  return owner !== undefined && owner !== victim;
                }, { timeoutMs: timeout / 2 });
              } finally {
                // The old incarnation's handler now finishes: its answer must be dropped.
                release();
              }
              await victim.finished;
              await heal();
            },
          },
        );
        assert.deepEqual(sortedSums(sums), expectedSums(15));
        assert.ok(victim, 'the victim was found');
        const outcome = await victim.finished;
        assert.equal(outcome.outcome?.reason, 'lease-lost');
        assert.ok(victim.node.stats.fencedLateResults >= 1, `the late answer was fenced (${victim.node.stats.fencedLateResults})`);
        assert.ok(starts.some((s) => s.task === target && s.incarnation >= 2), `task ${target} was taken over`);
      },
      timeout,
    );

    test.it(
      'meta reaches parents and children, and data flows both ways, in every epoch',
      async () => {
        const recorder = new ProbeRecorder();
        const numTasks = 7;
        const numEpochs = 3;
        await runJob({
          numTasks,
          standbys: 0,
          kind: 'probe',
          builder: () => new ProbeTaskBuilder({ numTasks, numEpochs, recorder }),
          linkTypes: PROBE_LINK_TYPES,
          linkages: () => probeLinkages(numTasks),
        });
        for (let e = 0; e <= numEpochs; e++) {
          for (let t = 1; t < numTasks; t++) {
            const parent = Math.floor((t - 1) / 2);
            assert.ok(recorder.metas.some((m) => m.epoch === e && m.receiver === parent && m.from === t && m.linkType === 'Parents'), `epoch ${e}: ${t} -> parent ${parent} meta`);
            assert.ok(recorder.metas.some((m) => m.epoch === e && m.receiver === t && m.from === parent && m.linkType === 'Children'), `epoch ${e}: parent ${parent} -> ${t} meta`);
            assert.ok(recorder.data.some((d) => d.epoch === e && d.receiver === parent && d.from === t), `epoch ${e}: ${parent} pulled data from child ${t}`);
            assert.ok(recorder.data.some((d) => d.epoch === e && d.receiver === t && d.from === parent), `epoch ${e}: ${t} pulled data from parent ${parent}`);
          }
        }
        for (const d of recorder.data) assert.deepEqual(d.output, { task: d.from, epoch: d.epoch, from: d.receiver });
      },
      timeout,
    );

    test.it(
      'meta is delivered exactly once per epoch, however often it is flagged and however often the sender restarts',
      async () => {
        const recorder = new ProbeRecorder();
        const numTasks = 7;
        const numEpochs = 3;
        const killedOnce = new Set<string>();
        await runJob({
          numTasks,
          standbys: 1,
          kind: 'once',
          builder: () =>
            new ProbeTaskBuilder({
              numTasks,
              numEpochs,
              recorder,
              repeatFlags: 3,
              // Task 2 dies right after flagging in epochs 1 and 2: its replacement flags again.
              afterFlag: async (task, epoch, fw) => {
                const k = `${task}/${epoch}`;
                if (task === 2 && (epoch === 1 || epoch === 2) && !killedOnce.has(k)) {
                  killedOnce.add(k);
                  await fw.kill();
                }
              },
            }),
          linkTypes: PROBE_LINK_TYPES,
          linkages: () => probeLinkages(numTasks),
        });
        assert.equal(killedOnce.size, 2, 'the sender was killed twice');
        assert.ok(recorder.starts.filter((s) => s.task === 2).length >= 3, 'task 2 ran three incarnations');
        const seen = new Map<string, number>();
        for (const m of recorder.metas) {
          const k = `${m.receiver}#${m.incarnation}|${m.epoch}|${m.from}|${m.linkType}|${m.meta}`;
          seen.set(k, (seen.get(k) ?? 0) + 1);
        }
        const repeated = [...seen].filter(([, n]) => n !== 1);
        assert.deepEqual(repeated, [], 'no meta was delivered twice to one incarnation');
        // Task 2's parent (0) and children (5, 6) heard from it in every epoch.
        for (let e = 0; e <= numEpochs; e++) {
          for (const r of [0, 5, 6]) assert.ok(recorder.metas.some((m) => m.epoch === e && m.receiver === r && m.from === 2 && m.meta === 'hello-from-2'), `epoch ${e}: ${r} heard from 2`);
        }
      },
      timeout,
    );

    test.it(
      'an epoch change aborts an in-flight data request with EpochChanged (never resent into the next epoch)',
      async () => {
        const rec = new EpochAbortRecorder();
        await runJob({
          numTasks: 2,
          standbys: 0,
          kind: 'abort',
          builder: () => new EpochAbortTaskBuilder(rec),
          linkTypes: PROBE_LINK_TYPES,
          linkages: () => probeLinkages(2),
        });
        assert.deepEqual(rec.outcomes, [
          { epoch: 0, code: 'EPOCH_CHANGED' },
          { epoch: 1, code: 'ok:on time' },
        ]);
        assert.deepEqual(rec.slowCalls, [0, 1], 'the epoch-0 request was not resent in epoch 1');
      },
      timeout,
    );

    if (backend.dropRequests) {
      const dropRequests = backend.dropRequests.bind(backend);
      test.it(
        'data requests dropped at random (20%) are retried; exact sums',
        async () => {
          const sums = new Map<number, number>();
          const numTasks = 7;
          const numEpochs = 4;
          const controllerCoordinator = await backend.controller();
          const cluster = new LocalCluster({
            job: jobName('drop'),
            numTasks,
            linkTypes: REGRESSION_LINK_TYPES,
            standbys: 0,
            controllerCoordinator,
            resources: (i) => backend.resources(i),
            builder: () => new RegressionTaskBuilder({ numTasks, numEpochs, onResult: (e, s) => sums.set(e, s) }),
            linkages: () => regressionLinkages({ numTasks }),
            node: { sessionTtlMs: backend.sessionTtlMs, attemptTimeoutMs: 300 },
            logger,
          });
          const restore = await dropRequests(0.2);
          try {
            await cluster.start();
            await cluster.waitUntilDone();
          } finally {
            restore();
            await cluster.close();
            await cluster.controller.destroy().catch(() => undefined);
            await controllerCoordinator.close();
          }
          assert.deepEqual(sortedSums(sums), expectedSums(numTasks, numEpochs));
          const retries = cluster.nodes.reduce((n, c) => n + c.node.stats.retries, 0);
          assert.ok(retries > 0, 'some requests were retried');
        },
        timeout,
      );
    }

    test.it(
      'stopped nodes leave no timers, watches or sockets open',
      async () => {
        const baseline = countHandles();
        const { sums } = await runRegression(3, 1, { numEpochs: 2 });
        assert.deepEqual(sortedSums(sums), expectedSums(3, 2));
        let leaks = leakedHandles(baseline);
        // On timeout the assertion below says which handles are left, better than the wait could.
        await eventually('no handles are left open', () => Object.keys((leaks = leakedHandles(baseline))).length === 0).catch(() => undefined);
        assert.deepEqual(leaks, {}, 'handles left open after every node stopped');
      },
      timeout,
    );

    standbyScenarios(test, backend, logger, timeout);
    mapReduceScenarios(test, backend, logger, timeout);
  });
}
