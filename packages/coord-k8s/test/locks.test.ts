// Locks as Leases: the Lease's shape, the fencing token, the queue that gives
// first-come-first-served hand-over, and take-over after the holder's session expired.
import type { Lock } from '@taskgraph/api';
import { describe, expect, it } from 'vitest';
import { eventually } from '@taskgraph/testkit';
import { ANNOTATION, LABEL, lockObjectName, type K8sCoordinator, type K8sSession } from '../src/index.js';
import { call } from './raw.js';
import { k8sFixture, patience } from './helpers.js';

const { h, client } = k8sFixture();
let n = 0;

async function clientsOf(count: number): Promise<K8sCoordinator[]> {
  const prefix = `l${++n}`;
  const out: K8sCoordinator[] = [];
  for (let i = 0; i < count; i++) out.push(await client(prefix));
  return out;
}

const LEASES = '/apis/coordination.k8s.io/v1/namespaces/default/leases';

interface LeaseView {
  metadata: { labels: Record<string, string>; annotations?: Record<string, string> };
  spec: { holderIdentity?: string; leaseTransitions?: number; leaseDurationSeconds?: number };
}

async function lease(prefix: string, name: string): Promise<LeaseView> {
  return (await call(h, 'GET', `${LEASES}/${lockObjectName(prefix, name)}`)) as LeaseView;
}

describe('the lock Lease', () => {
  it('names the holding session, counts transitions as the token, and mirrors the holder in a label', async () => {
    const [a] = await clientsOf(1);
    if (a === undefined) throw new Error('no client');
    const s = (await a.openSession({ ttlMs: 2000 })) as K8sSession;
    const lock = await a.acquire('jobs/j1/tasks/3', s, { owner: 'node-1' });
    const view = await lease(a.prefix, 'jobs/j1/tasks/3');
    expect(view.spec).toMatchObject({ holderIdentity: s.id, leaseTransitions: 1, leaseDurationSeconds: 2 });
    expect(view.metadata.labels).toEqual({ [LABEL.store]: a.prefix, [LABEL.kind]: 'lock', [LABEL.holder]: s.id });
    expect(view.metadata.annotations).toEqual({ [ANNOTATION.lock]: 'jobs/j1/tasks/3', [ANNOTATION.owner]: 'node-1' });
    expect(lock.token).toBe(1n);
    await lock.release();
    const released = await lease(a.prefix, 'jobs/j1/tasks/3');
    expect(released.spec.holderIdentity).toBeUndefined();
    expect(released.metadata.labels[LABEL.holder]).toBeUndefined();
    // The Lease stays, so the next holder's token is larger.
    const again = await a.acquire('jobs/j1/tasks/3', s);
    expect(again.token).toBe(2n);
  });
});

describe('fairness', () => {
  it('hands the lock over in the order the waiters queued', async () => {
    const [a, b, c, d] = await clientsOf(4);
    if (a === undefined || b === undefined || c === undefined || d === undefined) throw new Error('no clients');
    const sa = await a.openSession({ ttlMs: 3000 });
    const held = await a.acquire('fifo', sa);
    const order: string[] = [];
    const waiters: Promise<Lock>[] = [];
    for (const [name, cl] of [['b', b], ['c', c], ['d', d]] as const) {
      const s = await cl.openSession({ ttlMs: 3000 });
      waiters.push(
        cl.acquire('fifo', s).then((l) => {
          order.push(name);
          return l;
        }),
      );
      // The next waiter starts only once this one is in the queue.
      await eventually(`${name} is queued`, async () => (await lease(a.prefix, 'fifo')).metadata.annotations?.[ANNOTATION.queue]?.includes(s.id) ?? false, patience);
    }
    await held.release();
    let previous = held.token;
    for (const [i, w] of waiters.entries()) {
      const l = await w;
      expect(order[i]).toBe(['b', 'c', 'd'][i]);
      expect(l.token).toBe(previous + 1n);
      previous = l.token;
      await l.release();
    }
  });

  it('skips a waiter whose session ended while it waited', async () => {
    const [a, b, c] = await clientsOf(3);
    if (a === undefined || b === undefined || c === undefined) throw new Error('no clients');
    const held = await a.acquire('skip', await a.openSession({ ttlMs: 3000 }));
    const sb = await b.openSession({ ttlMs: 3000 });
    const gone = b.acquire('skip', sb).catch((err: unknown) => err);
    await eventually('b is queued', async () => (await lease(a.prefix, 'skip')).metadata.annotations?.[ANNOTATION.queue]?.includes(sb.id) ?? false, patience);
    const sc = await c.openSession({ ttlMs: 3000 });
    const next = c.acquire('skip', sc);
    await eventually('c is queued', async () => (await lease(a.prefix, 'skip')).metadata.annotations?.[ANNOTATION.queue]?.includes(sc.id) ?? false, patience);
    await sb.close();
    expect(await gone).toBeInstanceOf(Error);
    await held.release();
    expect((await next).owner).toBe(sc.id);
  });
});

describe('take-over', () => {
  it("a waiter takes the lock after the holder's session expires by observation (its owner partitioned)", async () => {
    const [a, b] = await clientsOf(2);
    if (a === undefined || b === undefined) throw new Error('no clients');
    const sa = (await a.openSession({ ttlMs: 2000 })) as K8sSession;
    const la = await a.acquire('takeover', sa);
    const sb = await b.openSession({ ttlMs: 2000 });
    const waiting = b.acquire('takeover', sb);
    await eventually('b is queued', async () => (await lease(a.prefix, 'takeover')).metadata.annotations?.[ANNOTATION.queue]?.includes(sb.id) ?? false, patience);
    h.proxyOf(a).cut();
    const lb = await waiting;
    // Fencing: the old holder had given up before the new one was granted.
    expect(sa.isLost()).toBe(true);
    expect(la.lost.aborted).toBe(true);
    expect(lb.token).toBeGreaterThan(la.token);
    expect(await b.holder('takeover')).toEqual({ owner: sb.id, token: lb.token });
    h.proxyOf(a).heal();
  });
});

