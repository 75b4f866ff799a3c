import { describe, expect, it } from 'vitest';
import { TaskGraphError } from '@taskgraph/api';
import type { Lock, WatchBatch } from '@taskgraph/api';
import { MEMORY_CAPS, MemoryCoordinator, MemoryStore } from '../src/index.js';

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
const code = (e: unknown): string | undefined => (TaskGraphError.is(e) ? e.code : undefined);
const settle = (): Promise<void> => new Promise((r) => setImmediate(r));
const rejection = async (p: Promise<unknown> | (() => unknown)): Promise<unknown> => {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
};

async function take(it: AsyncIterator<WatchBatch>): Promise<WatchBatch> {
  const r = await it.next();
  if (r.done) throw new Error('the watch ended');
  return r.value;
}

describe('MemoryCoordinator', () => {
  it('declares the memory caps', () => {
    expect(new MemoryCoordinator().caps).toEqual({
      backend: 'memory',
      watchCoalesces: false,
      ttlRangeMs: [100, 3_600_000],
      ttlGranularityMs: 1,
      expiryFactor: 1,
      maxValueBytes: 1_572_864,
      maxKeyBytes: 1024,
    });
    expect(Object.isFrozen(MEMORY_CAPS)).toBe(true);
  });

  it('stores keys as <namespace>/<key>', async () => {
    const store = new MemoryStore();
    const c = new MemoryCoordinator({ store, namespace: 'jobs/j1' });
    await c.create('spec', bytes('{}'));
    expect(store.entries().map((e) => e.key)).toEqual(['jobs/j1/spec']);
    expect((await c.list('sp')).entries.map((e) => e.key)).toEqual(['spec']);
    expect(() => new MemoryCoordinator({ namespace: 'a/../b' })).toThrow(/namespace/);
  });

  it('deletePrefix and a session ending are each one watch batch', async () => {
    const c = new MemoryCoordinator();
    const s = await c.openSession({ ttlMs: 60_000 });
    for (const k of ['d/1', 'd/2', 'd/3']) await c.create(k, bytes(k));
    for (const k of ['e/1', 'e/2']) await c.create(k, bytes(k), { session: s });
    const watch = c.watch('d/', { signal: new AbortController().signal, after: c.store.revision.toString() });
    const w2 = c.watch('e/', { signal: new AbortController().signal, after: c.store.revision.toString() });
    const d = watch[Symbol.asyncIterator]();
    const e = w2[Symbol.asyncIterator]();
    await c.deletePrefix('d/');
    await s.close();
    expect((await take(d)).events).toEqual([
      { type: 'delete', key: 'd/1' },
      { type: 'delete', key: 'd/2' },
      { type: 'delete', key: 'd/3' },
    ]);
    expect((await take(e)).events).toEqual([
      { type: 'delete', key: 'e/1' },
      { type: 'delete', key: 'e/2' },
    ]);
    await c.close();
  });

  it('watch input: a signal is required, revisions must be ours and not in the future', async () => {
    const c = new MemoryCoordinator();
    expect(code(await rejection(() => c.watch('a/', {} as never)))).toBe('INVALID_ARGUMENT');
    expect(code(await rejection(() => c.watch('a/', { signal: new AbortController().signal, after: 'abc' })))).toBe('INVALID_ARGUMENT');
    expect(code(await rejection(() => c.watch('a/', { signal: new AbortController().signal, after: '-1' })))).toBe('INVALID_ARGUMENT');
    const future = c.watch('a/', { signal: new AbortController().signal, after: '5' })[Symbol.asyncIterator]();
    expect(code(await rejection(future.next()))).toBe('INVALID_ARGUMENT');
  });

  it('a watch "from now" starts at the call, not at the first next()', async () => {
    const c = new MemoryCoordinator();
    const controller = new AbortController();
    const it = c.watch('n/', { signal: controller.signal })[Symbol.asyncIterator]();
    await c.create('n/1', bytes('1'));
    expect((await take(it)).events[0]?.key).toBe('n/1');
    controller.abort();
  });

  it('stopped watches leave no waiters on the store', async () => {
    const c = new MemoryCoordinator();
    const controllers = Array.from({ length: 3 }, () => new AbortController());
    const its = controllers.map((ctl) => c.watch('x/', { signal: ctl.signal })[Symbol.asyncIterator]());
    const pending = its.map((it) => it.next());
    await settle();
    expect(c.activeWatches).toBe(3);
    expect(c.store.watchers).toBe(3);
    for (const ctl of controllers) ctl.abort();
    for (const p of pending) expect((await p).done).toBe(true);
    expect(c.activeWatches).toBe(0);
    expect(c.store.watchers).toBe(0);
    expect(c.store.pulse.waiting).toBe(0);
  });

  it('a watch from a past revision reads the history, then what commits meanwhile, nothing missed or repeated', async () => {
    const c = new MemoryCoordinator();
    const first = await c.create('h/0', bytes('0'));
    for (let i = 1; i < 4; i++) await c.create(`h/${i}`, bytes(String(i)));
    const controller = new AbortController();
    const it = c.watch('h/', { signal: controller.signal, after: first })[Symbol.asyncIterator]();
    const keys: string[] = [];
    keys.push(...(await take(it)).events.map((e) => e.key));
    // Written after the watch started reading its history: they come after it, in order.
    await c.create('h/4', bytes('4'));
    await c.create('other/x', bytes('x'));
    await c.create('h/5', bytes('5'));
    while (keys.length < 5) keys.push(...(await take(it)).events.map((e) => e.key));
    expect(keys).toEqual(['h/1', 'h/2', 'h/3', 'h/4', 'h/5']);
    controller.abort();
    expect((await it.next()).done).toBe(true);
  });

  it('a consumer that stops reading for more than historyLimit revisions gets Compacted, as one reading the history would', async () => {
    const store = new MemoryStore({ historyLimit: 3 });
    const c = new MemoryCoordinator({ store });
    const controller = new AbortController();
    const it = c.watch('s/', { signal: controller.signal })[Symbol.asyncIterator]();
    let v = await c.create('s/k', bytes('0'));
    expect((await take(it)).events[0]?.key).toBe('s/k');
    for (let i = 1; i < 6; i++) v = await c.update('s/k', bytes(String(i)), v);
    expect(code(await rejection(it.next()))).toBe('COMPACTED');
    expect(c.activeWatches).toBe(0);
    expect(store.watchers).toBe(0);
  });

  it('watch values are copies', async () => {
    const c = new MemoryCoordinator();
    const controller = new AbortController();
    const it = c.watch('v/', { signal: controller.signal })[Symbol.asyncIterator]();
    await c.create('v/1', bytes('abc'));
    const batch = await take(it);
    const event = batch.events[0];
    if (event?.type === 'put') event.value[0] = 0;
    expect(new TextDecoder().decode((await c.get('v/1'))?.value)).toBe('abc');
    controller.abort();
  });

  it('a session belongs to the client that opened it', async () => {
    const store = new MemoryStore();
    const a = new MemoryCoordinator({ store });
    const b = new MemoryCoordinator({ store });
    const s = await a.openSession({ ttlMs: 60_000 });
    expect(code(await rejection(b.create('k', bytes('v'), { session: s })))).toBe('INVALID_ARGUMENT');
    expect(code(await rejection(b.acquire('L', s)))).toBe('INVALID_ARGUMENT');
    expect(code(await rejection(b.tryAcquire('L', s)))).toBe('INVALID_ARGUMENT');
    expect(code(await rejection(a.acquire('L', s, { owner: '' })))).toBe('INVALID_ARGUMENT');
    await a.close();
  });

  it('locks are granted first come, first served', async () => {
    const store = new MemoryStore();
    const clients = Array.from({ length: 4 }, () => new MemoryCoordinator({ store }));
    const sessions = await Promise.all(clients.map((c) => c.openSession({ ttlMs: 60_000 })));
    const first = await (clients[0] as MemoryCoordinator).acquire('L', sessions[0] as never);
    const order: number[] = [];
    const waits: Promise<Lock>[] = [];
    for (const i of [3, 1, 2]) {
      waits.push(
        (clients[i] as MemoryCoordinator).acquire('L', sessions[i] as never).then((l) => {
          order.push(i);
          return l;
        }),
      );
      await settle();
    }
    expect(store.lockWaiters('L')).toBe(3);
    let held: Lock = first;
    for (let n = 0; n < 3; n++) {
      await held.release();
      await settle();
      const next = await waits[n];
      expect(next).toBeDefined();
      held = next as Lock;
    }
    expect(order).toEqual([3, 1, 2]);
    for (const c of clients) await c.close();
  });

  it('an aborted acquire leaves the queue; tryAcquire waits behind nobody', async () => {
    const store = new MemoryStore();
    const a = new MemoryCoordinator({ store });
    const b = new MemoryCoordinator({ store });
    const sa = await a.openSession({ ttlMs: 60_000 });
    const sb = await b.openSession({ ttlMs: 60_000 });
    const la = await a.acquire('L', sa);
    const controller = new AbortController();
    const waiting = b.acquire('L', sb, { signal: controller.signal });
    await settle();
    expect(store.lockWaiters('L')).toBe(1);
    controller.abort(new Error('gave up'));
    const err = await rejection(waiting);
    expect(code(err)).toBe('ABORTED');
    expect(store.lockWaiters('L')).toBe(0);
    await la.release();
    expect(await b.holder('L')).toBeUndefined();
    await a.close();
    await b.close();
  });

  it('an acquire aborted with a TaskGraphError reason rejects with that reason', async () => {
    const c = new MemoryCoordinator();
    const s = await c.openSession({ ttlMs: 60_000 });
    const other = await c.openSession({ ttlMs: 60_000 });
    await c.acquire('L', other);
    const controller = new AbortController();
    const waiting = c.acquire('L', s, { signal: controller.signal });
    const reason = new TaskGraphError('EPOCH_CHANGED', 'epoch moved on');
    controller.abort(reason);
    expect(await rejection(waiting)).toBe(reason);
    await c.close();
  });

  it('lock.lost says why: released is Closed, session expiry is LeaseLost', async () => {
    const c = new MemoryCoordinator();
    const s = await c.openSession({ ttlMs: 60_000 });
    const l1 = await c.acquire('A', s);
    await l1.release();
    expect(code(l1.lost.reason)).toBe('CLOSED');
    const l2 = await c.acquire('B', s);
    c.expireSession(s);
    expect(code(l2.lost.reason)).toBe('LEASE_LOST');
    expect(await c.holder('B')).toBeUndefined();
    await c.close();
  });

  it('a failed release keeps the lock held and its lost signal untouched', async () => {
    const c = new MemoryCoordinator();
    const s = await c.openSession({ ttlMs: 60_000 });
    const lock = await c.acquire('L', s);
    c.faults.add({ op: 'release', times: 1 });
    expect(code(await rejection(lock.release()))).toBe('UNAVAILABLE');
    expect(lock.lost.aborted).toBe(false);
    expect((await c.holder('L'))?.token).toBe(lock.token);
    await lock.release();
    expect(await c.holder('L')).toBeUndefined();
    await c.close();
  });

  it('closing while an acquire waits rejects it with Closed and leaves no waiter', async () => {
    const store = new MemoryStore();
    const a = new MemoryCoordinator({ store });
    const b = new MemoryCoordinator({ store });
    await a.acquire('L', await a.openSession({ ttlMs: 60_000 }));
    const waiting = b.acquire('L', await b.openSession({ ttlMs: 60_000 }));
    await settle();
    await b.close();
    expect(['CLOSED', 'LEASE_LOST']).toContain(code(await rejection(waiting)));
    expect(store.lockWaiters('L')).toBe(0);
    await a.close();
  });
});

