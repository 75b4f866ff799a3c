import { describe, expect, it } from 'vitest';
import { TaskGraphError } from '@taskgraph/api';
import type { Session } from '@taskgraph/api';
import { ManualClock } from '@taskgraph/testkit';
import { ToyCoordinator, TOY_CAPS, code, deferred, rejection, settle } from './fixtures.js';

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

function setup() {
  const clock = new ManualClock();
  return { clock, c: new ToyCoordinator(clock) };
}

/** Every method with input that is bad in one way, paired with what is bad. */
function badCalls(c: ToyCoordinator, s: Session): [string, () => unknown][] {
  const long = 'k'.repeat(TOY_CAPS.maxKeyBytes + 1);
  return [
    ['get of a bad key', () => c.get('a//b')],
    ['list of a bad prefix', () => c.list('')],
    ['create of a key over the limit', () => c.create(long, bytes('v'))],
    ['create of a value over the limit', () => c.create('k', new Uint8Array(TOY_CAPS.maxValueBytes + 1))],
    ['update with an empty version', () => c.update('k', bytes('v'), '')],
    ['delete with a version that is no string', () => c.delete('k', 7 as unknown as string)],
    ['deletePrefix of a ".." prefix', () => c.deletePrefix('../')],
    ['watch without a signal', () => c.watch('p/', {} as never)],
    ['watch with a non-string after', () => c.watch('p/', { signal: new AbortController().signal, after: 5 as unknown as string })],
    ['openSession with a TTL out of range', () => c.openSession({ ttlMs: 10 })],
    ['endSession of an empty id', () => c.endSession('')],
    ['endSession of an id that is no string', () => c.endSession(7 as unknown as string)],
    ['endSession of an id over the limit', () => c.endSession('s'.repeat(TOY_CAPS.maxKeyBytes + 1))],
    ['acquire of a bad lock name', () => c.acquire('', s)],
    ['acquire with an empty owner', () => c.acquire('l', s, { owner: '' })],
    ['acquire with an owner over the limit', () => c.acquire('l', s, { owner: 'o'.repeat(TOY_CAPS.maxKeyBytes + 1) })],
    ['acquire with a signal that is no AbortSignal', () => c.acquire('l', s, { signal: 'soon' as unknown as AbortSignal })],
    ['tryAcquire with a session from elsewhere', () => c.tryAcquire('l', { id: 'x' } as unknown as Session)],
    ['holder of a bad lock name', () => c.holder('a/./b')],
  ];
}

