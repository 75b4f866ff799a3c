import { afterEach, describe, expect, it } from 'vitest';
import { TaskGraphError } from '@taskgraph/api';
import type { WatchBatch, WatchEvent } from '@taskgraph/api';
import { ManualClock, eventually } from '@taskgraph/testkit';
import type { ConsulCoordinator } from '../src/index.js';
import { bytes, collect, consulFixture, patience, text } from './helpers.js';

const { consul, make } = consulFixture();
const controllers: AbortController[] = [];

// Registered after the fixture's hooks, so it runs before them: the watches end before their coordinators close.
afterEach(() => {
  for (const c of controllers.splice(0)) c.abort();
});

function watch(c: ConsulCoordinator, prefix: string, after?: string): { batches: WatchBatch[]; events: () => WatchEvent[]; done: Promise<void> } {
  const controller = new AbortController();
  controllers.push(controller);
  const { items, done } = collect(c.watch(prefix, after === undefined ? { signal: controller.signal } : { signal: controller.signal, after }));
  // Tests that expect the watch to fail await `done`; the others must not leave its rejection unhandled.
  done.catch(() => undefined);
  return { batches: items, events: () => items.flatMap((b) => b.events), done };
}

function describeEvents(events: readonly WatchEvent[]): string[] {
  return events.map((e) => (e.type === 'put' ? `put ${e.key}=${text(e.value)}` : `delete ${e.key}`));
}

/** The final state a level-triggered consumer builds from the events. */
function replay(start: ReadonlyMap<string, string>, events: readonly WatchEvent[]): Map<string, string> {
  const state = new Map(start);
  for (const e of events) {
    if (e.type === 'put') state.set(e.key, text(e.value));
    else state.delete(e.key);
  }
  return state;
}

async function state(c: ConsulCoordinator, prefix: string): Promise<Map<string, string>> {
  return new Map((await c.list(prefix)).entries.map((e) => [e.key, text(e.value)]));
}

