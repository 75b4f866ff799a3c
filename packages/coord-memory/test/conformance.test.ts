import { afterAll, afterEach, beforeAll, beforeEach, describe, it } from 'vitest';
import { coordinatorSuite } from '@taskgraph/testkit';
import { MemoryCoordinator, MemoryStore } from '../src/index.js';

// One store for the whole suite, as one server is for a real backend; the suite gives each test its own namespace.
const store = new MemoryStore({ name: 'conformance' });
const asMemory = (c: unknown): MemoryCoordinator => {
  if (!(c instanceof MemoryCoordinator)) throw new TypeError('not a MemoryCoordinator');
  return c;
};

coordinatorSuite(
  { describe, it, beforeAll, afterAll, beforeEach, afterEach },
  async (namespace) => new MemoryCoordinator({ store, namespace }),
  {
    name: 'memory',
    sessionTtlMs: 500,
    compact: async () => store.compact(),
    expireSession: async (c, session) => {
      asMemory(c).expireSession(session);
    },
    partition: async (c) => {
      const client = asMemory(c);
      client.setUnreachable(true);
      return () => client.setUnreachable(false);
    },
  },
);
