import { afterAll, afterEach, beforeAll, beforeEach, describe, it } from 'vitest';
import type { Coordinator } from '@taskgraph/api';
import { startConsulEmulator } from '@taskgraph/emulators';
import type { ConsulEmulator } from '@taskgraph/emulators';
import { coordinatorSuite, startTcpProxy } from '@taskgraph/testkit';
import type { TcpProxy } from '@taskgraph/testkit';
import { createConsulCoordinator } from '../src/index.js';

// One emulator for the suite, as one Consul cluster would be; each client reaches it
// through its own TCP proxy, so that cutting one client off leaves the others alone.
let consul: ConsulEmulator;
const proxies = new Map<Coordinator, TcpProxy>();

beforeAll(async () => {
  consul = await startConsulEmulator();
});

afterAll(async () => {
  await Promise.all([...proxies.values()].map((p) => p.close()));
  await consul.close();
});

coordinatorSuite(
  { describe, it, beforeAll, afterAll, beforeEach, afterEach },
  async (namespace) => {
    const proxy = await startTcpProxy({ target: consul.port });
    const c = await createConsulCoordinator({ address: `http://${proxy.address}`, namespace, requestTimeoutMs: 5_000, blockingWaitMs: 30_000 });
    proxies.set(c, proxy);
    return c;
  },
  {
    name: 'consul (emulator)',
    // Consul's smallest session TTL.
    sessionTtlMs: 10_000,
    // No compact hook: Consul keeps no history, and the backend declares caps.watchCoalesces.
    expireSession: async (_c, session) => {
      consul.expireSession(session.id);
    },
    partition: async (c) => {
      const proxy = proxies.get(c);
      if (!proxy) throw new Error('no proxy for this client');
      proxy.cut();
      return () => proxy.heal();
    },
    timeScale: 2,
  },
);