describe('Consul watch', () => {
  it('turns blocking-query answers into put and delete events, in write order, with the versions', async () => {
    const c = await make();
    const start = await c.list('w/');
    const w = watch(c, 'w/', start.revision);
    const v1 = await c.create('w/a', bytes('1'));
    await eventually('the create', () => w.events().length === 1, patience);
    const v2 = await c.update('w/a', bytes('2'), v1);
    await eventually('the update', () => w.events().length === 2, patience);
    await c.delete('w/a', v2);
    await eventually('the delete', () => w.events().length === 3, patience);
    expect(w.events()).toEqual([
      { type: 'put', key: 'w/a', value: bytes('1'), version: v1 },
      { type: 'put', key: 'w/a', value: bytes('2'), version: v2 },
      { type: 'delete', key: 'w/a' },
    ]);
    const revisions = w.batches.map((b) => Number(b.revision));
    expect(revisions).toEqual([...revisions].sort((a, b) => a - b));
  });

  it('delivers changes made between list and watch: the list’s snapshot is the starting point', async () => {
    const c = await make();
    await c.create('l/gone', bytes('x'));
    const start = await c.list('l/');
    const gone = await c.get('l/gone');
    await c.delete('l/gone', gone!.version);
    await c.create('l/new', bytes('new'));
    const w = watch(c, 'l/', start.revision);
    await eventually('both changes', () => w.events().length >= 2, patience);
    expect(describeEvents(w.events())).toEqual(['delete l/gone', 'put l/new=new']);
  });

  it('resumes after a batch’s revision, and after a list of a broader prefix', async () => {
    const c = await make();
    const first = watch(c, 'r/', (await c.list('r/')).revision);
    await c.create('r/1', bytes('1'));
    await eventually('a batch', () => first.batches.length === 1, patience);
    const resumeAt = first.batches[0]!.revision;
    await c.create('r/2', bytes('2'));
    const resumed = watch(c, 'r/', resumeAt);
    await eventually('the write after the batch', () => resumed.events().length === 1, patience);
    expect(describeEvents(resumed.events())).toEqual(['put r/2=2']);
    const broad = await c.list('r');
    await c.create('r/3', bytes('3'));
    const narrow = watch(c, 'r/', broad.revision);
    await eventually('the write after the broad list', () => narrow.events().length === 1, patience);
    expect(describeEvents(narrow.events())).toEqual(['put r/3=3']);
  });

  it('coalesces: many writes between two answers arrive as the final state of each key', async () => {
    const c = await make();
    const start = await c.list('co/');
    let v = await c.create('co/k', bytes('0'));
    for (let i = 1; i <= 20; i++) v = await c.update('co/k', bytes(String(i)), v);
    const tmp = await c.create('co/tmp', bytes('short'));
    await c.delete('co/tmp', tmp);
    const w = watch(c, 'co/', start.revision);
    await eventually('the first batch', () => w.events().length > 0, patience);
    expect(describeEvents(w.events())).toEqual(['put co/k=20']);
  });

  it('a revision this client never saw is accepted while the prefix is unchanged, else CompactedError', async () => {
    const writer = await make();
    const reader = await make({ namespace: writer.namespace });
    await writer.create('x/a', bytes('a'));
    const { revision } = await writer.list('x/');
    const blocking = consul.blockingQueries;
    const w = watch(reader, 'x/', revision);
    await eventually('the reader’s watch blocks', () => consul.blockingQueries === blocking + 1, patience);
    await writer.create('x/b', bytes('b'));
    await eventually('the write after the revision', () => w.events().length === 1, patience);
    const stale = watch(await make({ namespace: writer.namespace }), 'x/', revision);
    const err = await stale.done.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(TaskGraphError.is(err, 'COMPACTED')).toBe(true);
    expect(() => reader.watch('x/', { signal: new AbortController().signal, after: 'nonsense' })).toThrow(/revision/);
  });

  it('follows Consul’s index reset: after a restore that rewinds the index it re-diffs and keeps delivering', async () => {
    const c = await make();
    await c.create('ix/keep', bytes('old'));
    const saved = consul.snapshot();
    const start = await c.list('ix/');
    const w = watch(c, 'ix/', start.revision);
    const keep = await c.get('ix/keep');
    await c.update('ix/keep', bytes('new'), keep!.version);
    await c.create('ix/added', bytes('added'));
    await eventually('the writes before the restore', () => replay(new Map([['ix/keep', 'old']]), w.events()).get('ix/added') === 'added', patience);
    const highest = Math.max(...w.batches.map((b) => Number(b.revision)));
    consul.restore(saved, { rewindIndex: true });
    // The answer after the restore has a lower index: the watch re-diffs against what it had.
    await eventually('the restored state', () => {
      const s = replay(new Map([['ix/keep', 'old']]), w.events());
      return s.get('ix/keep') === 'old' && !s.has('ix/added');
    }, patience);
    // Later writes get indexes at or below what the watch saw before: a client that kept its old index would miss them.
    await c.create('ix/later', bytes('later'));
    expect(Number((await c.list('ix/')).revision)).toBeLessThanOrEqual(highest);
    await eventually('the write after the restore', () => replay(new Map([['ix/keep', 'old']]), w.events()).get('ix/later') === 'later', patience);
    expect(replay(new Map([['ix/keep', 'old']]), w.events())).toEqual(await state(c, 'ix/'));
  });

  it('follows a prefix index that goes backwards when tombstones are reaped', async () => {
    const c = await make();
    await c.create('tb/a', bytes('a'));
    const b = await c.create('tb/b', bytes('b'));
    const w = watch(c, 'tb/', (await c.list('tb/')).revision);
    await c.delete('tb/b', b);
    await eventually('the delete', () => w.events().length === 1, patience);
    consul.store.reapTombstones();
    await c.create('tb/c', bytes('c'));
    await eventually('the write after the reap', () => w.events().length === 2, patience);
    expect(describeEvents(w.events())).toEqual(['delete tb/b', 'put tb/c=c']);
  });

  it('rides out Consul going away and coming back, and delivers what changed meanwhile', async () => {
    const c = await make();
    const w = watch(c, 'down/', (await c.list('down/')).revision);
    await c.create('down/before', bytes('1'));
    await eventually('the first write', () => w.events().length === 1, patience);
    await consul.stop();
    // Not a wait for anything: Consul stays away for a while, and the watch's reads fail meanwhile.
    await new Promise((resolve) => setTimeout(resolve, 200));
    await consul.start();
    const writer = await make({ namespace: c.namespace });
    await writer.create('down/after', bytes('2'));
    await eventually('the write after the restart', () => w.events().length === 2, { timeoutMs: 20_000 });
    expect(describeEvents(w.events())).toEqual(['put down/before=1', 'put down/after=2']);
  });

  it('backs off on its clock while Consul refuses, instead of spinning', async () => {
    const clock = new ManualClock();
    const c = await make({ clock });
    consul.faults.unavailable = 'service-unavailable';
    // Only this watch's reads count: nothing else may touch its namespace.
    let reads = 0;
    const stop = consul.onRequest(({ path }) => {
      if (path.includes(c.namespace)) reads++;
    });
    try {
      const w = watch(c, 'bo/');
      await eventually('the first refused read', () => reads >= 1, patience);
      // A deliberate negative check: while the clock stands still, no read may follow.
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(reads, 'no read again until the clock moves').toBe(1);
      await clock.advance(10_000);
      await eventually('a retry once the clock moved', () => reads > 1, patience);
      consul.faults.unavailable = false;
      // The watch retries on its clock: move it on until a read gets through.
      await eventually('the watch reads again', async () => {
        if (consul.blockingQueries === 0) await clock.advance(10_000);
        return consul.blockingQueries > 0;
      }, patience);
      await eventually('the watch is blocking again', () => consul.blockingQueries === 1, patience);
      await c.create('bo/x', bytes('x'));
      await eventually('the write', () => w.events().length === 1, patience);
    } finally {
      stop();
    }
  });
});
