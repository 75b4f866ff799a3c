import { describe, expect, it } from 'vitest';
import { ConflictError, TaskGraphError } from '@taskgraph/api';
import type { WatchBatch } from '@taskgraph/api';
import { DeferringClock, ManualClock, track } from '@taskgraph/testkit';
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
      // Another name: a tryAcquire while the session's acquire of L is in flight answers undefined (the session waits for it).
      c.tryAcquire('M', s),
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

const text = (b: Uint8Array | undefined): string | undefined => (b === undefined ? undefined : new TextDecoder().decode(b));

describe('faults after the call is applied (applied: true)', () => {
  it('create: the key is stored, the caller gets the error; a retry meets its own key', async () => {
    const store = new MemoryStore();
    const a = new MemoryCoordinator({ store });
    const b = new MemoryCoordinator({ store });
    const fault = a.faults.add({ op: 'create', key: 'k', applied: true });
    const err = await rejection(a.create('k', bytes('v')));
    expect(code(err)).toBe('UNAVAILABLE');
    expect((err as Error).message).toBe('injected fault: create "k"');
    expect(fault.hits).toBe(1);
    expect(store.revision).toBe(1);
    const seen = await b.get('k');
    expect(text(seen?.value)).toBe('v');
    expect(seen?.version).toBe((await b.list('k')).revision);
    // The unknown outcome made visible: the retry finds the key its first try made.
    expect(code(await rejection(a.create('k', bytes('v'))))).toBe('ALREADY_EXISTS');
    expect(fault.hits).toBe(1);
  });

  it('update: the new value is stored, the caller gets the error', async () => {
    const store = new MemoryStore();
    const a = new MemoryCoordinator({ store });
    const b = new MemoryCoordinator({ store });
    const v1 = await a.create('k', bytes('old'));
    a.faults.add({ op: 'update', applied: true, error: new ConflictError('injected after commit') });
    const err = await rejection(a.update('k', bytes('new'), v1));
    expect(code(err)).toBe('CONFLICT');
    expect((err as Error).message).toBe('injected after commit');
    const seen = await b.get('k');
    expect(text(seen?.value)).toBe('new');
    expect(seen?.version).not.toBe(v1);
    expect(store.revision).toBe(2);
  });

  it("tryAcquire: the lock is held by the caller's session, though the caller got an error; the retry adopts it", async () => {
    const store = new MemoryStore();
    const a = new MemoryCoordinator({ store });
    const b = new MemoryCoordinator({ store });
    const sa = await a.openSession({ ttlMs: 60_000 });
    const sb = await b.openSession({ ttlMs: 60_000 });
    store.faults.add({ op: 'tryAcquire', key: 'L', applied: true, times: 1 });
    expect(code(await rejection(a.tryAcquire('L', sa, { owner: 'a' })))).toBe('UNAVAILABLE');
    const held = store.lockHolder('L');
    expect(held).toMatchObject({ sessionId: sa.id, owner: 'a' });
    expect((await b.holder('L'))?.owner).toBe('a');
    expect(await b.tryAcquire('L', sb, { owner: 'b' })).toBeUndefined();
    // The retry (core's retryStore) gets the lock its first try was granted: the same token, not a new grant.
    const revision = store.revision;
    const lock = await a.tryAcquire('L', sa, { owner: 'a' });
    expect(lock).toBeDefined();
    expect(lock?.token).toBe(held?.token);
    expect(lock?.owner).toBe('a');
    expect(lock?.lost.aborted).toBe(false);
    expect(store.revision).toBe(revision);
    // While that Lock is live the session does not take the lock twice.
    expect(await a.tryAcquire('L', sa, { owner: 'a' })).toBeUndefined();
    await lock?.release();
    expect(store.lockHolder('L')).toBeUndefined();
    const lb = await b.tryAcquire('L', sb, { owner: 'b' });
    expect(lb?.token).toBeGreaterThan(held?.token ?? 0n);
    await lb?.release();
    await a.close();
    await b.close();
  });

  it('acquire: granted, the caller gets the error and the lock stays held by its session; a retry adopts it at once, a second one waits', async () => {
    const store = new MemoryStore();
    const a = new MemoryCoordinator({ store });
    const b = new MemoryCoordinator({ store });
    const sa = await a.openSession({ ttlMs: 60_000 });
    const sb = await b.openSession({ ttlMs: 60_000 });
    const fault = a.faults.add({ op: 'acquire', key: 'L', applied: true, times: 1 });
    expect(code(await rejection(a.acquire('L', sa, { owner: 'a' })))).toBe('UNAVAILABLE');
    expect(fault.hits).toBe(1);
    const held = store.lockHolder('L');
    expect(held).toMatchObject({ sessionId: sa.id, owner: 'a' });
    const waiting = track(b.acquire('L', sb, { owner: 'b' }));
    await settle();
    expect(waiting.done()).toBe(false);
    const lock = await a.acquire('L', sa, { owner: 'a' });
    expect(lock.token).toBe(held?.token);
    expect(lock.owner).toBe('a');
    // A live Lock: a second acquire of the session waits behind it, as before; tryAcquire declines.
    const again = track(a.acquire('L', sa, { owner: 'a' }));
    await settle();
    expect(again.done()).toBe(false);
    expect(await a.tryAcquire('L', sa)).toBeUndefined();
    await lock.release();
    await settle();
    expect(waiting.value()?.token).toBeGreaterThan(held?.token ?? 0n);
    expect(again.done()).toBe(false);
    await waiting.value()?.release();
    await settle();
    expect(again.value()?.token).toBeGreaterThan(waiting.value()?.token ?? 0n);
    await again.value()?.release();
    expect(store.lockHolder('L')).toBeUndefined();
    await a.close();
    await b.close();
  });

  it('an acquire granted later, while it waited, can lose its answer too; the retry adopts the lock', async () => {
    const store = new MemoryStore();
    const a = new MemoryCoordinator({ store });
    const b = new MemoryCoordinator({ store });
    const sa = await a.openSession({ ttlMs: 60_000 });
    const sb = await b.openSession({ ttlMs: 60_000 });
    const lb = await b.acquire('L', sb);
    a.faults.add({ op: 'acquire', applied: true, times: 1 });
    const waiting = track(a.acquire('L', sa, { owner: 'a' }));
    await settle();
    expect(waiting.done()).toBe(false);
    await lb.release();
    await settle();
    expect(code(waiting.error())).toBe('UNAVAILABLE');
    const held = store.lockHolder('L');
    expect(held?.sessionId).toBe(sa.id);
    const lock = await a.tryAcquire('L', sa);
    expect(lock?.token).toBe(held?.token);
    await lock?.release();
    expect(store.lockHolder('L')).toBeUndefined();
    await a.close();
    await b.close();
  });

  it('a tryAcquire whose answer was lost is adopted by an acquire, with the owner the store recorded, ahead of waiters of other sessions', async () => {
    const store = new MemoryStore();
    const a = new MemoryCoordinator({ store });
    const b = new MemoryCoordinator({ store });
    const sa = await a.openSession({ ttlMs: 60_000 });
    const sb = await b.openSession({ ttlMs: 60_000 });
    a.faults.add({ op: 'tryAcquire', applied: true, times: 1 });
    expect(code(await rejection(a.tryAcquire('L', sa, { owner: 'first' })))).toBe('UNAVAILABLE');
    const waiting = track(b.acquire('L', sb));
    await settle();
    expect(store.lockWaiters('L')).toBe(1);
    // The session holds the lock, whoever it says it is now.
    const lock = await a.acquire('L', sa, { owner: 'second' });
    expect(lock.owner).toBe('first');
    expect(lock.token).toBe(store.lockHolder('L')?.token);
    expect(await b.holder('L')).toEqual({ owner: 'first', token: lock.token });
    expect(waiting.done()).toBe(false);
    await lock.release();
    await settle();
    expect(waiting.value()?.token).toBeGreaterThan(lock.token);
    await waiting.value()?.release();
    await a.close();
    await b.close();
  });

  it('the adopted Lock ends with its session like any other', async () => {
    const store = new MemoryStore();
    const a = new MemoryCoordinator({ store });
    const sa = await a.openSession({ ttlMs: 60_000 });
    a.faults.add({ op: 'tryAcquire', applied: true, times: 1 });
    await rejection(a.tryAcquire('L', sa));
    const lock = await a.tryAcquire('L', sa);
    expect(lock).toBeDefined();
    a.expireSession(sa);
    await settle();
    expect(code(lock?.lost.reason)).toBe('LEASE_LOST');
    expect(store.lockHolder('L')).toBeUndefined();
    await a.close();
  });

  it('release: the lock passes on, the caller gets the error and its lock stays unreleased until a retry', async () => {
    const store = new MemoryStore();
    const a = new MemoryCoordinator({ store });
    const s = await a.openSession({ ttlMs: 60_000 });
    const lock = await a.acquire('L', s);
    a.faults.add({ op: 'release', applied: true, times: 1 });
    expect(code(await rejection(lock.release()))).toBe('UNAVAILABLE');
    expect(store.lockHolder('L')).toBeUndefined();
    expect(lock.lost.aborted).toBe(false);
    await lock.release();
    expect(code(lock.lost.reason)).toBe('CLOSED');
    await a.close();
  });

  it('`times` is honoured: that many calls fail (each applied), then the fault clears itself', async () => {
    const c = new MemoryCoordinator();
    const fault = c.faults.add({ op: 'create', applied: true, times: 2 });
    expect(code(await rejection(c.create('k1', bytes('1'))))).toBe('UNAVAILABLE');
    expect(code(await rejection(c.create('k2', bytes('2'))))).toBe('UNAVAILABLE');
    expect(fault.hits).toBe(2);
    expect(fault.cleared).toBe(true);
    expect(c.faults.size).toBe(0);
    await c.create('k3', bytes('3'));
    expect((await c.list('k')).entries.map((e) => [e.key, text(e.value)])).toEqual([
      ['k1', '1'],
      ['k2', '2'],
      ['k3', '3'],
    ]);
  });

  it("with '*', hits only the calls that change the store: not get, list, holder, watch, openSession", async () => {
    const c = new MemoryCoordinator();
    const v1 = await c.create('k/1', bytes('1'));
    await c.create('k/2', bytes('2'));
    const fault = c.faults.add({ op: '*', applied: true });
    expect(text((await c.get('k/1'))?.value)).toBe('1');
    expect((await c.list('k/')).entries).toHaveLength(2);
    expect(await c.holder('L')).toBeUndefined();
    const s = await c.openSession({ ttlMs: 60_000 });
    const controller = new AbortController();
    const watch = c.watch('k/', { signal: controller.signal, after: '0' })[Symbol.asyncIterator]();
    expect((await watch.next()).value?.events[0]?.key).toBe('k/1');
    controller.abort();
    expect(fault.hits).toBe(0);
    expect(code(await rejection(c.delete('k/1', v1)))).toBe('UNAVAILABLE');
    expect(await c.get('k/1')).toBeUndefined();
    expect(code(await rejection(c.deletePrefix('k/')))).toBe('UNAVAILABLE');
    expect((await c.list('k/')).entries).toEqual([]);
    expect(fault.hits).toBe(2);
    await s.close();
    await c.close();
  });

  it('a store fault with applied: true matches stored keys and hits every client', async () => {
    const store = new MemoryStore();
    const a = new MemoryCoordinator({ store, namespace: 'a' });
    const b = new MemoryCoordinator({ store, namespace: 'b' });
    store.faults.add({ op: 'create', key: 'a/**', applied: true });
    expect(code(await rejection(a.create('k', bytes('v'))))).toBe('UNAVAILABLE');
    await b.create('k', bytes('v'));
    expect(store.entries().map((e) => e.key)).toEqual(['a/k', 'b/k']);
  });

  it('naming an operation that changes nothing, or a non-boolean applied, is InvalidArgument at add', () => {
    const store = new MemoryStore();
    const c = new MemoryCoordinator({ store });
    for (const op of ['get', 'list', 'watch', 'openSession', 'keepalive', 'closeSession', 'holder'] as const) {
      let caught: unknown;
      try {
        c.faults.add({ op, applied: true });
      } catch (err) {
        caught = err;
      }
      expect(code(caught), op).toBe('INVALID_ARGUMENT');
      expect((caught as Error).message, op).toContain(`cannot hit ${op};`);
    }
    expect(() => c.faults.add({ op: ['create', 'list'], applied: true })).toThrow(/cannot hit list;/);
    expect(() => store.faults.add({ op: 'get', applied: true })).toThrow(/cannot hit get;/);
    expect(() => c.faults.add({ op: 'create', applied: 'yes' as unknown as boolean })).toThrow(/applied must be a boolean/);
    expect(c.faults.size).toBe(0);
    expect(store.faults.size).toBe(0);
    // applied: false is the plain fault, allowed on every operation.
    c.faults.add({ op: 'get', applied: false }).clear();
  });
});


