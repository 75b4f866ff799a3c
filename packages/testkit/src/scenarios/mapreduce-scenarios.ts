/**
 * The master/worker scenarios: MapReduce word count over a slice of the Brown
 * corpus, with workers killed in the map and the reduce phases, a worker cut off
 * the store while it maps (its late answer must be refused), and the master killed
 * with a hot backup and with only a cold standby. Each checks the exact count
 * against a single-process count of the same text, and what the failure must
 * cost: re-executed splits when map output died, none when only the master did.
 */
import assert from 'node:assert/strict';
import type { Logger } from '@taskgraph/api';
import { masterWorkerBuilder, masterWorkerJob, masterWorkerLinkages, taskOfWorker } from '@taskgraph/core';
import type { ClusterNode, LocalCluster } from '@taskgraph/core';
import { MapReduceMaster, MapReduceWorker, checkMapReduce, expectedWordCount, mapReduceSplits } from '@taskgraph/workloads';
import type { ExpectedCount, MapReduceJobOptions, MapReduceRecord } from '@taskgraph/workloads';
import { eventually } from '../eventually.js';
import type { TestApi } from '../types.js';
import type { ScenarioBackend } from './backend.js';
import { runJob } from './run-job.js';

type Phase = 'map' | 'reduce';
type Progress = Extract<MapReduceRecord, { kind: 'progress' }>;
type Result = Extract<MapReduceRecord, { kind: 'result' }>;

/**
 * Holds the workers at a chosen point: the first `limit[phase]` calls of a phase go
 * through, later ones wait until the limit is raised. Logs every call that starts.
 */
class Gate {
  readonly limit: Record<Phase, number> = { map: Infinity, reduce: Infinity };
  readonly started: Array<{ phase: Phase; workerId: number; id: number }> = [];
  private readonly waiting: Array<{ phase: Phase; n: number; go: () => void }> = [];
  /** Holds this worker's next map until `release` (for the cut-off scenario). */
  holdWorker: number | undefined;
  private held: (() => void) | undefined;
  heldCall: { workerId: number; id: number } | undefined;

  async pass(phase: Phase, workerId: number, id: number): Promise<void> {
    this.started.push({ phase, workerId, id });
    if (phase === 'map' && workerId === this.holdWorker && this.heldCall === undefined) {
      this.heldCall = { workerId, id };
      await new Promise<void>((go) => (this.held = go));
      return;
    }
    const n = this.started.filter((s) => s.phase === phase).length;
    if (n <= this.limit[phase]) return;
    await new Promise<void>((go) => this.waiting.push({ phase, n, go }));
  }

  open(phase: Phase): void {
    this.limit[phase] = Infinity;
    for (const w of this.waiting.splice(0)) w.go();
  }

  release(): void {
    this.held?.();
  }
}

