import { afterAll, beforeAll, describe, it, expect } from 'vitest';
import type { Lock, Logger } from '@taskgraph/api';
import { eventually, rejection, startTcpProxy } from '@taskgraph/testkit';
import type { TcpProxy } from '@taskgraph/testkit';
import type { EtcdCoordinator } from '../src/index.js';
import { etcdFixture, namespace, patience } from './helpers.js';

const etcd = etcdFixture();

/** The waiter keys of a lock as etcd has them, oldest first. */
async function waiters(c: EtcdCoordinator, name: string): Promise<{ key: string; owner: string; createRevision: bigint }[]> {
  const res = await etcd
    .raw()
    .getAll()
    .prefix(`${c.namespace}/__locks/${name}//`)
    .sort('Create', 'Ascend')
    .exec();
  return res.kvs.map((kv) => ({ key: kv.key.toString(), owner: kv.value.toString(), createRevision: BigInt(kv.create_revision) }));
}

async function three(): Promise<EtcdCoordinator[]> {
  const ns = namespace('locks');
  return Promise.all([0, 1, 2].map(() => etcd.coordinator({ namespace: ns })));
}

describe('etcd locks: order and fencing tokens across clients', () => {
  it('grants first come, first served, each holder with a larger token', async () => {
    const [a, b, c] = (await three()) as [EtcdCoordinator, EtcdCoordinator, EtcdCoordinator];
    const [sa, sb, sc] = await Promise.all([a, b, c].map((x) => x.openSession({ ttlMs: 10_000 })));
    const la = await a.acquire('job/task/0', sa!, { owner: 'A' });
    expect(await b.holder('job/task/0')).toEqual({ owner: 'A', token: la.token });

    const order: string[] = [];
    const pb = b.acquire('job/task/0', sb!, { owner: 'B' }).then((l) => (order.push('B'), l));
    await eventually('B waits', async () => (await waiters(a, 'job/task/0')).length === 2, patience);
    const pc = c.acquire('job/task/0', sc!, { owner: 'C' }).then((l) => (order.push('C'), l));
    await eventually('C waits', async () => (await waiters(a, 'job/task/0')).length === 3, patience);
    expect((await waiters(a, 'job/task/0')).map((w) => w.owner)).toEqual(['A', 'B', 'C']);
    // The waiter key is the lock's name, "//", then the lease id in hex and a nonce.
    expect((await waiters(a, 'job/task/0'))[0]?.key.startsWith(`${a.namespace}/__locks/job/task/0//${BigInt(sa!.id).toString(16)}-`)).toBe(true);

    await la.release();
    expect(la.lost.aborted).toBe(true);
    const lb = await pb;
    expect(order).toEqual(['B']);
    expect(lb.token).toBeGreaterThan(la.token);
    expect(await a.holder('job/task/0')).toEqual({ owner: 'B', token: lb.token });

    await lb.release();
    const lc = await pc;
    expect(order).toEqual(['B', 'C']);
    expect(lc.token).toBeGreaterThan(lb.token);
    await lc.release();
    expect(await a.holder('job/task/0')).toBeUndefined();
    expect(await waiters(a, 'job/task/0')).toEqual([]);
  });

  it('tryAcquire takes a free lock and declines a held or awaited one', async () => {
    const [a, b] = (await three()) as [EtcdCoordinator, EtcdCoordinator];
    const sa = await a.openSession({ ttlMs: 10_000 });
    const sb = await b.openSession({ ttlMs: 10_000 });
    const la = await a.tryAcquire('t', sa);
    expect(la).toBeDefined();
    expect(await b.tryAcquire('t', sb)).toBeUndefined();
    // Declining leaves nothing behind.
    expect((await waiters(a, 't')).length).toBe(1);
    await la?.release();
    const lb = await b.tryAcquire('t', sb, { owner: 'bee' });
    expect(lb?.token).toBeGreaterThan(la?.token ?? 0n);
    expect(await a.holder('t')).toEqual({ owner: 'bee', token: lb?.token });
    await lb?.release();
  });

  it('locks a/b and a are different locks', async () => {
    const [a] = (await three()) as [EtcdCoordinator];
    const s = await a.openSession({ ttlMs: 10_000 });
    const outer = await a.acquire('a', s);
    const inner = await a.tryAcquire('a/b', s);
    expect(inner).toBeDefined();
    expect(await a.holder('a')).toEqual({ owner: s.id, token: outer.token });
    await inner?.release();
    await outer.release();
  });

  it('a session asking twice waits behind itself', async () => {
    const [a] = (await three()) as [EtcdCoordinator];
    const s = await a.openSession({ ttlMs: 10_000 });
    const first = await a.acquire('twice', s);
    let second: Lock | undefined;
    const p = a.acquire('twice', s).then((l) => (second = l));
    await eventually('the second acquire waits', async () => (await waiters(a, 'twice')).length === 2, patience);
    expect(second).toBeUndefined();
    await first.release();
    await p;
    expect(second?.token).toBeGreaterThan(first.token);
    await second?.release();
  });

  it('aborting a waiting acquire removes its waiter, and the queue moves on without it', async () => {
    const [a, b, c] = (await three()) as [EtcdCoordinator, EtcdCoordinator, EtcdCoordinator];
    const [sa, sb, sc] = await Promise.all([a, b, c].map((x) => x.openSession({ ttlMs: 10_000 })));
    const la = await a.acquire('q', sa!);
    const controller = new AbortController();
    const pb = b.acquire('q', sb!, { signal: controller.signal });
    await eventually('B waits', async () => (await waiters(a, 'q')).length === 2, patience);
    const pc = c.acquire('q', sc!);
    await eventually('C waits', async () => (await waiters(a, 'q')).length === 3, patience);
    controller.abort();
    expect((await rejection(pb)).code).toBe('ABORTED');
    expect((await waiters(a, 'q')).length).toBe(2);
    await la.release();
    const lc = await pc;
    expect(lc.token).toBeGreaterThan(la.token);
    await lc.release();
  });

  it('a holder whose session ends loses the lock, and the next waiter gets it', async () => {
    const [a, b] = (await three()) as [EtcdCoordinator, EtcdCoordinator];
    const sa = await a.openSession({ ttlMs: 10_000 });
    const sb = await b.openSession({ ttlMs: 10_000 });
    const la = await a.acquire('s', sa);
    const pb = b.acquire('s', sb);
    await eventually('B waits', async () => (await waiters(a, 's')).length === 2, patience);
    // The lease ends on the server, as if it expired: A hears it from etcd, B gets the lock.
    await etcd.raw().leaseClient.leaseRevoke({ ID: sa.id });
    const lb = await pb;
    expect(lb.token).toBeGreaterThan(la.token);
    await eventually('A learns it lost the lock', () => la.lost.aborted, patience);
    expect((la.lost.reason as { code?: string }).code).toBe('LEASE_LOST');
    await la.release();
    await lb.release();
  });

  it('a waiter whose session is lost stops waiting with LeaseLostError', async () => {
    const [a, b] = (await three()) as [EtcdCoordinator, EtcdCoordinator];
    const sa = await a.openSession({ ttlMs: 10_000 });
    const sb = await b.openSession({ ttlMs: 10_000 });
    const la = await a.acquire('w', sa);
    const pb = b.acquire('w', sb);
    await eventually('B waits', async () => (await waiters(a, 'w')).length === 2, patience);
    await etcd.raw().leaseClient.leaseRevoke({ ID: sb.id });
    expect((await rejection(pb)).code).toBe('LEASE_LOST');
    expect((await waiters(a, 'w')).length).toBe(1);
    await la.release();
  });

  it('closing the coordinator ends a waiting acquire with ClosedError', async () => {
    const [a, b] = (await three()) as [EtcdCoordinator, EtcdCoordinator];
    const sa = await a.openSession({ ttlMs: 10_000 });
    const sb = await b.openSession({ ttlMs: 10_000 });
    const la = await a.acquire('c', sa);
    const pb = b.acquire('c', sb);
    await eventually('B waits', async () => (await waiters(a, 'c')).length === 2, patience);
    const outcome = rejection(pb);
    await b.close();
    expect(['CLOSED', 'LEASE_LOST']).toContain((await outcome).code);
    await eventually("B's waiter is gone with its revoked lease", async () => (await waiters(a, 'c')).length === 1, patience);
    await la.release();
  });
});

