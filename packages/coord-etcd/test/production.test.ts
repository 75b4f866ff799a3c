// The production set-up on a real etcd: etcd serves clients over TLS and requires
// client certificates from its CA, authentication is on, and the job's user may
// touch only its namespace; the data plane is mutual TLS from a job CA. A whole job
// runs there with the exact answer, and the store refuses whoever lacks a piece.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Etcd3, Range } from 'etcd3';
import { ErrorCodes } from '@taskgraph/api';
import { LocalCluster, createLogger, nodeResources } from '@taskgraph/core';
import { makeTestPki, rejection, startEtcd } from '@taskgraph/testkit';
import type { EtcdServer, Pki } from '@taskgraph/testkit';
import { createGrpcTransport } from '@taskgraph/transport-grpc';
import { REGRESSION_LINK_TYPES, RegressionTaskBuilder, expectedSums, regressionLinkages } from '@taskgraph/workloads';
import { createEtcdCoordinator } from '../src/index.js';

const NUM_TASKS = 7;
const USER = 'taskgraph';
const PASSWORD = 'job-user-password';

let etcd: EtcdServer;
let etcdPki: Pki;
let jobPki: Pki;
let client: { cert: string; key: string };
/** Node certificates made before any job runs: openssl runs synchronously, and would stall every node's keepalives. */
let nodeCerts: Array<{ cert: string; key: string }>;

beforeAll(async () => {
  etcdPki = makeTestPki('etcd');
  jobPki = makeTestPki('job');
  const server = etcdPki.issue('etcd-server');
  client = etcdPki.issue('etcd-client');
  nodeCerts = [0, 1, 2].map((i) => jobPki.issue(`node-${i}`));
  etcd = await startEtcd({ name: 'production', clientTls: { certFile: server.cert, keyFile: server.key, trustedCaFile: etcdPki.ca } });
  // What an operator does once with etcdctl: a root user, a job user whose role may
  // read and write the job's namespace only, then authentication on.
  const admin = new Etcd3({ hosts: [...etcd.endpoints] });
  try {
    await admin.role('root').create();
    await admin.user('root').create('root-password');
    await admin.user('root').addRole('root');
    await admin.role(USER).create();
    await admin.role(USER).grant({ permission: 'Readwrite', range: Range.prefix('prod/') });
    await admin.user(USER).create(PASSWORD);
    await admin.user(USER).addRole(USER);
    await admin.auth.authEnable();
  } finally {
    admin.close();
  }
}, 60_000);

afterAll(async () => {
  await etcd?.cleanup();
  etcdPki?.remove();
  jobPki?.remove();
});

/** The store URL of the production set-up, with some parts changed. */
function storeUrl(parts: { user?: string; password?: string; namespace?: string; cert?: boolean } = {}): string {
  const { user = USER, password = PASSWORD, namespace = 'prod', cert = true } = parts;
  const tls = `ca=${etcdPki.ca}${cert ? `&cert=${client.cert}&key=${client.key}` : ''}`;
  return `etcd://${etcd.tlsClientAddress as string}?namespace=${namespace}&${tls}&username=${user}&password=${password}&requestTimeoutMs=3000`;
}

describe('etcd with TLS, client certificates and authentication', () => {
  it('runs a job over grpcs:// with the exact sums', async () => {
    const sums = new Map<number, number>();
    const controllerCoordinator = await createEtcdCoordinator(storeUrl());
    const cluster = new LocalCluster({
      job: `prod-${process.pid}`,
      numTasks: NUM_TASKS,
      linkTypes: REGRESSION_LINK_TYPES,
      standbys: 1,
      controllerCoordinator,
      resources: async (i) => {
        const node = nodeCerts[i % nodeCerts.length] as { cert: string; key: string };
        const transport = await createGrpcTransport(`grpcs://127.0.0.1:0?ca=${jobPki.ca}&cert=${node.cert}&key=${node.key}`);
        return nodeResources(await createEtcdCoordinator(storeUrl()), transport);
      },
      builder: () => new RegressionTaskBuilder({ numTasks: NUM_TASKS, onResult: (e, s) => sums.set(e, s) }),
      linkages: () => regressionLinkages({ numTasks: NUM_TASKS }),
      node: { sessionTtlMs: 2000, attemptTimeoutMs: 2000 },
      logger: createLogger({ level: (process.env['TASKGRAPH_LOG_LEVEL'] as 'debug' | undefined) ?? 'silent' }),
    });
    try {
      await cluster.start();
      const status = await cluster.waitUntilDone();
      expect(status.state).toBe('done');
      expect([...sums.entries()].sort((a, b) => a[0] - b[0]).map(([, s]) => s)).toEqual(expectedSums(NUM_TASKS));
    } finally {
      await cluster.close();
      await cluster.controller.destroy().catch(() => undefined);
      await controllerCoordinator.close();
    }
  }, 120_000);

  it('refuses a wrong password, and the job user outside its namespace, with one sentence', async () => {
    for (const url of [storeUrl({ password: 'guess' }), storeUrl({ namespace: 'other' })]) {
      const c = await createEtcdCoordinator(url);
      try {
        const err = await rejection(c.get('anything'));
        expect(err.code).toBe(ErrorCodes.InvalidArgument);
        expect(err.message).toMatch(/refused the credentials or the permission/);
        expect(err.message).not.toContain(PASSWORD);
      } finally {
        await c.close();
      }
    }
  });

  it('refuses a client without a certificate from the etcd CA', async () => {
    const c = await createEtcdCoordinator(storeUrl({ cert: false }));
    try {
      const err = await rejection(c.get('anything'));
      expect([ErrorCodes.Unavailable, ErrorCodes.DeadlineExceeded, ErrorCodes.Indeterminate]).toContain(err.code);
    } finally {
      await c.close();
    }
  });
});
