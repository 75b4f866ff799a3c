import { describe, expect, it } from 'vitest';
import { TaskGraphError } from '@taskgraph/api';
import type { Lock } from '@taskgraph/api';
import { eventually } from '@taskgraph/testkit';
import { escapeKey } from '../src/index.js';
import type { ConsulCoordinator } from '../src/index.js';
import { bytes, consulFixture, patience, text } from './helpers.js';

const { consul, make } = consulFixture();

/** The waiting tickets of a lock, as the emulator stores them. */
function tickets(c: ConsulCoordinator, name: string): string[] {
  const prefix = `${escapeKey(c.namespace)}/queues/${escapeKey(name)}/`;
  return consul.store.listKeys(prefix).map((e) => e.key);
}

function lockKey(c: ConsulCoordinator, name: string): string {
  return `${escapeKey(c.namespace)}/locks/${escapeKey(name)}`;
}

describe('Consul locks', () => {
  it('serves waiters first come, first served', async () => {
    const c = await make();
    const holder = await c.acquire('fifo', await c.openSession({ ttlMs: 10_000 }));
    const order: string[] = [];
    const waiters: Promise<Lock>[] = [];
    for (const name of ['first', 'second', 'third']) {
      const s = await c.openSession({ ttlMs: 10_000 });
      const queued = tickets(c, 'fifo').length;
      waiters.push(
        c.acquire('fifo', s, { owner: name }).then((lock) => {
          order.push(name);
          return lock;
        }),
      );
      await eventually(`${name} is queued`, () => tickets(c, 'fifo').length === queued + 1, patience);
    }
    await holder.release();
    for (const w of waiters) await (await w).release();
    expect(order).toEqual(['first', 'second', 'third']);
    expect(tickets(c, 'fifo')).toEqual([]);
  });

  it('tryAcquire does not jump the queue and leaves no ticket behind', async () => {
    const c = await make();
    const s1 = await c.openSession({ ttlMs: 10_000 });
    const s2 = await c.openSession({ ttlMs: 10_000 });
    const held = await c.acquire('try', s1);
    expect(await c.tryAcquire('try', s2)).toBeUndefined();
    expect(tickets(c, 'try')).toEqual([]);
    await held.release();
    const got = await c.tryAcquire('try', s2, { owner: 'second' });
    expect(got?.owner).toBe('second');
    expect(await c.holder('try')).toEqual({ owner: 'second', token: got?.token });
  });

  it('the token is CreateIndex and LockIndex together, and grows across holders and sessions', async () => {
    const c = await make();
    const tokens: bigint[] = [];
    for (let i = 0; i < 3; i++) {
      const s = await c.openSession({ ttlMs: 10_000 });
      const lock = await c.acquire('tok', s);
      const entry = consul.store.getKey(lockKey(c, 'tok'));
      expect(lock.token).toBe((BigInt(entry!.createIndex) << 32n) | BigInt(entry!.lockIndex));
      tokens.push(lock.token);
      if (i === 1) consul.expireSession(s.id);
      else await lock.release();
    }
    expect(tokens[1]! > tokens[0]!).toBe(true);
    expect(tokens[2]! > tokens[1]!).toBe(true);
  });

  it('an aborted waiter leaves the queue; a waiter whose session ends does too', async () => {
    const c = await make();
    const held = await c.acquire('q', await c.openSession({ ttlMs: 10_000 }));
    const controller = new AbortController();
    const aborted = c.acquire('q', await c.openSession({ ttlMs: 10_000 }), { signal: controller.signal });
    await eventually('the first waiter is queued', () => tickets(c, 'q').length === 1, patience);
    const doomed = await c.openSession({ ttlMs: 10_000 });
    const lost = c.acquire('q', doomed);
    await eventually('the second waiter is queued', () => tickets(c, 'q').length === 2, patience);
    controller.abort();
    await expect(aborted).rejects.toMatchObject({ code: 'ABORTED' });
    consul.expireSession(doomed.id);
    await eventually('both tickets are gone', () => tickets(c, 'q').length === 0, patience);
    await held.release();
    const err = await lost.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(TaskGraphError.is(err, 'LEASE_LOST')).toBe(true);
    expect(await c.holder('q')).toBeUndefined();
  });

  it('when the answer to the lock transaction is lost, it reads back whether it got the lock', async () => {
    const c = await make();
    const s = await c.openSession({ ttlMs: 10_000 });
    let txns = 0;
    // The first transaction queues the ticket; the second takes the lock.
    consul.faults.dropAnswerWhen = ({ method, path }) => method === 'PUT' && path === '/v1/txn' && ++txns === 2;
    const lock = await c.acquire('lost-answer', s);
    expect(txns).toBeGreaterThanOrEqual(2);
    expect(await c.holder('lost-answer')).toEqual({ owner: s.id, token: lock.token });
    expect(tickets(c, 'lost-answer')).toEqual([]);
  });

  it('closing a session releases its locks first, so no lock-delay holds up the next holder', async () => {
    const c = await make({ lockDelayMs: 30_000 });
    const s1 = await c.openSession({ ttlMs: 10_000 });
    await c.acquire('handover', s1);
    const waiting = c.acquire('handover', await c.openSession({ ttlMs: 10_000 }), { owner: 'next' });
    await eventually('the waiter is queued', () => tickets(c, 'handover').length === 1, patience);
    await s1.close();
    expect(consul.store.lockDelayUntil(lockKey(c, 'handover'))).toBeUndefined();
    expect((await waiting).owner).toBe('next');
  });
});

