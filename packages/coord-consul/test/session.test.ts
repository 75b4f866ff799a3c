import { describe, expect, it } from 'vitest';
import { ManualClock, eventually, rejection } from '@taskgraph/testkit';
import type { ConsulSession } from '../src/index.js';
import { activeHandles, bytes, consulFixture, coordinator, patience } from './helpers.js';

const { consul, make } = consulFixture();

describe('Consul sessions', () => {
  it('refuses TTLs outside [10 s, 86400 s] before any request', async () => {
    const c = await make();
    // Only session creations count: other clients' renewals may share the emulator.
    let creates = 0;
    const stop = consul.onRequest(({ path }) => {
      if (path === '/v1/session/create') creates++;
    });
    try {
      for (const ttlMs of [9_999, 86_400_001, 0, -5, Number.NaN]) {
        const err = await rejection(c.openSession({ ttlMs }));
        expect(err.code).toBe('INVALID_ARGUMENT');
      }
    } finally {
      stop();
    }
    expect(creates).toBe(0);
  });

  it('creates a TTL session with behavior delete, the lock-delay asked for, no health checks, and the TTL rounded up to seconds', async () => {
    const c = await make({ lockDelayMs: 1500 });
    const s = await c.openSession({ ttlMs: 10_500 });
    expect(s.ttlMs).toBe(11_000);
    const record = consul.store.getSession(s.id);
    expect(record).toMatchObject({ ttl: '11s', behavior: 'delete', lockDelayMs: 1500, nodeChecks: [] });
    await s.close();
    expect(consul.store.getSession(s.id)).toBeUndefined();
    expect(s.lost.reason).toMatchObject({ code: 'CLOSED' });
  });

  it('renews every TTL/3 on its clock, and moves its local deadline with each acknowledged renewal', async () => {
    const clock = new ManualClock(1_000);
    const c = await make({ clock });
    const s = (await c.openSession({ ttlMs: 12_000 })) as ConsulSession;
    const margin = 1_000;
    expect(s.deadline).toBe(1_000 + 12_000 - margin);
    const base = consul.store.renewals;
    await clock.advance(3_999);
    expect(consul.store.renewals).toBe(base);
    for (let n = 1; n <= 3; n++) {
      await clock.advance(n === 1 ? 1 : 4_000);
      await eventually(`renewal ${n}`, () => consul.store.renewals === base + n, patience);
      const renewedAt = 1_000 + n * 4_000;
      await eventually(`the deadline after renewal ${n}`, () => s.deadline === renewedAt + 12_000 - margin, patience);
    }
    expect(s.isLost()).toBe(false);
  });

  it('is lost with LeaseLost when Consul answers a renewal with 404 (the session was invalidated)', async () => {
    const clock = new ManualClock();
    const c = await make({ clock });
    const s = await c.openSession({ ttlMs: 10_000 });
    await c.create('eph', bytes('x'), { session: s });
    consul.expireSession(s.id);
    expect(await c.get('eph')).toBeUndefined();
    expect(s.lost.aborted).toBe(false);
    await clock.advance(3_334);
    await eventually('the session is lost', () => s.lost.aborted, patience);
    expect(s.lost.reason).toMatchObject({ code: 'LEASE_LOST' });
    expect(String((s.lost.reason as Error).message)).toContain('invalidated by Consul');
    const err = await rejection(c.create('eph2', bytes('x'), { session: s }));
    expect(err.code).toBe('LEASE_LOST');
  });

  it('is lost by its local deadline when renewals fail, before Consul would expire it', async () => {
    const clock = new ManualClock();
    const c = await make({ clock });
    const s = (await c.openSession({ ttlMs: 10_000 })) as ConsulSession;
    consul.faults.unavailable = 'no-leader';
    // Failed renewals are retried every second until the deadline (ttl - 1 s margin) passes.
    // Time moves half a second a try, with real time between tries for the refused renewals' round trips.
    await eventually('the session is lost by its deadline', async () => {
      if (!s.lost.aborted) await clock.advance(500);
      return s.lost.aborted;
    }, patience);
    expect(clock.now(), 'lost by the deadline at 9 s, not later').toBeLessThanOrEqual(9_000);
    expect(s.isLost()).toBe(true);
    expect(s.lost.reason).toMatchObject({ code: 'LEASE_LOST' });
    expect(String((s.lost.reason as Error).message)).toContain('no renewal was acknowledged');
    // Consul still has it: only its own timer (2 x TTL) or the client's clean-up removes it.
    expect(consul.store.getSession(s.id)).toBeDefined();
    consul.faults.unavailable = false;
  });

  it('retries a failed renewal within a second instead of waiting another TTL/3', async () => {
    const clock = new ManualClock();
    const c = await make({ clock });
    const s = await c.openSession({ ttlMs: 30_000 });
    const base = consul.store.renewals;
    consul.faults.unavailable = 'service-unavailable';
    const requests = consul.requestCount;
    await clock.advance(10_000);
    await eventually('the renewal reached Consul and was refused', () => consul.requestCount > requests, patience);
    expect(consul.store.renewals).toBe(base);
    // The refused answer must arrive, and the retry be scheduled, before Consul comes back.
    await eventually('the refused renewal has scheduled its retry within a second', () =>
      clock.pendingTimers().some((t) => t.dueAt <= clock.now() + 1_000), patience);
    consul.faults.unavailable = false;
    await clock.advance(1_000);
    await eventually('the retried renewal', () => consul.store.renewals === base + 1, patience);
    expect(s.isLost()).toBe(false);
  });

  it('close destroys the session: its ephemeral keys go, plain keys stay', async () => {
    const c = await make();
    const observer = await make({ namespace: c.namespace });
    const s = await c.openSession({ ttlMs: 10_000 });
    await c.create('e/1', bytes('1'), { session: s });
    const v = await c.create('e/2', bytes('2'), { session: s });
    await c.create('e/plain', bytes('p'));
    // An update keeps the key's session.
    await observer.update('e/2', bytes('2b'), v);
    await s.close();
    expect((await observer.list('e/')).entries.map((e) => e.key)).toEqual(['e/plain']);
  });

  it('closing the coordinator closes its sessions and leaves no handles behind', async () => {
    const before = activeHandles();
    const c = await coordinator(consul);
    const s = await c.openSession({ ttlMs: 10_000 });
    await c.create('k', bytes('v'), { session: s });
    const watching = (async () => {
      for await (const _batch of c.watch('k', { signal: new AbortController().signal })) break;
    })();
    await c.close();
    await watching;
    expect(s.lost.aborted).toBe(true);
    expect(consul.store.getSession(s.id)).toBeUndefined();
    expect(c.openSessions).toBe(0);
    await eventually(`handles drop back to ${before} (now ${process.getActiveResourcesInfo().join(', ')})`, () => activeHandles() <= before, patience);
  });
});
