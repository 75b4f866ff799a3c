import { describe, expect, it } from 'vitest';
import { ConflictError, TaskGraphError } from '@taskgraph/api';
import type { WatchBatch } from '@taskgraph/api';
import { ManualClock } from '@taskgraph/testkit';
import { MemoryCoordinator, MemoryStore, globToRegExp } from '../src/index.js';

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
const code = (e: unknown): string | undefined => (TaskGraphError.is(e) ? e.code : undefined);
const rejection = async (p: Promise<unknown>): Promise<unknown> => {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
};
/** Lets every queued promise job run, so "still pending" means pending. */
const settle = (): Promise<void> => new Promise((r) => setImmediate(r));

function track<T>(p: Promise<T>): { done: () => boolean; value: () => T | undefined; error: () => unknown } {
  let done = false;
  let value: T | undefined;
  let error: unknown;
  void p.then(
    (v) => {
      value = v;
      done = true;
    },
    (e: unknown) => {
      error = e;
      done = true;
    },
  );
  return { done: () => done, value: () => value, error: () => error };
}

describe('globs', () => {
  it('* stays within a segment, ** crosses them, ? is one character, the rest is literal', () => {
    expect(globToRegExp('a/*').test('a/b')).toBe(true);
    expect(globToRegExp('a/*').test('a/b/c')).toBe(false);
    expect(globToRegExp('a/**').test('a/b/c')).toBe(true);
    expect(globToRegExp('a/?').test('a/bc')).toBe(false);
    expect(globToRegExp('a.b+(c)').test('a.b+(c)')).toBe(true);
    expect(globToRegExp('a.b').test('axb')).toBe(false);
  });
});

describe('injected errors', () => {
  it('fail one operation on matching keys with the given error, N times', async () => {
    const c = new MemoryCoordinator();
    await c.create('jobs/a', bytes('a'));
    await c.create('jobs/a/deep', bytes('a'));
    const fault = c.faults.add({ op: 'get', key: 'jobs/*', error: new ConflictError('injected conflict'), times: 2 });
    expect(code(await rejection(c.get('jobs/a')))).toBe('CONFLICT');
    expect(await c.get('jobs/a/deep')).toBeDefined();
    expect(await c.list('jobs/')).toBeDefined();
    expect(code(await rejection(c.get('jobs/b')))).toBe('CONFLICT');
    expect(fault.hits).toBe(2);
    expect(fault.cleared).toBe(true);
    expect(await c.get('jobs/a')).toBeDefined();
    expect(c.faults.size).toBe(0);
  });

  it('until cleared, by RegExp, for several operations, with a fresh error per call; the default is Unavailable', async () => {
    const c = new MemoryCoordinator();
    const made: Error[] = [];
    const fault = c.faults.add({
      op: ['create', 'update'],
      key: /^x\//,
      error: () => {
        const e = new ConflictError('fresh');
        made.push(e);
        return e;
      },
    });
    for (let i = 0; i < 3; i++) expect(code(await rejection(c.create(`x/${i}`, bytes('v'))))).toBe('CONFLICT');
    expect(new Set(made).size).toBe(3);
    await c.create('y/1', bytes('v'));
    fault.clear();
    await c.create('x/1', bytes('v'));
    c.faults.add({ op: '*' });
    const err = await rejection(c.holder('anything'));
    expect(code(err)).toBe('UNAVAILABLE');
    expect((err as TaskGraphError).retryable).toBe(true);
    c.faults.clear();
    expect(await c.holder('anything')).toBeUndefined();
  });

  it('a failed call changes nothing', async () => {
    const c = new MemoryCoordinator();
    const v = await c.create('k', bytes('1'));
    c.faults.add({ op: 'update', times: 1 });
    await rejection(c.update('k', bytes('2'), v));
    expect(c.store.revision).toBe(1);
    expect((await c.get('k'))?.version).toBe(v);
  });

  it('store faults match stored keys (namespace included) and hit every client', async () => {
    const store = new MemoryStore();
    const a = new MemoryCoordinator({ store, namespace: 'a' });
    const b = new MemoryCoordinator({ store, namespace: 'b' });
    store.faults.add({ op: 'get', key: 'a/**' });
    expect(code(await rejection(a.get('k')))).toBe('UNAVAILABLE');
    expect(await b.get('k')).toBeUndefined();
    const other = new MemoryCoordinator({ store, namespace: 'a' });
    expect(code(await rejection(other.get('k/deep')))).toBe('UNAVAILABLE');
  });

  it('a watch fault is thrown by the iterator when it starts', async () => {
    const c = new MemoryCoordinator();
    c.faults.add({ op: 'watch', key: 'w/', times: 1 });
    const controller = new AbortController();
    const err = await rejection(
      (async () => {
        for await (const _b of c.watch('w/', { signal: controller.signal })) break;
      })(),
    );
    expect(code(err)).toBe('UNAVAILABLE');
  });

  it('bad fault specs are InvalidArgument', () => {
    const c = new MemoryCoordinator();
    expect(() => c.faults.add({ op: 'fetch' as 'get' })).toThrow(/unknown fault op "fetch"/);
    expect(() => c.faults.add({ op: [] })).toThrow(/must not be empty/);
    expect(() => c.faults.add({ op: 'get', times: 0 })).toThrow(/positive integer/);
    expect(() => c.faults.add({ op: 'get', key: 5 as unknown as string })).toThrow(/glob string or a RegExp/);
  });
});

