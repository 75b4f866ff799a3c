import { NotOwnerError, TaskGraphError } from '@taskgraph/api';
import type { InboundRequest, RequestMeta } from '@taskgraph/api';
import { MemoryCoordinator } from '@taskgraph/coord-memory';
import { createLocalTransport } from '@taskgraph/transport-local';
import type { LocalTransport } from '@taskgraph/transport-local';
import { eventually } from '@taskgraph/testkit';
import { RegressionTaskBuilder, expectedSums, regressionLinkages } from '@taskgraph/workloads';
import { afterEach, describe, expect, it } from 'vitest';
import { MAX_NODES_PER_HOST, createNodeHost } from '../src/node-host.js';
import type { NodeHost } from '../src/node-host.js';
import { SharedServer, holdsRequestedSlot } from '../src/shared-server.js';
import { METHODS } from '../src/replication-wire.js';
import { world } from './helpers.js';
import { Ledger, ledgers } from './ledger.js';
import { bytes, recordingLogger } from './parts.js';

let w: ReturnType<typeof world>;
const closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c().catch(() => undefined);
  await w?.close();
});

const meta = (to: number, token: string, job = 'j'): RequestMeta => ({ job, from: -1, to, epoch: 0, token, requestId: 'r' });

/** An endpoint holding the given slots, answering with its name. */
function endpoint(name: string, slots: { primary?: [number, string]; backup?: [number, string] }) {
  const seen: string[] = [];
  const slot = (s: [number, string] | undefined) => (s ? { id: s[0], token: s[1] } : undefined);
  return {
    seen,
    name,
    routes: (req: InboundRequest) => holdsRequestedSlot(req, { job: 'j', primary: () => slot(slots.primary), backup: () => slot(slots.backup) }),
    handler: (req: InboundRequest) => {
      seen.push(`${req.method} ${req.meta.to}/${req.meta.token}`);
      if (!holdsRequestedSlot(req, { job: 'j', primary: () => slot(slots.primary), backup: () => slot(slots.backup) })) {
        return Promise.reject(new NotOwnerError(`${name} does not hold task ${req.meta.to} with that token`));
      }
      return Promise.resolve(bytes(name));
    },
  };
}

async function transports(): Promise<{ server: LocalTransport; caller: LocalTransport }> {
  w = world();
  const server = await createLocalTransport({ network: w.network });
  const caller = await createLocalTransport({ network: w.network });
  closers.push(() => server.close(), () => caller.close());
  return { server, caller };
}

const text = (b: Uint8Array) => new TextDecoder().decode(b);

describe('the shared server', () => {
  it('routes each request to the node holding the slot it names: a primary and a backup of one task, with the same token, apart', async () => {
    const { server, caller } = await transports();
    const shared = new SharedServer(server);
    closers.push(() => shared.close());
    const primary = endpoint('primary', { primary: [0, '1'] });
    const backup = endpoint('backup', { backup: [0, '1'] });
    const other = endpoint('other', { primary: [1, '7'] });
    const servers = [await shared.attach(primary), await shared.attach(backup), await shared.attach(other)];
    expect(new Set(servers.map((s) => s.address)).size).toBe(1);
    const address = servers[0]!.address;
    servers[0]!.serve(['get', METHODS.snapshot]);
    servers[1]!.serve([METHODS.update]);
    servers[2]!.serve(['get']);
    const call = (method: string, m: RequestMeta) => caller.call(address, method, m, bytes(''), { timeoutMs: 5000 }).then(text);
    expect(await call('get', meta(0, '1'))).toBe('primary');
    expect(await call(METHODS.snapshot, meta(0, '1'))).toBe('primary');
    expect(await call(METHODS.update, meta(0, '1'))).toBe('backup');
    expect(await call('get', meta(1, '7'))).toBe('other');
    expect(shared.stats).toEqual({ routed: 4, unrouted: 0 });
  });

  it('a stale token, an unknown task or another job gets the NotOwnerError of a node that does not hold the slot', async () => {
    const { server, caller } = await transports();
    const shared = new SharedServer(server);
    closers.push(() => shared.close());
    const primary = endpoint('primary', { primary: [0, '5'] });
    const s = await shared.attach(primary);
    s.serve(['get', METHODS.update]);
    const call = (method: string, m: RequestMeta) => caller.call(s.address, method, m, bytes(''), { timeoutMs: 5000 });
    for (const [method, m] of [['get', meta(0, '4')], ['get', meta(3, '5')], ['get', meta(0, '5', 'other-job')], [METHODS.update, meta(0, '5')]] as const) {
      const err = await call(method, m).then(() => undefined, (e: unknown) => e);
      expect(TaskGraphError.is(err, 'NOT_OWNER'), String(err)).toBe(true);
    }
    // Each was answered by the node's own checks, as its own server would have.
    expect(primary.seen).toHaveLength(4);
    expect(shared.stats).toEqual({ routed: 0, unrouted: 4 });
  });

  it('a node that detaches gets no more requests; with none attached nothing is served', async () => {
    const { server, caller } = await transports();
    const shared = new SharedServer(server);
    closers.push(() => shared.close());
    const a = endpoint('a', { primary: [0, '1'] });
    const b = endpoint('b', { primary: [1, '1'] });
    const sa = await shared.attach(a);
    const sb = await shared.attach(b);
    sa.serve(['get']);
    sb.serve(['get']);
    await sb.close();
    expect(shared.attached).toBe(1);
    const err = await caller.call(sa.address, 'get', meta(1, '1'), bytes(''), { timeoutMs: 5000 }).then(() => undefined, (e: unknown) => e);
    expect(TaskGraphError.is(err, 'NOT_OWNER')).toBe(true);
    expect(b.seen).toEqual([]);
    // The node still attached answered with its own checks.
    expect(a.seen).toEqual(['get 1/1']);
    await sa.close();
    const none = await caller.call(sa.address, 'get', meta(0, '1'), bytes(''), { timeoutMs: 5000 }).then(() => undefined, (e: unknown) => e);
    // Nothing is served any more: the transport refuses the method before any routing.
    expect(TaskGraphError.is(none, 'METHOD_NOT_FOUND'), String(none)).toBe(true);
    expect(a.seen).toEqual(['get 1/1']);
  });
});