describe('Consul lock-delay', () => {
  it('after a holder’s session is invalidated, the next acquire waits out the lock-delay and then gets the lock', async () => {
    const c = await make({ lockDelayMs: 1_500 });
    const s1 = await c.openSession({ ttlMs: 10_000 });
    const first = await c.acquire('ld', s1);
    const s2 = await c.openSession({ ttlMs: 10_000 });
    const waiting = c.acquire('ld', s2);
    await eventually('the waiter is queued', () => tickets(c, 'ld').length === 1, patience);
    consul.expireSession(s1.id);
    expect(consul.store.lockDelayUntil(lockKey(c, 'ld'))).toBeDefined();
    const second = await waiting;
    expect(consul.store.lockDelayUntil(lockKey(c, 'ld'))).toBeUndefined();
    expect(second.token > first.token).toBe(true);
  });

  it('an ephemeral key of an invalidated session can be created again once its lock-delay ends', async () => {
    const c = await make({ lockDelayMs: 1_500 });
    const s1 = await c.openSession({ ttlMs: 10_000 });
    await c.create('addr', bytes('old node'), { session: s1 });
    consul.expireSession(s1.id);
    const s2 = await c.openSession({ ttlMs: 10_000 });
    await c.create('addr', bytes('new node'), { session: s2 });
    expect(text((await c.get('addr'))!.value)).toBe('new node');
  });
});

describe('Consul locks are not re-entrant', () => {
  it('a session asking again for a lock it holds waits behind itself', async () => {
    const c = await make();
    const s = await c.openSession({ ttlMs: 10_000 });
    const first = await c.acquire('again', s);
    expect(await c.tryAcquire('again', s)).toBeUndefined();
    let second: Lock | undefined;
    const waiting = c.acquire('again', s).then((l) => (second = l));
    await eventually('the second acquire is queued', () => tickets(c, 'again').length === 1, patience);
    expect(second).toBeUndefined();
    await first.release();
    await waiting;
    expect(second!.token > first.token).toBe(true);
    await second!.release();
  });
});

/** Takes the lock key for `sessionId` straight in the emulator, as a lock transaction whose answer was lost would have. */
function holdDirectly(c: ConsulCoordinator, name: string, sessionId: string, owner: string): bigint {
  const outcome = consul.store.transact([{ verb: 'lock', key: lockKey(c, name), value: bytes(owner), flags: 0n, index: 0, session: sessionId }]);
  expect(outcome.ok).toBe(true);
  const entry = consul.store.getKey(lockKey(c, name));
  expect(entry?.session).toBe(sessionId);
  return (BigInt(entry?.createIndex ?? 0) << 32n) | BigInt(entry?.lockIndex ?? 0);
}

