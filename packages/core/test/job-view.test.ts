/**
 * The controller's incremental view of a job: after every change it shows exactly
 * what a fresh read of all the job's keys shows (checked over a seeded random run
 * of puts, corrupt puts and deletes of every kind of key), it makes no new status
 * for changes that show nowhere, and a status it gave is never changed afterwards.
 */
import { describe, expect, it } from 'vitest';
import type { Entry, WatchEvent } from '@taskgraph/api';
import { createController, silentLogger } from '../src/index.js';
import { JobView } from '../src/job-view.js';
import type { JobStatus } from '../src/job-view.js';
import { FORMAT_VERSION, encodeJson, encodeEpoch, keys } from '../src/layout.js';
import { world } from './helpers.js';

const JOB = 'view';
const spec = (numTasks: number) => encodeJson({ formatVersion: FORMAT_VERSION, numTasks, linkTypes: ['A'], backups: 2, created: 'then' });
const garbage = new Uint8Array([0xff, 0x00]);

/** A small seeded generator (mulberry32), so a failing step can be replayed. */
function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A fresh view of `entries`, listed in key order: what `Controller.status()` shows for them. */
function fresh(entries: ReadonlyMap<string, Uint8Array>): JobStatus | string | undefined {
  const view = new JobView(JOB);
  view.reset([...entries].sort(([a], [b]) => (a < b ? -1 : 1)).map(([key, value]): Entry => ({ key, value, version: '1' })));
  return statusOrError(view);
}

function statusOrError(view: JobView): JobStatus | string | undefined {
  try {
    return view.status();
  } catch (err) {
    return `${(err as { code?: string }).code}: ${(err as Error).message}`;
  }
}

describe('JobView', () => {
  it('after every change shows what a fresh read of the same keys shows', () => {
    const random = seededRandom(14);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
    const nodeIds = ['n0', 'n1', 'n2', 'n3', 'n4'];
    const keyMakers: Array<() => [string, Uint8Array]> = [
      () => [keys.epoch(JOB), encodeEpoch(Math.floor(random() * 5))],
      () => [keys.status(JOB), encodeJson(random() < 0.8 ? { state: 'running' } : { state: 'failed', reason: 'r' })],
      () => {
        const id = pick(nodeIds);
        return [keys.node(JOB, id), encodeJson({ nodeId: id, address: `local://${id}`, pid: 1, host: 'h', started: 's' })];
      },
      () => {
        const id = pick(nodeIds);
        return [keys.addr(JOB, Math.floor(random() * 5)), encodeJson({ nodeId: id, address: `local://${id}`, token: String(Math.floor(random() * 99)), incarnation: 1 })];
      },
      () => [keys.incarnation(JOB, Math.floor(random() * 5)), encodeJson(Math.floor(random() * 4))],
      () => {
        const id = pick(nodeIds);
        const slot = Math.floor(random() * 2);
        return [keys.backup(JOB, Math.floor(random() * 5), slot), encodeJson({ nodeId: id, address: `local://${id}`, token: '7', slot, state: pick(['syncing', 'ready']) })];
      },
      () => [keys.meta(JOB, 1, 0, 2, 'A'), encodeJson({ token: '1', metas: ['m'] })],
      // Rare: the spec itself changes size, goes corrupt or away.
      () => [keys.spec(JOB), spec(random() < 0.5 ? 4 : 6)],
    ];
    const entries = new Map<string, Uint8Array>([[keys.spec(JOB), spec(4)]]);
    const view = new JobView(JOB);
    view.reset([{ key: keys.spec(JOB), value: spec(4), version: '1' }]);
    const kinds = new Set<string>();
    for (let step = 0; step < 3000; step++) {
      const r = random();
      const maker = r < 0.02 ? keyMakers[keyMakers.length - 1]! : pick(keyMakers.slice(0, -1));
      let [key, value] = maker();
      let ev: WatchEvent;
      if (random() < 0.25 && entries.size > 0) {
        key = pick([...entries.keys()]);
        ev = { type: 'delete', key };
        entries.delete(key);
      } else {
        if (random() < 0.05) value = garbage;
        ev = { type: 'put', key, value, version: String(step) };
        entries.set(key, value);
      }
      view.apply(ev);
      const got = statusOrError(view);
      expect(got, `step ${step}: ${ev.type} ${key}`).toEqual(fresh(entries));
      kinds.add(typeof got === 'string' ? 'error' : got === undefined ? 'none' : got.problems.length > 0 ? 'problems' : 'clean');
    }
    // The run went through every kind of outcome, not only the easy one.
    expect([...kinds].sort()).toEqual(['clean', 'error', 'problems']);
  });

  it('a change that shows nowhere makes no new status, and a status given is never changed later', () => {
    const view = new JobView(JOB);
    view.reset([
      { key: keys.spec(JOB), value: spec(2), version: '1' },
      { key: keys.epoch(JOB), value: encodeEpoch(0), version: '2' },
    ]);
    const first = view.status()!;
    view.apply({ type: 'put', key: keys.meta(JOB, 1, 0, 0, 'A'), value: encodeJson({ token: '1', metas: ['m'] }), version: '3' });
    expect(view.status()).toBe(first);
    view.apply({ type: 'put', key: keys.addr(JOB, 1), value: encodeJson({ nodeId: 'n', address: 'local://n', token: '5', incarnation: 1 }), version: '4' });
    view.apply({ type: 'put', key: keys.node(JOB, 'n'), value: encodeJson({ nodeId: 'n', address: 'local://n' }), version: '5' });
    view.apply({ type: 'put', key: keys.epoch(JOB), value: encodeEpoch(1), version: '6' });
    const second = view.status()!;
    expect(second).not.toBe(first);
    expect(first).toMatchObject({ epoch: 0, tasks: [{ task: 0 }, { task: 1, incarnations: 0, backups: [] }], nodes: [], standbys: [] });
    expect(first.tasks[1]).not.toHaveProperty('nodeId');
    expect(second).toMatchObject({ epoch: 1, tasks: [{ task: 0 }, { task: 1, nodeId: 'n', token: '5' }], nodes: [{ nodeId: 'n' }], standbys: [] });
    // Task 0 did not change: the new status shares its state rather than making it again.
    expect(second.tasks[0]).toBe(first.tasks[0]);
  });
});

describe('Controller.watch', () => {
  it('emits on what the status shows (an epoch), not on meta writes', async () => {
    const w = world();
    try {
      const ctl = createController({ coordinator: w.coordinator(), job: w.job, logger: silentLogger });
      await ctl.createJob({ numTasks: 2, linkTypes: ['A'] });
      const c = w.coordinator();
      const ac = new AbortController();
      const it = ctl.watch(ac.signal)[Symbol.asyncIterator]();
      expect((await it.next()).value).toMatchObject({ epoch: 0 });
      for (let i = 0; i < 5; i++) await c.create(keys.meta(w.job, 1, 0, 0, `L${i}`), encodeJson({ token: '1', metas: ['m'] }));
      const e = (await c.get(keys.epoch(w.job)))!;
      await c.update(keys.epoch(w.job), encodeEpoch(1), e.version);
      // The next status is the epoch's: the five meta writes before it emitted nothing.
      expect((await it.next()).value).toMatchObject({ epoch: 1 });
      ac.abort();
      expect((await it.next()).done).toBe(true);
    } finally {
      await w.close();
    }
  });
});
