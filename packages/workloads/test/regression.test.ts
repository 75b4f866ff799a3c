import { MemoryStore, createMemoryCoordinator } from '@taskgraph/coord-memory';
import { LocalCluster, nodeResources, silentLogger } from '@taskgraph/core';
import { LocalNetwork, createLocalTransport } from '@taskgraph/transport-local';
import { describe, expect, it } from 'vitest';
import { REGRESSION_LINK_TYPES, RegressionTaskBuilder, expectedSums, regressionLinkages } from '../src/index.js';

async function runRegression(numTasks: number, standbys: number, numEpochs: number) {
  const store = new MemoryStore();
  const network = new LocalNetwork();
  const sums = new Map<number, number>();
  const cluster = new LocalCluster({
    job: 'regression-test',
    numTasks,
    linkTypes: REGRESSION_LINK_TYPES,
    standbys,
    controllerCoordinator: await createMemoryCoordinator({ store, namespace: 'tg' }),
    resources: async () => {
      const coordinator = await createMemoryCoordinator({ store, namespace: 'tg' });
      const transport = await createLocalTransport({ network });
      return nodeResources(coordinator, transport);
    },
    builder: () => new RegressionTaskBuilder({ numTasks, numEpochs, onResult: (e, s) => sums.set(e, s) }),
    linkages: () => regressionLinkages({ numTasks }),
    node: { sessionTtlMs: 1000 },
    logger: silentLogger,
  });
  await cluster.start();
  const status = await cluster.waitUntilDone();
  await cluster.close();
  return { sums, status };
}

describe('regression job', () => {
  it('expectedSums are 0, 105, ..., 1050 for 15 tasks', () => {
    expect(expectedSums(15)).toEqual([0, 105, 210, 315, 420, 525, 630, 735, 840, 945, 1050]);
  });

  it('computes the exact sums with 15 tasks and 2 standbys', async () => {
    const { sums, status } = await runRegression(15, 2, 10);
    expect([...sums.entries()].sort((a, b) => a[0] - b[0]).map(([, s]) => s)).toEqual(expectedSums(15));
    expect(status.state).toBe('done');
    expect(status.epoch).toBe(10);
  });

  it('works for a job of two tasks and other tree sizes', async () => {
    for (const n of [2, 4, 7]) {
      const { sums } = await runRegression(n, 1, 3);
      expect([...sums.entries()].sort((a, b) => a[0] - b[0]).map(([, s]) => s)).toEqual(expectedSums(n, 3));
    }
  });
});
