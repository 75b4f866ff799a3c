import { InvalidArgumentError, TaskGraphError } from '@taskgraph/api';
import type { EpochContext, Framework, NodeEvent, NodeObserver, NodeSource, Task } from '@taskgraph/api';
import { createLocalTransport } from '@taskgraph/transport-local';
import { eventually } from '@taskgraph/testkit';
import { afterEach, describe, expect, it } from 'vitest';
import { createNodeHost, defineMethod, serve, silentLogger } from '../src/index.js';
import { world } from './helpers.js';
import { ledgers } from './ledger.js';
import { recordingLogger } from './parts.js';
import type { LogLine } from './parts.js';

const double = defineMethod<number, number>('double');
const LINKS = ['Parents', 'Children'];

let w: ReturnType<typeof world>;
const closers: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c().catch(() => undefined);
  await w?.close();
});

/** A task that keeps its framework and epoch context, and serves `double`. */
function handleTask() {
  const box: { fw?: Framework; ctx?: EpochContext } = {};
  const task: Task = {
    init: (_id, fw) => void (box.fw = fw),
    enterEpoch: (ctx) => void (box.ctx = ctx),
    metaReady: () => undefined,
    exit: () => undefined,
    methods: [serve(double, (_ctx, n) => n * 2)],
  };
  return { box, task };
}

/** Every event of every node, with the source as it was when told. */
function recorder() {
  const events: Array<{ readonly event: NodeEvent; readonly node: string; readonly task: number | undefined }> = [];
  const observer: NodeObserver = (event: NodeEvent, source: NodeSource) => void events.push({ event, node: source.node, task: source.task });
  const of = <T extends NodeEvent['type']>(node: string, type: T) =>
    events.filter((e) => e.node === node && e.event.type === type).map((e) => e.event as Extract<NodeEvent, { type: T }>);
  return { events, observer, of };
}

const linesOf = (lines: readonly LogLine[], start: string) => lines.filter((l) => l.message.startsWith(start));