describe('etcd locks: a tryAcquire whose answer is lost', () => {
  let proxy: TcpProxy;
  beforeAll(async () => {
    proxy = await startTcpProxy({ target: etcd.server.clientAddress });
  });
  afterAll(async () => {
    await proxy.close();
  });

  it('reads the lock back: the put was applied, so the lock is ours (not left held by nobody), and it releases as usual', async () => {
    const said: string[] = [];
    const logger: Logger = {
      debug: () => undefined,
      info: (msg: string) => void said.push(msg),
      warn: (msg: string) => void said.push(msg),
      error: (msg: string) => void said.push(msg),
      child: () => logger,
    };
    const c = await etcd.coordinator({ hosts: [`http://${proxy.address}`], requestTimeoutMs: 1000, logger });
    const other = await etcd.coordinator({ namespace: c.namespace });
    const s = await c.openSession({ ttlMs: 30_000 });
    proxy.cutReplies();
    let lock: Lock | undefined;
    try {
      const taking = c.tryAcquire('slot', s, { owner: 'me' });
      await eventually('the put reached etcd', async () => (await other.holder('slot'))?.owner === 'me', patience);
      await eventually('its answer was given up on', () => said.some((m) => m.includes('reading the lock back')), patience);
      proxy.heal();
      lock = await taking;
    } finally {
      proxy.heal();
    }
    expect(lock).toBeDefined();
    expect(await other.holder('slot')).toEqual({ owner: 'me', token: lock!.token });
    expect((await waiters(other, 'slot')).length).toBe(1);
    await lock!.release();
    const so = await other.openSession({ ttlMs: 10_000 });
    const next = await other.tryAcquire('slot', so, { owner: 'other' });
    expect(next?.token).toBeGreaterThan(lock!.token);
    await next!.release();
    await s.close();
  }, 60_000);
});