describe('Consul locks: a lock key held by the session with no Lock here (an answer lost) is adopted', () => {
  it('tryAcquire returns a Lock for it with the token and owner Consul recorded; while it is live a tryAcquire is undefined; released, the lock is free', async () => {
    const c = await make();
    const s = await c.openSession({ ttlMs: 10_000 });
    const other = await c.openSession({ ttlMs: 10_000 });
    const token = holdDirectly(c, 'adopt', s.id, 'recorded');
    expect(await c.holder('adopt')).toEqual({ owner: 'recorded', token });
    expect(await c.tryAcquire('adopt', other)).toBeUndefined();
    const lock = await c.tryAcquire('adopt', s, { owner: 'asked' });
    expect(lock?.token).toBe(token);
    expect(lock?.owner).toBe('recorded');
    expect(tickets(c, 'adopt')).toEqual([]);
    expect(await c.tryAcquire('adopt', s)).toBeUndefined();
    await lock?.release();
    expect(consul.store.getKey(lockKey(c, 'adopt'))).toBeUndefined();
    const next = await c.tryAcquire('adopt', other);
    expect(next?.token).toBeGreaterThan(token);
    await next?.release();
  });

  it('tryAcquire adopts it even when other sessions wait for it; acquire adopts it at once', async () => {
    const c = await make();
    const s = await c.openSession({ ttlMs: 10_000 });
    const other = await c.openSession({ ttlMs: 10_000 });
    const token = holdDirectly(c, 'queued', s.id, 'recorded');
    const waiting = c.acquire('queued', other, { owner: 'other' });
    await eventually('the other session is queued', () => tickets(c, 'queued').length === 1, patience);
    const lock = await c.tryAcquire('queued', s);
    expect(lock?.token).toBe(token);
    await lock?.release();
    const theirs = await waiting;
    expect(theirs.owner).toBe('other');
    await theirs.release();

    const again = holdDirectly(c, 'queued', s.id, 'recorded again');
    const adopted = await c.acquire('queued', s);
    expect([adopted.token, adopted.owner]).toEqual([again, 'recorded again']);
    expect(tickets(c, 'queued')).toEqual([]);
    await adopted.release();
  });

  it('an acquire behind a ticket of its own session that nobody waits on drops it instead of waiting behind it', async () => {
    const c = await make();
    const s = await c.openSession({ ttlMs: 10_000 });
    const other = await c.openSession({ ttlMs: 10_000 });
    const held = await c.acquire('stale', other);
    const stale = `${escapeKey(c.namespace)}/queues/${escapeKey('stale')}/${s.id}-stale`;
    expect(consul.store.transact([{ verb: 'lock', key: stale, value: bytes('stale'), flags: 0n, index: 0, session: s.id }]).ok).toBe(true);
    const waiting = c.acquire('stale', s, { owner: 'mine' });
    await eventually('the stale ticket is dropped', () => tickets(c, 'stale').length === 1 && !tickets(c, 'stale').includes(stale), patience);
    await held.release();
    const lock = await waiting;
    expect(lock.owner).toBe('mine');
    await lock.release();
  });

  it('an acquire whose lock transaction lost its answer, and that gave up while reading back, leaves the lock to the retry', async () => {
    const c = await make();
    const s = await c.openSession({ ttlMs: 10_000 });
    let txns = 0;
    // The first transaction queues the ticket; the second takes the lock and its answer is lost, and Consul then answers nothing.
    consul.faults.dropAnswerWhen = ({ method, path }) => {
      if (method !== 'PUT' || path !== '/v1/txn' || ++txns !== 2) return false;
      consul.faults.unavailable = 'no-leader';
      return true;
    };
    const controller = new AbortController();
    const giving = c.acquire('lost', s, { owner: 'me', signal: controller.signal }).then(
      () => undefined,
      (err: unknown) => err,
    );
    await eventually('the lock transaction was applied', () => consul.store.getKey(lockKey(c, 'lost'))?.session === s.id, patience);
    controller.abort();
    const err = await giving;
    expect(TaskGraphError.is(err, 'ABORTED')).toBe(true);
    consul.faults.dropAnswerWhen = undefined;
    consul.faults.unavailable = false;
    const holder = await c.holder('lost');
    expect(holder?.owner).toBe('me');
    const lock = await c.acquire('lost', s, { owner: 'me' });
    expect(lock.token).toBe(holder?.token);
    expect(await c.tryAcquire('lost', s)).toBeUndefined();
    await lock.release();
    expect(await c.holder('lost')).toBeUndefined();
    expect(tickets(c, 'lost')).toEqual([]);
  });
});
