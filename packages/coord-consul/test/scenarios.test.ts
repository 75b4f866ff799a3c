// The whole-job scenarios on consul x grpc, against the Consul emulator (Consul's
// real 10 s minimum session TTL). Each node reaches the emulator through its own TCP
// proxy, so one node can be cut off the store while the others keep going.
import { startConsulEmulator } from '@taskgraph/emulators';
import type { ConsulEmulator } from '@taskgraph/emulators';
import { nodeResources, type NodeResources } from '@taskgraph/core';
import { scenarioSuite, startTcpProxy } from '@taskgraph/testkit';
import type { TcpProxy } from '@taskgraph/testkit';
import { createGrpcTransport } from '@taskgraph/transport-grpc';
import { afterAll, afterEach, beforeAll, beforeEach, describe, it } from 'vitest';
import { createConsulCoordinator } from '../src/index.js';

let consul: ConsulEmulator;
const proxies = new Map<NodeResources['coordinator'], TcpProxy>();

beforeAll(async () => {
  consul = await startConsulEmulator();
});

afterAll(async () => {
  await Promise.all([...proxies.values()].map((p) => p.close()));
  await consul?.close();
});

scenarioSuite(
  { describe, it, beforeAll, afterAll, beforeEach, afterEach },
  {
    name: 'consul x grpc',
    sessionTtlMs: 10_000,
    timeoutMs: 180_000,
    controller: () => createConsulCoordinator({ address: `http://127.0.0.1:${consul.port}`, namespace: 'scenarios' }),
    resources: async () => {
      const proxy = await startTcpProxy({ target: consul.port });
      const coordinator = await createConsulCoordinator({ address: `http://${proxy.address}`, namespace: 'scenarios', requestTimeoutMs: 5_000 });
      proxies.set(coordinator, proxy);
      const transport = await createGrpcTransport('grpc://127.0.0.1:0');
      return nodeResources(coordinator, transport, async () => {
        proxies.delete(coordinator);
        await proxy.close();
      });
    },
    isolate: async (resources) => {
      const proxy = proxies.get(resources.coordinator);
      if (!proxy) throw new Error('isolate got resources the factory did not make');
      proxy.cut();
      return async () => proxy.heal();
    },
  },
);
