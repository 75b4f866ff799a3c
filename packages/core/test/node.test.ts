import { ClosedError, EpochChangedError, InvalidArgumentError, TaskGraphError } from '@taskgraph/api';
import type { EpochContext, Framework, Task } from '@taskgraph/api';
import { createLocalTransport } from '@taskgraph/transport-local';
import { afterEach, describe, expect, it } from 'vitest';
import { eventually } from '@taskgraph/testkit';
import { TaskGraphNode, defineMethod, installSignalHandlers, jobKeys, serve } from '../src/index.js';
import { recordingTask, world } from './helpers.js';

const double = defineMethod<number, number>('double');
const LINKS = ['Parents', 'Children'];

let w: ReturnType<typeof world>;
afterEach(async () => {
  await w.close();
});

/** A task that keeps its framework and epoch context for the test to use. */
function handleTask(onEpoch?: (ctx: EpochContext, fw: Framework) => void | Promise<void>) {
  const box: { fw?: Framework; ctx?: EpochContext; exited: boolean } = { exited: false };
  const task: Task = {
    init: (_id, fw) => void (box.fw = fw),
    enterEpoch: async (ctx) => {
      box.ctx = ctx;
      await onEpoch?.(ctx, box.fw!);
    },
    metaReady: () => undefined,
    exit: () => void (box.exited = true),
    methods: [serve(double, (_ctx, n) => n * 2)],
  };
  return { box, task };
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  const err = await p.then(
    () => 'resolved',
    (e: unknown) => e,
  );
  return TaskGraphError.is(err) ? err.code : String(err);
}

