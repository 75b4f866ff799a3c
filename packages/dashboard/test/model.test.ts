import type { Entry, WatchEvent } from '@taskgraph/api';
import { createController, jobKeys } from '@taskgraph/core';
import { eventually } from '@taskgraph/testkit';
import { afterEach, describe, expect, it } from 'vitest';
import { JobModel, MAX_EVENTS } from '../src/model.js';
import type { JobDelta, JobSnapshot } from '../src/model.js';
import { MAX_TEXT, parseJobKey } from '../src/records.js';
import { startRegressionJob, waitUntilRunning } from './helpers.js';
import type { RunningJob } from './helpers.js';

const JOB = 'unit';
const enc = (v: unknown): Uint8Array => new TextEncoder().encode(typeof v === 'string' ? v : JSON.stringify(v));
let version = 0;
const put = (key: string, value: unknown): WatchEvent => ({ type: 'put', key, value: enc(value), version: String(++version) });
const del = (key: string): WatchEvent => ({ type: 'delete', key });
const entry = (key: string, value: unknown): Entry => ({ key, value: enc(value), version: String(++version) });

const spec = (numTasks: number, extra: Record<string, unknown> = {}) => ({
  formatVersion: 2,
  numTasks,
  linkTypes: ['Parents', 'Children'],
  backups: 0,
  created: '2026-01-01T00:00:00.000Z',
  ...extra,
});
const addr = (node: string, incarnation: number, token = String(100 + incarnation)) => ({ nodeId: node, address: `local://${node}`, token, incarnation });
const nodeRec = (node: string) => ({ nodeId: node, address: `local://${node}`, pid: 42, host: 'h', started: '2026-01-01T00:00:00.000Z' });

/** A running job of `n` tasks, task t on node-t in incarnation 1, as a list returns it. */
function jobEntries(n: number): Entry[] {
  const out = [entry(jobKeys.spec(JOB), spec(n)), entry(jobKeys.epoch(JOB), '3'), entry(jobKeys.status(JOB), { state: 'running' })];
  for (let t = 0; t < n; t++) {
    out.push(entry(jobKeys.node(JOB, `node-${t}`), nodeRec(`node-${t}`)));
    out.push(entry(jobKeys.incarnation(JOB, t), 1));
    out.push(entry(jobKeys.addr(JOB, t), addr(`node-${t}`, 1)));
  }
  return out;
}

function model(entries: Entry[]): JobModel {
  const m = new JobModel(JOB, { now: () => new Date('2026-01-01T12:00:00.000Z') });
  m.reset(entries);
  expect(m.takeDelta()).toBe('snapshot');
  return m;
}

function delta(m: JobModel): JobDelta {
  const d = m.takeDelta();
  if (d === undefined || d === 'snapshot') throw new Error(`expected a delta, got ${String(d)}`);
  return d;
}

describe('keys of a job', () => {
  it('parses every kind of key and nothing else', () => {
    expect(parseJobKey(JOB, 'unit/spec')).toEqual({ kind: 'spec' });
    expect(parseJobKey(JOB, 'unit/state/epoch')).toEqual({ kind: 'epoch' });
    expect(parseJobKey(JOB, 'unit/state/status')).toEqual({ kind: 'status' });
    expect(parseJobKey(JOB, 'unit/nodes/node-1')).toEqual({ kind: 'node', nodeId: 'node-1' });
    expect(parseJobKey(JOB, 'unit/tasks/12/addr')).toEqual({ kind: 'addr', task: 12 });
    expect(parseJobKey(JOB, 'unit/tasks/12/incarnation')).toEqual({ kind: 'incarnation', task: 12 });
    expect(parseJobKey(JOB, 'unit/tasks/12/backups/1')).toEqual({ kind: 'backup', task: 12, slot: 1 });
    expect(parseJobKey(JOB, 'unit/meta/4/0/3/1/Children')).toEqual({ kind: 'meta', to: 4, epoch: 3, from: 1, linkType: 'Children' });
    for (const other of ['unit/tasks/12', 'unit/tasks/x/addr', 'unit/tasks/012/addr', 'unit/meta/4/0/3/1/bad!', 'unitx/spec', 'other/spec', 'unit/', 'unit/mw/store/a']) {
      expect(parseJobKey(JOB, other), other).toEqual({ kind: 'other' });
    }
  });
});

