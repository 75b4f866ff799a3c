import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { eventually, startTcpProxy, type TcpProxy, rejection } from '@taskgraph/testkit';
import type { EtcdSession } from '../src/index.js';
import { bytes, etcdFixture, patience } from './helpers.js';

const etcd = etcdFixture();

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('etcd sessions: leases', () => {
  it('keeps the lease alive across several TTLs', async () => {
    const c = await etcd.coordinator();
    const s = await c.openSession({ ttlMs: 2000 });
    await c.create('alive', bytes('x'), { session: s });
    // A deliberate negative check: three TTLs pass and the lease must not be lost.
    await sleep(3 * s.ttlMs);
    expect(s.lost.aborted).toBe(false);
    expect(s.isLost()).toBe(false);
    expect(await c.get('alive')).toBeDefined();
    await s.close();
  }, 30_000);

  it('rounds a TTL up to whole seconds, as etcd grants them', async () => {
    const c = await etcd.coordinator();
    const s = await c.openSession({ ttlMs: 2500 });
    expect(s.ttlMs).toBe(3000);
    const info = await c.client.leaseClient.leaseTimeToLive({ ID: s.id });
    expect(info.grantedTTL).toBe('3');
    await s.close();
  });

  it('close revokes the lease: its keys go at once', async () => {
    const c = await etcd.coordinator();
    const observer = await etcd.coordinator({ namespace: c.namespace });
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
    const c = await etcd.coordinator();
    const s = await c.openSession({ ttlMs: 60_000 });
    let v = await c.create('leased', bytes('1'), { session: s });
    v = await c.update('leased', bytes('2'), v);
    const raw = etcd.raw();
    const kv = (await raw.kv.range({ key: Buffer.from(`${c.namespace}/leased`) })).kvs[0];
    expect(kv?.lease).toBe(s.id);
    expect(kv?.mod_revision).toBe(v);
    await s.close();
    expect(await c.get('leased')).toBeUndefined();
  });

  it('loses the session when etcd revokes the lease, and says etcd did', async () => {
    const c = await etcd.coordinator();
    const s = await c.openSession({ ttlMs: 3000 });
    await c.create('revoked', bytes('x'), { session: s });
    await etcd.raw().leaseClient.leaseRevoke({ ID: s.id });
    await eventually('the session is lost', () => s.lost.aborted, patience);
    const reason = s.lost.reason as Error & { code?: string };
    expect(reason.code).toBe('LEASE_LOST');
    expect(reason.message).toMatch(/etcd says/);
    expect(s.isLost()).toBe(true);
    expect(await c.get('revoked')).toBeUndefined();
    expect((await rejection(c.create('again', bytes('x'), { session: s }))).code).toBe('LEASE_LOST');
  });

  it('a write with a lease etcd no longer has fails with LeaseLostError and loses the session', async () => {
    const c = await etcd.coordinator();
    const s = await c.openSession({ ttlMs: 30_000 });
    // Revoked behind the coordinator's back, before any keepalive could tell it.
    await etcd.raw().leaseClient.leaseRevoke({ ID: s.id });
    expect((await rejection(c.create('late', bytes('x'), { session: s }))).code).toBe('LEASE_LOST');
    expect(s.lost.aborted).toBe(true);
  });
});

