/**
 * MapReduce (the master/worker paradigm) as separate OS processes on a real etcd
 * with gRPC: `taskgraph run mapreduce --workers N`, with worker processes SIGKILLed
 * in the map and the reduce phases, the master's process SIGKILLed with a hot
 * backup and with only a cold standby, and a worker SIGSTOPped past its lease.
 * Every job's verdict compares the count with a single-process count of the same
 * text: it must be exact.
 */
import { createController, taskOfWorker } from '@taskgraph/core';
import type { Controller } from '@taskgraph/core';
import { describe, expect, it } from 'vitest';
import { realEtcd } from './fixtures/real-etcd.js';
import { JobRun } from '../src/index.js';
import type { NodeProcess, RunOptions } from '../src/index.js';

const TTL = 2000;
const TIMEOUT = 180_000;
const PASS = /^mapreduce: PASS: count exact \(equal to a single-process count\): (\d+) words, \d+ distinct, 48 splits, 4 reducers, (\d+) split re-execution\(s\), master incarnation (\d+); top: the \d+/;

interface Progress {
  readonly kind: 'progress';
  readonly mapsDone: number;
  readonly maps: number;
  readonly reducesDone: number;
  readonly masterIncarnation: number;
  readonly settled: boolean;
  readonly held: readonly number[];
}

const isProgress = (r: unknown): r is Progress => (r as { kind?: unknown }).kind === 'progress';

/** The live node process that runs `task` now, by the job's status. */
async function processOf(ctl: Controller, run: JobRun, task: number): Promise<NodeProcess | undefined> {
  const nodeId = (await ctl.status())?.tasks[task]?.nodeId;
  return run.processes.find((p) => p.nodeId === nodeId && p.child.exitCode === null && p.child.signalCode === null);
}