describe('CoordinatorBase checks, in one order', () => {
  it('rejects bad input with InvalidArgument before running any hook', async () => {
    const { c } = setup();
    const s = await c.openSession({ ttlMs: 1000 });
    const before = c.hooks.length;
    for (const [what, call] of badCalls(c, s)) expect(code(await rejection(call)), what).toBe('INVALID_ARGUMENT');
    expect(c.hooks.length).toBe(before);
    await c.close();
  });

  it('bad input on a closed coordinator is still InvalidArgument: input is checked before the closed state', async () => {
    const { c } = setup();
    const s = await c.openSession({ ttlMs: 1000 });
    await c.close();
    for (const [what, call] of badCalls(c, s)) expect(code(await rejection(call)), what).toBe('INVALID_ARGUMENT');
  });

  it('good input on a closed coordinator is Closed, for every method, and no hook runs', async () => {
    const { c } = setup();
    const s = await c.openSession({ ttlMs: 1000 });
    await c.close();
    const before = c.hooks.length;
    const calls: [string, () => Promise<unknown>][] = [
      ['get', () => c.get('k')],
      ['list', () => c.list('k')],
      ['create', () => c.create('k', bytes('v'))],
      ['create with a session', () => c.create('k', bytes('v'), { session: s })],
      ['update', () => c.update('k', bytes('v'), '1')],
      ['delete', () => c.delete('k', '1')],
      ['deletePrefix', () => c.deletePrefix('k')],
      ['openSession', () => c.openSession({ ttlMs: 1000 })],
      ['endSession', () => c.endSession('someone-else')],
      ['acquire', () => c.acquire('l', s)],
      ['tryAcquire', () => c.tryAcquire('l', s)],
      ['holder', () => c.holder('l')],
    ];
    for (const [what, call] of calls) {
      const err = await rejection(call);
      expect(code(err), what).toBe('CLOSED');
      expect((err as Error).message).toMatch(/the toy coordinator is closed/);
    }
    expect(c.hooks.length).toBe(before);
  });

  it('acquire: Closed comes before an aborted signal, which comes before a lost session', async () => {
    const { c } = setup();
    const s = await c.openSession({ ttlMs: 1000 });
    await s.close();
    const controller = new AbortController();
    const reason = new TaskGraphError('EPOCH_CHANGED', 'the epoch moved on');
    controller.abort(reason);
    expect(await rejection(c.acquire('l', s, { signal: controller.signal }))).toBe(reason);
    const plain = new AbortController();
    plain.abort();
    expect(code(await rejection(c.acquire('l', s, { signal: plain.signal })))).toBe('ABORTED');
    expect(code(await rejection(c.acquire('l', s)))).toBe('LEASE_LOST');
    await c.close();
    expect(code(await rejection(c.acquire('l', s, { signal: controller.signal })))).toBe('CLOSED');
    expect(c.hooks).not.toContain('acquire');
  });

  it('a closed or lost session is LeaseLost for create, acquire and tryAcquire, and says which', async () => {
    const { clock, c } = setup();
    const closed = await c.openSession({ ttlMs: 1000 });
    await closed.close();
    for (const call of [
      () => c.create('k', bytes('v'), { session: closed }),
      () => c.acquire('l', closed),
      () => c.tryAcquire('l', closed),
    ]) {
      const err = await rejection(call);
      expect(code(err)).toBe('LEASE_LOST');
      expect((err as Error).message).toMatch(/was closed/);
    }
    const lost = await c.openSession({ ttlMs: 1000 });
    await clock.advance(900);
    const err = await rejection(c.create('k', bytes('v'), { session: lost }));
    expect(code(err)).toBe('LEASE_LOST');
    expect((err as Error).message).toMatch(/is lost/);
    expect(c.hooks).not.toContain('create');
    await c.close();
  });

  it('a session belongs to the coordinator that opened it', async () => {
    const clock = new ManualClock();
    const a = new ToyCoordinator(clock);
    const b = new ToyCoordinator(clock);
    const s = await a.openSession({ ttlMs: 1000 });
    for (const call of [() => b.create('k', bytes('v'), { session: s }), () => b.acquire('l', s), () => b.tryAcquire('l', s)]) {
      expect(code(await rejection(call))).toBe('INVALID_ARGUMENT');
    }
    await a.close();
    await b.close();
  });
});

describe('CoordinatorBase hooks', () => {
  it('run with the checked input, synchronously within the call (a hook may copy the caller\'s buffer before its first await)', async () => {
    const { c } = setup();
    const value = bytes('v');
    const pending = c.create('k', value);
    expect(c.calls.at(-1)).toEqual({ hook: 'create', args: ['k', value, undefined] });
    const version = await pending;
    const s = await c.openSession({ ttlMs: 1000 });
    await c.create('e', value, { session: s });
    expect(c.calls.at(-1)?.args[2]).toBe(s);
    await c.update('k', value, version);
    await c.delete('k', version);
    await c.acquire('l', s);
    expect(c.calls.at(-1)?.args.slice(0, 3)).toEqual(['l', s, s.id]);
    await c.tryAcquire('m', s, { owner: 'me' });
    expect(c.calls.at(-1)?.args.slice(0, 3)).toEqual(['m', s, 'me']);
    await c.close();
  });

  it('endSession of another client\'s id goes to the hook; of a live session of this client, closes it without the hook', async () => {
    const { c } = setup();
    await c.endSession('someone-else');
    expect(c.calls.at(-1)).toEqual({ hook: 'endSession', args: ['someone-else'] });
    const s = await c.openSession({ ttlMs: 1000 });
    const other = await c.openSession({ ttlMs: 1000 });
    const before = c.hooks.length;
    await c.endSession(s.id);
    expect(c.hooks.length).toBe(before);
    expect(code(s.lost.reason)).toBe('CLOSED');
    expect(other.lost.aborted).toBe(false);
    expect(c.openSessions).toBe(1);
    // Once closed it is no longer this client's live session: ending it again is the backend's no-op.
    await c.endSession(s.id);
    expect(c.calls.at(-1)).toEqual({ hook: 'endSession', args: [s.id] });
    await c.close();
  });

  it('openSession hands the hook the TTL rounded up to caps.ttlGranularityMs', async () => {
    const { c } = setup();
    const s = await c.openSession({ ttlMs: 1500 });
    expect(c.calls.at(-1)).toEqual({ hook: 'openSession', args: [2000] });
    expect(s.ttlMs).toBe(2000);
    await c.close();
  });

  it('watch calls its hook at the call, reports a closed coordinator from the iterator, and ends at once on an aborted signal', async () => {
    const { c } = setup();
    const controller = new AbortController();
    const iterable = c.watch('p/', { signal: controller.signal, after: '3' });
    expect(c.calls.at(-1)).toEqual({ hook: 'watch', args: ['p/', '3', controller.signal] });
    const it1 = iterable[Symbol.asyncIterator]();
    expect((await it1.next()).done).toBe(false);
    await c.close();
    const closedIterator = c.watch('p/', { signal: controller.signal })[Symbol.asyncIterator]();
    expect(code(await rejection(closedIterator.next()))).toBe('CLOSED');
    expect((await closedIterator.next()).done).toBe(true);
    controller.abort();
    expect((await c.watch('p/', { signal: controller.signal })[Symbol.asyncIterator]().next()).done).toBe(true);
  });
});

