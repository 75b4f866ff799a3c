import { describe, expect, it } from 'vitest';
import { TaskGraphError } from '@taskgraph/api';
import { ManualClock } from '@taskgraph/testkit';
import { Backoff, pause, sleep } from '../src/index.js';
import { code, rejection, settle } from './fixtures.js';

/** Tracks whether a promise has settled, and how. */
function watch(p: Promise<unknown>): { readonly state: () => 'pending' | 'resolved' | 'rejected'; readonly error: () => unknown } {
  let state: 'pending' | 'resolved' | 'rejected' = 'pending';
  let error: unknown;
  p.then(
    () => {
      state = 'resolved';
    },
    (err: unknown) => {
      state = 'rejected';
      error = err;
    },
  );
  return { state: () => state, error: () => error };
}

describe('sleep', () => {
  it('resolves after its time on the given clock, and not before', async () => {
    const clock = new ManualClock();
    const slept = watch(sleep(clock, 100));
    await clock.advance(99);
    expect(slept.state()).toBe('pending');
    await clock.advance(1);
    expect(slept.state()).toBe('resolved');
    expect(clock.pendingTimers()).toEqual([]);
  });

  it('rejects with the signal\'s reason when it is a TaskGraphError, Aborted otherwise, and clears its timer', async () => {
    const clock = new ManualClock();
    const controller = new AbortController();
    const slept = watch(sleep(clock, 100, controller.signal));
    const reason = new TaskGraphError('JOB_DONE', 'the job is done');
    controller.abort(reason);
    await settle();
    expect(slept.error()).toBe(reason);
    expect(clock.pendingTimers()).toEqual([]);
    const other = new AbortController();
    other.abort(new Error('plain'));
    expect(code(await rejection(sleep(clock, 100, other.signal)))).toBe('ABORTED');
  });
});

describe('pause', () => {
  it('resolves after its time, or at once when the signal aborts; it never rejects', async () => {
    const clock = new ManualClock();
    const timed = watch(pause(clock, 50));
    await clock.advance(50);
    expect(timed.state()).toBe('resolved');
    const controller = new AbortController();
    const stopped = watch(pause(clock, 1000, controller.signal));
    await settle();
    expect(stopped.state()).toBe('pending');
    controller.abort(new Error('stop'));
    await settle();
    expect(stopped.state()).toBe('resolved');
    expect(clock.pendingTimers()).toEqual([]);
    await expect(pause(clock, 1000, controller.signal)).resolves.toBeUndefined();
  });
});

describe('Backoff', () => {
  it('doubles from initialMs to maxMs; reset starts over', () => {
    const b = new Backoff(100, 1000, () => 1);
    expect([b.next(), b.next(), b.next(), b.next(), b.next(), b.next()]).toEqual([100, 200, 400, 800, 1000, 1000]);
    b.reset();
    expect(b.next()).toBe(100);
  });

  it('draws each delay from the upper half of its step', () => {
    const low = new Backoff(100, 1000, () => 0);
    expect([low.next(), low.next(), low.next()]).toEqual([50, 100, 200]);
    const mid = new Backoff(100, 1000, () => 0.5);
    expect(mid.next()).toBe(75);
  });

  it('defaults to 20 ms up to 1 s, and stays finite however long failures last', () => {
    const b = new Backoff(undefined, undefined, () => 1);
    expect(b.next()).toBe(20);
    for (let i = 0; i < 10_000; i++) b.next();
    expect(b.next()).toBe(1000);
  });

  it('with initialMs equal to maxMs and no jitter is a fixed delay', () => {
    const b = new Backoff(300, 300, () => 1);
    expect([b.next(), b.next(), b.next()]).toEqual([300, 300, 300]);
  });
});
