import { describe, it, expect, beforeAll, afterAll, afterEach } from 'vitest';
import { startEtcd, startTcpProxy, type EtcdServer, type TcpProxy } from '@taskgraph/testkit';
import type { EtcdSession } from '../src/index.js';
import { Clients, bytes, eventually, rejection } from './helpers.js';

let etcd: EtcdServer;
const clients = new Clients();

beforeAll(async () => {
  etcd = await startEtcd();
});
afterEach(async () => {
  await clients.closeAll();
});
afterAll(async () => {
  await etcd.cleanup();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('etcd sessions: leases', () => {
  it('keeps the lease alive across several TTLs', async () => {
    const c = await clients.coordinator(etcd);
    const s = await c.openSession({ ttlMs: 2000 });
    await c.create('alive', bytes('x'), { session: s });
    await sleep(3 * s.ttlMs);
    expect(s.lost.aborted).toBe(false);
    expect(s.isLost()).toBe(false);
    expect(await c.get('alive')).toBeDefined();
    await s.close();
  }, 30_000);

  it('rounds a TTL up to whole seconds, as etcd grants them', async () => {
    const c = await clients.coordinator(etcd);
    const s = await c.openSession({ ttlMs: 2500 });
    expect(s.ttlMs).toBe(3000);
    const info = await c.client.leaseClient.leaseTimeToLive({ ID: s.id });
    expect(info.grantedTTL).toBe('3');
    await s.close();
  });

  it('close revokes the lease: its keys go at once', async () => {
    const c = await clients.coordinator(etcd);
    const observer = await clients.coordinator(etcd, { namespace: c.namespace });
    const s = await c.openSession({ ttlMs: 60_000 });
    await c.create('eph', bytes('x'), { session: s });
    await s.close();
    expect(s.lost.aborted).toBe(true);
    expect((s.lost.reason as { code?: string }).code).toBe('CLOSED');
    expect(await observer.get('eph')).toBeUndefined();
    expect((await rejection(c.create('eph2', bytes('x'), { session: s }))).code).toBe('LEASE_LOST');
    await s.close();
  });

  it('update keeps the key on its lease', async () => {
    const c = await clients.coordinator(etcd);
    const s = await c.openSession({ ttlMs: 60_000 });
    let v = await c.create('leased', bytes('1'), { session: s });
    v = await c.update('leased', bytes('2'), v);
    const raw = clients.raw(etcd);
    const kv = (await raw.kv.range({ key: Buffer.from(`${c.namespace}/leased`) })).kvs[0];
    expect(kv?.lease).toBe(s.id);
    expect(kv?.mod_revision).toBe(v);
    await s.close();
    expect(await c.get('leased')).toBeUndefined();
  });

  it('loses the session when etcd revokes the lease, and says etcd did', async () => {
    const c = await clients.coordinator(etcd);
    const s = await c.openSession({ ttlMs: 3000 });
    await c.create('revoked', bytes('x'), { session: s });
    await clients.raw(etcd).leaseClient.leaseRevoke({ ID: s.id });
    await eventually('the session is lost', () => s.lost.aborted);
    const reason = s.lost.reason as Error & { code?: string };
    expect(reason.code).toBe('LEASE_LOST');
    expect(reason.message).toMatch(/etcd says/);
    expect(s.isLost()).toBe(true);
    expect(await c.get('revoked')).toBeUndefined();
    expect((await rejection(c.create('again', bytes('x'), { session: s }))).code).toBe('LEASE_LOST');
  });

  it('a write with a lease etcd no longer has fails with LeaseLostError and loses the session', async () => {
    const c = await clients.coordinator(etcd);
    const s = await c.openSession({ ttlMs: 30_000 });
    // Revoked behind the coordinator's back, before any keepalive could tell it.
    await clients.raw(etcd).leaseClient.leaseRevoke({ ID: s.id });
    expect((await rejection(c.create('late', bytes('x'), { session: s }))).code).toBe('LEASE_LOST');
    expect(s.lost.aborted).toBe(true);
  });
});

describe('etcd sessions: the local deadline', () => {
  let own: EtcdServer;

  beforeAll(async () => {
    own = await startEtcd({ name: 'paused' });
  });
  afterAll(async () => {
    await own.cleanup();
  });

  it('fires lost when etcd is paused (SIGSTOP) past the TTL, though no error ever arrives', async () => {
    const c = await clients.coordinator(own, { requestTimeoutMs: 1000 });
    const s = await c.openSession({ ttlMs: 2000 });
    await c.create('eph', bytes('x'), { session: s });
    own.pause();
    try {
      await eventually('the session is lost', () => s.lost.aborted, 15_000);
      const reason = s.lost.reason as Error & { code?: string };
      expect(reason.code).toBe('LEASE_LOST');
      expect(reason.message).toMatch(/no keepalive was acknowledged/);
      expect(s.isLost()).toBe(true);
      expect((await rejection(c.create('eph2', bytes('y'), { session: s }))).code).toBe('LEASE_LOST');
    } finally {
      own.resume();
    }
    // Back up, etcd has the lease's keys removed: it expired, or the coordinator revoked it.
    const observer = await clients.coordinator(own, { namespace: c.namespace });
    await eventually('the ephemeral key is gone', async () => (await observer.get('eph')) === undefined);
    // The coordinator itself is fine: a new session works.
    const s2 = await c.openSession({ ttlMs: 2000 });
    await c.create('eph3', bytes('z'), { session: s2 });
    await s2.close();
  }, 60_000);

  it('survives a quick etcd restart within the TTL: the keepalive stream reconnects', async () => {
    const c = await clients.coordinator(own, { requestTimeoutMs: 2000 });
    const s = (await c.openSession({ ttlMs: 15_000 })) as EtcdSession;
    await c.create('kept', bytes('x'), { session: s });
    await own.stop();
    await own.restart();
    // Two keepalive periods after the restart, the deadline has moved past the old one.
    const before = s.deadline;
    await eventually('a keepalive after the restart was acknowledged', () => s.deadline > before + 1000, 20_000);
    expect(s.lost.aborted).toBe(false);
    expect(await c.get('kept')).toBeDefined();
    await s.close();
  }, 60_000);
});

describe('etcd sessions: a partitioned client', () => {
  let proxy: TcpProxy;

  beforeAll(async () => {
    proxy = await startTcpProxy({ target: etcd.clientAddress });
  });
  afterAll(async () => {
    await proxy.close();
  });

  it('loses its session by the local deadline, gets typed errors, and recovers after the heal', async () => {
    const c = await clients.coordinator(`http://${proxy.address}`, { requestTimeoutMs: 1000 });
    const other = await clients.coordinator(etcd, { namespace: c.namespace });
    const s = await c.openSession({ ttlMs: 2000 });
    await c.create('mine', bytes('x'), { session: s });
    proxy.cut();
    try {
      await eventually('the cut-off session is lost', () => s.lost.aborted, 15_000);
      expect((s.lost.reason as Error).message).toMatch(/no keepalive was acknowledged/);
      // The rest of the world still reaches etcd; the lease runs out there too.
      await eventually('etcd expired the lease', async () => (await other.get('mine')) === undefined, 15_000);
      const read = await rejection(c.get('mine'));
      expect(read.code).toBe('UNAVAILABLE');
      const write = await rejection(c.create('while-cut', bytes('x')));
      expect(['INDETERMINATE', 'UNAVAILABLE']).toContain(write.code);
    } finally {
      proxy.heal();
    }
    await eventually('the client reaches etcd again', async () => (await c.get('mine')) === undefined);
    const s2 = await c.openSession({ ttlMs: 2000 });
    expect(s2.id).not.toBe(s.id);
    await s2.close();
  }, 60_000);
});