describe('CoordinatorBase close', () => {
  it('closes open sessions, waits for tracked work, then closes the client once; close again is the same promise', async () => {
    const { c } = setup();
    const a = await c.openSession({ ttlMs: 1000 });
    const b = await c.openSession({ ttlMs: 1000 });
    expect(c.openSessions).toBe(2);
    await b.close();
    expect(c.openSessions).toBe(1);
    const work = deferred<void>();
    c.trackForTest(work.promise);
    const closing = c.close();
    expect(c.close()).toBe(closing);
    expect(c.closed).toBe(true);
    expect(a.lost.aborted).toBe(true);
    expect(code(a.lost.reason)).toBe('CLOSED');
    await settle();
    expect(c.doCloseCalls).toBe(0);
    work.resolve();
    await closing;
    expect(c.doCloseCalls).toBe(1);
    expect(a.ends).toEqual([false]);
    expect(b.ends).toEqual([false]);
    expect(c.openSessions).toBe(0);
  });

  it('tracked work that fails does not fail close', async () => {
    const { c } = setup();
    c.trackForTest(Promise.reject(new Error('revoke failed')));
    await expect(c.close()).resolves.toBeUndefined();
    expect(c.doCloseCalls).toBe(1);
  });

  it('a lost session stops counting as open at once; close waits for its onLost work', async () => {
    const { clock, c } = setup();
    const s = await c.openSession({ ttlMs: 1000 });
    await clock.advance(900);
    expect(s.lost.aborted).toBe(true);
    expect(c.openSessions).toBe(0);
    await c.close();
    expect(s.losses).toHaveLength(1);
    expect(s.ends).toEqual([]);
  });

  it('a session whose opening finishes after close is closed again and the call rejects with Closed', async () => {
    const { c } = setup();
    const gate = deferred<void>();
    c.openGate = gate.promise;
    const opening = c.openSession({ ttlMs: 1000 });
    await settle();
    const closing = c.close();
    gate.resolve();
    expect(code(await rejection(opening))).toBe('CLOSED');
    await closing;
    expect(c.openSessions).toBe(0);
  });
});

describe('acquireStops', () => {
  it('names the first stop that fired, closed before the signal before the session', async () => {
    const { c } = setup();
    const s = await c.openSession({ ttlMs: 1000 });
    const controller = new AbortController();
    const stops = c.stopsForTest(s, controller.signal);
    expect(stops.reason()).toBeUndefined();
    const heard: string[] = [];
    const unsubscribe = stops.onStop((err) => heard.push(err.code));
    await s.close();
    expect(code(stops.reason())).toBe('LEASE_LOST');
    controller.abort();
    expect(code(stops.reason())).toBe('ABORTED');
    await c.close();
    expect(code(stops.reason())).toBe('CLOSED');
    expect(() => stops.throwIfStopped()).toThrow(/closed/);
    expect(heard).toEqual(['LEASE_LOST']);
    unsubscribe();
  });
});
