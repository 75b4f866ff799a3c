import { describe, expect, it } from 'vitest';
import { TaskGraphError } from '@taskgraph/api';
import { ManualClock } from '../src/clock.js';

describe('ManualClock', () => {
  it('stands still until advanced', async () => {
    const clock = new ManualClock(1000);
    expect(clock.now()).toBe(1000);
    // A deliberate negative check: real time passes, the manual clock must not move.
    await new Promise((resolve) => setTimeout(resolve, 5));
    expect(clock.now()).toBe(1000);
    await clock.advance(250);
    expect(clock.now()).toBe(1250);
  });

  it('fires due timers in time order, ties in the order they were set, each at its due time', async () => {
    const clock = new ManualClock();
    const fired: string[] = [];
    clock.setTimeout(() => fired.push(`c@${clock.now()}`), 30);
    clock.setTimeout(() => fired.push(`a@${clock.now()}`), 10);
    clock.setTimeout(() => fired.push(`b1@${clock.now()}`), 20);
    clock.setTimeout(() => fired.push(`b2@${clock.now()}`), 20);
    clock.setTimeout(() => fired.push(`late@${clock.now()}`), 31);
    await clock.advance(30);
    expect(fired).toEqual(['a@10', 'b1@20', 'b2@20', 'c@30']);
    expect(clock.pendingTimers()).toEqual([{ id: expect.any(Number) as number, dueAt: 31 }]);
  });

  it('fires timers that callbacks set during the advance when they fall inside it', async () => {
    const clock = new ManualClock();
    const fired: number[] = [];
    const tick = (): void => {
      fired.push(clock.now());
      clock.setTimeout(tick, 10);
    };
    clock.setTimeout(tick, 10);
    await clock.advance(35);
    expect(fired).toEqual([10, 20, 30]);
    expect(clock.pendingTimers().map((t) => t.dueAt)).toEqual([40]);
  });

  it('runs the promise jobs a timer starts before the next timer fires', async () => {
    const clock = new ManualClock();
    const log: string[] = [];
    clock.setTimeout(() => {
      void (async () => {
        await Promise.resolve();
        await Promise.resolve();
        log.push(`async work done at ${clock.now()}`);
      })();
    }, 5);
    clock.setTimeout(() => log.push(`second timer at ${clock.now()}`), 6);
    await clock.advance(10);
    expect(log).toEqual(['async work done at 5', 'second timer at 6']);
  });

  it('advanceSync fires timers without draining promise jobs', () => {
    const clock = new ManualClock();
    const fired: number[] = [];
    clock.setTimeout(() => fired.push(clock.now()), 1);
    clock.setTimeout(() => fired.push(clock.now()), 2);
    clock.advanceSync(2);
    expect(fired).toEqual([1, 2]);
    expect(clock.now()).toBe(2);
  });

  it('clearTimeout removes a timer; zero, negative and NaN delays fire at the next advance', async () => {
    const clock = new ManualClock();
    const fired: string[] = [];
    const h = clock.setTimeout(() => fired.push('cleared'), 5);
    clock.setTimeout(() => fired.push('zero'), 0);
    clock.setTimeout(() => fired.push('negative'), -3);
    clock.setTimeout(() => fired.push('nan'), Number.NaN);
    clock.clearTimeout(h);
    expect(clock.pendingTimers()).toHaveLength(3);
    await clock.advance(0);
    expect(fired).toEqual(['zero', 'negative', 'nan']);
    await clock.advance(10);
    expect(fired).toEqual(['zero', 'negative', 'nan']);
    expect(clock.pendingTimers()).toEqual([]);
  });

  it('handles accept unref and ref', () => {
    const clock = new ManualClock();
    const h = clock.setTimeout(() => undefined, 1);
    h.unref();
    h.ref();
    clock.clearTimeout(h);
    expect(clock.pendingTimers()).toEqual([]);
  });

  it('rejects a bad advance and overlapping advances with InvalidArgumentError', async () => {
    const clock = new ManualClock();
    await expect(clock.advance(-1)).rejects.toSatisfy((e) => TaskGraphError.is(e, 'INVALID_ARGUMENT'));
    expect(() => clock.advanceSync(Number.POSITIVE_INFINITY)).toThrow(/non-negative/);
    clock.setTimeout(() => undefined, 1);
    const first = clock.advance(5);
    await expect(clock.advance(1)).rejects.toThrow(/another advance/);
    await first;
    expect(clock.now()).toBe(5);
    expect(() => new ManualClock(Number.NaN)).toThrow(/finite/);
  });

  it('a throwing callback stops the advance at that timer and surfaces the error', async () => {
    const clock = new ManualClock();
    clock.setTimeout(() => {
      throw new Error('boom');
    }, 3);
    clock.setTimeout(() => undefined, 4);
    await expect(clock.advance(10)).rejects.toThrow('boom');
    expect(clock.now()).toBe(3);
    expect(clock.pendingTimers().map((t) => t.dueAt)).toEqual([4]);
    await clock.advance(1);
    expect(clock.pendingTimers()).toEqual([]);
  });
});
