/** Sessions: keepalive, ephemeral keys, expiry on the server and by the local deadline. */
import assert from 'node:assert/strict';
import type { CoordinatorSuiteOptions, DefineTest, TestContext } from './context.js';
import { eventually } from '../eventually.js';
import { assertCode, bytes, rejectsWith, sleep, text } from './util.js';

/** How long the server may take to expire a session after its last renewal. */
function expiryBound(t: TestContext, ttlMs: number, expiryFactor: number): number {
  return ttlMs * expiryFactor + t.settings.eventuallyMs;
}

export function sessionTests(test: DefineTest, options: CoordinatorSuiteOptions): void {
  test('openSession gives a live session with an id and at least the TTL asked for', async (t) => {
    const c = await t.client();
    const ttl = t.options.sessionTtlMs;
    const s = await c.openSession({ ttlMs: ttl });
    assert.equal(typeof s.id, 'string');
    assert.ok(s.id.length > 0);
    assert.ok(s.ttlMs >= ttl, `ttlMs ${s.ttlMs} is at least the ${ttl} asked`);
    assert.ok(s.ttlMs < ttl + c.caps.ttlGranularityMs, `ttlMs ${s.ttlMs} is rounded up by less than the granularity`);
    assert.equal(s.lost.aborted, false);
    assert.equal(s.isLost(), false);
    const s2 = await c.openSession({ ttlMs: ttl });
    assert.notEqual(s2.id, s.id, 'two sessions have different ids');
  });

  test('ephemeral keys vanish when their session closes; lost aborts with ClosedError', async (t) => {
    const c = await t.client();
    const observer = await t.client();
    const s = await c.openSession({ ttlMs: t.options.sessionTtlMs });
    await c.create('eph/a', bytes('a'), { session: s });
    await c.create('eph/b', bytes('b'), { session: s });
    await c.create('eph/plain', bytes('plain'));
    assert.ok(await observer.get('eph/a'), 'another client sees the ephemeral key');
    await s.close();
    assert.equal(s.lost.aborted, true, 'lost aborts on close');
    assertCode(s.lost.reason, 'CLOSED', 'the lost reason after close');
    assert.equal(s.isLost(), true);
    await eventually('the ephemeral keys are gone for another client', async () => {
      return (await observer.list('eph/')).entries.map((e) => e.key).join() === 'eph/plain';
    }, t.settings.patience);
    await s.close();
  });

  test('ephemeral keys stay while their session is kept alive, for several TTLs', async (t) => {
    const c = await t.client();
    const observer = await t.client();
    const s = await c.openSession({ ttlMs: t.options.sessionTtlMs });
    await c.create('alive/a', bytes('a'), { session: s });
    const span = s.ttlMs * c.caps.expiryFactor * 3;
    const until = performance.now() + span;
    // A deliberate window: nothing may happen in it, so there is no condition to wait on.
    while (performance.now() < until) {
      await sleep(Math.max(20, s.ttlMs / 4));
      assert.equal(s.lost.aborted, false, `the session was lost while kept alive: ${String(s.lost.reason)}`);
      assert.ok(await observer.get('alive/a'), 'the ephemeral key is still there');
    }
    assert.equal(s.isLost(), false);
  }, test.settings.ttlTimeout(8));

  test('an updated ephemeral key keeps its session: it still vanishes when the session closes', async (t) => {
    const c = await t.client();
    const observer = await t.client();
    const s = await c.openSession({ ttlMs: t.options.sessionTtlMs });
    const v = await c.create('keep/a', bytes('1'), { session: s });
    await observer.update('keep/a', bytes('2'), v);
    assert.equal(text((await c.get('keep/a'))?.value ?? bytes('')), '2');
    await s.close();
    await eventually('the updated ephemeral key is gone', async () => (await observer.get('keep/a')) === undefined, t.settings.patience);
  });

  test('create with a closed session rejects with LeaseLost', async (t) => {
    const c = await t.client();
    const s = await c.openSession({ ttlMs: t.options.sessionTtlMs });
    await s.close();
    await rejectsWith(() => c.create('late/a', bytes('a'), { session: s }), 'LEASE_LOST', 'create with a closed session');
    assert.equal(await c.get('late/a'), undefined);
  });

  test('closing one session leaves the other sessions and their keys alone', async (t) => {
    const c = await t.client();
    const s1 = await c.openSession({ ttlMs: t.options.sessionTtlMs });
    const s2 = await c.openSession({ ttlMs: t.options.sessionTtlMs });
    await c.create('two/1', bytes('1'), { session: s1 });
    await c.create('two/2', bytes('2'), { session: s2 });
    await s1.close();
    await eventually('the closed session\'s key is gone', async () => (await c.get('two/1')) === undefined, t.settings.patience);
    assert.ok(await c.get('two/2'));
    assert.equal(s2.lost.aborted, false);
  });

  test('endSession from a second client: the session\'s keys and locks are gone when it resolves, its owner is told, and ending again or an unknown id is a no-op', async (t) => {
    const c = await t.client();
    const other = await t.client();
    const s = await c.openSession({ ttlMs: t.options.sessionTtlMs });
    await c.create('ended/a', bytes('a'), { session: s });
    await c.create('ended/plain', bytes('p'));
    const lock = await c.acquire('ended-lock', s);
    await other.endSession(s.id);
    // No waiting: a supervisor that ends a dead node's session counts on its tasks being free now.
    assert.equal(await other.get('ended/a'), undefined, 'the ephemeral key is gone when endSession resolves');
    assert.equal(await other.holder('ended-lock'), undefined, 'the lock is free when endSession resolves');
    assert.ok(await other.get('ended/plain'), 'a key without a session stays');
    const s2 = await other.openSession({ ttlMs: t.options.sessionTtlMs });
    const next = await other.tryAcquire('ended-lock', s2);
    assert.ok(next, 'another session takes the freed lock at once');
    assert.ok(next.token > lock.token, `the fencing token rises: ${next.token} > ${lock.token}`);
    // The owner hears of it like of an expiry: at its next renewal at the latest.
    await eventually('the owner\'s session.lost fires', () => s.lost.aborted, { timeoutMs: expiryBound(t, s.ttlMs, 1) });
    assertCode(s.lost.reason, 'LEASE_LOST', 'the lost reason after endSession by another client');
    assert.equal(lock.lost.aborted, true, 'the owner\'s lock is lost with its session');
    await rejectsWith(() => c.create('ended/b', bytes('b'), { session: s }), 'LEASE_LOST', 'create with the ended session');
    await other.endSession(s.id);
    await other.endSession('no-such-session');
    await c.endSession(s.id);
    assert.equal(s2.isLost(), false, 'ending other ids leaves a live session alone');
    assert.equal((await other.holder('ended-lock'))?.token, next.token);
    await s.close();
  }, test.settings.ttlTimeout(3));

  test('endSession of a live session by its own client closes it: lost fires with Closed, its keys go', async (t) => {
    const c = await t.client();
    const observer = await t.client();
    const s = await c.openSession({ ttlMs: t.options.sessionTtlMs });
    await c.create('own/a', bytes('a'), { session: s });
    await c.endSession(s.id);
    assert.equal(s.lost.aborted, true, 'lost fires when endSession resolves');
    assertCode(s.lost.reason, 'CLOSED', 'the lost reason after endSession by the owner');
    await eventually('the ephemeral key is gone', async () => (await observer.get('own/a')) === undefined, t.settings.patience);
  });

  if (options.expireSession) {
    test('a session expired on the server: lost fires with LeaseLost, its keys vanish, create with it rejects', async (t) => {
      const c = await t.client();
      const observer = await t.client();
      const s = await c.openSession({ ttlMs: t.options.sessionTtlMs });
      await c.create('exp/a', bytes('a'), { session: s });
      await c.create('exp/plain', bytes('p'));
      await t.options.expireSession?.(c, s);
      await eventually('the ephemeral key is gone', async () => (await observer.get('exp/a')) === undefined, { timeoutMs: expiryBound(t, s.ttlMs, c.caps.expiryFactor) });
      await eventually('session.lost fires', () => s.lost.aborted, { timeoutMs: expiryBound(t, s.ttlMs, c.caps.expiryFactor) });
      assertCode(s.lost.reason, 'LEASE_LOST', 'the lost reason after expiry');
      assert.equal(s.isLost(), true);
      await rejectsWith(() => c.create('exp/b', bytes('b'), { session: s }), 'LEASE_LOST', 'create with an expired session');
      assert.ok(await observer.get('exp/plain'), 'a key without a session stays');
      await s.close();
    }, test.settings.ttlTimeout(4));
  } else {
    test('server-side expiry (no expireSession hook: only close-driven removal is checked here)', async (t) => {
      const c = await t.client();
      const observer = await t.client();
      const s = await c.openSession({ ttlMs: t.options.sessionTtlMs });
      await c.create('exp/a', bytes('a'), { session: s });
      await c.close();
      await eventually('the ephemeral key of a closed client is gone', async () => (await observer.get('exp/a')) === undefined, t.settings.patience);
      assert.equal(s.lost.aborted, true);
    });
  }

  if (options.partition) {
    test('a partitioned client: session.lost fires by the local deadline, the server expires the session, and the client recovers after healing', async (t) => {
      const c = await t.client();
      const observer = await t.client();
      const s = await c.openSession({ ttlMs: t.options.sessionTtlMs });
      await c.create('part/a', bytes('a'), { session: s });
      const heal = await t.partition(c);
      // Nothing from the server can reach the client now: only its own deadline can tell it.
      await eventually('session.lost fires during the partition', () => s.isLost(), { timeoutMs: s.ttlMs * 2 + t.settings.eventuallyMs });
      assert.ok(s.lost.aborted, 'isLost() and lost agree');
      assertCode(s.lost.reason, 'LEASE_LOST', 'the lost reason after a partition');
      await eventually(
        'the server expired the partitioned session and deleted its key',
        async () => (await observer.get('part/a')) === undefined,
        { timeoutMs: expiryBound(t, s.ttlMs, c.caps.expiryFactor) * 2 },
      );
      await heal();
      await eventually('the healed client works again', async () => {
        const s2 = await c.openSession({ ttlMs: t.options.sessionTtlMs });
        await c.create(`part/again-${s2.id.replace(/[^A-Za-z0-9]/g, '')}`, bytes('b'), { session: s2 });
        return true;
      }, { timeoutMs: t.settings.eventuallyMs * 2 });
      assert.equal(s.isLost(), true, 'a lost session stays lost after healing');
      await rejectsWith(() => c.create('part/c', bytes('c'), { session: s }), 'LEASE_LOST', 'create with the lost session after healing');
    }, test.settings.ttlTimeout(12));
  } else {
    test('session loss by the local deadline (no partition hook: not exercised; only isLost() on a live session is checked)', async (t) => {
      const c = await t.client();
      const s = await c.openSession({ ttlMs: t.options.sessionTtlMs });
      // A deliberate negative check: one TTL passes and nothing may happen.
      await sleep(s.ttlMs);
      assert.equal(s.isLost(), false, 'a kept-alive session is not lost after one TTL');
    }, test.settings.ttlTimeout(2));
  }
}
