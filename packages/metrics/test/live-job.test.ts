// A live job with real components: the memory store and the gRPC transport, nodes
// in a LocalCluster, the owner of task 2 killed mid-job and taken over by a standby.
// /metrics and /healthz are scraped over HTTP during the failover and after the job,
// and the numbers are checked exactly, against the nodes' own counters where they have them.
import { MemoryCoordinator, MemoryStore } from '@taskgraph/coord-memory';
import { LocalCluster, createBootstrap, createController, nodeResources, silentLogger } from '@taskgraph/core';
import type { ClusterNode } from '@taskgraph/core';
import { eventually } from '@taskgraph/testkit';
import { createGrpcTransport } from '@taskgraph/transport-grpc';
import { REGRESSION_LINK_TYPES, RegressionTaskBuilder, expectedSums, regressionLinkages } from '@taskgraph/workloads';
import { afterEach, describe, expect, it } from 'vitest';
import { METRICS, startMetricsServer } from '../src/index.js';
import type { MetricsServer } from '../src/index.js';
import { Scrape, get } from './prom.js';

const closers: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c().catch(() => undefined);
});

async function scrape(server: MetricsServer): Promise<Scrape> {
  const answer = await get(`${server.url}/metrics`);
  expect(answer.status).toBe(200);
  return Scrape.of(answer.body);
}

const healthz = async (server: MetricsServer) => (await get(`${server.url}/healthz`)).status;

/** The sum of one of the nodes' own counters. */
function total(nodes: readonly ClusterNode[], pick: (n: ClusterNode) => number): number {
  return nodes.reduce((sum, n) => sum + pick(n), 0);
}