describe('nodes sharing one server and one store client', () => {
  it('a primary and its backup in one process: replication is routed to each, and the backup takes over with the state', async () => {
    w = world();
    const ctl = w.controller();
    await ctl.createJob({ numTasks: 1, linkTypes: ['Parents', 'Children'], backups: 1 });
    const transport = await createLocalTransport({ network: w.network });
    closers.push(() => transport.close());
    const shared = new SharedServer(transport);
    closers.push(() => shared.close());
    const coordinator = w.coordinator();
    const { made, get: task } = ledgers();
    // A TTL no loaded machine misses a keepalive by: the test ends the primary itself.
    const listen = { coordinator, transport, sessionTtlMs: 3000, listen: (e: Parameters<SharedServer['attach']>[0]) => shared.attach(e) };
    const a = await w.node(task, listen, 1);
    const runA = a.node.start();
    await eventually('the primary in its first epoch', () => a.node.currentTask === 0 && made[0]?.ctx !== undefined);
    const b = await w.node(task, listen, 1);
    const runB = b.node.start();
    await eventually('the backup in sync', async () => (await ctl.status())?.tasks[0]?.backups[0]?.state === 'ready');
    expect(b.node.backupOf).toBe(0);
    const [primary, backup] = made as [Ledger, Ledger];
    await primary.add(1);
    await primary.add(2);
    expect(backup.items).toEqual([1, 2]);
    expect(shared.stats.routed).toBeGreaterThanOrEqual(3);
    expect(shared.stats.unrouted).toBe(0);
    await a.node.kill();
    await expect(runA).resolves.toEqual({ reason: 'killed', taskId: 0 });
    await eventually('the backup promoted', () => b.node.currentTask === 0);
    expect(backup.items).toEqual([1, 2]);
    await backup.fw!.shutdownJob();
    await expect(runB).resolves.toEqual({ reason: 'job-done', taskId: 0 });
  });
});