/** Writes a waiter key of `session` for lock `name` as the coordinator does, as if by a call whose answer was lost. */
async function orphanKey(c: EtcdCoordinator, name: string, sessionId: string, owner: string): Promise<bigint> {
  const key = Buffer.from(`${c.namespace}/__locks/${name}//${BigInt(sessionId).toString(16)}-lost1`);
  const res = await etcd.raw().kv.put({ key, value: Buffer.from(owner), lease: sessionId });
  return BigInt(res.header.revision);
}

describe('etcd locks: a holding of the session that no Lock here stands for (an answer lost) is adopted', () => {
  it('tryAcquire returns a Lock for it, with the token and owner etcd recorded; while it is live a tryAcquire is undefined; released, the lock is free', async () => {
    const [a, b] = (await three()) as [EtcdCoordinator, EtcdCoordinator];
    const sa = await a.openSession({ ttlMs: 10_000 });
    const sb = await b.openSession({ ttlMs: 10_000 });
    const token = await orphanKey(a, 'adopt', sa.id, 'recorded');
    expect(await b.holder('adopt')).toEqual({ owner: 'recorded', token });
    expect(await b.tryAcquire('adopt', sb)).toBeUndefined();
    const lock = await a.tryAcquire('adopt', sa, { owner: 'asked' });
    expect(lock).toBeDefined();
    expect(lock?.token).toBe(token);
    expect(lock?.owner).toBe('recorded');
    expect((await waiters(a, 'adopt')).length).toBe(1);
    expect(await a.tryAcquire('adopt', sa)).toBeUndefined();
    await lock?.release();
    expect(await waiters(a, 'adopt')).toEqual([]);
    const lb = await b.tryAcquire('adopt', sb);
    expect(lb?.token).toBeGreaterThan(token);
    await lb?.release();
  });

  it('acquire returns a Lock for it at once, ahead of other waiters, and drops its own waiter key', async () => {
    const [a, b] = (await three()) as [EtcdCoordinator, EtcdCoordinator];
    const sa = await a.openSession({ ttlMs: 10_000 });
    const sb = await b.openSession({ ttlMs: 10_000 });
    const token = await orphanKey(a, 'adopt-wait', sa.id, 'recorded');
    const pb = b.acquire('adopt-wait', sb, { owner: 'B' });
    await eventually('B waits', async () => (await waiters(a, 'adopt-wait')).length === 2, patience);
    const lock = await a.acquire('adopt-wait', sa);
    expect(lock.token).toBe(token);
    expect(lock.owner).toBe('recorded');
    expect((await waiters(a, 'adopt-wait')).map((w) => w.owner)).toEqual(['recorded', 'B']);
    await lock.release();
    const lb = await pb;
    expect(lb.token).toBeGreaterThan(token);
    await lb.release();
  });

  it('a live Lock is not adopted again: a second acquire of the session waits behind it', async () => {
    const [a] = (await three()) as [EtcdCoordinator];
    const s = await a.openSession({ ttlMs: 10_000 });
    const first = await a.acquire('live', s);
    let second: Lock | undefined;
    const p = a.acquire('live', s).then((l) => (second = l));
    await eventually('the second acquire waits', async () => (await waiters(a, 'live')).length === 2, patience);
    expect(second).toBeUndefined();
    await first.release();
    await p;
    expect(second?.token).toBeGreaterThan(first.token);
    await second?.release();
  });

  it('an acquire behind a waiter key of its own session that nobody waits on removes that key instead of waiting for it', async () => {
    const [a, b] = (await three()) as [EtcdCoordinator, EtcdCoordinator];
    const sa = await a.openSession({ ttlMs: 10_000 });
    const sb = await b.openSession({ ttlMs: 10_000 });
    const lb = await b.acquire('stale', sb, { owner: 'B' });
    await orphanKey(a, 'stale', sa.id, 'stale waiter');
    const pa = a.acquire('stale', sa, { owner: 'A' });
    await eventually('the stale waiter key is removed and A waits', async () => (await waiters(a, 'stale')).map((w) => w.owner).join() === 'B,A', patience);
    await lb.release();
    const la = await pa;
    expect(la.owner).toBe('A');
    expect(await b.holder('stale')).toEqual({ owner: 'A', token: la.token });
    await la.release();
    expect(await waiters(a, 'stale')).toEqual([]);
  });
});