/** LeaseKeepAlive streams etcd has seen start, and those still open, from its Prometheus metrics. */
async function keepAliveStreams(clientUrl: string): Promise<{ started: number; open: number }> {
  const text = await (await fetch(`${clientUrl}/metrics`)).text();
  const sum = (metric: string) =>
    text
      .split('\n')
      .filter((l) => l.startsWith(`${metric}{`) && l.includes('grpc_method="LeaseKeepAlive"'))
      .reduce((n, l) => n + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
  const started = sum('grpc_server_started_total');
  return { started, open: started - sum('grpc_server_handled_total') };
}

describe('etcd sessions: pooled keepalive streams', () => {
  const own = etcdFixture({ name: 'keepalive-pool' });

  it('keeps 40 sessions alive on streams reused from keepalive to keepalive (one keepalive per stream at a time), all closed with the coordinator', async () => {
    const before = await keepAliveStreams(own.server.clientUrl);
    const c = await own.coordinator();
    const sessions = await Promise.all(Array.from({ length: 40 }, () => c.openSession({ ttlMs: 2000 })));
    await Promise.all(sessions.map((s, i) => c.create(`k${i}`, bytes('x'), { session: s })));
    const deadlines = sessions.map((s) => s.deadline);
    // A keepalive every 667 ms: 3 s is four or more rounds, 160+ keepalives.
    await eventually('every session renewed for 3 s', () => sessions.every((s, i) => s.deadline > deadlines[i]! + 3000), patience);
    expect(sessions.filter((s) => s.lost.aborted)).toEqual([]);
    const during = await keepAliveStreams(own.server.clientUrl);
    // At most one stream per keepalive in flight at once (at most one per session), reused: not one per keepalive.
    expect(during.started - before.started).toBeGreaterThan(0);
    expect(during.started - before.started).toBeLessThanOrEqual(40);
    expect(during.open - before.open).toBeLessThanOrEqual(40);
    // Ending a session leaves the others renewing.
    await sessions[0]!.close();
    const after = sessions.slice(1).map((s) => s.deadline);
    await eventually('the others still renew', () => sessions.slice(1).every((s, i) => s.deadline > after[i]! + 1000), patience);
    expect(await c.get('k0')).toBeUndefined();
    expect(await c.get('k1')).toBeDefined();
    await c.close();
    expect(sessions.every((s) => s.lost.aborted)).toBe(true);
    await eventually('etcd has no stream of the coordinator open', async () => (await keepAliveStreams(own.server.clientUrl)).open === before.open, patience);
  }, 60_000);

  it('gives up a stalled stream (etcd paused past the keepalive timeout, within the TTL) and every session lives', async () => {
    // TTL 15 s: a keepalive is sent 5 s after the last answer and given up 5 s later; the deadline is
    // 14 s after the last acknowledged send (margin 1 s). A pause of 10.5 s that begins less than 2.5 s
    // after a round's sends holds the next round's keepalives from send to timeout, and ends early
    // enough for the retries to beat the deadline.
    const ttlMs = 15_000;
    const pauseMs = 10_500;
    const c = await own.coordinator({ requestTimeoutMs: 2000 });
    const sessions = await Promise.all(Array.from({ length: 10 }, () => c.openSession({ ttlMs })));
    const before = await keepAliveStreams(own.server.clientUrl);
    let pausedAt = 0;
    for (let attempt = 1; ; attempt++) {
      const seen = sessions.map((s) => s.deadline);
      await eventually('every session renewed', () => sessions.every((s, i) => s.deadline > seen[i]!), { ...patience, intervalMs: 5 });
      own.server.pause();
      pausedAt = performance.now();
      // Every send of the round was no earlier than its deadline less the TTL.
      const earliestSend = Math.min(...sessions.map((s) => s.deadline)) - ttlMs;
      if (pausedAt - earliestSend < 2500) break;
      // A busy machine saw the round late: let it go and wait for the next one.
      own.server.resume();
      if (attempt === 5) throw new Error('could not pause etcd within 2.5 s of a round of keepalives in 5 rounds');
    }
    try {
      await sleep(pauseMs);
    } finally {
      own.server.resume();
    }
    await eventually('every session renewed after the pause', () => sessions.every((s) => s.deadline > pausedAt + pauseMs), patience);
    expect(sessions.filter((s) => s.lost.aborted)).toEqual([]);
    // The streams whose keepalives timed out were closed and new ones opened: never more open than sessions.
    const after = await keepAliveStreams(own.server.clientUrl);
    expect(after.started).toBeGreaterThan(before.started);
    expect(after.open - before.open).toBeLessThanOrEqual(10);
    await Promise.all(sessions.map((s) => s.close()));
  }, 120_000);
});

describe('etcd sessions: the local deadline', () => {
  const own = etcdFixture({ name: 'paused' });

  it('fires lost when etcd is paused (SIGSTOP) past the TTL, though no error ever arrives', async () => {
    const c = await own.coordinator({ requestTimeoutMs: 1000 });
    const s = await c.openSession({ ttlMs: 2000 });
    await c.create('eph', bytes('x'), { session: s });
    own.server.pause();
    try {
      await eventually('the session is lost', () => s.lost.aborted, { timeoutMs: 15_000 });
      const reason = s.lost.reason as Error & { code?: string };
      expect(reason.code).toBe('LEASE_LOST');
      expect(reason.message).toMatch(/no keepalive was acknowledged/);
      expect(s.isLost()).toBe(true);
      expect((await rejection(c.create('eph2', bytes('y'), { session: s }))).code).toBe('LEASE_LOST');
    } finally {
      own.server.resume();
    }
    // Back up, etcd has the lease's keys removed: it expired, or the coordinator revoked it.
    const observer = await own.coordinator({ namespace: c.namespace });
    await eventually('the ephemeral key is gone', async () => (await observer.get('eph')) === undefined, patience);
    // The coordinator itself is fine: a new session works.
    const s2 = await c.openSession({ ttlMs: 2000 });
    await c.create('eph3', bytes('z'), { session: s2 });
    await s2.close();
  }, 60_000);

  it('survives a quick etcd restart within the TTL: the keepalive stream reconnects', async () => {
    const c = await own.coordinator({ requestTimeoutMs: 2000 });
    const s = (await c.openSession({ ttlMs: 15_000 })) as EtcdSession;
    await c.create('kept', bytes('x'), { session: s });
    await own.server.stop();
    await own.server.restart();
    // Two keepalive periods after the restart, the deadline has moved past the old one.
    const before = s.deadline;
    await eventually('a keepalive after the restart was acknowledged', () => s.deadline > before + 1000, { timeoutMs: 20_000 });
    expect(s.lost.aborted).toBe(false);
    expect(await c.get('kept')).toBeDefined();
    await s.close();
  }, 60_000);
});

describe('etcd sessions: a partitioned client', () => {
  let proxy: TcpProxy;

  beforeAll(async () => {
    proxy = await startTcpProxy({ target: etcd.server.clientAddress });
  });
  afterAll(async () => {
    await proxy.close();
  });

  it('loses its session by the local deadline, gets typed errors, and recovers after the heal', async () => {
    const c = await etcd.coordinator({ hosts: [`http://${proxy.address}`], requestTimeoutMs: 1000 });
    const other = await etcd.coordinator({ namespace: c.namespace });
    const s = await c.openSession({ ttlMs: 2000 });
    await c.create('mine', bytes('x'), { session: s });
    proxy.cut();
    try {
      await eventually('the cut-off session is lost', () => s.lost.aborted, { timeoutMs: 15_000 });
      expect((s.lost.reason as Error).message).toMatch(/no keepalive was acknowledged/);
      // The rest of the world still reaches etcd; the lease runs out there too.
      await eventually('etcd expired the lease', async () => (await other.get('mine')) === undefined, { timeoutMs: 15_000 });
      const read = await rejection(c.get('mine'));
      expect(read.code).toBe('UNAVAILABLE');
      const write = await rejection(c.create('while-cut', bytes('x')));
      expect(['INDETERMINATE', 'UNAVAILABLE']).toContain(write.code);
    } finally {
      proxy.heal();
    }
    await eventually('the client reaches etcd again', async () => (await c.get('mine')) === undefined, patience);
    const s2 = await c.openSession({ ttlMs: 2000 });
    expect(s2.id).not.toBe(s.id);
    await s2.close();
  }, 60_000);
});
