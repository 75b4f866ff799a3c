import { describe, expect, it } from 'vitest';
import { RestartBudget } from '../src/index.js';

function budget(o: { max?: number; windowMs?: number; random?: number } = {}) {
  const clock = { now: 1_000_000 };
  const b = new RestartBudget({
    now: () => clock.now,
    maxPerWindow: o.max ?? 3,
    windowMs: o.windowMs ?? 60_000,
    baseDelayMs: 500,
    maxDelayMs: 4000,
    random: () => o.random ?? 0.999_999,
  });
  return { b, clock };
}

describe('the restart budget', () => {
  it('doubles the delay of a slot with each restart in the window, up to the cap', () => {
    const { b } = budget({ max: 6 });
    expect([b.take(0), b.take(0), b.take(0), b.take(0), b.take(0), b.take(0)]).toEqual([500, 1000, 2000, 4000, 4000, 4000]);
  });

  it('jitters each delay to between half and all of its ceiling', () => {
    const low = budget({ random: 0 }).b;
    expect([low.take(0), low.take(0)]).toEqual([250, 500]);
    const mid = budget({ random: 0.5 }).b;
    expect([mid.take(0), mid.take(0)]).toEqual([375, 750]);
  });

  it('refuses a slot that used its budget within the window, and gives it back as the window slides', () => {
    const { b, clock } = budget({ max: 2, windowMs: 60_000 });
    expect(b.take(7)).toBe(500);
    clock.now += 30_000;
    expect(b.take(7)).toBe(1000);
    expect(b.take(7)).toBeUndefined();
    // The first restart leaves the window: one more is allowed, with the delay of the second in a window.
    clock.now += 30_000;
    expect(b.take(7)).toBe(1000);
    expect(b.take(7)).toBeUndefined();
    // A quiet window: the slot starts over.
    clock.now += 60_000;
    expect(b.take(7)).toBe(500);
  });

  it('counts each slot on its own', () => {
    const { b } = budget({ max: 1 });
    expect(b.take(0)).toBe(500);
    expect(b.take(0)).toBeUndefined();
    expect(b.take(1)).toBe(500);
  });
});