describe('etcd locks: an acquire whose answer is lost, and whose withdrawal is lost too', () => {
  let proxy: TcpProxy;
  beforeAll(async () => {
    proxy = await startTcpProxy({ target: etcd.server.clientAddress });
  });
  afterAll(async () => {
    await proxy.close();
  });

  it('the retry adopts the lock its first try was granted, instead of waiting behind it forever', async () => {
    const said: string[] = [];
    const logger: Logger = {
      debug: () => undefined,
      info: (msg: string) => void said.push(msg),
      warn: (msg: string) => void said.push(msg),
      error: (msg: string) => void said.push(msg),
      child: () => logger,
    };
    const c = await etcd.coordinator({ hosts: [`http://${proxy.address}`], requestTimeoutMs: 1000, logger });
    const other = await etcd.coordinator({ namespace: c.namespace });
    const s = await c.openSession({ ttlMs: 30_000 });
    let failure: { code?: string } | undefined;
    try {
      proxy.cutReplies();
      const taking = rejection(c.acquire('slot', s, { owner: 'me' }));
      await eventually('the put reached etcd', async () => (await other.holder('slot'))?.owner === 'me', patience);
      // Nothing gets through now: the withdrawal of the waiter key is lost as well.
      proxy.cut();
      failure = await taking;
      expect(said.some((m) => m.includes('could not remove a lock waiter key'))).toBe(true);
    } finally {
      // Drop what the cut held (the withdrawal) rather than deliver it late.
      proxy.reset();
      proxy.heal();
    }
    expect(['INDETERMINATE', 'UNAVAILABLE']).toContain(failure?.code);
    const held = await other.holder('slot');
    expect(held?.owner).toBe('me');
    const lock = await eventually('the retry gets through', () => c.acquire('slot', s, { owner: 'me' }).catch(() => undefined), patience);
    expect(lock.token).toBe(held?.token);
    expect(said).toContain('the lock is held by this session with no Lock here (an earlier answer was lost): adopting it');
    expect((await waiters(other, 'slot')).length).toBe(1);
    await lock.release();
    expect(await other.holder('slot')).toBeUndefined();
    await s.close();
  }, 60_000);
});
