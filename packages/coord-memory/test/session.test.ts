import { describe, expect, it } from 'vitest';
import { TaskGraphError } from '@taskgraph/api';
import type { Clock } from '@taskgraph/api';
import { ManualClock } from '@taskgraph/testkit';
import { MemoryCoordinator, MemorySession, MemoryStore, safetyMargin } from '../src/index.js';

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
const code = (e: unknown): string | undefined => (TaskGraphError.is(e) ? e.code : undefined);

function setup(historyLimit?: number) {
  const clock = new ManualClock();
  const store = new MemoryStore(historyLimit === undefined ? { clock } : { clock, historyLimit });
  const client = new MemoryCoordinator({ store, namespace: 'ns' });
  return { clock, store, client };
}

describe('MemorySession keepalive and deadlines (ManualClock)', () => {
  it('sends a keepalive every ttl/3, so the server session never expires while the client runs', async () => {
    const { clock, store, client } = setup();
    const s = await client.openSession({ ttlMs: 900 });
    await clock.advance(299);
    expect(store.sessionInfo(s.id)?.keepalives).toBe(0);
    await clock.advance(1);
    expect(store.sessionInfo(s.id)).toMatchObject({ keepalives: 1, lastKeepaliveAt: 300, expiresAt: 1200 });
    await clock.advance(600);
    expect(store.sessionInfo(s.id)).toMatchObject({ keepalives: 3, lastKeepaliveAt: 900 });
    await clock.advance(9000);
    expect(store.sessionInfo(s.id)?.keepalives).toBe(33);
    expect(s.lost.aborted).toBe(false);
    expect(s.isLost()).toBe(false);
    await client.close();
    expect(clock.pendingTimers()).toEqual([]);
  });

  it('a cut-off client loses its session at last ack + ttl - margin; the server expires it at ttl', async () => {
    const { clock, store, client } = setup();
    const s = (await client.openSession({ ttlMs: 900 })) as MemorySession;
    expect(safetyMargin(900)).toBe(90);
    expect(s.deadline).toBe(810);
    client.setUnreachable(true);
    await clock.advance(809);
    expect(s.lost.aborted).toBe(false);
    await clock.advance(1);
    expect(s.lost.aborted).toBe(true);
    expect(code(s.lost.reason)).toBe('LEASE_LOST');
    expect(String((s.lost.reason as Error).message)).toMatch(/no keepalive was acknowledged/);
    // The client gave up before the server could hand its keys or locks to anybody.
    expect(store.hasSession(s.id)).toBe(true);
    await clock.advance(89);
    expect(store.hasSession(s.id)).toBe(true);
    await clock.advance(1);
    expect(store.hasSession(s.id)).toBe(false);
  });

  it('the margin is a tenth of the TTL, at most one second', () => {
    expect(safetyMargin(300)).toBe(30);
    expect(safetyMargin(10_000)).toBe(1000);
    expect(safetyMargin(60_000)).toBe(1000);
  });

  it('isLost() judges by the clock even when the deadline timer has not run (a paused process)', async () => {
    const base = new ManualClock();
    let pause = 0;
    const clock: Clock = {
      now: () => base.now() + pause,
      setTimeout: (cb, ms) => base.setTimeout(cb, ms),
      clearTimeout: (h) => base.clearTimeout(h),
    };
    const store = new MemoryStore({ clock });
    const client = new MemoryCoordinator({ store });
    const s = await client.openSession({ ttlMs: 1000 });
    pause = 5000;
    expect(s.lost.aborted).toBe(false);
    expect(s.isLost()).toBe(true);
    expect(s.lost.aborted).toBe(true);
    await expect(client.create('k', bytes('v'), { session: s })).rejects.toSatisfy((e) => code(e) === 'LEASE_LOST');
    await client.close();
  });

  it('a server-side expiry is heard at once by a reachable client', async () => {
    const { store, client } = setup();
    const s = await client.openSession({ ttlMs: 900 });
    await client.create('e', bytes('v'), { session: s });
    expect(client.expireSession(s)).toBe(true);
    expect(s.lost.aborted).toBe(true);
    expect(code(s.lost.reason)).toBe('LEASE_LOST');
    expect(store.entries()).toEqual([]);
    expect(client.openSessions).toBe(0);
  });

  it('a cut-off client does not hear an expiry; after healing, the next keepalive tells it', async () => {
    const { clock, store, client } = setup();
    const s = await client.openSession({ ttlMs: 900 });
    client.setUnreachable(true);
    store.expireSession(s.id);
    expect(s.lost.aborted).toBe(false);
    await clock.advance(200);
    client.setUnreachable(false);
    expect(s.lost.aborted).toBe(false);
    await clock.advance(100);
    expect(s.lost.aborted).toBe(true);
    expect(String((s.lost.reason as Error).message)).toMatch(/expired or was closed/);
  });

  it('one failed keepalive is survived; failures until the deadline lose the session', async () => {
    const { clock, store, client } = setup();
    const s = await client.openSession({ ttlMs: 900 });
    const once = client.faults.add({ op: 'keepalive', times: 1 });
    await clock.advance(300);
    expect(once.hits).toBe(1);
    expect(once.cleared).toBe(true);
    expect(store.sessionInfo(s.id)?.keepalives).toBe(0);
    await clock.advance(300);
    expect(store.sessionInfo(s.id)?.keepalives).toBe(1);
    expect(s.lost.aborted).toBe(false);
    const always = client.faults.add({ op: 'keepalive', key: s.id });
    await clock.advance(810 - 1);
    expect(s.lost.aborted).toBe(false);
    await clock.advance(1);
    expect(s.lost.aborted).toBe(true);
    expect(always.hits).toBe(2);
  });

  it('a frozen client\'s keepalive hangs; the deadline passes; unfreezing does not revive the session', async () => {
    const { clock, store, client } = setup();
    const s = await client.openSession({ ttlMs: 900 });
    client.freeze();
    await clock.advance(810);
    expect(s.lost.aborted).toBe(true);
    expect(store.hasSession(s.id)).toBe(true);
    client.unfreeze();
    await clock.advance(1);
    expect(s.isLost()).toBe(true);
    expect(store.sessionInfo(s.id)?.keepalives).toBe(1);
    await clock.advance(1000);
    expect(store.hasSession(s.id)).toBe(false);
  });

  it('close() while cut off still resolves; the server expires the session by its TTL', async () => {
    const { clock, store, client } = setup();
    const s = await client.openSession({ ttlMs: 900 });
    await client.create('e', bytes('v'), { session: s });
    client.setUnreachable(true);
    await s.close();
    expect(code(s.lost.reason)).toBe('CLOSED');
    expect(store.hasSession(s.id)).toBe(true);
    await clock.advance(900);
    expect(store.hasSession(s.id)).toBe(false);
    expect(store.entries()).toEqual([]);
  });

  it('closing the coordinator closes its sessions and leaves no timers', async () => {
    const { clock, store, client } = setup();
    const a = await client.openSession({ ttlMs: 900 });
    const b = await client.openSession({ ttlMs: 3000 });
    await client.create('a', bytes('a'), { session: a });
    const lock = await client.acquire('L', b);
    await client.close();
    expect([a.lost.aborted, b.lost.aborted, lock.lost.aborted]).toEqual([true, true, true]);
    expect(store.sessionIds()).toEqual([]);
    expect(store.entries()).toEqual([]);
    expect(clock.pendingTimers()).toEqual([]);
  });
});
