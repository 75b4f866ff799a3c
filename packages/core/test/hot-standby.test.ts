import { eventually } from '@taskgraph/testkit';
import { afterEach, describe, expect, it } from 'vitest';
import { world } from './helpers.js';
import { Ledger, ledgers } from './ledger.js';
import { track, turn } from './parts.js';

const LINKS = ['Parents', 'Children'];

let w: ReturnType<typeof world>;
afterEach(async () => {
  await w.close();
});

describe('hot standby', () => {
  it('a backup mirrors every acknowledged update; when the primary is killed it takes over with the state', async () => {
    w = world();
    const ctl = w.controller();
    await ctl.createJob({ numTasks: 1, linkTypes: LINKS, backups: 1 });
    const tasks = ledgers();
    const a = await w.node(() => tasks.get(), {}, 1);
    const runA = a.node.start();
    await eventually('the primary', () => a.node.currentTask === 0);
    await eventually('its first epoch', () => tasks.made[0]?.ctx !== undefined);
    const first = tasks.made[0]!;
    expect(first.fw!.getNumBackups()).toBe(1);
    const backedUp = track(first.fw!.waitForBackups(first.ctx!));
    await turn();
    expect(backedUp.state.settled).toBe(false);
    const b = await w.node(() => tasks.get(), {}, 1);
    const runB = b.node.start();
    await backedUp.promise;
    await eventually('the backup in sync', async () => (await ctl.status())?.tasks[0]?.backups[0]?.state === 'ready');
    expect(b.node.backupOf).toBe(0);
    const [primary, backup] = tasks.made as [Ledger, Ledger];
    await expect(backup.fw!.waitForBackups(primary.ctx!)).rejects.toThrow('only the task\'s primary can waitForBackups');
    await expect(primary.fw!.waitForBackups(primary.ctx!, 2)).rejects.toThrow('can never be in sync');
    expect(primary.fw!.getRole()).toBe('primary');
    expect(backup.fw!.getRole()).toBe('backup');
    expect(await primary.add(1)).toMatchObject({ seq: 1, epoch: 0 });
    expect(await primary.add(2)).toMatchObject({ seq: 2 });
    // Acknowledged means applied on the backup, in order.
    expect(backup.items).toEqual([1, 2]);
    expect(backup.applied).toEqual([1, 2]);
    await Promise.all([primary.add(3), primary.add(4), primary.add(5)]);
    expect(backup.items).toEqual([1, 2, 3, 4, 5]);

    await a.node.kill();
    await expect(runA).resolves.toEqual({ reason: 'killed', taskId: 0 });
    await eventually('the backup promoted', () => b.node.currentTask === 0);
    await eventually('its first epoch', () => backup.events.includes('epoch 0'));
    expect(primary.events.slice(0, 3)).toEqual(['init as primary', 'primary promoted=false seq=0 incarnation=1', 'epoch 0']);
    expect(backup.events).toEqual(['init as backup', 'backup seq=0', 'primary promoted=true seq=5 incarnation=2', 'epoch 0']);
    expect(backup.fw!.getRole()).toBe('primary');
    expect(backup.items).toEqual([1, 2, 3, 4, 5]);
    // It goes on numbering where the old primary stopped.
    expect(await backup.add(6)).toMatchObject({ seq: 6 });
    await backup.fw!.shutdownJob();
    await expect(runB).resolves.toEqual({ reason: 'job-done', taskId: 0 });
  });

  it('a backup that joins late gets a snapshot, then every later update; a cold standby is recruited as the next backup', async () => {
    w = world();
    const ctl = w.controller();
    await ctl.createJob({ numTasks: 1, linkTypes: LINKS, backups: 1 });
    const tasks = ledgers();
    const a = await w.node(() => tasks.get(), {}, 1);
    const runA = a.node.start();
    await eventually('the primary', () => a.node.currentTask === 0);
    const primary = tasks.made[0]!;
    await eventually('its first epoch', () => primary.ctx !== undefined);
    for (let i = 1; i <= 3; i++) await primary.add(i);
    const b = await w.node(() => tasks.get(), {}, 1);
    const runB = b.node.start();
    await eventually('the backup in sync', async () => (await ctl.status())?.tasks[0]?.backups[0]?.state === 'ready');
    const backup = tasks.made[1]!;
    expect(backup.items).toEqual([1, 2, 3]);
    expect(backup.applied).toEqual([]);
    await primary.add(4);
    expect(backup.items).toEqual([1, 2, 3, 4]);
    expect(backup.applied).toEqual([4]);

    const c = await w.node(() => tasks.get(), {}, 1);
    const runC = c.node.start();
    await eventually('a cold standby', () => c.node.state === 'standby');
    await a.node.kill();
    await runA;
    await eventually('the backup promoted', () => b.node.currentTask === 0);
    await eventually('the standby recruited and in sync', async () => {
      const t = (await ctl.status())?.tasks[0];
      return t?.backups.length === 1 && t.backups[0]!.state === 'ready' && t.backups[0]!.nodeId === c.node.nodeId;
    });
    const recruit = tasks.made[2]!;
    expect(recruit.items).toEqual([1, 2, 3, 4]);
    await eventually('the new primary serving', () => backup.ctx !== undefined && backup.events.includes('epoch 0'));
    await backup.add(5);
    expect(recruit.items).toEqual([1, 2, 3, 4, 5]);
    await backup.fw!.shutdownJob();
    expect((await Promise.all([runB, runC])).map((o) => o.reason)).toEqual(['job-done', 'job-done']);
  });

  it('with no backup in sync a task fails over cold: the new primary starts from init (promoted: false)', async () => {
    w = world();
    const ctl = w.controller();
    await ctl.createJob({ numTasks: 1, linkTypes: LINKS, backups: 0 });
    const tasks = ledgers();
    const a = await w.node(() => tasks.get(), {}, 1);
    const runA = a.node.start();
    await eventually('the primary', () => tasks.made[0]?.ctx !== undefined);
    expect(await tasks.made[0]!.add(1)).toMatchObject({ seq: 1 });
    const b = await w.node(() => tasks.get(), {}, 1);
    const runB = b.node.start();
    await eventually('a cold standby', () => b.node.state === 'standby');
    await a.node.kill();
    await runA;
    await eventually('the standby took over', () => tasks.made[1]?.events.includes('epoch 0'));
    expect(tasks.made[1]!.events).toEqual(['init as primary', 'primary promoted=false seq=0 incarnation=2', 'epoch 0']);
    expect(tasks.made[1]!.items).toEqual([]);
    await tasks.made[1]!.fw!.shutdownJob();
    await runB;
  });

  it('a neighbour that fails and restarts is reported to the tasks whose neighbour it is, once each', async () => {
    w = world();
    await w.controller().createJob({ numTasks: 3, linkTypes: LINKS });
    const tasks = new Map<number, Ledger[]>();
    const builder = (id: number) => {
      const t = new Ledger();
      tasks.set(id, [...(tasks.get(id) ?? []), t]);
      return t;
    };
    const nodes = await Promise.all([0, 1, 2].map((i) => w.node(builder, { preferredTask: i })));
    const runs = nodes.map((n) => n.node.start());
    await eventually('all running', () => nodes.every((n) => n.node.currentTask !== undefined) && [0, 1, 2].every((i) => tasks.get(i)?.[0]?.ctx));
    const spare = await w.node(builder);
    const runSpare = spare.node.start();
    await eventually('a standby', () => spare.node.state === 'standby');
    // Task 1's node dies; task 0 (its parent) and the standby that takes task 1 over see it.
    await nodes[1]!.node.kill();
    await eventually('the restart seen by task 0', () => tasks.get(0)![0]!.events.some((e) => e.startsWith('restarted')));
    expect(tasks.get(0)![0]!.events.filter((e) => !e.startsWith('epoch') && !e.startsWith('init'))).toEqual([
      'primary promoted=false seq=0 incarnation=1',
      'failed 1 Children 1',
      'restarted 1 Children 2',
    ]);
    // Task 2 is not task 1's neighbour in a tree of 3: it hears nothing.
    expect(tasks.get(2)![0]!.events.filter((e) => e.startsWith('failed') || e.startsWith('restarted'))).toEqual([]);
    await tasks.get(0)![0]!.fw!.shutdownJob();
    await Promise.all([...runs, runSpare]);
  });
});