describe('JobModel', () => {
  it('makes a snapshot of what a list read', () => {
    const entries = jobEntries(3);
    entries.push(entry(jobKeys.backup(JOB, 1, 0), { nodeId: 'node-9', address: 'local://node-9', token: '7', slot: 0, state: 'ready', primaryToken: '101' }));
    entries.push(entry(jobKeys.node(JOB, 'node-9'), nodeRec('node-9')));
    entries.push(entry(jobKeys.node(JOB, 'node-10'), nodeRec('node-10')));
    entries.push(entry('unit/meta/1/0/3/0/Children', { token: '101', metas: ['ParamReady'] }));
    entries.push(entry('unit/meta/0/0/3/1/Parents', { token: '102', metas: ['GradientReady'] }));
    const s: JobSnapshot = model(entries).snapshot();
    expect(s).toMatchObject({ job: JOB, exists: true, epoch: 3, state: 'running', spec: { numTasks: 3, linkTypes: ['Parents', 'Children'], backups: 0 } });
    expect(s.tasks).toHaveLength(3);
    expect(s.tasks[1]).toEqual({
      id: 1,
      node: 'node-1',
      address: 'local://node-1',
      incarnation: 1,
      claims: 1,
      backups: [{ slot: 0, node: 'node-9', state: 'ready' }],
      failovers: 0,
    });
    // One link per pair of tasks, whichever way its metas went, with both link types.
    expect(s.edges).toEqual([{ id: '0-1', source: 0, target: 1, linkTypes: ['Children', 'Parents'], lastEpoch: 3 }]);
    expect(Object.fromEntries(s.nodes.map((n) => [n.id, n.role]))).toEqual({ 'node-0': 'primary', 'node-1': 'primary', 'node-2': 'primary', 'node-9': 'backup', 'node-10': 'standby' });
    expect(s.events).toEqual([]);
    expect(s.problems).toEqual([]);
    expect(s.rates).toEqual({ available: false });
    // Fencing tokens stay in the store: the page has no use for them.
    expect(JSON.stringify(s)).not.toMatch(/token|"10[0-9]"/);
  });

  it('a failover: the primary goes (an event), the claim counts, a new node publishes (a failover event naming both nodes)', () => {
    const m = model(jobEntries(4));
    m.apply(del(jobKeys.addr(JOB, 2)));
    m.apply(del(jobKeys.node(JOB, 'node-2')));
    let d = delta(m);
    expect(d.tasks).toEqual([{ id: 2, incarnation: 1, claims: 1, backups: [], failovers: 0 }]);
    expect(d.nodesGone).toEqual(['node-2']);
    expect(d.events).toEqual([
      expect.objectContaining({ kind: 'primary-lost', task: 2, from: 'node-2', incarnation: 1, text: 'task 2: its primary node-2 (incarnation 1) is gone' }),
    ]);

    m.apply(put(jobKeys.incarnation(JOB, 2), 2));
    m.apply(put(jobKeys.addr(JOB, 2), addr('node-7', 2)));
    d = delta(m);
    expect(d.tasks).toEqual([{ id: 2, node: 'node-7', address: 'local://node-7', incarnation: 2, claims: 2, backups: [], failovers: 1 }]);
    expect(d.events).toEqual([
      {
        id: 2,
        time: '2026-01-01T12:00:00.000Z',
        kind: 'failover',
        task: 2,
        incarnation: 2,
        from: 'node-2',
        to: 'node-7',
        promoted: false,
        text: 'task 2 failed over: incarnation 1 → 2, node-2 → node-7',
      },
    ]);
    // The primary republishing its own record (same incarnation) is no failover.
    m.apply(put(jobKeys.addr(JOB, 2), addr('node-7', 2)));
    expect(delta(m).events).toBeUndefined();
    expect(m.snapshot().events.map((e) => e.kind)).toEqual(['primary-lost', 'failover']);
  });

  it('a hot promotion is named as one', () => {
    const entries = jobEntries(2);
    entries.push(entry(jobKeys.backup(JOB, 0, 0), { nodeId: 'node-5', address: 'local://node-5', token: '9', slot: 0, state: 'ready' }));
    const m = model(entries);
    m.apply(put(jobKeys.addr(JOB, 0), addr('node-5', 2)));
    m.apply(del(jobKeys.backup(JOB, 0, 0)));
    const d = delta(m);
    expect(d.events).toEqual([expect.objectContaining({ kind: 'failover', task: 0, promoted: true, text: 'task 0 failed over: incarnation 1 → 2, node-0 → node-5 (a backup promoted)' })]);
    expect(d.tasks).toEqual([expect.objectContaining({ id: 0, node: 'node-5', backups: [] })]);
  });

  it('the first claims of a new job are not failovers, nor records gone once the job is done', () => {
    const m = model([entry(jobKeys.spec(JOB), spec(2)), entry(jobKeys.epoch(JOB), '0')]);
    m.apply(put(jobKeys.incarnation(JOB, 0), 1));
    m.apply(put(jobKeys.addr(JOB, 0), addr('node-0', 1)));
    expect(delta(m).events).toBeUndefined();
    m.apply(put(jobKeys.status(JOB), { state: 'done' }));
    m.apply(del(jobKeys.addr(JOB, 0)));
    const d = delta(m);
    expect(d).toMatchObject({ state: 'done', epoch: 0, reason: null });
    expect(d.events).toEqual([expect.objectContaining({ kind: 'job-state', text: 'job done' })]);
  });

  it('the epoch and state come as header fields; a meta on a new link as an edge; a meta on a known link in a later epoch updates it', () => {
    const m = model(jobEntries(3));
    m.apply(put(jobKeys.epoch(JOB), '4'));
    m.apply(put('unit/meta/2/0/4/0/Children', { token: '1', metas: ['ParamReady'] }));
    let d = delta(m);
    expect(d).toEqual({ job: JOB, epoch: 4, state: 'running', reason: null, edges: [{ id: '0-2', source: 0, target: 2, linkTypes: ['Children'], lastEpoch: 4 }] });
    m.apply(put('unit/meta/2/0/4/0/Children', { token: '1', metas: ['ParamReady', 'again'] }));
    expect(m.takeDelta()).toBeUndefined();
    m.apply(put('unit/meta/0/0/5/2/Parents', { token: '1', metas: ['GradientReady'] }));
    d = delta(m);
    expect(d.edges).toEqual([{ id: '0-2', source: 0, target: 2, linkTypes: ['Children', 'Parents'], lastEpoch: 5 }]);
    // A receiver clearing its metas does not remove the link; a meta to a task beyond the job is ignored.
    m.apply(del('unit/meta/2/0/4/0/Children'));
    m.apply(put('unit/meta/9/0/5/0/Children', { token: '1', metas: [] }));
    expect(m.takeDelta()).toBeUndefined();
  });

  it('a corrupt value is a problem, not a crash; a readable one clears it', () => {
    const m = model(jobEntries(2));
    m.apply(put(jobKeys.addr(JOB, 1), '{not json'));
    m.apply(put(jobKeys.epoch(JOB), 'seven'));
    let d = delta(m);
    expect(d.problems?.map(([k]) => k).sort()).toEqual(['unit/state/epoch', 'unit/tasks/1/addr']);
    expect(d.tasks).toEqual([{ id: 1, incarnation: 1, claims: 1, backups: [], failovers: 0 }]);
    expect(d.epoch).toBe(-1);
    m.apply(put(jobKeys.addr(JOB, 1), addr('node-1', 1)));
    d = delta(m);
    expect(d.problemsGone).toEqual(['unit/tasks/1/addr']);
    expect(m.snapshot().problems).toEqual([['unit/state/epoch', 'corrupt value at unit/state/epoch: epoch "seven" is not a decimal integer']]);
  });

  it('untrusted strings pass as data, cut to a bounded length', () => {
    const evil = `<img src=x onerror="alert(1)">${'x'.repeat(1000)}`;
    const m = model(jobEntries(1));
    m.apply(put(jobKeys.addr(JOB, 0), addr(evil, 1)));
    const t = delta(m).tasks?.[0];
    expect(t?.node?.startsWith('<img src=x onerror="alert(1)">')).toBe(true);
    expect(t?.node?.length).toBe(MAX_TEXT);
  });

  it('a job made while watched, then deleted: a snapshot each time, and events', () => {
    const m = model([]);
    expect(m.snapshot()).toMatchObject({ exists: false, state: 'unknown', tasks: [], edges: [] });
    m.apply(put(jobKeys.epoch(JOB), '0'));
    m.apply(put(jobKeys.spec(JOB), spec(5)));
    expect(m.takeDelta()).toBe('snapshot');
    const s = m.snapshot();
    expect(s).toMatchObject({ exists: true, epoch: 0, state: 'running' });
    expect(s.tasks).toHaveLength(5);
    expect(s.events).toEqual([expect.objectContaining({ kind: 'job-created', text: 'job unit created with 5 tasks' })]);
    m.apply(del(jobKeys.spec(JOB)));
    expect(m.takeDelta()).toBe('snapshot');
    expect(m.snapshot()).toMatchObject({ exists: false, tasks: [] });
    expect(m.snapshot().events.at(-1)).toMatchObject({ kind: 'job-deleted' });
  });

  it('a re-list (after a compaction) reports the failovers it missed and keeps what it saw', () => {
    const m = model(jobEntries(3));
    m.apply(put(jobKeys.addr(JOB, 1), addr('node-8', 2)));
    m.takeDelta();
    const entries = jobEntries(3).map((e) => (e.key === jobKeys.addr(JOB, 2) ? entry(e.key, addr('node-9', 3)) : e.key === jobKeys.addr(JOB, 1) ? entry(e.key, addr('node-8', 2)) : e));
    m.reset(entries);
    expect(m.takeDelta()).toBe('snapshot');
    const s = m.snapshot();
    expect(s.tasks.map((t) => t.failovers)).toEqual([0, 1, 1]);
    expect(s.events.map((e) => e.text)).toEqual(['task 1 failed over: incarnation 1 → 2, node-1 → node-8', 'task 2 failed over: incarnation 1 → 3, node-2 → node-9']);
  });

  it('rates from a source go out for the tasks whose rate changed; nonsense is dropped', () => {
    const m = new JobModel(JOB, { rates: { available: true, label: 'test' } });
    m.reset(jobEntries(3));
    m.takeDelta();
    m.setRates([
      [1, 12.5],
      [2, Number.NaN],
      [-1, 3],
    ]);
    expect(delta(m).tasks).toEqual([expect.objectContaining({ id: 1, rate: 12.5 })]);
    m.setRates([[1, 12.5]]);
    expect(m.takeDelta()).toBeUndefined();
    expect(m.snapshot().rates).toEqual({ available: true, label: 'test' });
  });

  it('keeps the last MAX_EVENTS events', () => {
    const m = model(jobEntries(1));
    for (let i = 2; i < MAX_EVENTS + 12; i++) m.apply(put(jobKeys.addr(JOB, 0), addr(`node-${i}`, i)));
    const s = m.snapshot();
    expect(s.events).toHaveLength(MAX_EVENTS);
    expect(s.events.at(-1)?.incarnation).toBe(MAX_EVENTS + 11);
    expect(delta(m).events).toHaveLength(MAX_EVENTS);
  });

  it('O(change): in a 1,000-task job one task failing over makes views of that task and its two nodes only', () => {
    const m = model(jobEntries(1000));
    m.snapshot();
    const before = { ...m.work };
    m.apply(del(jobKeys.addr(JOB, 500)));
    m.apply(put(jobKeys.incarnation(JOB, 500), 2));
    m.apply(put(jobKeys.addr(JOB, 500), addr('node-999', 2)));
    const d = delta(m);
    expect(m.work.taskViews - before.taskViews).toBe(1);
    expect(m.work.edgeViews - before.edgeViews).toBe(0);
    // node-500 lost its task (now a standby), node-999 runs two.
    expect(m.work.nodeViews - before.nodeViews).toBe(2);
    expect(d.tasks?.map((t) => t.id)).toEqual([500]);
    expect(d.nodes?.map((n) => [n.id, n.role]).sort()).toEqual([
      ['node-500', 'standby'],
      ['node-999', 'primary'],
    ]);
    expect(JSON.stringify(d).length).toBeLessThan(1000);
    expect(JSON.stringify(m.snapshot()).length).toBeGreaterThan(100_000);
  });
});

