// Whole jobs on a real etcd over an authenticated gRPC data plane: someone who can
// write the store points a task's address record at their own server, which does not
// hold the job's credentials; callers refuse it, the owner puts its record back, and
// the job's answer is exact. Once with the job secret, once with mutual TLS from a job CA.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Etcd3 } from 'etcd3';
import { ErrorCodes } from '@taskgraph/api';
import type { Coordinator, Transport } from '@taskgraph/api';
import { LocalCluster, createLogger, nodeResources } from '@taskgraph/core';
import { eventually, makeTestPki, rejection, startEtcd } from '@taskgraph/testkit';
import type { EtcdServer, Pki } from '@taskgraph/testkit';
import { createGrpcTransport } from '@taskgraph/transport-grpc';
import type { GrpcTransportOptions } from '@taskgraph/transport-grpc';
import { REGRESSION_LINK_TYPES, RegressionTaskBuilder, expectedSums, regressionLinkages } from '@taskgraph/workloads';
import type { RegressionOptions } from '@taskgraph/workloads';
import { createEtcdCoordinator } from '../src/index.js';

const NAMESPACE = 'secure';
const NUM_TASKS = 7;
const SECRET = 'the job secret, thirty-two bytes!';
/** Task 1 is a parent in the regression tree: its children ask it for the parameter every epoch. */
const VICTIM = 1;

let etcd: EtcdServer;
let raw: Etcd3;
let pki: Pki;
let outsiders: Pki;
beforeAll(async () => {
  etcd = await startEtcd({ name: 'secure' });
  raw = new Etcd3({ hosts: [...etcd.endpoints] });
  pki = makeTestPki('job');
  outsiders = makeTestPki('outsiders');
}, 60_000);
afterAll(async () => {
  raw?.close();
  await etcd?.cleanup();
  pki?.remove();
  outsiders?.remove();
});

let jobSeq = 0;

/** Enough to show callers dialing the impostor and the owner restoring its record, without fighting all job long. */
const ENOUGH_DIALS = 3;
const MAX_FORGERIES = 200;

/**
 * An impostor serving the regression's methods with wrong numbers, and an attacker
 * who points the victim's address record at it whenever the record is the genuine
 * one, until the impostor was dialed ENOUGH_DIALS times or MAX_FORGERIES were made.
 */
async function attack(job: string, impostor: Transport, dialed: { count: number }) {
  const server = await impostor.listen({
    methods: ['getParameter', 'getGradient'],
    handler: async () => {
      dialed.count++;
      return new TextEncoder().encode('1000000');
    },
  });
  const key = `${NAMESPACE}/${job}/tasks/${VICTIM}/addr`;
  const watcher = await raw.watch().key(key).create();
  let forged = 0;
  const forge = async (value: string | null): Promise<void> => {
    if (value === null) return;
    const genuine = JSON.parse(value) as { token: string; incarnation: number; address: string };
    if (genuine.address === server.address) return;
    forged++;
    await raw.put(key).value(JSON.stringify({ nodeId: 'intruder', address: server.address, token: genuine.token, incarnation: genuine.incarnation }));
  };
  let stopped = false;
  watcher.on('put', (kv) => {
    if (!stopped && dialed.count < ENOUGH_DIALS && forged < MAX_FORGERIES) void forge(kv.value.toString()).catch(() => undefined);
  });
  await forge(await raw.get(key).string());
  return {
    get forged() {
      return forged;
    },
    async stop() {
      stopped = true;
      await watcher.cancel();
      await server.close({ graceMs: 0 });
    },
  };
}

