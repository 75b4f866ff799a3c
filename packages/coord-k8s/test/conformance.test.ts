import { afterAll, afterEach, beforeAll, beforeEach, describe, it } from 'vitest';
import { CoordinationV1Api, KubeConfig } from '@kubernetes/client-node';
import { coordinatorSuite } from '@taskgraph/testkit';
import { K8sSession } from '../src/index.js';
import { startHarness, type Harness } from './helpers.js';

let h: Harness;
let leases: CoordinationV1Api;

beforeAll(async () => {
  h = await startHarness();
  const kc = new KubeConfig();
  kc.loadFromFile(await h.kubeconfig());
  leases = kc.makeApiClient(CoordinationV1Api);
});

afterAll(async () => {
  await h.close();
});

coordinatorSuite(
  { describe, it, beforeAll, afterAll, beforeEach, afterEach },
  (namespace) => h.client(namespace),
  {
    name: 'k8s emulator',
    sessionTtlMs: 2000,
    // The emulator forgets all its watch history, as etcd compaction plus a watch cache would.
    compact: async () => h.emulator.compact(),
    // The API server never expires a Lease; expiry is a janitor deleting it. Doing that now
    // is what the session's TTL running out (and a live participant noticing) leads to.
    expireSession: async (_c, session) => {
      if (!(session instanceof K8sSession)) throw new TypeError('not a K8sSession');
      await leases.deleteNamespacedLease({ name: session.leaseName, namespace: 'default' });
    },
    // Each client reaches the emulator through its own TCP proxy: cutting it is a partition.
    partition: async (c) => {
      const proxy = h.proxyOf(c);
      proxy.cut();
      return () => proxy.heal();
    },
  },
);