describe('JobModel fed by a real job', () => {
  let run: RunningJob | undefined;
  afterEach(async () => {
    await run?.close();
    run = undefined;
  });

  it('kept from one watch through a failover, it equals a model read by one list at the end', async () => {
    run = await startRegressionJob({ numTasks: 7, standbys: 2, gateEpoch: 3 });
    const { coordinator, job } = run;
    await waitUntilRunning(run, 2);
    const live = new JobModel(job);
    const first = await coordinator.list(`${job}/`);
    live.reset(first.entries);
    const ctrl = new AbortController();
    const following = (async () => {
      for await (const batch of coordinator.watch(`${job}/`, { after: first.revision, signal: ctrl.signal })) {
        for (const ev of batch.events) live.apply(ev);
      }
    })();
    // Events and failover counts are what the watch saw happen; a link's types and last epoch,
    // what metas it saw (a dead incarnation's records go with its session); so links by id.
    const strip = (s: JobSnapshot, edges = true) => ({
      ...s,
      events: [],
      edges: edges ? s.edges.map((e) => e.id).sort() : [],
      tasks: s.tasks.map((t) => ({ ...t, failovers: 0 })),
    });
    const sameAsOneList = async (edges: boolean) => {
      const fresh = new JobModel(job);
      fresh.reset((await coordinator.list(`${job}/`)).entries);
      expect(strip(live.snapshot(), edges)).toEqual(strip(fresh.snapshot(), edges));
      return true;
    };

    const victim = await run.cluster.kill(3);
    await eventually('task 3 runs in a new incarnation', () => live.snapshot().tasks[3]?.incarnation === 2 && live.snapshot().tasks[3]?.node !== undefined);
    // Held at the gate epoch: the store is still; what the watch built is what one list reads.
    await eventually('the watched model equals a listed one (job held)', () => sameAsOneList(true));
    const held = live.snapshot();
    expect(held.edges.map((e) => e.id).sort()).toEqual(['0-1', '0-2', '1-3', '1-4', '2-5', '2-6']); // the tree of 7 tasks, from its metas
    expect(held.tasks[3]).toMatchObject({ incarnation: 2, failovers: 1 });
    expect(held.events.find((e) => e.kind === 'failover' && e.task === 3)).toMatchObject({ task: 3, incarnation: 2, from: `node-${victim.index}` });
    expect(held.events.some((e) => e.kind === 'primary-lost' && e.task === 3)).toBe(true);

    run.release();
    await run.cluster.waitUntilDone();
    // At the end the metas went with their senders' sessions; the links seen stay.
    await eventually('the watched model equals a listed one (job done)', () => sameAsOneList(false));
    ctrl.abort();
    await following;
    const end = live.snapshot();
    expect(end.state).toBe('done');
    expect(end.edges).toHaveLength(6);
    expect(end.events.at(-1)).toMatchObject({ kind: 'job-state', text: 'job done' });
  }, 60_000);
});

// A controller's job is what the model reads: the spec core writes is the one decoded here.
describe('the spec core writes', () => {
  it('is read as core wrote it', async () => {
    const { createMemoryCoordinator } = await import('@taskgraph/coord-memory');
    const c = await createMemoryCoordinator();
    await createController({ coordinator: c, job: JOB }).createJob({ numTasks: 4, linkTypes: ['A', 'B'], backups: 1, backupTasks: [0] });
    const m = new JobModel(JOB);
    m.reset((await c.list(`${JOB}/`)).entries);
    expect(m.snapshot()).toMatchObject({ exists: true, epoch: 0, state: 'running', spec: { numTasks: 4, linkTypes: ['A', 'B'], backups: 1, backupTasks: [0] }, problems: [] });
    await c.close();
  });
});
