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
