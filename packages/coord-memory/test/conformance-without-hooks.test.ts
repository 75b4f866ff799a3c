// The suite's weaker checks, for backends without hooks, run here on memory posing as a
// backend without history (watchCoalesces): memory keeps history, so it must pass them too.
import { afterAll, afterEach, beforeAll, beforeEach, describe, it } from 'vitest';
import type { Coordinator, CoordinatorCaps } from '@taskgraph/api';
import { coordinatorSuite } from '@taskgraph/testkit';
import { MEMORY_CAPS, MemoryCoordinator, MemoryStore } from '../src/index.js';

const store = new MemoryStore({ name: 'conformance-without-hooks' });

function asCoalescing(inner: MemoryCoordinator): Coordinator {
  const caps: CoordinatorCaps = { ...MEMORY_CAPS, watchCoalesces: true };
  return {
    caps,
    get: (key) => inner.get(key),
    list: (prefix) => inner.list(prefix),
    create: (key, value, options) => inner.create(key, value, options),
    update: (key, value, expect) => inner.update(key, value, expect),
    delete: (key, expect) => inner.delete(key, expect),
    deletePrefix: (prefix) => inner.deletePrefix(prefix),
    watch: (prefix, options) => inner.watch(prefix, options),
    openSession: (options) => inner.openSession(options),
    endSession: (id) => inner.endSession(id),
    acquire: (name, session, options) => inner.acquire(name, session, options),
    tryAcquire: (name, session, options) => inner.tryAcquire(name, session, options),
    holder: (name) => inner.holder(name),
    close: () => inner.close(),
  };
}

coordinatorSuite(
  { describe, it, beforeAll, afterAll, beforeEach, afterEach },
  async (namespace) => asCoalescing(new MemoryCoordinator({ store, namespace })),
  { name: 'memory without hooks', sessionTtlMs: 500 },
);