describe('unreachable clients', () => {
  it('every call rejects with Unavailable and nothing is applied', async () => {
    const c = new MemoryCoordinator();
    const s = await c.openSession({ ttlMs: 60_000 });
    const v = await c.create('k', bytes('v'));
    c.setUnreachable(true);
    expect(c.unreachable).toBe(true);
    const calls: Promise<unknown>[] = [
      c.get('k'),
      c.list('k'),
      c.create('k2', bytes('v')),
      c.update('k', bytes('w'), v),
      c.delete('k', v),
      c.deletePrefix('k'),
      c.openSession({ ttlMs: 1000 }),
      c.acquire('L', s),
      c.tryAcquire('L', s),
      c.holder('L'),
    ];
    for (const call of calls) expect(code(await rejection(call))).toBe('UNAVAILABLE');
    expect(c.store.revision).toBe(1);
    c.setUnreachable(false);
    expect((await c.get('k'))?.version).toBe(v);
    await c.close();
  });

  it('a watch stalls while cut off and resumes with nothing missed', async () => {
    const store = new MemoryStore();
    const watcher = new MemoryCoordinator({ store });
    const writer = new MemoryCoordinator({ store });
    const controller = new AbortController();
    const it = watcher.watch('w/', { signal: controller.signal, after: (await watcher.list('w/')).revision })[Symbol.asyncIterator]();
    await writer.create('w/1', bytes('1'));
    expect((await it.next()).value?.events[0]?.key).toBe('w/1');
    watcher.setUnreachable(true);
    const next = track(it.next());
    await writer.create('w/2', bytes('2'));
    await writer.create('w/3', bytes('3'));
    await settle();
    expect(next.done()).toBe(false);
    watcher.setUnreachable(false);
    await settle();
    expect(next.value()?.value?.events[0]?.key).toBe('w/2');
    expect(((await it.next()).value as WatchBatch).events[0]?.key).toBe('w/3');
    controller.abort();
    expect((await it.next()).done).toBe(true);
    expect(watcher.activeWatches).toBe(0);
  });

  it('a watch cut off past the history limit throws Compacted when it is reachable again', async () => {
    const store = new MemoryStore({ historyLimit: 3 });
    const watcher = new MemoryCoordinator({ store });
    const writer = new MemoryCoordinator({ store });
    const controller = new AbortController();
    const it = watcher.watch('w/', { signal: controller.signal })[Symbol.asyncIterator]();
    watcher.setUnreachable(true);
    const next = track(it.next());
    let v = await writer.create('w/k', bytes('0'));
    for (let i = 1; i < 6; i++) v = await writer.update('w/k', bytes(String(i)), v);
    watcher.setUnreachable(false);
    await settle();
    expect(code(next.error())).toBe('COMPACTED');
    expect(watcher.activeWatches).toBe(0);
  });
});

describe('freezing', () => {
  it('a frozen client\'s calls hang until it is unfrozen, then run in order', async () => {
    const c = new MemoryCoordinator();
    c.freeze();
    const create = track(c.create('k', bytes('v')));
    const get = track(c.get('k'));
    await settle();
    expect([create.done(), get.done()]).toEqual([false, false]);
    expect(c.store.revision).toBe(0);
    c.unfreeze();
    await settle();
    expect(create.done()).toBe(true);
    expect(get.value()?.version).toBe(create.value());
  });

  it('a store-wide freeze hangs every client; closing a client ends its frozen calls with Closed', async () => {
    const store = new MemoryStore();
    const a = new MemoryCoordinator({ store });
    const b = new MemoryCoordinator({ store });
    store.freeze();
    expect(store.frozen).toBe(true);
    const ca = track(a.list('x/'));
    const cb = track(b.get('x'));
    await settle();
    expect([ca.done(), cb.done()]).toEqual([false, false]);
    await a.close();
    await settle();
    expect(code(ca.error())).toBe('CLOSED');
    expect(cb.done()).toBe(false);
    store.unfreeze();
    await settle();
    expect(cb.done()).toBe(true);
    expect(cb.value()).toBeUndefined();
  });

  it('a frozen acquire can still be given up by its signal', async () => {
    const c = new MemoryCoordinator();
    const s = await c.openSession({ ttlMs: 60_000 });
    c.freeze();
    const controller = new AbortController();
    const acquiring = track(c.acquire('L', s, { signal: controller.signal }));
    await settle();
    controller.abort();
    await settle();
    expect(code(acquiring.error())).toBe('ABORTED');
    c.unfreeze();
    expect(await c.holder('L')).toBeUndefined();
    await c.close();
  });

  it('closing a frozen client does not wait for the store: sessions then expire by TTL', async () => {
    const clock = new ManualClock();
    const store = new MemoryStore({ clock });
    const c = new MemoryCoordinator({ store });
    const s = await c.openSession({ ttlMs: 1000 });
    c.freeze();
    await c.close();
    expect(code(s.lost.reason)).toBe('CLOSED');
    expect(store.hasSession(s.id)).toBe(true);
    await clock.advance(1000);
    expect(store.hasSession(s.id)).toBe(false);
  });
});