/** Several real turns of the event loop: long enough for anything not waiting on the clock. */
async function turns(n = 5): Promise<void> {
  for (let i = 0; i < n; i++) await settle();
}

describe('a client on a clock of its own', () => {
  it("gets each call's outcome one turn of its clock later", async () => {
    const store = new MemoryStore();
    const writer = new MemoryCoordinator({ store });
    await writer.create('k', bytes('v'));
    const clock = new DeferringClock();
    const c = new MemoryCoordinator({ store, clock });
    const got = track(c.get('k'));
    await turns();
    expect(got.done()).toBe(false);
    expect(clock.deferred).toHaveLength(1);
    expect(clock.runDeferred()).toBe(1);
    await settle();
    expect(got.done()).toBe(true);
    expect(text(got.value()?.value)).toBe('v');
    expect(got.value()?.version).toBe((await writer.get('k'))?.version);
  });

  it('a write is applied at the store at once; its outcome (an error too) waits for the client\'s clock', async () => {
    const store = new MemoryStore();
    const writer = new MemoryCoordinator({ store });
    const clock = new DeferringClock();
    const c = new MemoryCoordinator({ store, clock });
    const created = track(c.create('k', bytes('v')));
    await turns();
    expect(created.done()).toBe(false);
    expect(text((await writer.get('k'))?.value)).toBe('v');
    clock.runDeferred();
    await settle();
    expect(created.value()).toBe((await writer.get('k'))?.version);
    const again = track(c.create('k', bytes('w')));
    await turns();
    expect(again.done()).toBe(false);
    clock.runDeferred();
    await settle();
    expect(code(again.error())).toBe('ALREADY_EXISTS');
  });

  it('a client sharing the store\'s clock is answered without waiting for it', async () => {
    const clock = new DeferringClock();
    const store = new MemoryStore({ clock });
    const c = new MemoryCoordinator({ store, clock });
    const got = track(c.get('k'));
    await turns();
    expect(got.done()).toBe(true);
    expect(got.value()).toBeUndefined();
  });

  it('wakes its watches on its own clock', async () => {
    const store = new MemoryStore();
    const writer = new MemoryCoordinator({ store });
    const clock = new DeferringClock();
    const c = new MemoryCoordinator({ store, clock });
    const controller = new AbortController();
    const it = c.watch('w/', { signal: controller.signal })[Symbol.asyncIterator]();
    const next = track(it.next());
    await turns();
    await writer.create('w/1', bytes('1'));
    await turns();
    expect(next.done()).toBe(false);
    expect(clock.runDeferred()).toBe(1);
    await turns();
    expect((next.value()?.value as WatchBatch | undefined)?.events.map((e) => e.key)).toEqual(['w/1']);
    controller.abort();
    expect((await it.next()).done).toBe(true);
  });

  it("hears the store's word that its session ended on its own clock", async () => {
    const store = new MemoryStore();
    const clock = new DeferringClock();
    const c = new MemoryCoordinator({ store, clock });
    const opening = track(c.openSession({ ttlMs: 60_000 }));
    await turns();
    clock.runDeferred();
    await settle();
    const s = opening.value()!;
    expect(s).toBeDefined();
    expect(store.expireSession(s.id)).toBe(true);
    await turns();
    expect(s.lost.aborted).toBe(false);
    expect(clock.runDeferred()).toBe(1);
    expect(code(s.lost.reason)).toBe('LEASE_LOST');
    const closing = track(c.close());
    for (let i = 0; i < 10 && !closing.done(); i++) {
      clock.runDeferred();
      await settle();
    }
    expect(closing.done()).toBe(true);
    expect(clock.pendingTimers()).toEqual([]);
  });
});
