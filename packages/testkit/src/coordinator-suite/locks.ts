/** Locks: exclusion, hand-over, fencing tokens, abort, and their separation from keys. */
import assert from 'node:assert/strict';
import type { Coordinator, Lock, Session } from '@taskgraph/api';
import type { CoordinatorSuiteOptions, DefineTest } from './context.js';
import { eventually } from '../eventually.js';
import { assertCode, bytes, rejectsWith } from './util.js';

/** Settles-or-not tracking of a pending acquire, without ever leaving a rejection unhandled. */
function watchAcquire(p: Promise<Lock>): { readonly lock: () => Lock | undefined; readonly error: () => unknown; readonly settled: () => boolean } {
  let lock: Lock | undefined;
  let error: unknown;
  let settled = false;
  void p.then(
    (l) => {
      lock = l;
      settled = true;
    },
    (err: unknown) => {
      error = err;
      settled = true;
    },
  );
  return { lock: () => lock, error: () => error, settled: () => settled };
}

async function session(c: Coordinator, options: CoordinatorSuiteOptions): Promise<Session> {
  return c.openSession({ ttlMs: options.sessionTtlMs });
}

export function lockTests(test: DefineTest, options: CoordinatorSuiteOptions): void {
  test('a free lock is taken at once; holder() reports the session id as owner and the token; release clears it', async (t) => {
    const c = await t.client();
    const s = await session(c, options);
    assert.equal(await c.holder('l/free'), undefined, 'nobody holds a lock never taken');
    const lock = await c.acquire('l/free', s);
    assert.equal(lock.name, 'l/free');
    assert.equal(lock.owner, s.id);
    assert.equal(typeof lock.token, 'bigint');
    assert.equal(lock.lost.aborted, false);
    assert.deepEqual(await c.holder('l/free'), { owner: s.id, token: lock.token });
    await lock.release();
    assert.equal(lock.lost.aborted, true, 'lost aborts on release');
    assert.equal(await c.holder('l/free'), undefined);
  });

  test('a custom owner is what holder() reports, to every client', async (t) => {
    const c = await t.client();
    const other = await t.client();
    const s = await session(c, options);
    const lock = await c.acquire('l/owned', s, { owner: 'node-7 at 10.0.0.7:4000' });
    assert.equal(lock.owner, 'node-7 at 10.0.0.7:4000');
    assert.deepEqual(await other.holder('l/owned'), { owner: 'node-7 at 10.0.0.7:4000', token: lock.token });
    const tried = await other.tryAcquire('l/tried', await session(other, options), { owner: 'tried-owner' });
    assert.equal((await c.holder('l/tried'))?.owner, 'tried-owner');
    await tried?.release();
    await lock.release();
  });

  test('two clients exclude each other: tryAcquire is undefined while held, a waiting acquire gets the lock on release with a larger token', async (t) => {
    const a = await t.client();
    const b = await t.client();
    const sa = await session(a, options);
    const sb = await session(b, options);
    const la = await a.acquire('l/x', sa);
    assert.equal(await b.tryAcquire('l/x', sb), undefined, 'tryAcquire of a held lock is undefined');
    const waiting = watchAcquire(b.acquire('l/x', sb));
    for (let i = 0; i < 5; i++) {
      assert.deepEqual(await b.holder('l/x'), { owner: sa.id, token: la.token });
      assert.equal(waiting.settled(), false, 'the waiter does not get a held lock');
    }
    await la.release();
    await eventually('the waiter gets the released lock', () => waiting.settled(), t.settings.patience);
    const lb = waiting.lock();
    assert.ok(lb, `the waiter got the lock (error: ${String(waiting.error())})`);
    assert.ok(lb.token > la.token, `token ${lb.token} > ${la.token}`);
    assert.deepEqual(await a.holder('l/x'), { owner: sb.id, token: lb.token });
    assert.equal(await a.tryAcquire('l/x', sa), undefined);
    await lb.release();
  });

  test('a waiter gets the lock when the holder\'s session closes; the old lock\'s lost aborts', async (t) => {
    const a = await t.client();
    const b = await t.client();
    const sa = await session(a, options);
    const sb = await session(b, options);
    const la = await a.acquire('l/close', sa);
    const waiting = watchAcquire(b.acquire('l/close', sb));
    await sa.close();
    assert.equal(la.lost.aborted, true, 'the lock is lost with its session');
    await eventually('the waiter gets the lock', () => waiting.settled(), t.settings.patience);
    const lb = waiting.lock();
    assert.ok(lb, `the waiter got the lock (error: ${String(waiting.error())})`);
    assert.ok(lb.token > la.token);
    await la.release();
    assert.equal((await b.holder('l/close'))?.owner, sb.id, 'releasing a lost lock takes nothing from the new holder');
  });

  if (options.expireSession) {
    test('a waiter gets the lock when the holder\'s session expires; the old lock\'s lost aborts with LeaseLost', async (t) => {
      const a = await t.client();
      const b = await t.client();
      const sa = await session(a, options);
      const sb = await session(b, options);
      const la = await a.acquire('l/exp', sa);
      const waiting = watchAcquire(b.acquire('l/exp', sb));
      await options.expireSession?.(a, sa);
      const bound = sa.ttlMs * a.caps.expiryFactor + t.settings.eventuallyMs;
      await eventually('the waiter gets the lock', () => waiting.settled(), { timeoutMs: bound });
      assert.ok(waiting.lock(), `the waiter got the lock (error: ${String(waiting.error())})`);
      await eventually('the old lock is lost', () => la.lost.aborted, { timeoutMs: bound });
      assertCode(la.lost.reason, 'LEASE_LOST', 'the old lock\'s lost reason');
      assert.ok((waiting.lock()?.token ?? 0n) > la.token);
    }, test.settings.ttlTimeout(4));

    test('a waiting acquire rejects with LeaseLost when its own session expires, and takes nothing', async (t) => {
      const a = await t.client();
      const b = await t.client();
      const sa = await session(a, options);
      const sb = await session(b, options);
      const la = await a.acquire('l/wexp', sa);
      const waiting = watchAcquire(b.acquire('l/wexp', sb));
      await options.expireSession?.(b, sb);
      await eventually('the waiting acquire settles', () => waiting.settled(), { timeoutMs: sb.ttlMs * b.caps.expiryFactor + t.settings.eventuallyMs });
      assertCode(waiting.error(), 'LEASE_LOST', 'a waiting acquire whose session expired');
      await la.release();
      await eventually('nobody holds the lock', async () => (await a.holder('l/wexp')) === undefined, t.settings.patience);
    }, test.settings.ttlTimeout(4));
  } else {
    test('hand-over on the holder\'s session expiry (no expireSession hook: hand-over on close is checked instead)', async (t) => {
      const a = await t.client();
      const b = await t.client();
      const sa = await session(a, options);
      const sb = await session(b, options);
      const la = await a.acquire('l/exp', sa);
      const waiting = watchAcquire(b.acquire('l/exp', sb));
      await a.close();
      await eventually('the waiter gets the lock', () => waiting.settled(), t.settings.patience);
      assert.ok(waiting.lock(), `the waiter got the lock (error: ${String(waiting.error())})`);
      assert.equal(la.lost.aborted, true);
    });
  }

  test('fencing tokens strictly increase across holders and clients', async (t) => {
    const clients = [await t.client(), await t.client(), await t.client()];
    let last: bigint | undefined;
    for (let round = 0; round < 6; round++) {
      const c = clients[round % clients.length] as Coordinator;
      const s = await session(c, options);
      const lock = round % 2 === 0 ? await c.acquire('l/fence', s) : await eventually('tryAcquire gets the free lock', () => c.tryAcquire('l/fence', s), t.settings.patience);
      if (last !== undefined) assert.ok(lock.token > last, `round ${round}: token ${lock.token} > ${last}`);
      last = lock.token;
      // Hand over by release and by session close in turn.
      if (round % 3 === 2) await s.close();
      else await lock.release();
    }
  });

  test('mutual exclusion under contention: never two holders at once', async (t) => {
    const clients = [await t.client(), await t.client(), await t.client()];
    let inside = 0;
    let maxInside = 0;
    const tokens: bigint[] = [];
    await Promise.all(
      clients.map(async (c, i) => {
        const s = await session(c, options);
        for (let round = 0; round < 3; round++) {
          const lock = await c.acquire('l/mutex', s);
          inside++;
          maxInside = Math.max(maxInside, inside);
          tokens.push(lock.token);
          await c.create(`mutex/${i}/${round}`, bytes('x'));
          assert.equal((await c.holder('l/mutex'))?.token, lock.token, 'the holder is who holds');
          inside--;
          await lock.release();
        }
      }),
    );
    assert.equal(maxInside, 1, 'at most one holder at a time');
    for (let i = 1; i < tokens.length; i++) assert.ok((tokens[i] as bigint) > (tokens[i - 1] as bigint), 'tokens increase in grant order');
  });

  test('acquire honours its AbortSignal: it rejects with Aborted and leaves the queue', async (t) => {
    const a = await t.client();
    const b = await t.client();
    const c = await t.client();
    const sa = await session(a, options);
    const sb = await session(b, options);
    const sc = await session(c, options);
    const la = await a.acquire('l/abort', sa);
    const controller = t.controller();
    const waiting = watchAcquire(b.acquire('l/abort', sb, { signal: controller.signal }));
    await a.holder('l/abort');
    controller.abort();
    await eventually('the aborted acquire settles', () => waiting.settled(), t.settings.patience);
    assertCode(waiting.error(), 'ABORTED', 'an aborted acquire');
    await la.release();
    const lc = await eventually('a third client takes the lock the aborted waiter left', () => c.tryAcquire('l/abort', sc), t.settings.patience);
    assert.equal((await b.holder('l/abort'))?.owner, sc.id);
    // Aborted in the same tick as the call: the acquire must still notice, whatever it was awaiting then.
    const quick = t.controller();
    const racing = watchAcquire(b.acquire('l/abort', sb, { signal: quick.signal }));
    quick.abort();
    await eventually('the acquire aborted in the same tick settles', () => racing.settled(), t.settings.patience);
    assertCode(racing.error(), 'ABORTED', 'an acquire aborted in the same tick');
    await lc.release();
    await eventually('the lock is free: the aborted waiter took nothing', async () => (await c.holder('l/abort')) === undefined, t.settings.patience);
  });

  test('acquire with an already aborted signal rejects at once and takes nothing', async (t) => {
    const c = await t.client();
    const s = await session(c, options);
    const controller = new AbortController();
    controller.abort();
    await rejectsWith(() => c.acquire('l/pre', s, { signal: controller.signal }), 'ABORTED', 'acquire with an aborted signal');
    assert.equal(await c.holder('l/pre'), undefined);
  });

  test('acquire and tryAcquire with a closed session reject with LeaseLost', async (t) => {
    const c = await t.client();
    const s = await session(c, options);
    await s.close();
    await rejectsWith(() => c.acquire('l/closed', s), 'LEASE_LOST', 'acquire with a closed session');
    await rejectsWith(() => c.tryAcquire('l/closed', s), 'LEASE_LOST', 'tryAcquire with a closed session');
    assert.equal(await c.holder('l/closed'), undefined);
  });

  test('a waiting acquire rejects when its session is closed, and takes nothing', async (t) => {
    const a = await t.client();
    const b = await t.client();
    const sa = await session(a, options);
    const sb = await session(b, options);
    const la = await a.acquire('l/wclose', sa);
    const waiting = watchAcquire(b.acquire('l/wclose', sb));
    await a.holder('l/wclose');
    await sb.close();
    await eventually('the waiting acquire settles', () => waiting.settled(), t.settings.patience);
    assertCode(waiting.error(), ['LEASE_LOST', 'CLOSED'], 'a waiting acquire whose session closed');
    await la.release();
    await eventually('nobody holds the lock', async () => (await a.holder('l/wclose')) === undefined, t.settings.patience);
  });

  test('release twice is a no-op, and so is release after the session closed', async (t) => {
    const c = await t.client();
    const s = await session(c, options);
    const lock = await c.acquire('l/twice', s);
    await lock.release();
    await lock.release();
    const again = await c.acquire('l/twice', s);
    await s.close();
    await again.release();
    assert.equal(await c.holder('l/twice'), undefined);
  });

  test('a session never holds a lock twice: with a live Lock, tryAcquire of the session is undefined and acquire waits; released, the session takes it again', async (t) => {
    const c = await t.client();
    const other = await t.client();
    const s = await session(c, options);
    const lock = await c.tryAcquire('l/own', s, { owner: 'me' });
    assert.ok(lock, 'a free lock is taken');
    assert.equal(await c.tryAcquire('l/own', s, { owner: 'me' }), undefined, 'tryAcquire while the session\'s Lock is live');
    assert.equal(await c.tryAcquire('l/own', s, { owner: 'someone else' }), undefined, 'whatever the owner');
    const again = watchAcquire(c.acquire('l/own', s, { owner: 'me' }));
    for (let i = 0; i < 3; i++) {
      assert.deepEqual(await other.holder('l/own'), { owner: 'me', token: lock.token });
      assert.equal(again.settled(), false, 'an acquire of the session waits for its own live Lock');
    }
    await lock.release();
    await eventually('the waiting acquire of the session gets the lock', () => again.settled(), t.settings.patience);
    const second = again.lock();
    assert.ok(second, `the waiting acquire got the lock (error: ${String(again.error())})`);
    assert.ok(second.token > lock.token, `token ${second.token} > ${lock.token}`);
    assert.equal(await c.tryAcquire('l/own', s), undefined, 'tryAcquire while the second Lock is live');
    await second.release();
    const third = await c.tryAcquire('l/own', s);
    assert.ok(third, 'once released, tryAcquire of the session takes the lock again');
    assert.ok(third.token > second.token);
    assert.deepEqual(await other.holder('l/own'), { owner: s.id, token: third.token });
    await third.release();
    assert.equal(await other.holder('l/own'), undefined);
  });

  test('concurrent tryAcquire and acquire calls of one session hand out one Lock at a time', async (t) => {
    const c = await t.client();
    const s = await session(c, options);
    const tries = await Promise.all([0, 1, 2, 3].map(() => c.tryAcquire('l/race', s)));
    const got = tries.filter((l): l is Lock => l !== undefined);
    assert.equal(got.length, 1, 'one Lock from concurrent tryAcquire calls of one session on a free lock');
    await Promise.all(got.map((l) => l.release()));
    const first = watchAcquire(c.acquire('l/race', s));
    const second = watchAcquire(c.acquire('l/race', s));
    await eventually('one of the acquires gets the lock', () => first.settled() || second.settled(), t.settings.patience);
    for (let i = 0; i < 3; i++) {
      await c.holder('l/race');
      assert.equal(first.settled() && second.settled(), false, 'the other waits for the first Lock');
    }
    const winner = first.lock() ?? second.lock();
    const waiter = first.lock() ? second : first;
    assert.ok(winner, `an acquire got the lock (errors: ${String(first.error())}, ${String(second.error())})`);
    await winner.release();
    await eventually('the other acquire gets the lock', () => waiter.settled(), t.settings.patience);
    const next = waiter.lock();
    assert.ok(next, `the other acquire got the lock (error: ${String(waiter.error())})`);
    assert.ok(next.token > winner.token);
    await next.release();
    assert.equal(await c.holder('l/race'), undefined);
  });

  test('locks live apart from keys: a lock and a key of one name coexist', async (t) => {
    const c = await t.client();
    const s = await session(c, options);
    await c.create('both', bytes('key'));
    const lock = await c.acquire('both', s);
    assert.deepEqual(
      (await c.list('both')).entries.map((e) => e.key),
      ['both'],
    );
    const entry = await c.get('both');
    assert.ok(entry);
    await c.delete('both', entry.version);
    assert.deepEqual(await c.holder('both'), { owner: s.id, token: lock.token });
    await lock.release();
  });

  test('locks of different namespaces are separate', async (t) => {
    const a = await t.client();
    const other = await t.client(t.otherNamespace());
    const la = await a.acquire('l/ns', await session(a, options));
    assert.equal(await other.holder('l/ns'), undefined);
    const lo = await other.tryAcquire('l/ns', await session(other, options));
    assert.ok(lo, 'the same lock name in another namespace is free');
    await lo.release();
    await la.release();
  });
}
