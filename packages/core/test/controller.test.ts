import { ConflictError, InvalidArgumentError, TaskGraphError } from '@taskgraph/api';
import { afterEach, describe, expect, it } from 'vitest';
import { eventually } from '@taskgraph/testkit';
import { createController, jobKeys, silentLogger } from '../src/index.js';
import { recordingTask, world } from './helpers.js';

let w: ReturnType<typeof world>;
afterEach(async () => {
  await w.close();
});

describe('controller', () => {
  it('creates a job idempotently and refuses a conflicting spec', async () => {
    w = world();
    const ctl = w.controller();
    const spec = await ctl.createJob({ numTasks: 3, linkTypes: ['Parents', 'Children'] });
    expect(spec).toMatchObject({ numTasks: 3, linkTypes: ['Parents', 'Children'], formatVersion: 2 });
    await expect(ctl.createJob({ numTasks: 3, linkTypes: ['Parents', 'Children'] })).resolves.toEqual(spec);
    await expect(ctl.createJob({ numTasks: 4, linkTypes: ['Parents', 'Children'] })).rejects.toThrow(ConflictError);
    await expect(ctl.createJob({ numTasks: 4, linkTypes: ['Parents', 'Children'] })).rejects.toThrow('already exists with numTasks=3');
    const status = await ctl.status();
    expect(status).toMatchObject({ epoch: 0, state: 'running', tasks: [{ task: 0, incarnations: 0 }, { task: 1 }, { task: 2 }] });
  });

  it('backs up only the tasks the definition names (backupTasks), and a different list is a conflict', async () => {
    w = world();
    const ctl = w.controller();
    const spec = await ctl.createJob({ numTasks: 4, linkTypes: ['A'], backups: 1, backupTasks: [2, 0] });
    expect(spec).toMatchObject({ backups: 1, backupTasks: [0, 2] });
    await expect(ctl.createJob({ numTasks: 4, linkTypes: ['A'], backups: 1, backupTasks: [0, 2] })).resolves.toEqual(spec);
    await expect(ctl.createJob({ numTasks: 4, linkTypes: ['A'], backups: 1 })).rejects.toThrow(ConflictError);
    await expect(ctl.createJob({ numTasks: 4, linkTypes: ['A'], backups: 1, backupTasks: [0] })).rejects.toThrow(ConflictError);
    const other = createController({ coordinator: w.coordinator(), job: 'other', logger: silentLogger });
    await expect(other.createJob({ numTasks: 4, linkTypes: ['A'], backups: 1, backupTasks: [4] })).rejects.toThrow('task 4 does not exist');
    await expect(other.createJob({ numTasks: 4, linkTypes: ['A'], backups: 1, backupTasks: [1, 1] })).rejects.toThrow('duplicates');
    await expect(other.createJob({ numTasks: 4, linkTypes: ['A'], backups: 1, backupTasks: [] })).rejects.toThrow(InvalidArgumentError);
  });

  it('rejects bad job names and definitions with InvalidArgument', async () => {
    w = world();
    for (const job of ['', 'UPPER', 'a/b', '-x', 'x'.repeat(64), 'a..b']) {
      expect(() => createController({ coordinator: w.coordinator(), job })).toThrow(InvalidArgumentError);
    }
    const ctl = w.controller();
    await expect(ctl.createJob({ numTasks: 0, linkTypes: ['A'] })).rejects.toThrow('numTasks');
    await expect(ctl.createJob({ numTasks: 1.5, linkTypes: ['A'] })).rejects.toThrow(InvalidArgumentError);
    await expect(ctl.createJob({ numTasks: 2, linkTypes: [] })).rejects.toThrow('non-empty');
    await expect(ctl.createJob({ numTasks: 2, linkTypes: ['bad type'] })).rejects.toThrow('link type');
    await expect(ctl.createJob({ numTasks: 2, linkTypes: ['A', 'A'] })).rejects.toThrow('duplicates');
    expect(await ctl.status()).toBeUndefined();
  });

  it('reports nodes, owners, tokens, incarnations and standbys, and waits until done', async () => {
    w = world();
    const ctl = w.controller();
    await ctl.createJob({ numTasks: 3, linkTypes: ['Parents', 'Children'] });
    const log: string[] = [];
    const nodes = await Promise.all([0, 1, 2, 3].map(() => w.node(() => recordingTask(log))));
    const runs = nodes.map((n) => n.node.start());
    await eventually('all tasks claimed', async () => (await ctl.status())!.tasks.every((t) => t.nodeId !== undefined) && (await ctl.status())!.nodes.length === 4);
    const s = (await ctl.status())!;
    expect(s.standbys).toHaveLength(1);
    expect(new Set(s.tasks.map((t) => t.nodeId)).size).toBe(3);
    for (const t of s.tasks) {
      expect(t.incarnations).toBe(1);
      expect(t.token).toMatch(/^\d+$/);
      expect(t.address).toMatch(/^local:\/\//);
    }
    const done = ctl.waitUntilDone();
    await ctl.finish('done');
    const final = await done;
    expect(final.state).toBe('done');
    const outcomes = await Promise.all(runs);
    expect(outcomes.map((o) => o.reason)).toEqual(['job-done', 'job-done', 'job-done', 'job-done']);
    expect(log.filter((l) => l === 'exit')).toHaveLength(3);
  });

  it('reports corrupt values as problems instead of failing, and destroy removes the job', async () => {
    w = world();
    const ctl = w.controller();
    await ctl.createJob({ numTasks: 2, linkTypes: ['Parents', 'Children'] });
    const c = w.coordinator();
    const e = (await c.get(jobKeys.epoch(w.job)))!;
    await c.update(jobKeys.epoch(w.job), new TextEncoder().encode('seven'), e.version);
    await c.create(jobKeys.incarnation(w.job, 1), new Uint8Array([0xff, 0xfe]));
    const s = (await ctl.status())!;
    expect(s.epoch).toBe(-1);
    expect(s.problems.join('\n')).toMatch(/corrupt value at .*state\/epoch/);
    expect(s.problems.join('\n')).toMatch(/corrupt value at .*tasks\/1\/incarnation/);
    await ctl.destroy();
    expect(await ctl.status()).toBeUndefined();
    expect((await c.list(`${w.job}/`)).entries).toEqual([]);
  });

  it('a job whose spec is missing (deleted behind its back) or corrupt is unreadable: DecodeFailedError naming the key, not "no such job"', async () => {
    w = world();
    const ctl = w.controller();
    await ctl.createJob({ numTasks: 2, linkTypes: ['Parents', 'Children'] });
    const c = w.coordinator();
    const spec = (await c.get(jobKeys.spec(w.job)))!;
    await c.update(jobKeys.spec(w.job), new TextEncoder().encode('{"numTasks":"many"}'), spec.version);
    let err = await ctl.status().catch((x: unknown) => x);
    expect(err).toMatchObject({ code: 'DECODE_FAILED', details: { key: jobKeys.spec(w.job) } });
    expect((err as Error).message).toMatch(new RegExp(`^job ${w.job} is unreadable: corrupt value at`));
    const again = (await c.get(jobKeys.spec(w.job)))!;
    await c.delete(jobKeys.spec(w.job), again.version);
    err = await ctl.status().catch((x: unknown) => x);
    expect(err).toMatchObject({ code: 'DECODE_FAILED', details: { key: jobKeys.spec(w.job) } });
    expect((err as Error).message).toMatch(/its spec .* is missing while 2 other key\(s\) of the job remain/);
    await ctl.destroy();
    expect(await ctl.status()).toBeUndefined();
  });

  it('waitUntilDone rejects when the job is deleted, and when aborted', async () => {
    w = world();
    const ctl = w.controller();
    await ctl.createJob({ numTasks: 1, linkTypes: ['Parents', 'Children'] });
    const waiting = ctl.waitUntilDone();
    await new Promise((r) => setTimeout(r, 20));
    await ctl.destroy();
    await expect(waiting).rejects.toThrow('was deleted before it finished');
    await ctl.createJob({ numTasks: 1, linkTypes: ['Parents', 'Children'] });
    const ac = new AbortController();
    const aborted = ctl.waitUntilDone(ac.signal);
    ac.abort();
    const err = await aborted.catch((x: unknown) => x);
    expect(TaskGraphError.is(err, 'ABORTED')).toBe(true);
    const other = createController({ coordinator: w.coordinator(), job: w.job, logger: silentLogger });
    expect((await other.status())!.state).toBe('running');
  });
});
