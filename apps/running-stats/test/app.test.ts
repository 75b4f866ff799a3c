import { TaskGraphError } from '@taskgraph/api';
import { MemoryStore, createMemoryCoordinator } from '@taskgraph/coord-memory';
import { LocalCluster, nodeResources, silentLogger } from '@taskgraph/core';
import type { AppContext } from '@taskgraph/core';
import { RunningStatsTaskBuilder } from '@taskgraph/workloads';
import { LocalNetwork, createLocalTransport } from '@taskgraph/transport-local';
import { describe, expect, it } from 'vitest';
import defaultApp, { runningStatsApp } from '../src/index.js';

function context(numTasks: number, args: Record<string, string>, report: (record: unknown) => void = () => undefined): AppContext {
  return { numTasks, args, logger: silentLogger, report };
}

/** Runs the app module the way `taskgraph run` does in-process: every node built from the same arguments, every report collected. */
async function runApp(numTasks: number, backups: number, standbys: number, args: Record<string, string>) {
  const store = new MemoryStore();
  const network = new LocalNetwork();
  const results: unknown[] = [];
  const cluster = new LocalCluster({
    job: `running-stats-app-${process.pid}`,
    numTasks,
    linkTypes: runningStatsApp.linkTypes,
    backups,
    standbys,
    controllerCoordinator: await createMemoryCoordinator({ store, namespace: 'tg' }),
    resources: async () => nodeResources(await createMemoryCoordinator({ store, namespace: 'tg' }), await createLocalTransport({ network })),
    builder: () => runningStatsApp.taskBuilder(context(numTasks, args, (r) => results.push(r))),
    linkages: () => runningStatsApp.linkages(context(numTasks, args)),
    // Kills free their slot at once; a long TTL only keeps a busy machine from losing leases.
    node: { sessionTtlMs: 5000 },
    logger: silentLogger,
  });
  try {
    await cluster.start();
    const status = await cluster.waitUntilDone();
    return { status, results, verdict: runningStatsApp.verify?.({ numTasks, args, logger: silentLogger }, results) };
  } finally {
    await cluster.close();
  }
}

describe('runningStatsApp', () => {
  it('is the module the CLI loads: the default export, its name and link types, the job from @taskgraph/workloads', () => {
    expect(defaultApp).toBe(runningStatsApp);
    expect(runningStatsApp.name).toBe('running-stats');
    expect([...runningStatsApp.linkTypes]).toEqual(['Parents', 'Children']);
    expect(runningStatsApp.taskBuilder(context(7, {}))).toBeInstanceOf(RunningStatsTaskBuilder);
    expect(Object.keys(runningStatsApp.linkages(context(7, { fanout: '3' }))).sort()).toEqual(['Children', 'Parents']);
  });

  it('with --backups 1 a primary killed mid-job (--arg kill-at) is replaced by its promoted backup: PASS', async () => {
    const { status, verdict, results } = await runApp(5, 1, 1, { epochs: '6', 'kill-at': '3:2' });
    expect(status.state).toBe('done');
    expect(verdict?.ok, verdict?.message).toBe(true);
    expect(verdict?.message).toMatch(/^PASS: exact statistics for 5 tasks over 7 epochs .*; 1 promotion\(s\) with the state: task 2 at seq 4 in epoch 3;/);
    expect(results).toContainEqual({ task: 2, event: 'kill', epoch: 3 });
  });

  it('without backups the same kill loses the state: FAIL, and the message says why', async () => {
    const { verdict } = await runApp(5, 0, 1, { epochs: '6', 'kill-at': '3:2' });
    expect(verdict?.ok).toBe(false);
    expect(verdict?.message).toMatch(/^FAIL: state LOST: task 2 holds 4 of 7 epochs \(restarted cold in epoch 3, incarnation 2\)/);
    expect(verdict?.message).toMatch(/run with --backups 1/);
  });

  it('verify fails a run that reported nothing, and a kill that did not happen', () => {
    const verdict = runningStatsApp.verify?.({ numTasks: 2, args: { epochs: '1', 'kill-at': '1:0' }, logger: silentLogger }, ['noise']);
    expect(verdict).toEqual({
      ok: false,
      message: 'FAIL: no final statistics from task(s) 0, 1; not carried out: kill-at 1:0; no promotion; neighbour events: 0 failed, 0 restarted',
    });
  });

  it('rejects malformed arguments with INVALID_ARGUMENT', () => {
    for (const args of [{ epochs: '-1' }, { epochs: 'ten' }, { fanout: '0' }, { 'kill-at': '3' }, { 'kill-at': '1:2,x' }, { 'kill-at': '1:7' }, { epochs: '2', 'kill-at': '3:1' }]) {
      let caught: unknown;
      try {
        runningStatsApp.taskBuilder(context(7, args));
      } catch (err) {
        caught = err;
      }
      expect(TaskGraphError.is(caught, 'INVALID_ARGUMENT'), JSON.stringify(args)).toBe(true);
    }
  });
});
