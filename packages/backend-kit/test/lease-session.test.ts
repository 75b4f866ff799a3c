import { describe, expect, it } from 'vitest';
import { UnavailableError } from '@taskgraph/api';
import type { Clock } from '@taskgraph/api';
import { ManualClock } from '@taskgraph/testkit';
import { Backoff, safetyMargin } from '../src/index.js';
import { ScriptedSession, code, gone, recordingContext, scriptedSession, settle } from './fixtures.js';

/** A clock that can jump ahead without running timers, as after SIGSTOP or a long GC pause. */
function pausableClock(base: ManualClock): Clock & { pause(ms: number): void } {
  let paused = 0;
  return {
    now: () => base.now() + paused,
    setTimeout: (callback, ms) => base.setTimeout(callback, ms),
    clearTimeout: (handle) => base.clearTimeout(handle),
    pause: (ms) => {
      paused += ms;
    },
  };
}

describe('the margin', () => {
  it('is a tenth of the TTL, at most one second', () => {
    expect(safetyMargin(100)).toBe(10);
    expect(safetyMargin(900)).toBe(90);
    expect(safetyMargin(10_000)).toBe(1000);
    expect(safetyMargin(60_000)).toBe(1000);
  });

  it('equals etcd\'s former max(100, round(ttl/10)) capped at 1 s for every TTL etcd grants (whole seconds)', () => {
    for (let ttl = 1000; ttl <= 3_600_000; ttl += 1000) {
      expect(safetyMargin(ttl)).toBe(Math.min(1000, Math.max(100, Math.round(ttl / 10))));
    }
  });
});

describe('LeaseSession renewals and the local deadline (ManualClock)', () => {
  it('renews every ttl/3 and counts each deadline from the send time of the acknowledged renewal', async () => {
    const clock = new ManualClock(1000);
    const { session } = scriptedSession(clock);
    expect(session.interval).toBe(300);
    expect(session.deadline).toBe(1000 + 900 - 90);
    await clock.advance(299);
    expect(session.renewals).toHaveLength(0);
    await clock.advance(1);
    expect(session.renewals.map((r) => r.at)).toEqual([1300]);
    // The answer takes 50 ms; the server renewed somewhere in between, so the send time is the safe side.
    await clock.advance(50);
    session.pending.resolve();
    await settle();
    expect(session.deadline).toBe(1300 + 810);
    await clock.advance(299);
    expect(session.renewals).toHaveLength(1);
    await clock.advance(1);
    expect(session.renewals.map((r) => r.at)).toEqual([1300, 1650]);
    expect(session.isLost()).toBe(false);
  });

  it('takes the TTL an answer grants (etcd\'s keepalive answer carries one)', async () => {
    const clock = new ManualClock();
    const { session } = scriptedSession(clock);
    await clock.advance(300);
    session.pending.resolve(3000);
    await settle();
    expect(session.deadline).toBe(300 + 3000 - 90);
  });

  it('without an acknowledged renewal it is lost at the deadline, once, with LeaseLost; one hung renewal holds up the next', async () => {
    const clock = new ManualClock();
    const { session, context } = scriptedSession(clock);
    await clock.advance(809);
    expect(session.lost.aborted).toBe(false);
    expect(session.renewals).toHaveLength(1);
    await clock.advance(1);
    expect(session.lost.aborted).toBe(true);
    expect(code(session.lost.reason)).toBe('LEASE_LOST');
    expect((session.lost.reason as Error).message).toMatch(/no renewal was acknowledged for 810 ms \(ttl 900 ms less a 90 ms margin\)/);
    expect(session.losses.map((l) => l.cause)).toEqual(['deadline']);
    expect(context.endings).toHaveLength(1);
    expect(clock.pendingTimers()).toEqual([]);
    // The hung renewal answers at last: too late, nothing moves.
    session.pending.resolve();
    await clock.advance(1000);
    expect(session.deadline).toBe(810);
    expect(session.renewals).toHaveLength(1);
    expect(session.losses).toHaveLength(1);
    expect(clock.pendingTimers()).toEqual([]);
  });

  it('an answer that arrives after the deadline does not revive the session (a paused process runs I/O before timers)', async () => {
    const base = new ManualClock();
    const clock = pausableClock(base);
    const context = recordingContext(clock);
    const session = new ScriptedSession(context, { id: 's', ttlMs: 900, sentAt: clock.now() });
    await base.advance(300);
    expect(session.renewals).toHaveLength(1);
    clock.pause(600);
    // The answer is handled before the deadline timer gets to run.
    session.pending.resolve();
    await settle();
    expect(session.lost.aborted).toBe(true);
    expect(session.losses.map((l) => l.cause)).toEqual(['deadline']);
    expect(session.deadline).toBe(810);
  });

  it('isLost() judges by the clock, at the deadline exactly, before the deadline timer has run', async () => {
    const base = new ManualClock();
    const clock = pausableClock(base);
    const session = new ScriptedSession(recordingContext(clock), { id: 's', ttlMs: 900, sentAt: 0 });
    clock.pause(809);
    expect(session.isLost()).toBe(false);
    clock.pause(1);
    expect(session.lost.aborted).toBe(false);
    expect(session.isLost()).toBe(true);
    expect(session.lost.aborted).toBe(true);
    expect(session.losses.map((l) => l.cause)).toEqual(['deadline']);
  });

  it('a failed renewal is retried on the backoff, which an acknowledged renewal resets', async () => {
    const clock = new ManualClock();
    const { session } = scriptedSession(clock, { ttlMs: 3000, retry: new Backoff(20, 80, () => 1) });
    const failure = new UnavailableError('no leader');
    await clock.advance(1000);
    for (const wait of [20, 40, 80, 80]) {
      session.pending.reject(failure);
      await clock.advance(wait);
    }
    expect(session.renewals.map((r) => r.at)).toEqual([1000, 1020, 1060, 1140, 1220]);
    session.pending.resolve();
    await clock.advance(1000);
    expect(session.deadline).toBe(1220 + 3000 - 300);
    session.pending.reject(failure);
    await clock.advance(20);
    expect(session.renewals.map((r) => r.at)).toEqual([1000, 1020, 1060, 1140, 1220, 2220, 2240]);
    expect(session.lost.aborted).toBe(false);
  });

  it('by default a failed renewal is retried within 100 ms, long before the next regular one', async () => {
    const clock = new ManualClock();
    const { session } = scriptedSession(clock);
    await clock.advance(300);
    session.pending.reject(new UnavailableError('refused'));
    await settle();
    const renewal = clock.pendingTimers().filter((t) => t.dueAt !== session.deadline);
    expect(renewal).toHaveLength(1);
    expect(renewal[0]?.dueAt).toBeGreaterThanOrEqual(350);
    expect(renewal[0]?.dueAt).toBeLessThanOrEqual(400);
  });

  it('a renewal rejected with LeaseLost loses the session at once with that error, and nothing is renewed again', async () => {
    const clock = new ManualClock();
    const { session } = scriptedSession(clock);
    await clock.advance(300);
    const err = gone(session.id);
    session.pending.reject(err);
    await settle();
    expect(session.lost.reason).toBe(err);
    expect(session.losses).toEqual([{ reason: err, cause: 'server' }]);
    expect(clock.pendingTimers()).toEqual([]);
  });

  it('lose() from the backend takes effect once; later losses and answers change nothing', async () => {
    const clock = new ManualClock();
    const { session, context } = scriptedSession(clock);
    await clock.advance(300);
    const first = gone(session.id);
    session.lose(first);
    session.lose(gone(session.id));
    session.pending.resolve();
    await clock.advance(1000);
    expect(session.lost.reason).toBe(first);
    expect(session.losses).toHaveLength(1);
    expect(context.endings).toHaveLength(1);
    expect(session.isLost()).toBe(true);
  });

  it('is never lost from inside its constructor: a deadline already past is noticed by the first timer', async () => {
    const clock = new ManualClock(5000);
    const { session } = scriptedSession(clock, { sentAt: 0 });
    // onLost writes to a field of the subclass, which exists only once construction is over.
    expect(session.losses).toEqual([]);
    await clock.advance(0);
    expect(session.losses.map((l) => l.cause)).toEqual(['deadline']);
  });
});