/** The regression job on this etcd, its nodes on `transport`. */
function regressionCluster(job: string, controllerCoordinator: Coordinator, transport: (index: number) => Promise<Transport>, options: RegressionOptions) {
  return new LocalCluster({
    job,
    numTasks: NUM_TASKS,
    linkTypes: REGRESSION_LINK_TYPES,
    standbys: 0,
    controllerCoordinator,
    resources: async (i) => nodeResources(await createEtcdCoordinator(`etcd://${etcd.clientAddress}?namespace=${NAMESPACE}`), await transport(i)),
    builder: () => new RegressionTaskBuilder(options),
    linkages: () => regressionLinkages({ numTasks: NUM_TASKS }),
    node: { sessionTtlMs: 2000, attemptTimeoutMs: 2000 },
    logger: createLogger({ level: (process.env['TASKGRAPH_LOG_LEVEL'] as 'debug' | undefined) ?? 'silent' }),
  });
}

async function runAttackedJob(transport: (index: number) => Promise<Transport>, impostor: Transport) {
  const job = `secure-${process.pid}-${++jobSeq}`;
  const sums = new Map<number, number>();
  const controllerCoordinator = await createEtcdCoordinator(`etcd://${etcd.clientAddress}?namespace=${NAMESPACE}`);
  const cluster = regressionCluster(job, controllerCoordinator, transport, { numTasks: NUM_TASKS, numEpochs: 20, onResult: (e, s) => sums.set(e, s) });
  const dialed = { count: 0 };
  let attacker: Awaited<ReturnType<typeof attack>> | undefined;
  try {
    await cluster.start();
    // The victim's genuine record first: the attacker copies its token, as a reader of the store can.
    await eventually(`task ${VICTIM} has published its address`, async () => (await raw.get(`${NAMESPACE}/${job}/tasks/${VICTIM}/addr`).string()) !== null, { timeoutMs: 60_000 });
    attacker = await attack(job, impostor, dialed);
    const status = await cluster.waitUntilDone();
    return { status, sums: [...sums.entries()].sort((a, b) => a[0] - b[0]).map(([, s]) => s), forged: attacker.forged, dialed: dialed.count };
  } finally {
    await attacker?.stop();
    await cluster.close();
    await cluster.controller.destroy().catch(() => undefined);
    await controllerCoordinator.close();
    await impostor.close();
  }
}

describe('a forged address record on real etcd', () => {
  it('with the job secret: callers drop the impostor’s answers, the owner restores its record, the sums are exact', async () => {
    const options: GrpcTransportOptions = { host: '127.0.0.1', secret: SECRET };
    const result = await runAttackedJob(() => createGrpcTransport(options), await createGrpcTransport({ host: '127.0.0.1' }));
    expect(result.status.state).toBe('done');
    expect(result.sums).toEqual(expectedSums(NUM_TASKS, 20));
    // Forged again after the owner put its record back, and dialed by callers, who used nothing of it.
    expect(result.forged).toBeGreaterThan(1);
    expect(result.dialed).toBeGreaterThan(0);
  }, 120_000);

  it('with mutual TLS from a job CA: the impostor’s certificate fails the handshake, the sums are exact', async () => {
    // Made before the job runs: openssl runs synchronously, and would stall every node's keepalives.
    const tls = (p: Pki, name: string) => {
      const f = p.issue(name);
      return { ca: pki.pem(pki.ca), cert: p.pem(f.cert), key: p.pem(f.key) };
    };
    const members = [0, 1, 2].map((i) => tls(pki, `node-${i}`));
    const result = await runAttackedJob(
      async (i) => createGrpcTransport({ host: '127.0.0.1', tls: members[i % members.length] as (typeof members)[number] }),
      await createGrpcTransport({ host: '127.0.0.1', tls: tls(outsiders, 'impostor') }),
    );
    expect(result.status.state).toBe('done');
    expect(result.sums).toEqual(expectedSums(NUM_TASKS, 20));
    expect(result.forged).toBeGreaterThan(1);
    // No job node completed a handshake with the impostor, so no request reached its handler.
    expect(result.dialed).toBe(0);
  }, 120_000);
});

