import { TaskGraphError } from '@taskgraph/api';
import { MemoryStore, createMemoryCoordinator } from '@taskgraph/coord-memory';
import { LocalCluster, nodeResources, silentLogger } from '@taskgraph/core';
import type { AppContext } from '@taskgraph/core';
import { LocalNetwork, createLocalTransport } from '@taskgraph/transport-local';
import { describe, expect, it } from 'vitest';
import { RegressionTaskBuilder, expectedSums, regressionApp } from '../src/index.js';

function context(numTasks: number, args: Record<string, string>, report: (record: unknown) => void = () => undefined): AppContext {
  return { numTasks, args, logger: silentLogger, report };
}

/** Runs the app module the way `taskgraph run` does: one context per node, every node's reports collected. */
async function runApp(numTasks: number, standbys: number, args: Record<string, string>) {
  const store = new MemoryStore();
  const network = new LocalNetwork();
  const results: unknown[] = [];
  const cluster = new LocalCluster({
    job: `regression-app-${process.pid}`,
    numTasks,
    linkTypes: regressionApp.linkTypes,
    standbys,
    controllerCoordinator: await createMemoryCoordinator({ store, namespace: 'tg' }),
    resources: async () => nodeResources(await createMemoryCoordinator({ store, namespace: 'tg' }), await createLocalTransport({ network })),
    builder: () => regressionApp.taskBuilder(context(numTasks, args, (r) => results.push(r))),
    linkages: () => regressionApp.linkages(context(numTasks, args)),
    node: { sessionTtlMs: 1000 },
    logger: silentLogger,
  });
  try {
    await cluster.start();
    const status = await cluster.waitUntilDone();
    return { status, results, verdict: regressionApp.verify?.({ numTasks, args, logger: silentLogger }, results) };
  } finally {
    await cluster.close();
  }
}

describe('regressionApp', () => {
  it('is the app the CLI runs: its name and link types, and the job re-exported for older imports', () => {
    expect(regressionApp.name).toBe('regression');
    expect([...regressionApp.linkTypes]).toEqual(['Parents', 'Children']);
    expect(regressionApp.taskBuilder(context(7, {}))).toBeInstanceOf(RegressionTaskBuilder);
    expect(Object.keys(regressionApp.linkages(context(7, { fanout: '3' }))).sort()).toEqual(['Children', 'Parents']);
  });

  it('runs the job from its arguments and verifies the reported sums', async () => {
    const { status, results, verdict } = await runApp(7, 1, { epochs: '3' });
    expect(status.state).toBe('done');
    expect(results).toContainEqual({ epoch: 3, sum: expectedSums(7, 3)[3] });
    expect(verdict).toEqual({ ok: true, message: `sums are exact: ${expectedSums(7, 3).join(', ')}` });
  });

  it('with --arg fail-enter-epoch a standby replaces the failed master and the sums stay exact', async () => {
    const { status, verdict } = await runApp(7, 2, { epochs: '3', 'fail-enter-epoch': '0:1' });
    expect(status.tasks[0]?.incarnations).toBeGreaterThan(1);
    expect(verdict?.ok).toBe(true);
  });

  it('verify names missing, wrong and conflicting sums', () => {
    const ctx = { numTasks: 3, args: { epochs: '2' }, logger: silentLogger };
    // expectedSums(3, 2) is 0, 3, 6.
    expect(regressionApp.verify?.(ctx, [{ epoch: 0, sum: 0 }, { epoch: 1, sum: 3 }])).toEqual({
      ok: false,
      message: 'sums are WRONG: got 0, 3, -; expected 0, 3, 6',
    });
    expect(regressionApp.verify?.(ctx, [{ epoch: 0, sum: 0 }, { epoch: 1, sum: 4 }, { epoch: 1, sum: 3 }, { epoch: 2, sum: 6 }, 'noise'])).toEqual({
      ok: false,
      message: 'sums are WRONG: got 0, 3, 6; expected 0, 3, 6; conflicting: epoch 1: 4 and 3',
    });
  });

  it('rejects malformed arguments with INVALID_ARGUMENT', () => {
    for (const args of [{ epochs: '-1' }, { epochs: 'ten' }, { fanout: '0' }, { 'parent-fail': '2' }, { 'child-fail': 'x' }, { 'fail-enter-epoch': '3' }, { 'pause-serve': '1-2' }, { seed: '-3' }]) {
      let caught: unknown;
      try {
        regressionApp.taskBuilder(context(7, args));
      } catch (err) {
        caught = err;
      }
      expect(TaskGraphError.is(caught, 'INVALID_ARGUMENT'), JSON.stringify(args)).toBe(true);
    }
  });
});