export function mapReduceScenarios(test: TestApi, backend: ScenarioBackend, logger: Logger, timeout: number): void {
  const options: MapReduceJobOptions = { splits: 16, reducers: 3, repeat: 1, top: 5 };
  let expected: ExpectedCount | undefined;
  const wait = { timeoutMs: timeout / 2 };

  async function runMapReduce(o: { workers: number; standbys: number; backups?: number; during: (cluster: LocalCluster, gate: Gate, records: readonly MapReduceRecord[]) => Promise<void>; gate?: Gate }) {
    const { dir, splits } = mapReduceSplits(options);
    const records: MapReduceRecord[] = [];
    const gate = o.gate ?? new Gate();
    const job = masterWorkerJob(o.workers, o.backups ?? 0);
    const { status, cluster } = await runJob(backend, logger, {
      numTasks: job.numTasks,
      standbys: o.standbys,
      backups: job.backups ?? 0,
      ...(job.backupTasks ? { backupTasks: job.backupTasks } : {}),
      kind: 'mr',
      builder: () =>
        masterWorkerBuilder(o.workers, {
          master: () => new MapReduceMaster({ splits, reducers: options.reducers, top: options.top, report: (r) => records.push(r) }),
          worker: () => new MapReduceWorker({ corpusDir: dir, before: (phase, w, id) => gate.pass(phase, w, id) }),
        }),
      linkTypes: job.linkTypes,
      linkages: () => masterWorkerLinkages(o.workers),
      during: (c) => o.during(c, gate, records),
    });
    assert.equal(status.state, 'done');
    expected ??= expectedWordCount(options);
    const verdict = checkMapReduce(options, records, expected);
    assert.ok(verdict.ok, verdict.message);
    const results = records.filter((r): r is Result => r.kind === 'result');
    return { result: results.at(-1)!, records, cluster };
  }

  const progress = (records: readonly MapReduceRecord[]) => records.filter((r): r is Progress => r.kind === 'progress');
  /** Splits mapped, by the first master's records, counting only acknowledged changes. */
  const mapped = (records: readonly MapReduceRecord[]) => Math.max(0, ...progress(records).filter((p) => p.masterIncarnation === 1 && p.settled).map((p) => p.mapsDone));

  test.it(
    'mapreduce: the count equals a single-process count (3 workers, 16 splits, 3 reducers)',
    async () => {
      const { result } = await runMapReduce({ workers: 3, standbys: 0, during: async () => undefined });
      assert.deepEqual({ reexecutions: result.reexecutions, masterIncarnation: result.masterIncarnation }, { reexecutions: 0, masterIncarnation: 1 });
    },
    timeout,
  );

  test.it(
    'mapreduce: a worker killed in the map phase; the splits it held are mapped again; exact count',
    async () => {
      let victimSplits = 0;
      const { result } = await runMapReduce({
        workers: 3,
        standbys: 1,
        during: async (cluster, gate, records) => {
          gate.limit.map = 6;
          await eventually('6 splits mapped', () => mapped(records) >= 6, wait);
          const victim = gate.started.find((s) => s.phase === 'map')!.workerId;
          victimSplits = new Set(gate.started.slice(0, 6).filter((s) => s.workerId === victim).map((s) => s.id)).size;
          await cluster.kill(taskOfWorker(victim));
          gate.open('map');
        },
      });
      assert.ok(victimSplits >= 1);
      assert.ok(result.reexecutions >= victimSplits, `the ${victimSplits} split(s) the killed worker held were mapped again (re-executions: ${result.reexecutions})`);
    },
    timeout,
  );

  test.it(
    'mapreduce: a worker killed in the reduce phase; its map output is redone and the reduces re-run; exact count',
    async () => {
      const { result } = await runMapReduce({
        workers: 3,
        standbys: 1,
        during: async (cluster, gate) => {
          gate.limit.reduce = 0;
          await eventually('a reduce started', () => gate.started.some((s) => s.phase === 'reduce'), wait);
          // A worker that held map output, not the one reducing first if another did (a worker may join late).
          const reducer = gate.started.find((s) => s.phase === 'reduce')!.workerId;
          const mappers = new Set(gate.started.filter((s) => s.phase === 'map').map((s) => s.workerId));
          const victim = [...mappers].find((w) => w !== reducer) ?? reducer;
          await cluster.kill(taskOfWorker(victim));
          gate.open('reduce');
        },
      });
      assert.ok(result.reexecutions >= 1, `the killed worker's splits were mapped again (re-executions: ${result.reexecutions})`);
    },
    timeout,
  );

  test.it(
    'mapreduce: a worker cut off the store while it maps loses its lease; a standby takes its place; its late answer is refused; exact count',
    async () => {
      const gate = new Gate();
      gate.holdWorker = 1;
      // Every other map waits too, so worker 1 gets a split however late it joins.
      gate.limit.map = 0;
      let victim: ClusterNode | undefined;
      await runMapReduce({
        workers: 2,
        standbys: 1,
        gate,
        during: async (cluster) => {
          await eventually('worker 1 holds a split', () => gate.heldCall !== undefined, wait);
          victim = cluster.ownerOf(taskOfWorker(1));
          assert.ok(victim, 'a node runs worker 1');
          const heal = await backend.isolate(victim.resources);
          try {
            await eventually('a standby runs worker 1', () => {
              const owner = cluster.ownerOf(taskOfWorker(1));
              return owner !== undefined && owner !== victim;
            }, wait);
          } finally {
            // The old incarnation now finishes its map: its answer must not count.
            gate.release();
            gate.open('map');
          }
          const stale = victim;
          await eventually('the old incarnation’s late answer is fenced', () => stale.node.stats.fencedLateResults >= 1, wait);
          await victim.finished;
          await heal();
        },
      });
      assert.ok(victim);
      assert.equal((await victim.finished).outcome?.reason, 'lease-lost');
      assert.equal(victim.node.stats.served, 0, 'the old incarnation answered nothing');
    },
    timeout,
  );

  for (const how of ['hot', 'cold'] as const) {
    test.it(
      how === 'hot' ?
        'mapreduce: the master killed mid-job with a hot backup; the backup goes on with the state; nothing re-executed; exact count'
      : 'mapreduce: the master killed mid-job with only a cold standby; the new master rebuilds from its store; exact count',
      async () => {
        const { result, records } = await runMapReduce({
          workers: 2,
          standbys: how === 'hot' ? 0 : 1,
          backups: how === 'hot' ? 1 : 0,
          during: async (cluster, gate, records) => {
            if (how === 'hot') await eventually('the master has a backup', () => cluster.backupsOf(0).length === 1, wait);
            gate.limit.map = 6;
            await eventually('6 splits mapped', () => mapped(records) >= 6, wait);
            await cluster.kill(0);
            gate.open('map');
          },
        });
        assert.equal(result.masterIncarnation, 2);
        assert.equal(result.reexecutions, 0);
        const first = progress(records).find((p) => p.masterIncarnation === 2);
        assert.ok(first && first.mapsDone >= 6, `the new master started with the 6 splits mapped before (it started with ${first?.mapsDone})`);
      },
      timeout,
    );
  }
}
