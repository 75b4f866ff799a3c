import { MemoryStore, createMemoryCoordinator } from '@taskgraph/coord-memory';
import { LocalCluster, masterWorkerJob, nodeResources, silentLogger } from '@taskgraph/core';
import type { AppContext } from '@taskgraph/core';
import { LocalNetwork, createLocalTransport } from '@taskgraph/transport-local';
import { describe, expect, it } from 'vitest';
import defaultApp, { mapReduceApp, mapReduceOptions } from '../src/index.js';

function context(numTasks: number, args: Record<string, string>, report: (record: unknown) => void = () => undefined): AppContext {
  return { numTasks, args, logger: silentLogger, report };
}

/** Runs the app module the way `taskgraph run` does in-process: every node built from the same arguments, every report collected. */
async function runApp(workers: number, standbys: number, args: Record<string, string>) {
  const store = new MemoryStore();
  const network = new LocalNetwork();
  const results: unknown[] = [];
  const job = masterWorkerJob(workers);
  const cluster = new LocalCluster({
    job: `mapreduce-app-${process.pid}`,
    numTasks: job.numTasks,
    linkTypes: mapReduceApp.linkTypes,
    standbys,
    controllerCoordinator: await createMemoryCoordinator({ store, namespace: 'tg' }),
    resources: async () => nodeResources(await createMemoryCoordinator({ store, namespace: 'tg' }), await createLocalTransport({ network })),
    builder: () => mapReduceApp.taskBuilder(context(job.numTasks, args, (r) => results.push(r))),
    linkages: () => mapReduceApp.linkages(context(job.numTasks, args)),
    node: { sessionTtlMs: 5000 },
    logger: silentLogger,
  });
  try {
    await cluster.start();
    const status = await cluster.waitUntilDone();
    return { status, results, verdict: mapReduceApp.verify?.({ numTasks: job.numTasks, args, logger: silentLogger }, results) };
  } finally {
    await cluster.close();
  }
}

describe('mapReduceApp', () => {
  it('is the module the CLI loads: a master/worker application whose backups go to the master', () => {
    expect(defaultApp).toBe(mapReduceApp);
    expect(mapReduceApp.name).toBe('mapreduce');
    expect(mapReduceApp.paradigm).toBe('master-worker');
    expect(mapReduceApp.backupTasks?.(5)).toEqual([0]);
    expect(mapReduceOptions({ args: {} })).toEqual({ splits: 32, reducers: 4, repeat: 1, top: 10 });
    expect(() => mapReduceApp.taskBuilder(context(3, { 'pause-map': 'x' }))).toThrow('pause-map=x must be a worker id');
    expect(() => mapReduceApp.taskBuilder(context(3, { splits: '0' }))).toThrow('splits=0');
  });

  it('refuses unknown and bad arguments with a clear message', () => {
    expect(() => mapReduceOptions({ args: { splitz: '3' } })).toThrow('unknown --arg splitz');
    expect(() => mapReduceOptions({ args: { reducers: '0' } })).toThrow('reducers=0 must be an integer from 1');
    expect(() => mapReduceOptions({ args: { repeat: 'x' } })).toThrow('repeat=x');
  });

  it('counts the corpus with 3 workers and its count equals the single-process count: PASS with the top words', async () => {
    const { status, verdict, results } = await runApp(3, 0, { splits: '12', reducers: '3', top: '5' });
    expect(status.state).toBe('done');
    expect(verdict?.ok, verdict?.message).toBe(true);
    expect(verdict?.message).toMatch(/^PASS: count exact .* 12 splits, 3 reducers, 0 split re-execution\(s\), master incarnation 1; top: the 70003, of 36473, and 28935, to 26247, a 23510$/);
    expect(results.filter((r) => (r as { kind: string }).kind === 'progress').length).toBeGreaterThan(12);
    expect(mapReduceApp.describeRecord?.(results[0])).toMatch(/^mapreduce: splits mapped \d+\/12 \| reducers done \d+\/3/);
  });

  it('a wrong count is caught: a result that misses one word fails the check', () => {
    const args = { splits: '2', reducers: '2', top: '3' };
    const verdict = mapReduceApp.verify?.(context(3, args), [{ kind: 'result', words: 1, distinct: 1, digests: ['0'.repeat(64), '0'.repeat(64)], top: [], maps: 2, reducers: 2, reexecutions: 0, masterIncarnation: 1 }]);
    expect(verdict?.ok).toBe(false);
    expect(verdict?.message).toMatch(/^FAIL: 1 words, expected \d+/);
    expect(mapReduceApp.verify?.(context(3, args), [])?.message).toBe('FAIL: no master reported a result');
  });
});
