// The whole-job scenarios on a real etcd, with the gRPC and the in-process
// transports. Every node reaches etcd through its own TCP proxy, so one node can be
// cut off the store while the others keep going.
import type { ScenarioBackend } from '@taskgraph/testkit';
import { nodeResources, type NodeResources } from '@taskgraph/core';
import { scenarioSuite, startEtcd, startTcpProxy } from '@taskgraph/testkit';
import type { EtcdServer, TcpProxy } from '@taskgraph/testkit';
import { createGrpcTransport } from '@taskgraph/transport-grpc';
import { LocalNetwork, createLocalTransport } from '@taskgraph/transport-local';
import type { Transport } from '@taskgraph/api';
import { afterAll, afterEach, beforeAll, beforeEach, describe, it } from 'vitest';
import { createEtcdCoordinator } from '../src/index.js';

let etcd: EtcdServer;
const proxies = new Map<NodeResources['coordinator'], TcpProxy>();

beforeAll(async () => {
  etcd = await startEtcd({ name: 'scenarios' });
}, 60_000);

afterAll(async () => {
  await Promise.all([...proxies.values()].map((p) => p.close()));
  await etcd?.cleanup();
});

function backend(name: string, transport: () => Promise<Transport>): ScenarioBackend {
  return {
    name,
    sessionTtlMs: 2000,
    controller: () => createEtcdCoordinator(`etcd://${etcd.clientAddress}?namespace=scenarios`),
    resources: async () => {
      const proxy = await startTcpProxy({ target: etcd.clientAddress });
      const coordinator = await createEtcdCoordinator(`etcd://${proxy.address}?namespace=scenarios`);
      proxies.set(coordinator, proxy);
      const t = await transport();
      return nodeResources(coordinator, t, async () => {
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
  };
}

const api = { describe, it, beforeAll, afterAll, beforeEach, afterEach };
scenarioSuite(api, backend('etcd x grpc', () => createGrpcTransport('grpc://127.0.0.1:0')));
const network = new LocalNetwork();
scenarioSuite(api, {
  ...backend('etcd x local', () => createLocalTransport({ network })),
  dropRequests: async (probability) => {
    const fault = network.dropRequests({ probability });
    return () => fault.remove();
  },
});