describe('a node host', () => {
  it('refuses a count that is not a positive integer up to the maximum', () => {
    w = world();
    for (const count of [0, -1, 1.5, MAX_NODES_PER_HOST + 1, Number.NaN]) {
      expect(() => createNodeHost({ job: w.job, count, coordinator: w.coordinator(), transport: {} as never })).toThrow(`a node host runs from 1 to ${MAX_NODES_PER_HOST} nodes`);
    }
  });

  it('runs the regression job in three hosts of four nodes sharing their watches; one host killed, the answer is exact', async () => {
    w = world();
    const numTasks = 7;
    const ctl = w.controller();
    await ctl.createJob({ numTasks, linkTypes: ['Parents', 'Children'] });
    const sums = new Map<number, number>();
    // Warnings (a lost session, a failed watch) explain a stall if there is one.
    const logger = recordingLogger();
    const trouble = () => logger.lines.filter((l) => l.level === 'warn' || l.level === 'error').map((l) => `${l.message} ${JSON.stringify(l.fields)}`).join('\n');
    // Serving in epoch 4 waits until the victim is chosen and killed, so the job cannot
    // finish (and release its tasks) between the choice and the kill.
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const holdFromEpoch4 = ({ epoch }: { epoch: number }) => (epoch >= 4 ? held : undefined);
    const hosts: Array<{ host: NodeHost; base: MemoryCoordinator; done: Promise<unknown> }> = [];
    for (let h = 0; h < 3; h++) {
      const transport = await createLocalTransport({ network: w.network });
      closers.push(() => transport.close());
      const base = w.coordinator();
      const host = createNodeHost({ job: w.job, count: 4, coordinator: base, transport, sessionTtlMs: 3000, logger, nodeIdPrefix: `h${h}` });
      const options = { numTasks, onResult: (epoch: number, sum: number) => void sums.set(epoch, sum), beforeServe: holdFromEpoch4 };
      for (const node of host.nodes) {
        node.setTaskBuilder(new RegressionTaskBuilder(options));
        for (const [lt, topo] of Object.entries(regressionLinkages(options))) node.addLinkage(lt, topo);
      }
      hosts.push({ host, base, done: host.start() });
    }
    await eventually('every task claimed', async () => (await ctl.status())?.tasks.every((t) => t.nodeId !== undefined) === true).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}\n${trouble()}`);
    });
    for (const { host, base } of hosts) {
      // Every node follows <job>/state/; the host's one address book follows <job>/tasks/.
      expect(host.coordinator.sharing).toMatchObject({ views: 2, followers: 5, ownWatches: 0 });
      // Two shared watches, and one per task run here for its meta; not two per node.
      const running = host.nodes.filter((n) => n.currentTask !== undefined).length;
      expect(base.activeWatches).toBe(2 + running);
    }
    await eventually('epoch 3', () => sums.has(3));
    const victim = hosts.find((h) => h.host.nodes.filter((n) => n.currentTask !== undefined).length >= 2) ?? hosts[0]!;
    const moved = victim.host.nodes.flatMap((n) => (n.currentTask === undefined ? [] : [n.currentTask]));
    expect(moved.length).toBeGreaterThan(0);
    await victim.host.kill();
    release();
    const outcomes = await Promise.all(hosts.map((h) => h.done));
    expect(outcomes.map((o) => (o as unknown[]).length)).toEqual([4, 4, 4]);
    expect(await victim.done).toEqual(victim.host.nodes.map((n) => ({ nodeId: n.nodeId, outcome: expect.objectContaining({ reason: 'killed' }) as unknown, rejoined: 0 })));
    const want = expectedSums(numTasks);
    expect([...sums.keys()].sort((a, b) => a - b)).toEqual(want.map((_, e) => e));
    for (const [e, s] of sums) expect(s).toBe(want[e]);
    const status = await ctl.status();
    expect(status?.state).toBe('done');
    for (const t of moved) expect(status!.tasks[t]!.incarnations, `task ${t} moved`).toBeGreaterThan(1);
    expect(victim.host.coordinator.sharing.views).toBe(0);
  });

  it('puts a new node in the place of one whose session was lost (with setup), and the answer stays exact', async () => {
    w = world();
    const numTasks = 4;
    const ctl = w.controller();
    await ctl.createJob({ numTasks, linkTypes: ['Parents', 'Children'] });
    const sums = new Map<number, number>();
    // Serving in epoch 2 waits until the new node 0 is in place: the job cannot finish before its session ends.
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const beforeServe = ({ epoch }: { epoch: number }) => (epoch >= 2 ? held : undefined);
    const options = { numTasks, onResult: (epoch: number, sum: number) => void sums.set(epoch, sum), beforeServe };
    const logger = recordingLogger();
    const transport = await createLocalTransport({ network: w.network });
    closers.push(() => transport.close());
    const sessions = new Map<string, string>();
    // Three nodes for four tasks, and one more host's node as a standby: every task needs the lost node's place filled.
    const host = createNodeHost({
      job: w.job,
      count: 4,
      coordinator: w.coordinator(),
      transport,
      sessionTtlMs: 3000,
      logger,
      nodeIdPrefix: 'h',
      onSession: (nodeId, sessionId) => void sessions.set(nodeId, sessionId),
      setup: (node) => {
        node.setTaskBuilder(new RegressionTaskBuilder(options));
        for (const [lt, topo] of Object.entries(regressionLinkages(options))) node.addLinkage(lt, topo);
      },
      rejoin: { max: 2, windowMs: 60_000 },
    });
    const done = host.start();
    await eventually('every task claimed', async () => (await ctl.status())?.tasks.every((t) => t.nodeId !== undefined) === true);
    const first = host.nodes[0]!;
    const firstSession = sessions.get(first.nodeId)!;
    // The store ends node 0's session behind its back (as an expired lease would): it leaves, and a new node 0 joins.
    await w.coordinator().endSession(firstSession);
    await eventually('a new node in place of node 0', () => host.nodes[0] !== first && sessions.get('h.0') !== firstSession);
    expect(host.nodes[0]!.nodeId).toBe('h.0');
    expect(logger.lines.some((l) => l.message === 'a hosted node lost its session; a new node takes its place')).toBe(true);
    release();
    await eventually('epoch 3', () => sums.has(3));
    await ctl.finish('done');
    const ends = await done;
    expect(ends[0]).toMatchObject({ nodeId: 'h.0', rejoined: 1, outcome: expect.objectContaining({ reason: 'job-done' }) as unknown });
    for (const end of ends.slice(1)) expect(end).toMatchObject({ rejoined: 0 });
    const want = expectedSums(numTasks);
    for (const [e, s] of sums) expect(s).toBe(want[e]);
  });

  it('refuses a bad rejoin policy', () => {
    w = world();
    const base = { job: w.job, count: 1, coordinator: w.coordinator(), transport: {} as never };
    expect(() => createNodeHost({ ...base, rejoin: { max: -1 } })).toThrow('rejoin.max must be a non-negative integer');
    expect(() => createNodeHost({ ...base, rejoin: { windowMs: 0 } })).toThrow('rejoin.windowMs must be a positive number');
  });
});