describe('MemoryCoordinator turns of the event loop', () => {
  // Calls answered in memory resolve as promise jobs; without turns, a chain of
  // them never lets a timer (a keepalive) run until it ends.
  async function chain(store: MemoryStore, calls: number): Promise<{ timerAfter: number | undefined }> {
    const c = new MemoryCoordinator({ store, id: 'chain' });
    await c.create('k', bytes('v'));
    let done = 0;
    let timerAfter: number | undefined;
    const fired = new Promise<void>((resolve) =>
      setTimeout(() => {
        timerAfter = done;
        resolve();
      }, 0),
    );
    // Let the timer come due before the chain starts.
    const due = Date.now() + 2;
    while (Date.now() < due);
    for (let i = 0; i < calls; i++) {
      await c.get('k');
      done++;
    }
    await fired;
    await c.close();
    return { timerAfter };
  }

  it('a long chain of calls lets a timer run within a few turns of callsPerTurn calls', async () => {
    const store = new MemoryStore({ callsPerTurn: 100 });
    const { timerAfter } = await chain(store, 1000);
    // The first turns may end in the check phase of the loop, before its timers.
    expect(timerAfter).toBeGreaterThanOrEqual(99);
    expect(timerAfter).toBeLessThanOrEqual(300);
  });

  it('with callsPerTurn above the chain, the chain runs through as one stretch', async () => {
    const store = new MemoryStore({ callsPerTurn: 10_000 });
    const { timerAfter } = await chain(store, 1000);
    expect(timerAfter).toBe(1000);
  });

  it('turn(): undefined while the stretch has room, then one promise of the next turn for every caller', async () => {
    const store = new MemoryStore({ callsPerTurn: 2 });
    expect(store.turn()).toBeUndefined();
    expect(store.turn()).toBeUndefined();
    const next = store.turn();
    expect(next).toBeInstanceOf(Promise);
    expect(store.turn()).toBe(next);
    await next;
    expect(store.turn()).toBeUndefined();
    expect(() => new MemoryStore({ callsPerTurn: 0 })).toThrow(/callsPerTurn must be a positive integer/);
  });
});