/** Makes the lock's Lease held by `sessionId` straight through the API, as a take whose answer was lost would have left it. */
async function holdDirectly(prefix: string, name: string, sessionId: string, owner: string, transitions: number): Promise<void> {
  const now = new Date().toISOString().replace('Z', '000Z');
  await call(h, 'POST', LEASES, {
    apiVersion: 'coordination.k8s.io/v1',
    kind: 'Lease',
    metadata: {
      name: lockObjectName(prefix, name),
      labels: { [LABEL.store]: prefix, [LABEL.kind]: 'lock', [LABEL.holder]: sessionId },
      annotations: { [ANNOTATION.lock]: name, [ANNOTATION.owner]: owner },
    },
    spec: { holderIdentity: sessionId, leaseDurationSeconds: 10, acquireTime: now, renewTime: now, leaseTransitions: transitions },
  });
}

describe('a Lease held by the session with no Lock here (an answer lost) is adopted', () => {
  it('tryAcquire returns a Lock for it with the token and owner the Lease records; while it is live a tryAcquire is undefined; released, the lock is free', async () => {
    const [a, b] = await clientsOf(2);
    if (a === undefined || b === undefined) throw new Error('no clients');
    const s = await a.openSession({ ttlMs: 10_000 });
    const sb = await b.openSession({ ttlMs: 10_000 });
    await holdDirectly(a.prefix, 'adopt', s.id, 'recorded', 5);
    expect(await b.holder('adopt')).toEqual({ owner: 'recorded', token: 5n });
    expect(await b.tryAcquire('adopt', sb)).toBeUndefined();
    const lock = await a.tryAcquire('adopt', s, { owner: 'asked' });
    expect(lock?.token).toBe(5n);
    expect(lock?.owner).toBe('recorded');
    expect(await a.tryAcquire('adopt', s)).toBeUndefined();
    await lock?.release();
    expect((await lease(a.prefix, 'adopt')).spec.holderIdentity).toBeUndefined();
    const next = await b.tryAcquire('adopt', sb);
    expect(next?.token).toBe(6n);
    await next?.release();
  });

  it('acquire adopts it at once; a second acquire of the session waits for that live Lock, then takes the lock with a larger token', async () => {
    const [a] = await clientsOf(1);
    if (a === undefined) throw new Error('no client');
    const s = await a.openSession({ ttlMs: 10_000 });
    await holdDirectly(a.prefix, 'adopt-wait', s.id, 'recorded', 3);
    const lock = await a.acquire('adopt-wait', s);
    expect([lock.token, lock.owner]).toEqual([3n, 'recorded']);
    let second: Lock | undefined;
    const waiting = a.acquire('adopt-wait', s, { owner: 'second' }).then((l) => (second = l));
    for (let i = 0; i < 3; i++) {
      expect(await a.holder('adopt-wait')).toEqual({ owner: 'recorded', token: 3n });
      expect(second).toBeUndefined();
    }
    await lock.release();
    await waiting;
    expect(second?.token).toBe(4n);
    expect(second?.owner).toBe('second');
    await second?.release();
  });

  it('a tryAcquire whose answer is lost (the Lease was created, the reply never came): the retry adopts the lock', async () => {
    const [a, b] = await clientsOf(2);
    if (a === undefined || b === undefined) throw new Error('no clients');
    const s = await a.openSession({ ttlMs: 10_000 });
    h.emulator.faults.dropAnswerNext(1, { method: 'POST', resource: 'leases' });
    const failure = await a.tryAcquire('lost', s, { owner: 'me' }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect((failure as { code?: string } | undefined)?.code).toBe('INDETERMINATE');
    const held = await b.holder('lost');
    expect(held?.owner).toBe('me');
    const lock = await a.tryAcquire('lost', s, { owner: 'me' });
    expect(lock?.token).toBe(held?.token);
    expect(await a.tryAcquire('lost', s)).toBeUndefined();
    await lock?.release();
    expect(await b.holder('lost')).toBeUndefined();
  });

  it('an acquire whose answer is lost: the retry adopts the lock at once, ahead of a waiter of another session', async () => {
    const [a, b] = await clientsOf(2);
    if (a === undefined || b === undefined) throw new Error('no clients');
    const s = await a.openSession({ ttlMs: 10_000 });
    const sb = await b.openSession({ ttlMs: 10_000 });
    h.emulator.faults.dropAnswerNext(1, { method: 'POST', resource: 'leases' });
    const failure = await a.acquire('lost-wait', s, { owner: 'me' }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect((failure as { code?: string } | undefined)?.code).toBe('INDETERMINATE');
    const held = await b.holder('lost-wait');
    expect(held?.owner).toBe('me');
    let theirs: Lock | undefined;
    const waiting = b.acquire('lost-wait', sb).then((l) => (theirs = l));
    await eventually('b is queued', async () => (await lease(a.prefix, 'lost-wait')).metadata.annotations?.[ANNOTATION.queue]?.includes(sb.id) ?? false, patience);
    const lock = await a.acquire('lost-wait', s, { owner: 'me' });
    expect(lock.token).toBe(held?.token);
    expect(theirs).toBeUndefined();
    await lock.release();
    await waiting;
    expect(theirs?.token).toBeGreaterThan(lock.token);
    await theirs?.release();
  });
});