describe('metrics of a live job over gRPC, with a failover', () => {
  it('counts the failover, follows the epoch, and its request counts, latencies and health add up exactly', async () => {
    const numTasks = 7;
    const numEpochs = 10;
    // The job's aggregate (every node of the process; healthy while any is) and one node's own server.
    const job = await startMetricsServer({ port: 0, health: 'any' });
    const single = await startMetricsServer({ port: 0 });
    closers.push(() => job.close(), () => single.close());

    // Every answer of epoch 4 waits for the gate: the job holds in epoch 4 while the test kills and scrapes.
    let openGate!: () => void;
    const gate = new Promise<void>((resolve) => (openGate = resolve));
    const sums = new Map<number, number>();
    const store = new MemoryStore();
    const cluster = new LocalCluster({
      job: 'metrics-live',
      numTasks,
      linkTypes: REGRESSION_LINK_TYPES,
      standbys: 1,
      controllerCoordinator: new MemoryCoordinator({ store, namespace: 'tg' }),
      resources: async () => nodeResources(new MemoryCoordinator({ store, namespace: 'tg' }), await createGrpcTransport('grpc://127.0.0.1:0')),
      builder: () =>
        new RegressionTaskBuilder({
          numTasks,
          numEpochs,
          onResult: (e, s) => sums.set(e, s),
          beforeServe: ({ epoch }) => (epoch === 4 ? gate : undefined),
        }),
      linkages: () => regressionLinkages({ numTasks }),
      node: { sessionTtlMs: 1000, instruments: job.metrics.observer },
      logger: silentLogger,
    });
    closers.push(() => cluster.close());
    await cluster.start();

    await eventually('the job holds in epoch 4, every task running', () => cluster.nodes.filter((n) => n.node.getEpoch() === 4 && n.node.currentTask !== undefined).length === numTasks);
    const victim = cluster.ownerOf(2)!;
    single.registerNode(victim.node);
    expect(await healthz(single)).toBe(200);
    expect(await healthz(job)).toBe(200);
    let s = await scrape(job);
    expect(s.value(METRICS.epoch, { node: victim.node.nodeId, task: '2' })).toBe(4);
    expect(s.value(METRICS.nodeRole, { node: victim.node.nodeId, task: '2', role: 'primary' })).toBe(1);
    expect(s.value(METRICS.incarnation, { node: victim.node.nodeId, task: '2' })).toBe(1);
    expect(s.sum(METRICS.nodeRole, { role: 'primary' })).toBe(numTasks);
    expect(s.sum(METRICS.nodeRole, { role: 'standby' })).toBe(1);
    expect(s.sum(METRICS.failovers)).toBe(0);

    // The owner of task 2 dies; the standby takes task 2 over while the job still holds in epoch 4.
    await cluster.kill(2);
    expect(await healthz(single)).toBe(503);
    const heir = await eventually('a standby runs task 2', () => cluster.ownerOf(2));
    s = await eventually('the failover is scraped', async () => {
      const now = await scrape(job);
      return now.sum(METRICS.failovers) === 1 && now.select(METRICS.incarnation, { node: heir.node.nodeId, task: '2' }).length === 1 ? now : undefined;
    });
    expect(s.value(METRICS.failovers, { job: 'metrics-live', node: heir.node.nodeId, task: '2', kind: 'takeover' })).toBe(1);
    expect(s.value(METRICS.incarnation, { node: heir.node.nodeId, task: '2' })).toBe(2);
    const token = (await cluster.controller.status())!.tasks[2]!.token!;
    expect(s.value(METRICS.fencingToken, { node: heir.node.nodeId, task: '2' })).toBe(Number(token));
    expect(s.value(METRICS.nodeUp, { node: victim.node.nodeId, task: '2' })).toBe(0);
    expect(s.sum(METRICS.nodeRole, { node: victim.node.nodeId })).toBe(0);
    expect(s.value(METRICS.leaseHeld, { node: victim.node.nodeId, task: '2' })).toBe(0);
    expect(await healthz(job)).toBe(200);

    openGate();
    const status = await cluster.waitUntilDone();
    expect(status.state).toBe('done');
    expect(status.epoch).toBe(numEpochs);
    expect([...sums.keys()].sort((a, b) => a - b).map((e) => sums.get(e))).toEqual(expectedSums(numTasks, numEpochs));

    // After the job: every number checked.
    s = await scrape(job);
    const nodes = cluster.nodes;
    const ended = await Promise.all(nodes.map((n) => n.finished));
    const done = nodes.filter((_, i) => ended[i]!.outcome?.reason === 'job-done');
    expect(done.length).toBe(nodes.length - 1);
    for (const n of done) expect(s.select(METRICS.epoch, { node: n.node.nodeId }).map((x) => x.value)).toEqual([numEpochs]);
    expect(s.sum(METRICS.failovers)).toBe(1);
    expect(s.sum(METRICS.leasesLost)).toBe(0);
    expect(s.sum(METRICS.nodeUp)).toBe(0);
    expect(s.sum(METRICS.leaseHeld)).toBe(0);

    // Requests served and sent: each latency histogram has one observation per request, series by series.
    const served = s.sum(METRICS.requestsServed);
    expect(served).toBeGreaterThan(0);
    expect(served).toBe(total(nodes, (n) => n.node.stats.served));
    for (const labels of s.series(METRICS.requestsServed)) {
      expect(s.value(`${METRICS.serveDuration}_count`, labels)).toBe(s.value(METRICS.requestsServed, labels));
    }
    expect(s.sum(`${METRICS.serveDuration}_count`)).toBe(served);
    const sent = s.sum(METRICS.requestsSent);
    expect(sent).toBeGreaterThanOrEqual(served);
    for (const labels of s.series(METRICS.requestsSent)) {
      expect(s.value(`${METRICS.requestDuration}_count`, labels)).toBe(s.value(METRICS.requestsSent, labels));
      expect(s.value(`${METRICS.requestDuration}_bucket`, { ...labels, le: '+Inf' })).toBe(s.value(METRICS.requestsSent, labels));
    }
    expect(s.sum(`${METRICS.requestDuration}_count`)).toBe(sent);
    expect(s.sum(METRICS.requestRetries)).toBe(total(nodes, (n) => n.node.stats.retries));
    expect(s.sum(METRICS.requestsRefused, { reason: 'epoch' })).toBe(total(nodes, (n) => n.node.stats.rejectedEpoch));
    expect(s.sum(METRICS.requestsRefused, { reason: 'late-result' })).toBe(total(nodes, (n) => n.node.stats.fencedLateResults));
    expect(s.sum(METRICS.requestsRefused) - s.sum(METRICS.requestsRefused, { reason: 'epoch' }) - s.sum(METRICS.requestsRefused, { reason: 'late-result' })).toBe(
      total(nodes, (n) => n.node.stats.rejectedNotOwner),
    );

    // Metas: delivered, by path, as the nodes counted them; at least one flag per receiver per epoch.
    expect(s.sum(METRICS.metasDelivered, { path: 'push' })).toBe(total(nodes, (n) => n.node.stats.metasByPush));
    expect(s.sum(METRICS.metasDelivered, { path: 'store' })).toBe(total(nodes, (n) => n.node.stats.metasByStore));
    // Each epoch: ParamReady to every child and GradientReady to every parent, 2 x (tasks - 1) flags.
    expect(s.sum(METRICS.metasFlagged)).toBeGreaterThanOrEqual(2 * (numTasks - 1) * (numEpochs + 1));

    // Store calls: every one timed.
    for (const labels of s.series(METRICS.storeDuration)) {
      expect(s.value(`${METRICS.storeDuration}_count`, labels)).toBe(s.sum(METRICS.storeOps, labels));
    }
    expect(s.sum(METRICS.storeOps, { op: 'tryAcquire' })).toBeGreaterThanOrEqual(numTasks + 1);
    expect(s.sum(METRICS.storeOps, { op: 'openSession', code: 'OK' })).toBe(nodes.length);

    // Every node left: the job's health, and the killed node's, are 503.
    expect(await healthz(job)).toBe(503);
    expect(await healthz(single)).toBe(503);
    const report = JSON.parse((await get(`${job.url}/healthz`)).body) as { nodes: Array<{ node: string; role: string }> };
    expect(report.nodes.map((n) => n.role)).toEqual(nodes.map(() => 'left'));
  });

  it('a node that loses its lease: /healthz 503 at once, the loss counted; the standby that takes over counts the failover; unregistering the dead node makes the rest healthy', async () => {
    const store = new MemoryStore();
    await createController({ coordinator: new MemoryCoordinator({ store, namespace: 'tg' }), job: 'lease-loss', logger: silentLogger }).createJob({ numTasks: 1, linkTypes: ['Parents', 'Children'] });
    const server = await startMetricsServer({ port: 0 });
    closers.push(() => server.close());
    const idle = { init: () => undefined, enterEpoch: () => undefined, metaReady: () => undefined, exit: () => undefined };
    const start = async (nodeId: string) => {
      const coordinator = new MemoryCoordinator({ store, namespace: 'tg' });
      const transport = await createGrpcTransport('grpc://127.0.0.1:0');
      const node = createBootstrap({ job: 'lease-loss', nodeId, coordinator, transport, sessionTtlMs: 1000, logger: silentLogger });
      node.setTaskBuilder({ getTask: () => idle });
      for (const lt of ['Parents', 'Children']) node.addLinkage(lt, { setTaskId: () => undefined, getNeighbors: () => [] });
      const registration = server.registerNode(node);
      const run = node.start();
      closers.push(async () => {
        coordinator.setUnreachable(false);
        await node.stop();
        await run;
        await transport.close();
        await coordinator.close();
      });
      return { node, coordinator, registration, run };
    };
    const a = await start('node-a');
    await eventually('node-a runs the task', () => a.node.currentTask === 0);
    const b = await start('node-b');
    await eventually('node-b waits as a standby', () => b.node.state === 'standby');
    expect(await healthz(server)).toBe(200);
    let s = await scrape(server);
    expect(s.value(METRICS.leaseHeld, { node: 'node-a', task: '0' })).toBe(1);
    expect(s.value(METRICS.nodeRole, { node: 'node-b', task: '', role: 'standby' })).toBe(1);

    // node-a can no longer reach the store: its session ends (its local deadline first), it leaves the task.
    a.coordinator.setUnreachable(true);
    await eventually('node-a lost its lease', () => a.node.state === 'leaving' || a.node.state === 'done');
    expect(await healthz(server)).toBe(503);
    await eventually('node-b took the task over', () => b.node.currentTask === 0);
    await expect(a.run).resolves.toEqual({ reason: 'lease-lost', taskId: 0 });
    s = await scrape(server);
    expect(s.value(METRICS.leasesLost, { node: 'node-a', task: '0' })).toBe(1);
    expect(s.value(METRICS.leaseHeld, { node: 'node-a', task: '0' })).toBe(0);
    expect(s.value(METRICS.nodeUp, { node: 'node-a', task: '0' })).toBe(0);
    expect(s.value(METRICS.failovers, { node: 'node-b', task: '0', kind: 'takeover' })).toBe(1);
    expect(s.value(METRICS.incarnation, { node: 'node-b', task: '0' })).toBe(2);
    expect(s.value(METRICS.nodeUp, { node: 'node-b', task: '0' })).toBe(1);
    // Under the policy "all", the dead node keeps /healthz at 503 until it is unregistered (as a supervisor that replaced it does).
    expect(await healthz(server)).toBe(503);
    a.registration.unregister();
    expect(await healthz(server)).toBe(200);
  });
});
