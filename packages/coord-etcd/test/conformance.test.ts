import { afterAll, afterEach, beforeAll, beforeEach, describe, it } from 'vitest';
import { Etcd3 } from 'etcd3';
import type { Coordinator } from '@taskgraph/api';
import { coordinatorSuite, startEtcd, startTcpProxy, type EtcdServer, type TcpProxy } from '@taskgraph/testkit';
import { createEtcdCoordinator } from '../src/index.js';

// One real etcd for the file. Every client reaches it through its own TCP proxy,
// so the partition hook can cut exactly one client off while the others (and the
// admin client the hooks use) still talk to etcd.
let etcd: EtcdServer;
let admin: Etcd3;
const proxies = new Map<Coordinator, TcpProxy>();

beforeAll(async () => {
  etcd = await startEtcd({ name: 'conformance' });
  admin = new Etcd3({ hosts: [...etcd.endpoints] });
});

afterAll(async () => {
  admin.close();
  await Promise.all([...proxies.values()].map((p) => p.close()));
  await etcd.cleanup();
});

coordinatorSuite(
  { describe, it, beforeAll, afterAll, beforeEach, afterEach },
  async (namespace) => {
    const proxy = await startTcpProxy({ target: etcd.clientAddress });
    const c = await createEtcdCoordinator(`etcd://${proxy.address}?namespace=${encodeURIComponent(namespace)}`);
    proxies.set(c, proxy);
    return c;
  },
  {
    name: 'etcd',
    // etcd's smallest lease TTL with its default election timeout.
    sessionTtlMs: 2000,
    compact: async () => {
      const { header } = await admin.kv.range({ key: Buffer.from([0]) });
      await admin.kv.compact({ revision: header.revision, physical: true });
    },
    expireSession: async (_c, session) => {
      // What etcd does when a lease's TTL runs out: revoke it, deleting its keys.
      await admin.leaseClient.leaseRevoke({ ID: session.id });
    },
    partition: async (c) => {
      const proxy = proxies.get(c);
      if (!proxy) throw new Error('the partition hook got a coordinator the factory did not make');
      proxy.cut();
      return () => proxy.heal();
    },
  },
);