describe('node lifecycle and input checks', () => {
  it('checks how it is wired before and at start', async () => {
    w = world();
    await w.controller().createJob({ numTasks: 1, linkTypes: LINKS });
    const { node } = await w.node(() => recordingTask([]), {}, 1);
    expect(() => node.addLinkage('Parents', { setTaskId: () => undefined, getNeighbors: () => [] })).toThrow('added twice');
    expect(() => node.addLinkage('bad type', { setTaskId: () => undefined, getNeighbors: () => [] })).toThrow(InvalidArgumentError);
    const run = node.start();
    await expect(node.start()).rejects.toThrow('already called');
    expect(() => node.addLinkage('Other', { setTaskId: () => undefined, getNeighbors: () => [] })).toThrow('before start()');
    await eventually('task claimed', () => node.currentTask === 0);
    await node.stop();
    await expect(run).resolves.toEqual({ reason: 'stopped', taskId: 0 });
  });

  it('reports its session id before it claims anything; ending that session from another client fails its task over to a standby', async () => {
    w = world();
    await w.controller().createJob({ numTasks: 1, linkTypes: LINKS });
    const seen: Array<{ id: string; task: number | undefined }> = [];
    const { node } = await w.node(() => recordingTask([]), { onSession: (id) => seen.push({ id, task: node.currentTask }) }, 1);
    const run = node.start();
    await eventually('task claimed', () => node.currentTask === 0);
    expect(seen).toHaveLength(1);
    expect(seen[0]?.task).toBeUndefined();
    const id = seen[0]!.id;
    expect(w.store.hasSession(id)).toBe(true);
    const { node: standby } = await w.node(() => recordingTask([]), {}, 1);
    const standbyRun = standby.start();
    await eventually('the standby waits', () => standby.state === 'standby');
    // What a supervisor does when it saw the node's process die: no TTL to wait out.
    await w.coordinator().endSession(id);
    await expect(run).resolves.toMatchObject({ reason: 'lease-lost' });
    await eventually('the standby took the task over', () => standby.currentTask === 0);
    await standby.stop();
    await standbyRun;
  });

  it('refuses a link type the job does not declare', async () => {
    w = world();
    await w.controller().createJob({ numTasks: 1, linkTypes: ['Parents'] });
    const { node } = await w.node(() => recordingTask([]), {}, 1);
    await expect(node.start()).rejects.toThrow('link type "Children" is not declared by job');
  });

  it('a TTL the backend refuses fails start() with InvalidArgument and leaves nothing behind', async () => {
    w = world();
    await w.controller().createJob({ numTasks: 1, linkTypes: LINKS });
    const { node, coordinator } = await w.node(() => recordingTask([]), { sessionTtlMs: 50 }, 1);
    const err = await node.start().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect((err as Error).message).toContain("outside memory's range");
    expect(node.state).toBe('done');
    expect(coordinator.openSessions).toBe(0);
    expect(() => new TaskGraphNode({ job: w.job, coordinator, transport: node as never, attemptTimeoutMs: -1 })).toThrow(
      'attemptTimeoutMs must be a positive number',
    );
    expect(() => new TaskGraphNode({ job: 'Bad Job', coordinator, transport: node as never })).toThrow('job name "Bad Job" is invalid');
  });

  it('waits for the job to be created, then runs', async () => {
    w = world();
    const log: string[] = [];
    const { node } = await w.node(() => recordingTask(log), {}, 1);
    const run = node.start();
    await new Promise((r) => setTimeout(r, 50));
    expect(node.currentTask).toBeUndefined();
    await w.controller().createJob({ numTasks: 1, linkTypes: LINKS });
    await eventually('epoch 0 entered', () => log.includes('epoch 0'));
    expect(log).toEqual(['init 0', 'epoch 0']);
    await w.controller().finish();
    await expect(run).resolves.toEqual({ reason: 'job-done', taskId: 0 });
    expect(log.at(-1)).toBe('exit');
  });

  it('rejects bad framework calls with typed errors', async () => {
    w = world();
    await w.controller().createJob({ numTasks: 3, linkTypes: LINKS });
    const a = handleTask();
    const others = await Promise.all([1, 2].map(() => w.node(() => handleTask().task)));
    const { node } = await w.node(() => a.task, { preferredTask: 0 });
    const runs = [node.start(), ...others.map((o) => o.node.start())];
    await eventually('all started', () => a.box.ctx !== undefined && others.every((o) => o.node.currentTask !== undefined));
    const fw = a.box.fw!;
    const ctx = a.box.ctx!;
    expect(await codeOf(fw.flagMeta(ctx, 'Nope', 'x'))).toBe('INVALID_ARGUMENT');
    expect(await codeOf(fw.flagMeta(ctx, 'Children', 'x'.repeat(1025)))).toBe('INVALID_ARGUMENT');
    expect(await codeOf(fw.dataRequest(ctx, 99, double, 1))).toBe('INVALID_ARGUMENT');
    expect(await codeOf(fw.dataRequest(ctx, 1, defineMethod<null, null>('missing'), null))).toBe('METHOD_NOT_FOUND');
    expect(await fw.dataRequest(ctx, 1, double, 21)).toBe(42);
    expect(await codeOf(fw.dataRequest({ epoch: ctx.epoch + 5, signal: ctx.signal }, 1, double, 1))).toBe('EPOCH_CHANGED');
    // Two tasks advance from the same epoch: exactly one wins.
    const results = await Promise.all([codeOf(fw.incEpoch(ctx)), codeOf(fw.incEpoch(ctx))]);
    expect(results.sort()).toEqual(['EPOCH_CHANGED', 'resolved']);
    await eventually('epoch 1', () => a.box.ctx!.epoch === 1);
    expect(ctx.signal.aborted).toBe(true);
    expect(ctx.signal.reason).toBeInstanceOf(EpochChangedError);
    expect(await codeOf(fw.incEpoch(ctx))).toBe('EPOCH_CHANGED');
    expect(await codeOf(fw.flagMeta(ctx, 'Children', 'late'))).toBe('EPOCH_CHANGED');
    await fw.shutdownJob();
    expect((await Promise.all(runs)).map((o) => o.reason)).toEqual(['job-done', 'job-done', 'job-done']);
    expect(a.box.exited).toBe(true);
    expect(await codeOf(fw.dataRequest(a.box.ctx!, 1, double, 1))).toBe('CLOSED');
  });

  it("an epoch's signal read only after the epoch ended is already aborted; a spread copy of the context keeps it", async () => {
    w = world();
    await w.controller().createJob({ numTasks: 1, linkTypes: LINKS });
    const contexts: EpochContext[] = [];
    const a = handleTask((ctx) => void contexts.push(ctx));
    const { node } = await w.node(() => a.task);
    const run = node.start();
    await eventually('epoch 0 entered', () => contexts.length === 1);
    const first = contexts[0]!;
    const copy = { ...first };
    expect(copy.signal).toBe(first.signal);
    expect(first.signal.aborted).toBe(false);
    await a.box.fw!.incEpoch(first);
    await eventually('epoch 1 entered', () => contexts.length === 2);
    const second = contexts[1]!;
    // Epoch 1's signal was never read while it ran: read after its end, it is born aborted.
    await a.box.fw!.incEpoch(second);
    await eventually('epoch 2 entered', () => contexts.length === 3);
    expect(second.signal.aborted).toBe(true);
    expect(second.signal.reason).toBeInstanceOf(EpochChangedError);
    expect(first.signal.aborted).toBe(true);
    expect(await codeOf(a.box.fw!.incEpoch({ ...second }))).toBe('EPOCH_CHANGED');
    expect(contexts[2]!.signal.aborted).toBe(false);
    await a.box.fw!.shutdownJob();
    expect((await run).reason).toBe('job-done');
  });

  it('fences requests by job, token and epoch, and survives undecodable payloads', async () => {
    w = world();
    const ctl = w.controller();
    await ctl.createJob({ numTasks: 1, linkTypes: LINKS });
    const a = handleTask();
    const { node } = await w.node(() => a.task, {}, 1);
    const run = node.start();
    await eventually('started', () => a.box.ctx !== undefined);
    const t = (await ctl.status())!.tasks[0]!;
    const caller = await createLocalTransport({ network: w.network });
    const meta = { job: w.job, from: -1, to: 0, epoch: 0, token: t.token!, requestId: 'r1' };
    const call = (m: Partial<typeof meta>, payload = double.input.encode(5)) =>
      caller.call(t.address!, 'double', { ...meta, ...m }, payload, { timeoutMs: 5000 });
    expect(double.output.decode(await call({}))).toBe(10);
    expect(await codeOf(call({ job: 'other-job' }))).toBe('NOT_OWNER');
    expect(await codeOf(call({ token: '1' }))).toBe('NOT_OWNER');
    expect(await codeOf(call({ to: 1 }))).toBe('NOT_OWNER');
    const stale = await call({ epoch: 3 }).catch((e: unknown) => e);
    expect(stale).toBeInstanceOf(EpochChangedError);
    expect((stale as EpochChangedError).currentEpoch).toBe(0);
    expect(await codeOf(call({}, new TextEncoder().encode('{not json')))).toBe('DECODE_FAILED');
    expect(double.output.decode(await call({}))).toBe(10);
    expect(node.stats).toMatchObject({ served: 2, rejectedNotOwner: 3, rejectedEpoch: 1 });
    await caller.close();
    await node.kill();
    await expect(run).resolves.toEqual({ reason: 'killed', taskId: 0 });
  });

  it('a node whose session expires leaves its task; a standby takes it over', async () => {
    w = world();
    await w.controller().createJob({ numTasks: 1, linkTypes: LINKS });
    const first = handleTask();
    const standby = handleTask();
    const n1 = await w.node(() => first.task, {}, 1);
    const r1 = n1.node.start();
    await eventually('first started', () => first.box.ctx !== undefined);
    const n2 = await w.node(() => standby.task, {}, 1);
    const r2 = n2.node.start();
    await eventually('standby waiting', () => n2.node.state === 'standby');
    n1.coordinator.setUnreachable(true);
    await expect(r1).resolves.toEqual({ reason: 'lease-lost', taskId: 0 });
    expect(first.box.exited).toBe(true);
    await eventually('standby took over', () => standby.box.ctx !== undefined);
    expect(standby.box.fw!.getIncarnation()).toBe(2);
    await standby.box.fw!.shutdownJob();
    await expect(r2).resolves.toEqual({ reason: 'job-done', taskId: 0 });
  });

  it('SIGTERM leaves gracefully and frees the slot at once, not at the TTL', async () => {
    w = world();
    const ctl = w.controller();
    await ctl.createJob({ numTasks: 1, linkTypes: LINKS });
    const first = handleTask();
    const standby = handleTask();
    const n1 = await w.node(() => first.task, { sessionTtlMs: 600_000 }, 1);
    const r1 = n1.node.start();
    await eventually('first started', () => first.box.ctx !== undefined);
    const n2 = await w.node(() => standby.task, { sessionTtlMs: 600_000 }, 1);
    const r2 = n2.node.start();
    await eventually('standby waiting', () => n2.node.state === 'standby');
    const exits: number[] = [];
    const uninstall = installSignalHandlers(n1.node, { signals: ['SIGTERM'], exit: (c) => void exits.push(c) });
    try {
      process.emit('SIGTERM', 'SIGTERM');
      await expect(r1).resolves.toEqual({ reason: 'stopped', taskId: 0 });
    } finally {
      uninstall();
    }
    expect(exits).toEqual([]);
    // With a ten-minute TTL, only a released slot explains the takeover.
    await eventually('standby took over', () => standby.box.ctx !== undefined);
    expect((await ctl.status())!.tasks[0]!.incarnations).toBe(2);
    await n2.node.kill();
    await r2;
  });

  it('kill() from inside a callback does not wait for that callback', async () => {
    w = world();
    await w.controller().createJob({ numTasks: 1, linkTypes: LINKS });
    const a = handleTask(async (_ctx, fw) => {
      await fw.kill();
    });
    const { node } = await w.node(() => a.task, { drainMs: 60_000 }, 1);
    await expect(node.start()).resolves.toEqual({ reason: 'killed', taskId: 0 });
    expect(a.box.exited).toBe(true);
  });

  it('a task callback that throws makes start() reject, after leaving the task', async () => {
    w = world();
    await w.controller().createJob({ numTasks: 1, linkTypes: LINKS });
    const a = handleTask(() => {
      throw new RangeError('application bug');
    });
    const { node } = await w.node(() => a.task, {}, 1);
    await expect(node.start()).rejects.toThrow('application bug');
    expect(a.box.exited).toBe(true);
    expect(node.state).toBe('done');
  });

  it('the node that advances the epoch repairs a corrupt epoch key; shutdownJob repairs a corrupt status: no node dies of either', async () => {
    w = world();
    const ctl = w.controller();
    await ctl.createJob({ numTasks: 1, linkTypes: LINKS });
    const a = handleTask();
    const { node } = await w.node(() => a.task, {}, 1);
    const run = node.start();
    await eventually('started', () => a.box.ctx !== undefined);
    const c = w.coordinator();
    const enc = new TextEncoder();
    const e = (await c.get(jobKeys.epoch(w.job)))!;
    await c.update(jobKeys.epoch(w.job), enc.encode('banana'), e.version);
    await a.box.fw!.incEpoch(a.box.ctx!);
    await eventually('epoch 1', () => node.getEpoch() === 1);
    expect(new TextDecoder().decode((await c.get(jobKeys.epoch(w.job)))!.value)).toBe('1');
    await c.create(jobKeys.status(w.job), enc.encode('zzz')).catch(async () => {
      const s = (await c.get(jobKeys.status(w.job)))!;
      await c.update(jobKeys.status(w.job), enc.encode('zzz'), s.version);
    });
    await a.box.fw!.shutdownJob();
    await expect(run).resolves.toMatchObject({ reason: 'job-done' });
    expect((await ctl.status())?.state).toBe('done');
  });

  it('a corrupt epoch written into the store is reported, not fatal', async () => {
    w = world();
    const ctl = w.controller();
    await ctl.createJob({ numTasks: 1, linkTypes: LINKS });
    const a = handleTask();
    const { node } = await w.node(() => a.task, {}, 1);
    const run = node.start();
    await eventually('started', () => a.box.ctx !== undefined);
    const c = w.coordinator();
    const e = (await c.get(jobKeys.epoch(w.job)))!;
    await c.update(jobKeys.epoch(w.job), new TextEncoder().encode('{garbage'), e.version);
    await new Promise((r) => setTimeout(r, 50));
    expect(node.state).toBe('running');
    expect(node.getEpoch()).toBe(0);
    await ctl.finish();
    await expect(run).resolves.toMatchObject({ reason: 'job-done' });
    const err = await a.box.fw!.flagMeta(a.box.ctx!, 'Parents', 'x').catch((x: unknown) => x);
    expect(err).toBeInstanceOf(ClosedError);
  });
});
