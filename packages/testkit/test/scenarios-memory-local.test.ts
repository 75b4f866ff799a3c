import { MemoryCoordinator, MemoryStore } from '@taskgraph/coord-memory';
import { LocalNetwork, createLocalTransport } from '@taskgraph/transport-local';
import { afterAll, afterEach, beforeAll, beforeEach, describe, it } from 'vitest';
import { scenarioSuite } from '../src/index.js';
import { nodeResources } from '@taskgraph/core';

const store = new MemoryStore();
const network = new LocalNetwork();

scenarioSuite(
  { describe, it, beforeAll, afterAll, beforeEach, afterEach },
  {
    name: 'memory x local',
    sessionTtlMs: 1000,
    controller: async () => new MemoryCoordinator({ store, namespace: 'scenarios' }),
    resources: async () => {
      const coordinator = new MemoryCoordinator({ store, namespace: 'scenarios' });
      const transport = await createLocalTransport({ network });
      return nodeResources(coordinator, transport);
    },
    isolate: async (resources) => {
      const c = resources.coordinator as MemoryCoordinator;
      c.setUnreachable(true);
      return async () => c.setUnreachable(false);
    },
    dropRequests: async (probability) => {
      const fault = network.dropRequests({ probability });
      return () => fault.remove();
    },
  },
);
