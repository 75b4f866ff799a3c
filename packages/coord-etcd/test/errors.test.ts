import { describe, it, expect, beforeAll, afterAll, afterEach } from 'vitest';
import { eventually, startEtcdCluster, type EtcdCluster, rejection } from '@taskgraph/testkit';
import { Clients, bytes, etcdFixture, patience, text } from './helpers.js';
import { createEtcdCoordinator } from '../src/index.js';

const clients = new Clients();

afterEach(async () => {
  await clients.closeAll();
});

describe('etcd errors: etcd is down or silent', () => {
  const etcd = etcdFixture({ name: 'faulty' });

  it('nothing listening: every call is UnavailableError (not applied, safe to retry)', async () => {
    const c = await etcd.coordinator({ requestTimeoutMs: 2000 });
    const v = await c.create('k', bytes('1'));
    await etcd.server.kill();
    try {
      for (const call of [
        () => c.get('k'),
        () => c.list('k'),
        () => c.create('k2', bytes('x')),
        () => c.update('k', bytes('2'), v),
        () => c.delete('k', v),
        () => c.deletePrefix('k'),
        () => c.openSession({ ttlMs: 2000 }),
        () => c.holder('l'),
      ]) {
        const err = await rejection(call());
        expect(err.code, err.message).toBe('UNAVAILABLE');
        expect((err as { retryable?: boolean }).retryable).toBe(true);
      }
    } finally {
      await etcd.server.restart();
    }
    // Back at once: one endpoint has no circuit breaker to wait out.
    await eventually('etcd answers again', async () => (await c.get('k'))?.version === v, patience);
    await c.update('k', bytes('2'), v);
  }, 60_000);

  it('etcd paused (SIGSTOP): a write in flight is IndeterminateError, a read UnavailableError, and "not applied" holds', async () => {
    const c = await etcd.coordinator({ requestTimeoutMs: 1000 });
    const v = await c.create('p', bytes('1'));
    etcd.server.pause();
    let later: Error & { code?: string };
    try {
      // Sent on the open connection, never answered.
      const write = await rejection(c.update('p', bytes('2'), v));
      expect(write.code, write.message).toBe('INDETERMINATE');
      expect(write.message).toMatch(/read before retrying/);
      const read = await rejection(c.get('p'));
      expect(read.code, read.message).toBe('UNAVAILABLE');
      // After a timeout the client starts a new connection, which a stopped etcd never
      // completes: this write is either known not to have left, or unknown.
      later = await rejection(c.create('p2', bytes('x')));
      expect(['INDETERMINATE', 'UNAVAILABLE'], later.message).toContain(later.code);
    } finally {
      etcd.server.resume();
    }
    // The indeterminate write sat in etcd's socket with gRPC's cancellation behind it:
    // whether it was applied is up to etcd, which is why the caller reads before retrying.
    const after = await eventually('etcd answers again', () => c.get('p'), patience);
    expect(['1', '2']).toContain(text(after.value));
    if (later.code === 'UNAVAILABLE') expect(await c.get('p2')).toBeUndefined();
  }, 60_000);

  it('a coordinator whose hosts never answered: UnavailableError, and close() still returns', async () => {
    const c = await createEtcdCoordinator({ hosts: ['http://127.0.0.1:1'], namespace: 'nowhere', requestTimeoutMs: 1000 });
    expect((await rejection(c.get('x'))).code).toBe('UNAVAILABLE');
    await c.close();
  });
});

describe('etcd errors: a three-member cluster losing a member', () => {
  let cluster: EtcdCluster;

  beforeAll(async () => {
    cluster = await startEtcdCluster(3);
  }, 120_000);
  afterAll(async () => {
    await cluster.cleanup();
  });

  it('keeps serving calls, watches and sessions through the other members', async () => {
    const c = await clients.coordinator(cluster.endpoints.join(','), { hosts: [...cluster.endpoints], requestTimeoutMs: 3000 });
    const s = await c.openSession({ ttlMs: 10_000 });
    const start = await c.list('m/');
    const controller = new AbortController();
    const seen: string[] = [];
    const consumer = (async () => {
      for await (const b of c.watch('m/', { after: start.revision, signal: controller.signal })) for (const e of b.events) seen.push(e.key);
    })();
    await c.create('m/0', bytes('0'), { session: s });
    await cluster.member(0).kill();
    // A call may land on the dead member and fail before it is sent; after that, the
    // other members take it. Every write here is made until it is known to be applied.
    for (let i = 1; i <= 10; i++) {
      await eventually(`write ${i}`, async () => {
        try {
          await c.create(`m/${i}`, bytes(String(i)), { session: s });
        } catch (err) {
          if ((err as { code?: string }).code !== 'ALREADY_EXISTS') throw err;
        }
        return true;
      }, patience);
    }
    await eventually('the watch saw every write', () => seen.length >= 11, { timeoutMs: 30_000 });
    expect(seen).toEqual(Array.from({ length: 11 }, (_, i) => `m/${i}`));
    expect(s.lost.aborted).toBe(false);
    controller.abort();
    await consumer;
    await cluster.member(0).restart();
    await s.close();
  }, 120_000);
});
