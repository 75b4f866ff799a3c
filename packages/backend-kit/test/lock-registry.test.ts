/**
 * The base's registry of live Locks per session and lock name: what tells a holding
 * this client knows of from one whose answer was lost, so that a backend can adopt
 * the second (see Coordinator.acquire in @taskgraph/api).
 */
import { describe, expect, it } from 'vitest';
import { ManualClock, track } from '@taskgraph/testkit';
import { ToyCoordinator, code, deferred, rejection, settle } from './fixtures.js';

function setup() {
  const clock = new ManualClock();
  return { clock, c: new ToyCoordinator(clock) };
}


describe('CoordinatorBase: live Locks per session and lock name', () => {
  it('tryAcquire while a Lock of the session is live answers undefined without the hook; once released, the hook runs again', async () => {
    const { c } = setup();
    const s = await c.openSession({ ttlMs: 1000 });
    const lock = await c.tryAcquire('l', s);
    expect(lock).toBeDefined();
    expect(c.holdsLockForTest(s, 'l')).toBe(true);
    const hooks = c.hooks.length;
    expect(await c.tryAcquire('l', s)).toBeUndefined();
    expect(c.hooks.length).toBe(hooks);
    // Another name, or another session, is not held.
    const other = await c.openSession({ ttlMs: 1000 });
    expect(c.holdsLockForTest(other, 'l')).toBe(false);
    expect(c.holdsLockForTest(s, 'm')).toBe(false);
    await lock?.release();
    expect(c.holdsLockForTest(s, 'l')).toBe(false);
    const again = await c.tryAcquire('l', s);
    expect(again).toBeDefined();
    expect(c.heldAtHook).toEqual([false, false]);
    await c.close();
  });

  it('the Lock handed out is the backend\'s, watched: same name, owner, token and lost signal; release goes to it', async () => {
    const { c } = setup();
    const s = await c.openSession({ ttlMs: 1000 });
    const lock = await c.acquire('l', s, { owner: 'me' });
    const inner = c.locks[0];
    expect(inner).toBeDefined();
    expect([lock.name, lock.owner, lock.token, lock.lost]).toEqual([inner?.name, inner?.owner, inner?.token, inner?.lost]);
    await Promise.all([lock.release(), lock.release()]);
    expect(inner?.releases).toBe(1);
    await lock.release();
    expect(inner?.releases).toBe(2);
    await c.close();
  });

  it('a lost Lock is over at once: the next tryAcquire runs the hook (which adopts what the store shows, if anything)', async () => {
    const { c } = setup();
    const s = await c.openSession({ ttlMs: 1000 });
    await c.tryAcquire('l', s);
    c.locks[0]?.lose();
    expect(c.holdsLockForTest(s, 'l')).toBe(false);
    expect(await c.tryAcquire('l', s)).toBeDefined();
    await c.close();
  });

  it('a Lock whose release is in flight still counts, even when its backend aborts lost first; a failed release leaves it to the store', async () => {
    const { c } = setup();
    const s = await c.openSession({ ttlMs: 1000 });
    const answer = deferred<void>();
    c.lockRelease = { abortFirst: true, answer: () => answer.promise };
    const lock = await c.tryAcquire('l', s);
    const releasing = track(lock?.release() ?? Promise.resolve());
    await settle();
    expect(lock?.lost.aborted).toBe(true);
    expect(c.holdsLockForTest(s, 'l')).toBe(true);
    expect(await c.tryAcquire('l', s)).toBeUndefined();
    answer.reject(new Error('the server did not answer'));
    await settle();
    expect((releasing.error() as Error).message).toBe('the server did not answer');
    // Lost here, maybe still held on the server: the next call is the one to adopt it.
    expect(c.holdsLockForTest(s, 'l')).toBe(false);
    c.lockRelease = {};
    expect(await c.tryAcquire('l', s)).toBeDefined();
    await c.close();
  });

  it('a release that fails with lost unaborted (memory, etcd) keeps the Lock live until a retry succeeds', async () => {
    const { c } = setup();
    const s = await c.openSession({ ttlMs: 1000 });
    let fail = true;
    c.lockRelease = { answer: async () => (fail ? Promise.reject(new Error('unreachable')) : undefined) };
    const lock = await c.acquire('l', s);
    expect(((await rejection(lock.release())) as Error).message).toBe('unreachable');
    expect(c.holdsLockForTest(s, 'l')).toBe(true);
    fail = false;
    await lock.release();
    expect(c.holdsLockForTest(s, 'l')).toBe(false);
    await c.close();
  });

  it('one call at a time per session and name: tryAcquire during a call answers undefined; acquire waits for it, then runs', async () => {
    const { c } = setup();
    const s = await c.openSession({ ttlMs: 1000 });
    const gate = deferred<void>();
    c.lockGate = gate.promise;
    c.tryGrants = false;
    const first = track(c.tryAcquire('l', s));
    expect(await c.tryAcquire('l', s)).toBeUndefined();
    const second = track(c.acquire('l', s));
    // Other names and other sessions do not wait.
    const other = await c.openSession({ ttlMs: 1000 });
    const elsewhere = track(c.tryAcquire('l', other));
    await settle();
    expect(c.hooks.filter((h) => h === 'tryAcquire' || h === 'acquire')).toEqual(['tryAcquire', 'tryAcquire']);
    c.lockGate = undefined;
    gate.resolve();
    await settle();
    expect(first.value()).toBeUndefined();
    expect(elsewhere.done()).toBe(true);
    expect(second.done()).toBe(true);
    expect(second.value()).toBeDefined();
    expect(c.hooks.filter((h) => h === 'tryAcquire' || h === 'acquire')).toEqual(['tryAcquire', 'tryAcquire', 'acquire']);
    await c.close();
  });

  it('an acquire waiting for another call of its session gives up on its signal and on close, and runs no hook', async () => {
    const { c } = setup();
    const s = await c.openSession({ ttlMs: 1000 });
    const gate = deferred<void>();
    c.lockGate = gate.promise;
    const first = track(c.acquire('l', s));
    const controller = new AbortController();
    const aborted = track(c.acquire('l', s, { signal: controller.signal }));
    const closing = track(c.acquire('l', s));
    await settle();
    controller.abort();
    await settle();
    expect(code(aborted.error())).toBe('ABORTED');
    const closed = c.close();
    await settle();
    expect(code(closing.error())).toBe('CLOSED');
    expect(c.hooks.filter((h) => h === 'acquire')).toEqual(['acquire']);
    gate.resolve();
    await closed;
    await settle();
    expect(first.done()).toBe(true);
  });

  it('an acquire while a Lock of the session is live runs the hook, which sees holdsLock (a backend then waits as for any holder)', async () => {
    const { c } = setup();
    const s = await c.openSession({ ttlMs: 1000 });
    const lock = await c.acquire('l', s);
    const second = await c.acquire('l', s);
    expect(c.heldAtHook).toEqual([false, true]);
    await lock.release();
    expect(c.holdsLockForTest(s, 'l')).toBe(true);
    await second.release();
    expect(c.holdsLockForTest(s, 'l')).toBe(false);
    await c.close();
  });

  it('untilLockFree resolves once no Lock of the session is live, and rejects on a stop', async () => {
    const { c } = setup();
    const s = await c.openSession({ ttlMs: 1000 });
    await c.untilLockFreeForTest(s, 'l');
    const lock = await c.acquire('l', s);
    const waiting = track(c.untilLockFreeForTest(s, 'l'));
    const controller = new AbortController();
    const aborted = track(c.untilLockFreeForTest(s, 'l', controller.signal));
    await settle();
    expect(waiting.done()).toBe(false);
    controller.abort();
    await settle();
    expect(code(aborted.error())).toBe('ABORTED');
    expect(waiting.done()).toBe(false);
    await lock.release();
    await settle();
    expect(waiting.done()).toBe(true);
    expect(waiting.error()).toBeUndefined();
    await c.close();
  });

  it('a Lock lost from the start (its session was lost while the grant was on its way) is not counted', async () => {
    const { c } = setup();
    const s = await c.openSession({ ttlMs: 1000 });
    c.grantLost = true;
    const lock = await c.tryAcquire('l', s);
    expect(lock?.lost.aborted).toBe(true);
    expect(c.holdsLockForTest(s, 'l')).toBe(false);
    c.grantLost = false;
    expect(await c.tryAcquire('l', s)).toBeDefined();
    await c.close();
  });
});
