// The whole-job scenarios on memory x grpc: every node's data plane is a real gRPC
// server on loopback.
import { MemoryCoordinator, MemoryStore } from '@taskgraph/coord-memory';
import { scenarioSuite } from '@taskgraph/testkit';
import { afterAll, afterEach, beforeAll, beforeEach, describe, it } from 'vitest';
import { createGrpcTransport } from '../src/index.js';
import { nodeResources } from '@taskgraph/core';

const store = new MemoryStore();

scenarioSuite(
  { describe, it, beforeAll, afterAll, beforeEach, afterEach },
  {
    name: 'memory x grpc',
    sessionTtlMs: 1000,
    controller: async () => new MemoryCoordinator({ store, namespace: 'scenarios' }),
    resources: async () => {
      const coordinator = new MemoryCoordinator({ store, namespace: 'scenarios' });
      const transport = await createGrpcTransport('grpc://127.0.0.1:0');
      return nodeResources(coordinator, transport);
    },
    isolate: async (resources) => {
      const c = resources.coordinator as MemoryCoordinator;
      c.setUnreachable(true);
      return async () => c.setUnreachable(false);
    },
  },
);
