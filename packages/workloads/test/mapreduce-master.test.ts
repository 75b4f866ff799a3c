import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryStore, createMemoryCoordinator } from '@taskgraph/coord-memory';
import { LocalCluster, masterWorkerBuilder, masterWorkerJob, masterWorkerLinkages, nodeResources, silentLogger } from '@taskgraph/core';
import { eventually } from '@taskgraph/testkit';
import { LocalNetwork, createLocalTransport } from '@taskgraph/transport-local';
import { describe, expect, it } from 'vitest';
import { MAX_FAILURES, MapReduceMaster, MapReduceWorker, mapReduceSplits } from '../src/index.js';

describe('MapReduceMaster', () => {
  it(`gives up with an ApplicationError when one piece of work fails ${MAX_FAILURES} times in a row (a worker without the corpus)`, async () => {
    const store = new MemoryStore();
    const network = new LocalNetwork();
    const empty = mkdtempSync(join(tmpdir(), 'tg-no-corpus-'));
    const { splits } = mapReduceSplits({ splits: 2, repeat: 1 });
    const job = masterWorkerJob(1);
    const cluster = new LocalCluster({
      job: 'mr-gives-up',
      numTasks: job.numTasks,
      linkTypes: job.linkTypes,
      standbys: 0,
      replaceLostNodes: false,
      controllerCoordinator: await createMemoryCoordinator({ store, namespace: 'tg' }),
      resources: async () => nodeResources(await createMemoryCoordinator({ store, namespace: 'tg' }), await createLocalTransport({ network })),
      builder: () =>
        masterWorkerBuilder(1, {
          master: () => new MapReduceMaster({ splits, reducers: 1, top: 1, report: () => undefined }),
          // Its corpus directory is empty: every map fails the same way.
          worker: () => new MapReduceWorker({ corpusDir: empty }),
        }),
      linkages: () => masterWorkerLinkages(1),
      node: { sessionTtlMs: 1000 },
      logger: silentLogger,
    });
    try {
      await cluster.start();
      const ended = () => cluster.events.find((e) => e.kind === 'node-ended' && e.detail?.startsWith('failed:'));
      await eventually('the master node failed', () => ended() !== undefined);
      expect(ended()?.detail).toMatch(new RegExp(`^failed: mapreduce: map [01] failed ${MAX_FAILURES} times in a row; the last time: `));
    } finally {
      await cluster.close();
      rmSync(empty, { recursive: true, force: true });
    }
  });
});