describe('observability: the lines a failover, a retry burst and a fenced request leave, and the events behind the metrics', () => {
  it('one line each, naming the task, the node and the incarnation; events that add up to the node stats', async () => {
    w = world();
    await w.controller().createJob({ numTasks: 2, linkTypes: LINKS });
    const lines: LogLine[] = [];
    const logger = recordingLogger(lines);
    const rec = recorder();
    const opts = { logger, instruments: rec.observer };
    const a = handleTask();
    const b = handleTask();
    const A = await w.node(() => a.task, { ...opts, nodeId: 'node-a', preferredTask: 0 }, 2);
    const B = await w.node(() => b.task, { ...opts, nodeId: 'node-b', preferredTask: 1 }, 2);
    const runs = [A.node.start(), B.node.start()];
    await eventually('both tasks run', () => A.node.currentTask === 0 && B.node.currentTask === 1 && a.box.ctx !== undefined && b.box.ctx !== undefined);
    const before = await w.controller().status();
    const oldToken = before!.tasks[1]!.token!;

    // Task 1's node dies: task 0's request to it retries, many times, until a standby takes task 1 over.
    await B.node.kill();
    const answer = a.box.fw!.dataRequest(a.box.ctx!, 1, double, 21);
    await eventually('task 0 retried a few times', () => A.node.stats.retries >= 3);
    const c = handleTask();
    const C = await w.node(() => c.task, { ...opts, nodeId: 'node-c' }, 2);
    runs.push(C.node.start());
    expect(await answer).toBe(42);
    expect(C.node.currentTask).toBe(1);
    expect(C.node.getIncarnation()).toBe(2);

    // The retry burst: one WARN line on task 0's node, however many retries it took.
    const burst = linesOf(lines, 'data requests to task 1 fail and are being retried');
    expect(burst).toHaveLength(1);
    expect(burst[0]!.level).toBe('warn');
    expect(burst[0]!.fields).toMatchObject({ job: w.job, node: 'node-a', task: 0, incarnation: 1, to: 1, method: 'double' });
    expect(['NO_ADDRESS', 'UNAVAILABLE', 'NOT_OWNER']).toContain(burst[0]!.fields['reason']);
    const over = linesOf(lines, 'data requests to task 1 answered again');
    expect(over).toHaveLength(1);
    expect(over[0]!.level).toBe('debug');
    expect(over[0]!.fields['retries']).toBe(A.node.stats.retries);

    // The failover: one INFO line on the node that took task 1 over.
    const failover = linesOf(lines, 'failover:');
    expect(failover).toHaveLength(1);
    expect(failover[0]!.level).toBe('info');
    expect(failover[0]!.message).toBe('failover: took over task 1 (incarnation 2 follows 1)');
    expect(failover[0]!.fields).toMatchObject({ job: w.job, node: 'node-c', task: 1, incarnation: 2 });
    expect(linesOf(lines, 'claimed task').map((l) => l.fields['node']).sort()).toEqual(['node-a', 'node-b']);

    // A request with the dead incarnation's token is fenced: one WARN line per stale token.
    const after = await w.controller().status();
    const { address, token } = after!.tasks[1]!;
    expect(token).not.toBe(oldToken);
    const caller = await createLocalTransport({ network: w.network });
    closers.push(() => caller.close());
    const stale = (requestId: string) =>
      caller.call(address!, 'double', { job: w.job, from: -1, to: 1, epoch: a.box.ctx!.epoch, token: oldToken, requestId }, new TextEncoder().encode('1'), { timeoutMs: 5000 }).then(
        () => 'answered',
        (err: unknown) => (TaskGraphError.is(err) ? err.code : String(err)),
      );
    expect(await stale('stale-1')).toBe('NOT_OWNER');
    expect(await stale('stale-2')).toBe('NOT_OWNER');
    const fenced = linesOf(lines, 'fenced:');
    expect(fenced).toHaveLength(1);
    expect(fenced[0]!.level).toBe('warn');
    expect(fenced[0]!.message).toBe("fenced: refused a request for task 1 carrying another incarnation's token (logged once per token)");
    expect(fenced[0]!.fields).toMatchObject({ job: w.job, node: 'node-c', task: 1, incarnation: 2, token, requestedToken: oldToken });

    // The events: what the metrics count, equal to what the nodes count themselves.
    expect(rec.of('node-c', 'role').map((e) => e.role)).toEqual(['starting', 'standby', 'primary']);
    expect(rec.of('node-c', 'role').at(-1)).toMatchObject({ incarnation: 2, token });
    expect(rec.of('node-c', 'failover')).toEqual([{ type: 'failover', kind: 'takeover', incarnation: 2 }]);
    expect(rec.of('node-a', 'failover')).toEqual([]);
    expect(rec.of('node-b', 'role').map((e) => e.role)).toEqual(['starting', 'standby', 'primary', 'left']);
    expect(rec.of('node-b', 'role').at(-1)).toMatchObject({ reason: 'killed' });
    expect(rec.of('node-b', 'lease').map((e) => e.state)).toEqual(['held', 'released']);
    expect(rec.of('node-a', 'request-retried')).toHaveLength(A.node.stats.retries);
    expect(rec.of('node-a', 'request-sent')).toEqual([expect.objectContaining({ to: 1, method: 'double' })]);
    expect(rec.of('node-a', 'request-sent')[0]!.error).toBeUndefined();
    expect(rec.of('node-c', 'request-served')).toHaveLength(C.node.stats.served);
    expect(C.node.stats.served).toBe(1);
    expect(rec.of('node-c', 'request-refused').map((e) => e.reason)).toEqual(['stale-token', 'stale-token']);
    expect(rec.events.filter((e) => e.node === 'node-c' && e.event.type === 'request-served').map((e) => e.task)).toEqual([1]);
    const storeOps = rec.of('node-c', 'store-op');
    expect(storeOps.map((e) => e.op)).toEqual(expect.arrayContaining(['openSession', 'create', 'tryAcquire', 'get', 'list']));
    expect(storeOps.every((e) => e.seconds >= 0)).toBe(true);
    expect(rec.of('node-c', 'epoch').map((e) => e.epoch)).toEqual([0]);

    await a.box.fw!.shutdownJob();
    expect((await Promise.all(runs)).map((o) => o.reason)).toEqual(['job-done', 'killed', 'job-done']);
    for (const node of ['node-a', 'node-c']) {
      expect(rec.of(node, 'role').at(-1)).toMatchObject({ role: 'left', reason: 'job-done' });
      expect(rec.of(node, 'lease').map((e) => e.state)).toEqual(['held', 'released']);
    }
  });

  it('hot standby: each update acknowledged by the backup is one replication event; the promoted backup counts a promotion and logs it once', async () => {
    w = world();
    await w.controller().createJob({ numTasks: 1, linkTypes: LINKS, backups: 1 });
    const lines: LogLine[] = [];
    const rec = recorder();
    const opts = { logger: recordingLogger(lines), instruments: rec.observer };
    const tasks = ledgers();
    const a = await w.node(() => tasks.get(), { ...opts, nodeId: 'node-a' }, 1);
    const runA = a.node.start();
    await eventually('the primary in its first epoch', () => a.node.currentTask === 0 && tasks.made[0]?.ctx !== undefined);
    const b = await w.node(() => tasks.get(), { ...opts, nodeId: 'node-b' }, 1);
    const runB = b.node.start();
    const primary = tasks.made[0]!;
    await primary.fw!.waitForBackups(primary.ctx!);
    expect(rec.of('node-b', 'role').map((e) => e.role)).toEqual(['starting', 'standby', 'backup']);
    for (let i = 1; i <= 3; i++) await primary.add(i);
    const replicated = rec.of('node-a', 'replicated');
    expect(replicated.map((e) => [e.slot, e.seq])).toEqual([
      [0, 1],
      [0, 2],
      [0, 3],
    ]);
    expect(replicated.every((e) => e.seconds >= 0)).toBe(true);

    await a.node.kill();
    await runA;
    await eventually('the backup promoted', () => b.node.currentTask === 0);
    expect(rec.of('node-b', 'failover')).toEqual([{ type: 'failover', kind: 'promotion', incarnation: 2 }]);
    expect(rec.of('node-b', 'role').map((e) => e.role)).toEqual(['starting', 'standby', 'backup', 'primary']);
    const failover = linesOf(lines, 'failover:');
    expect(failover.map((l) => [l.level, l.message])).toEqual([['info', 'failover: promoted to primary of task 0 with the state (incarnation 2 follows 1)']]);
    expect(failover[0]!.fields).toMatchObject({ node: 'node-b', task: 0, incarnation: 2, seq: 3 });
    await eventually('the new primary in its epoch', () => tasks.made[1]!.events.includes('epoch 0'));
    await tasks.made[1]!.fw!.shutdownJob();
    await runB;
  });

  it('an observer added later hears the current state at once; removed, it hears nothing more; a host adds it to every node', async () => {
    w = world();
    await w.controller().createJob({ numTasks: 1, linkTypes: LINKS });
    const one = handleTask();
    const { node } = await w.node(() => one.task, {}, 1);
    const run = node.start();
    await eventually('task 0 runs', () => node.currentTask === 0 && one.box.ctx !== undefined);
    const rec = recorder();
    const remove = node.instrument(rec.observer);
    expect(rec.events.map((e) => e.event)).toEqual([
      { type: 'role', role: 'primary', incarnation: 1, token: expect.any(String) as string },
      { type: 'lease', state: 'held' },
      { type: 'epoch', epoch: 0 },
    ]);
    expect(rec.events.every((e) => e.task === 0)).toBe(true);
    await one.box.fw!.incEpoch(one.box.ctx!);
    await eventually('epoch 1 heard', () => rec.of(node.nodeId, 'epoch').length === 2);
    remove();
    const heard = rec.events.length;
    expect(() => node.instrument(42 as unknown as NodeObserver)).toThrow(InvalidArgumentError);
    // An observer that throws does not break the node.
    node.instrument(() => {
      throw new Error('observer bug');
    });
    await one.box.fw!.shutdownJob();
    await expect(run).resolves.toEqual({ reason: 'job-done', taskId: 0 });
    expect(rec.events).toHaveLength(heard);

    w2 = world();
    await w2.controller().createJob({ numTasks: 2, linkTypes: LINKS });
    const transport = await createLocalTransport({ network: w2.network });
    closers.push(() => transport.close());
    const tasks = [handleTask(), handleTask(), handleTask()];
    let made = 0;
    const host = createNodeHost({
      job: w2.job,
      count: 3,
      coordinator: w2.coordinator(),
      transport,
      nodeIdPrefix: 'h',
      sessionTtlMs: 500,
      logger: silentLogger,
      setup: (n) => {
        const t = tasks[made++]!;
        n.setTaskBuilder({ getTask: () => t.task });
        for (const lt of LINKS) n.addLinkage(lt, { setTaskId: () => undefined, getNeighbors: () => [] });
      },
    });
    const hosted = recorder();
    host.instrument(hosted.observer);
    const ends = host.start();
    await eventually('two primaries and a standby', () => host.nodes.filter((n) => n.currentTask !== undefined).length === 2 && host.nodes.some((n) => n.state === 'standby'));
    const roles = (id: string) => hosted.of(id, 'role').map((e) => e.role);
    expect(['h.0', 'h.1', 'h.2'].map((id) => roles(id)[0])).toEqual(['starting', 'starting', 'starting']);
    expect(['h.0', 'h.1', 'h.2'].map((id) => roles(id).at(-1)).sort()).toEqual(['primary', 'primary', 'standby']);
    await host.stop();
    await ends;
    expect(['h.0', 'h.1', 'h.2'].map((id) => roles(id).at(-1))).toEqual(['left', 'left', 'left']);
  });
});

let w2: ReturnType<typeof world> | undefined;
afterEach(async () => {
  await w2?.close();
  w2 = undefined;
});
