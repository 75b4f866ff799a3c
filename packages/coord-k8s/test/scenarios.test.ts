// The whole-job scenarios on k8s x grpc, against the Kubernetes API emulator through
// @kubernetes/client-node. Each node reaches the emulator through its own TCP proxy
// (the harness), so one node can be cut off the API server while the others go on.
import { createGrpcTransport } from '@taskgraph/transport-grpc';
import { scenarioSuite } from '@taskgraph/testkit';
import { afterAll, afterEach, beforeAll, beforeEach, describe, it } from 'vitest';
import { startHarness } from './helpers.js';
import type { Harness } from './helpers.js';
import { nodeResources } from '@taskgraph/core';

let h: Harness;

beforeAll(async () => {
  h = await startHarness();
});

afterAll(async () => {
  await h?.close();
});

scenarioSuite(
  { describe, it, beforeAll, afterAll, beforeEach, afterEach },
  {
    name: 'k8s x grpc',
    sessionTtlMs: 2000,
    timeoutMs: 180_000,
    controller: () => h.client('scenarios'),
    resources: async () => {
      const coordinator = await h.client('scenarios');
      const transport = await createGrpcTransport('grpc://127.0.0.1:0');
      return nodeResources(coordinator, transport);
    },
    isolate: async (resources) => {
      const proxy = h.proxyOf(resources.coordinator);
      proxy.cut();
      return async () => proxy.heal();
    },
  },
);