describe('a forged request to a live node on real etcd', () => {
  /** Starts a long job, waits for task 1's record, and gives it to `probe` while the job runs. */
  async function withLiveTask(transport: (index: number) => Promise<Transport>, probe: (addr: { address: string; token: string }, job: string, epoch: number) => Promise<void>) {
    const job = `forge-${process.pid}-${++jobSeq}`;
    const controllerCoordinator = await createEtcdCoordinator(`etcd://${etcd.clientAddress}?namespace=${NAMESPACE}`);
    // Long enough to still run while the test forges requests; the test stops it after.
    const cluster = regressionCluster(job, controllerCoordinator, transport, { numTasks: NUM_TASKS, numEpochs: 100_000 });
    try {
      await cluster.start();
      const key = `${NAMESPACE}/${job}/tasks/${VICTIM}/addr`;
      const addr = await eventually(`task ${VICTIM} has published its address`, async () => {
        const v = await raw.get(key).string();
        return v === null ? undefined : (JSON.parse(v) as { address: string; token: string });
      });
      const epoch = await eventually('the job is past epoch 1', async () => {
        const e = Number(await raw.get(`${NAMESPACE}/${job}/state/epoch`).string());
        return e > 1 ? e : undefined;
      });
      await probe(addr, job, epoch);
    } finally {
      await cluster.close();
      await cluster.controller.destroy().catch(() => undefined);
      await controllerCoordinator.close();
    }
  }

  /** Everything the forger can read from a refusal. */
  const readable = (err: { message: string; details: unknown }): string => JSON.stringify({ message: err.message, details: err.details });

  it('with the job secret: UNAUTHENTICATED, whatever the request names, and nothing of the job in the answer', async () => {
    await withLiveTask(
      () => createGrpcTransport({ host: '127.0.0.1', secret: SECRET }),
      async ({ address, token }, job, epoch) => {
        const forger = await createGrpcTransport({ host: '127.0.0.1' });
        try {
          const guesses = [
            { job: 'guess', token: '1', epoch: 0 },
            // Everything a reader of the store knows, but not the secret.
            { job, token, epoch },
          ];
          for (const g of guesses) {
            const err = await rejection(forger.call(address, 'getParameter', { ...g, from: 0, to: VICTIM, requestId: 'forged' }, new Uint8Array(), { timeoutMs: 5000 }));
            expect(err.code).toBe(ErrorCodes.Unauthenticated);
            expect(err.message).toContain('request refused: it carries no valid job credential');
            expect(readable(err)).not.toContain(job);
            expect(readable(err)).not.toContain(token);
            expect(err.details).not.toHaveProperty('current');
          }
        } finally {
          await forger.close();
        }
      },
    );
  }, 120_000);

  it('without credentials: a wrong job, token or epoch is refused without being told the real one', async () => {
    await withLiveTask(
      () => createGrpcTransport({ host: '127.0.0.1' }),
      async ({ address, token }, job, epoch) => {
        const forger = await createGrpcTransport({ host: '127.0.0.1' });
        try {
          const call = (m: { job: string; token: string; epoch: number }) =>
            rejection(forger.call(address, 'getParameter', { ...m, from: 0, to: VICTIM, requestId: 'forged' }, new Uint8Array(), { timeoutMs: 5000 }));
          const wrongJob = await call({ job: 'guess', token: '1', epoch: 0 });
          expect(wrongJob.code).toBe(ErrorCodes.NotOwner);
          expect(readable(wrongJob)).not.toContain(job);
          const wrongToken = await call({ job, token: '1', epoch: 0 });
          expect(wrongToken.code).toBe(ErrorCodes.NotOwner);
          expect(readable(wrongToken)).not.toContain(token);
          const wrongEpoch = await call({ job, token, epoch: 0 });
          expect(wrongEpoch.code).toBe(ErrorCodes.EpochChanged);
          expect(wrongEpoch.details).toEqual({ requested: 0 });
          expect(wrongEpoch.message).not.toMatch(new RegExp(`\\b${epoch}\\b`));
        } finally {
          await forger.close();
        }
      },
    );
  }, 120_000);
});
