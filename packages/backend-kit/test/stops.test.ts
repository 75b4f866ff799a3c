import { describe, expect, it } from 'vitest';
import { AbortedError, ClosedError } from '@taskgraph/api';
import { Stops } from '../src/index.js';
import { code, deferred, rejection } from './fixtures.js';

function twoStops() {
  const closed = new AbortController();
  const caller = new AbortController();
  const stops = new Stops([
    { signal: closed.signal, error: () => new ClosedError('closed') },
    { signal: caller.signal, error: () => new AbortedError('aborted') },
  ]);
  return { closed, caller, stops };
}

describe('Stops', () => {
  it('onStop calls its listener once, with the first stop to fire, and at once if one already has', () => {
    const { closed, caller, stops } = twoStops();
    const heard: (string | undefined)[] = [];
    stops.onStop((err) => heard.push(err.code));
    caller.abort();
    closed.abort();
    expect(heard).toEqual(['ABORTED']);
    const late: (string | undefined)[] = [];
    const unsubscribe = stops.onStop((err) => late.push(err.code));
    expect(late).toEqual(['CLOSED']);
    unsubscribe();
  });

  it('an unsubscribed listener is not called', () => {
    const { caller, stops } = twoStops();
    let calls = 0;
    const unsubscribe = stops.onStop(() => calls++);
    unsubscribe();
    caller.abort();
    expect(calls).toBe(0);
  });

  it('race settles like the work, unless a stop fires first; a failure of the abandoned work is swallowed', async () => {
    const { caller, stops } = twoStops();
    await expect(stops.race(Promise.resolve(7))).resolves.toBe(7);
    const work = deferred<number>();
    const raced = stops.race(work.promise);
    caller.abort();
    expect(code(await rejection(raced))).toBe('ABORTED');
    work.reject(new Error('failed after the race was lost'));
    const failing = twoStops().stops.race(Promise.reject(new Error('boom')));
    expect(String(await rejection(failing))).toMatch(/boom/);
  });

  it('signals lists every stop\'s signal, in order', () => {
    const { closed, caller, stops } = twoStops();
    expect(stops.signals).toEqual([closed.signal, caller.signal]);
  });
});
