/**
 * The store away for a while: nodes wait for it on every path of joining,
 * claiming and running, and lose nothing to an outage shorter than their TTL.
 */
import type { EpochContext, Framework, Task } from '@taskgraph/api';
import { afterEach, describe, expect, it } from 'vitest';
import { eventually } from '@taskgraph/testkit';
import { jobKeys } from '../src/index.js';
import { recordingTask, world } from './helpers.js';

let w: ReturnType<typeof world>;
afterEach(async () => {
  w.store.faults.clear();
  await w.close();
});

const LINKS = ['Parents', 'Children'];

function handle() {
  const box: { fw?: Framework; ctx?: EpochContext; epochs: number[] } = { epochs: [] };
  const task: Task = {
    init: (_id, fw) => void (box.fw = fw),
    enterEpoch: (ctx) => {
      box.ctx = ctx;
      box.epochs.push(ctx.epoch);
    },
    metaReady: () => undefined,
    exit: () => undefined,
  };
  return { box, task };
}

describe('store outages', () => {
  it('a node started while the store is away joins and claims once it is back', async () => {
    w = world();
    await w.controller().createJob({ numTasks: 1, linkTypes: LINKS });
    const away = w.store.faults.add({ op: '*' });
    const a = handle();
    const { node } = await w.node(() => a.task, { sessionTtlMs: 2000 }, 1);
    const run = node.start();
    await eventually('the node tried the store', () => away.hits >= 3);
    expect(node.state).toBe('starting');
    away.clear();
    await eventually('the node runs the task', () => node.currentTask === 0 && a.box.ctx !== undefined);
    await w.controller().finish();
    await expect(run).resolves.toMatchObject({ reason: 'job-done', taskId: 0 });
  });

  it('every store call on the way to a slot meets an outage and is retried: the lock, the done check, the incarnation, the address record', async () => {
    w = world();
    await w.controller().createJob({ numTasks: 1, linkTypes: LINKS });
    const faults = [
      w.store.faults.add({ op: 'tryAcquire', times: 2 }),
      w.store.faults.add({ op: 'get', key: `tg/${jobKeys.status(w.job)}`, times: 2 }),
      w.store.faults.add({ op: ['get', 'create', 'update'], key: `tg/${jobKeys.incarnation(w.job, 0)}`, times: 2 }),
      w.store.faults.add({ op: 'create', key: `tg/${jobKeys.addr(w.job, 0)}`, times: 2 }),
    ];
    const a = handle();
    const { node } = await w.node(() => a.task, { sessionTtlMs: 2000 }, 1);
    const run = node.start();
    await eventually('the node runs the task', () => a.box.ctx !== undefined);
    expect(faults.map((f) => f.hits)).toEqual([2, 2, 2, 2]);
    expect(node.getIncarnation()).toBe(1);
    await w.controller().finish();
    await expect(run).resolves.toMatchObject({ reason: 'job-done', taskId: 0 });
  });

  it('an outage shorter than the TTL loses no node: the primary keeps its slot, the standby stays, and an epoch advance asked meanwhile goes through once', async () => {
    w = world();
    await w.controller().createJob({ numTasks: 1, linkTypes: LINKS });
    const a = handle();
    // A TTL with room for a busy machine: the outage below lasts two failed renewals (about one renewal interval, TTL/3).
    const primary = await w.node(() => a.task, { sessionTtlMs: 6000 }, 1);
    const r1 = primary.node.start();
    await eventually('the primary runs', () => a.box.ctx !== undefined);
    const log: string[] = [];
    const standby = await w.node(() => recordingTask(log), { sessionTtlMs: 6000 }, 1);
    const r2 = standby.node.start();
    await eventually('the standby waits', () => standby.node.state === 'standby');

    const renewals = w.store.faults.add({ op: 'keepalive' });
    const away = w.store.faults.add({ op: '*' });
    const advance = a.box.fw!.incEpoch(a.box.ctx!);
    // Renewals failed (the nodes renew every TTL/3).
    await eventually('renewals failed', () => renewals.hits >= 2);
    expect(away.hits).toBeGreaterThan(0);
    renewals.clear();
    away.clear();
    await advance;

    await eventually('the primary entered epoch 1', () => a.box.epochs.includes(1));
    expect(a.box.epochs).toEqual([0, 1]);
    expect(primary.node.state).toBe('running');
    expect(primary.node.getIncarnation()).toBe(1);
    expect(standby.node.state).toBe('standby');
    const c = w.coordinator();
    expect(new TextDecoder().decode((await c.get(jobKeys.epoch(w.job)))!.value)).toBe('1');
    await w.controller().finish();
    await expect(r1).resolves.toMatchObject({ reason: 'job-done', taskId: 0 });
    await expect(r2).resolves.toMatchObject({ reason: 'job-done' });
    expect(log).toEqual([]);
  });
});
