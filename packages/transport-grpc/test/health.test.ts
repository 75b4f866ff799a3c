// The standard gRPC health service (grpc.health.v1.Health) on real node servers,
// asked with the standard health client (the service definition grpc-health-check ships):
// SERVING while a node holds its task, NOT_SERVING once it left or while it waits.
import { credentials, makeGenericClientConstructor, status as Status } from '@grpc/grpc-js';
import type { Client, ClientReadableStream, ServiceError } from '@grpc/grpc-js';
import { MemoryCoordinator, MemoryStore } from '@taskgraph/coord-memory';
import { createController, createBootstrap, createNodeHost, silentLogger } from '@taskgraph/core';
import type { TaskGraphNode } from '@taskgraph/core';
import type { Task } from '@taskgraph/api';
import { eventually } from '@taskgraph/testkit';
import { service as healthService } from 'grpc-health-check';
import type { ServiceDefinition } from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { createGrpcTransport } from '../src/index.js';
import type { GrpcTransport } from '../src/index.js';

type HealthStatus = 'UNKNOWN' | 'SERVING' | 'NOT_SERVING' | 'SERVICE_UNKNOWN';

interface HealthClient extends Client {
  check(request: { service: string }, callback: (err: ServiceError | null, response?: { status: HealthStatus }) => void): void;
  watch(request: { service: string }): ClientReadableStream<{ status: HealthStatus }>;
  list(request: object, callback: (err: ServiceError | null, response?: { statuses: Record<string, { status: HealthStatus }> }) => void): void;
}

const HealthClient = makeGenericClientConstructor(healthService as unknown as ServiceDefinition, 'grpc.health.v1.Health') as unknown as new (
  address: string,
  creds: ReturnType<typeof credentials.createInsecure>,
) => HealthClient;

const LINKS = ['Parents', 'Children'];
const closers: Array<() => Promise<unknown> | void> = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await Promise.resolve(c()).catch(() => undefined);
});

function client(address: string): HealthClient {
  const c = new HealthClient(address, credentials.createInsecure());
  closers.push(() => c.close());
  return c;
}

/** Check(service): the status, or the gRPC code of the failure ("code 5" for NOT_FOUND). */
function check(c: HealthClient, service: string): Promise<string> {
  return new Promise((resolve) => {
    c.check({ service }, (err, res) => resolve(err ? `code ${err.code}` : (res?.status ?? 'none')));
  });
}

/** Watch(service): every status it is sent, and how the stream ended. */
function watch(c: HealthClient, service: string) {
  const seen: string[] = [];
  let ended: string | undefined;
  const call = c.watch({ service });
  call.on('data', (m: { status: HealthStatus }) => seen.push(m.status));
  call.on('error', (e: ServiceError) => (ended ??= `code ${e.code}`));
  call.on('status', (s: { code: number }) => (ended ??= `code ${s.code}`));
  closers.push(() => call.cancel());
  return {
    seen,
    get ended() {
      return ended;
    },
  };
}

const idleTask = (): Task => ({ init: () => undefined, enterEpoch: () => undefined, metaReady: () => undefined, exit: () => undefined });
const noTopology = { setTaskId: () => undefined, getNeighbors: () => [] };

let seq = 0;

async function job(numTasks: number) {
  const store = new MemoryStore();
  const name = `health-${++seq}`;
  const coordinator = () => {
    const c = new MemoryCoordinator({ store, namespace: 'tg' });
    closers.push(() => c.close());
    return c;
  };
  await createController({ coordinator: coordinator(), job: name, logger: silentLogger }).createJob({ numTasks, linkTypes: LINKS });
  const transport = async (): Promise<GrpcTransport> => {
    const t = await createGrpcTransport('grpc://127.0.0.1:0');
    closers.push(() => t.close());
    return t;
  };
  const node = async (nodeId: string): Promise<{ node: TaskGraphNode; run: Promise<unknown>; transport: GrpcTransport }> => {
    const t = await transport();
    const n = createBootstrap({ job: name, nodeId, coordinator: coordinator(), transport: t, sessionTtlMs: 1000, logger: silentLogger });
    n.setTaskBuilder({ getTask: idleTask });
    for (const lt of LINKS) n.addLinkage(lt, noTopology);
    const run = n.start();
    closers.push(() => n.kill());
    return { node: n, run, transport: t };
  };
  return { name, coordinator, transport, node };
}