describe('LeaseSession close', () => {
  it('aborts lost with ClosedError at once, ends the session on the server once, returns the same promise, leaves no timers', async () => {
    const clock = new ManualClock();
    const { session, context } = scriptedSession(clock);
    const closing = session.close();
    expect(session.lost.aborted).toBe(true);
    expect(code(session.lost.reason)).toBe('CLOSED');
    expect(session.close()).toBe(closing);
    await closing;
    expect(session.ends).toEqual([false]);
    expect(session.losses).toEqual([]);
    expect(context.endings).toHaveLength(1);
    expect(clock.pendingTimers()).toEqual([]);
    expect(session.isLost()).toBe(true);
  });

  it('never rejects: a failing end is logged, and the server expires the session', async () => {
    const clock = new ManualClock();
    const { session } = scriptedSession(clock);
    session.endWith = () => Promise.reject(new UnavailableError('unreachable'));
    await expect(session.close()).resolves.toBeUndefined();
    expect(session.ends).toEqual([false]);
  });

  it('after a loss, close still ends the session on the server, says it was lost, and keeps the loss reason', async () => {
    const clock = new ManualClock();
    const { session, context } = scriptedSession(clock);
    await clock.advance(810);
    const reason: unknown = session.lost.reason;
    await session.close();
    expect(session.ends).toEqual([true]);
    expect(session.lost.reason).toBe(reason);
    expect(context.endings).toHaveLength(1);
  });

  it('a renewal answered after close changes nothing', async () => {
    const clock = new ManualClock();
    const { session } = scriptedSession(clock);
    await clock.advance(300);
    await session.close();
    session.pending.resolve();
    await clock.advance(1000);
    expect(session.deadline).toBe(810);
    expect(session.renewals).toHaveLength(1);
    expect(code(session.lost.reason)).toBe('CLOSED');
    expect(clock.pendingTimers()).toEqual([]);
  });
});