describe('mapreduce as OS processes on a real etcd with gRPC', () => {
  const store = realEtcd('mr');

  /**
   * Runs the job (3 copies of the corpus, 48 splits, 4 reducers); `onProgress` sees
   * every progress record of the master and may kill processes. Returns the verdict
   * line's figures.
   */
  async function runMapReduce(o: Partial<RunOptions> & { workers: number; onProgress?: (p: Progress, run: JobRun, ctl: Controller) => void }) {
    const lines: string[] = [];
    const ctl: { value?: Controller } = {};
    const run = new JobRun({
      app: 'mapreduce',
      workers: o.workers,
      standbys: o.standbys ?? 0,
      backups: o.backups ?? 0,
      config: { coordinator: store.url, transport: 'grpc://127.0.0.1:0', sessionTtlMs: TTL },
      args: { splits: '48', reducers: '4', repeat: '3', ...o.args },
      print: (l) => void lines.push(l),
      onReport: (node, record) => {
        if (isProgress(record)) o.onProgress?.(record, run, ctl.value!);
        o.onReport?.(node, record);
      },
    });
    ctl.value = createController({ coordinator: store.probe, job: run.job });
    const result = await run.run();
    const verdict = lines.find((l) => l.startsWith('mapreduce: PASS') || l.startsWith('mapreduce: FAIL')) ?? '';
    expect(verdict, lines.join('\n')).toMatch(PASS);
    const [, , reexecutions, masterIncarnation] = PASS.exec(verdict)!;
    expect(result.exitCode).toBe(0);
    return { result, lines, reexecutions: Number(reexecutions), masterIncarnation: Number(masterIncarnation) };
  }

  /** Kills the process of a task once, from a progress callback (`task` may be chosen then). */
  function killOnce(chosen?: number) {
    const state = { killed: undefined as NodeProcess | undefined, asked: false };
    const kill = (run: JobRun, ctl: Controller, task = chosen!) => {
      if (state.asked) return;
      state.asked = true;
      void processOf(ctl, run, task).then((p) => {
        state.killed = p;
        p?.child.kill('SIGKILL');
      });
    };
    return { state, kill };
  }

  it.each([
    ['map', 'its splits are mapped again elsewhere', (p: Progress) => p.mapsDone >= 12 && p.mapsDone < p.maps],
    ['reduce', 'the map output it held is redone and the reduces re-run', (p: Progress) => p.mapsDone === p.maps && p.reducesDone === 0],
  ] as const)(
    'a worker holding map output SIGKILLed in the %s phase: %s; exact count',
    async (_phase, _outcome, when) => {
      const victim = killOnce();
      const { reexecutions, lines } = await runMapReduce({
        workers: 3,
        standbys: 1,
        onProgress: (p, run, ctl) => {
          if (p.masterIncarnation === 1 && when(p)) victim.kill(run, ctl, taskOfWorker(p.held.findIndex((n) => n > 0)));
        },
      });
      expect(victim.state.killed, 'the worker was killed').toBeDefined();
      expect(reexecutions, lines.join('\n')).toBeGreaterThanOrEqual(1);
    },
    TIMEOUT,
  );

  it(
    'the master SIGKILLed mid-job with a hot backup, then a worker: the backup goes on with the state; exact count',
    async () => {
      const master = killOnce(0);
      const worker = killOnce();
      let mappedBefore = 0;
      let firstOfNew: Progress | undefined;
      const { masterIncarnation, lines } = await runMapReduce({
        workers: 3,
        backups: 1,
        standbys: 1,
        onProgress: (p, run, ctl) => {
          if (p.masterIncarnation === 1 && p.settled && p.mapsDone >= 12 && p.mapsDone < p.maps && !master.state.asked) {
            mappedBefore = p.mapsDone;
            master.kill(run, ctl);
          }
          if (p.masterIncarnation === 2) {
            firstOfNew ??= p;
            if (p.mapsDone >= mappedBefore + 6 && p.mapsDone < p.maps) worker.kill(run, ctl, taskOfWorker(p.held.findIndex((n) => n > 0)));
          }
        },
      });
      expect(master.state.killed, 'the master was killed').toBeDefined();
      expect(masterIncarnation).toBe(2);
      expect(firstOfNew?.mapsDone, `the promoted master started with the ${mappedBefore} splits acknowledged before\n${lines.join('\n')}`).toBeGreaterThanOrEqual(mappedBefore);
    },
    TIMEOUT,
  );

  it(
    'the master SIGKILLed mid-job with only a cold standby: the new master rebuilds from its store; exact count',
    async () => {
      const master = killOnce(0);
      let mappedBefore = 0;
      let firstOfNew: Progress | undefined;
      const { masterIncarnation, reexecutions, lines } = await runMapReduce({
        workers: 2,
        standbys: 1,
        onProgress: (p, run, ctl) => {
          if (p.masterIncarnation === 1 && p.settled && p.mapsDone >= 12 && p.mapsDone < p.maps && !master.state.asked) {
            mappedBefore = p.mapsDone;
            master.kill(run, ctl);
          }
          if (p.masterIncarnation === 2) firstOfNew ??= p;
        },
      });
      expect(master.state.killed, 'the master was killed').toBeDefined();
      expect(masterIncarnation).toBe(2);
      expect(reexecutions).toBe(0);
      expect(firstOfNew?.mapsDone, `the new master rebuilt the ${mappedBefore} splits stored before\n${lines.join('\n')}`).toBeGreaterThanOrEqual(mappedBefore);
    },
    TIMEOUT,
  );

  it(
    'a worker SIGSTOPped mid-map for twice the TTL: a standby takes its place; on SIGCONT its late answer is refused; exact count',
    async () => {
      let paused: NodeProcess | undefined;
      await runMapReduce({
        workers: 2,
        standbys: 1,
        restart: false,
        args: { 'pause-map': '1' },
        onReport: (node, record) => {
          if ((record as { pause?: string }).pause === 'start' && !paused) {
            paused = node;
            setTimeout(() => node.child.kill('SIGCONT'), 2 * TTL);
          }
        },
      });
      expect(paused, 'worker 1 was paused').toBeDefined();
      const outcome = paused!.outcome as { reason?: string; stats?: { fencedLateResults: number; served: number } } | undefined;
      expect(outcome?.reason, 'the paused worker left because its lease was lost').toBe('lease-lost');
      expect(outcome?.stats?.fencedLateResults, 'its late map answer was dropped, not sent').toBeGreaterThanOrEqual(1);
    },
    TIMEOUT,
  );
});