describe('grpc.health.v1.Health on node servers', () => {
  it('SERVING while the node holds its task, NOT_SERVING while it waits as a standby and once it left; the standby that takes over turns SERVING', async () => {
    const j = await job(1);
    const a = await j.node('node-a');
    await eventually('node-a runs task 0', () => a.node.currentTask === 0);
    const b = await j.node('node-b');
    await eventually('node-b waits as a standby', () => b.node.state === 'standby');
    const status = await createController({ coordinator: j.coordinator(), job: j.name, logger: silentLogger }).status();
    const aAddress = status!.tasks[0]!.address!;
    const bAddress = status!.standbys[0]!.address;
    const ha = client(aAddress);
    const hb = client(bAddress);

    expect(await check(ha, '')).toBe('SERVING');
    expect(await check(ha, 'taskgraph.v1.Task')).toBe('SERVING');
    expect(await check(ha, 'node/node-a')).toBe('SERVING');
    expect(await check(ha, 'node/node-b')).toBe(`code ${Status.NOT_FOUND}`);
    expect(await check(ha, 'some.other.Service')).toBe(`code ${Status.NOT_FOUND}`);
    expect(await check(hb, '')).toBe('NOT_SERVING');
    expect(await check(hb, 'node/node-b')).toBe('NOT_SERVING');
    const list = await new Promise<Record<string, { status: HealthStatus }>>((resolve, reject) => ha.list({}, (err, res) => (err ? reject(err) : resolve(res!.statuses))));
    expect(list).toEqual({ '': { status: 'SERVING' }, 'taskgraph.v1.Task': { status: 'SERVING' }, 'node/node-a': { status: 'SERVING' } });

    const watchA = watch(ha, '');
    const watchB = watch(hb, '');
    await eventually('both watches answered', () => watchA.seen.length === 1 && watchB.seen.length === 1);
    expect(watchA.seen).toEqual(['SERVING']);
    expect(watchB.seen).toEqual(['NOT_SERVING']);

    // node-a leaves (SIGTERM's way): its watchers hear NOT_SERVING and their stream ends, so it does not hold up the drain.
    await a.node.stop();
    await expect(a.run).resolves.toEqual({ reason: 'stopped', taskId: 0 });
    await eventually("node-a's watch ended", () => watchA.ended !== undefined);
    expect(watchA.seen).toEqual(['SERVING', 'NOT_SERVING']);
    expect(watchA.ended).toBe(`code ${Status.OK}`);
    expect(await check(ha, '')).toBe(`code ${Status.UNAVAILABLE}`);

    // node-b takes task 0 over: SERVING.
    await eventually('node-b took task 0 over', () => b.node.currentTask === 0);
    await eventually("node-b's watch heard SERVING", () => watchB.seen.length === 2);
    expect(watchB.seen).toEqual(['NOT_SERVING', 'SERVING']);
    expect(await check(hb, 'node/node-b')).toBe('SERVING');
    await b.node.stop();
    await eventually("node-b's watch ended", () => watchB.ended !== undefined);
    expect(watchB.seen).toEqual(['NOT_SERVING', 'SERVING', 'NOT_SERVING']);
  });

  it('a shared server (a node host): each node under node/<id>; the server SERVING while any of its nodes holds a task', async () => {
    const j = await job(1);
    const transport = await j.transport();
    const host = createNodeHost({
      job: j.name,
      count: 2,
      coordinator: j.coordinator(),
      transport,
      nodeIdPrefix: 'h',
      sessionTtlMs: 1000,
      logger: silentLogger,
      setup: (n) => {
        n.setTaskBuilder({ getTask: idleTask });
        for (const lt of LINKS) n.addLinkage(lt, noTopology);
      },
    });
    const ends = host.start();
    closers.push(() => host.kill());
    await eventually('one primary and one standby', () => host.nodes.some((n) => n.currentTask === 0) && host.nodes.some((n) => n.state === 'standby'));
    const primary = host.nodes.find((n) => n.currentTask === 0)!;
    const standby = host.nodes.find((n) => n !== primary)!;
    const status = await createController({ coordinator: j.coordinator(), job: j.name, logger: silentLogger }).status();
    const h = client(status!.tasks[0]!.address!);
    expect(await check(h, '')).toBe('SERVING');
    expect(await check(h, `node/${primary.nodeId}`)).toBe('SERVING');
    expect(await check(h, `node/${standby.nodeId}`)).toBe('NOT_SERVING');
    const mine = watch(h, `node/${primary.nodeId}`);
    const overall = watch(h, '');
    await eventually('watches answered', () => mine.seen.length === 1 && overall.seen.length === 1);

    // The primary leaves; the server lives on (the host's other node uses it) and its standby takes the task.
    await primary.kill();
    await eventually('the standby took task 0 over', () => standby.currentTask === 0);
    expect(await check(h, `node/${primary.nodeId}`)).toBe('NOT_SERVING');
    expect(await check(h, `node/${standby.nodeId}`)).toBe('SERVING');
    expect(await check(h, '')).toBe('SERVING');
    expect(mine.seen).toEqual(['SERVING', 'NOT_SERVING']);
    expect(mine.ended).toBeUndefined();
    // In between, no node held the task: the server said NOT_SERVING until the standby took it.
    expect(overall.seen[0]).toBe('SERVING');
    expect(overall.seen.at(-1)).toBe('SERVING');

    await host.stop();
    await ends;
    await eventually('the watches ended with the server', () => mine.ended !== undefined && overall.ended !== undefined);
    expect(overall.seen.at(-1)).toBe('NOT_SERVING');
  });
});
