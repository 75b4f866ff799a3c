import { describe, expect, it } from 'vitest';
import { newStats } from '../src/stats.js';

describe('newStats', () => {
  it('starts every counter at zero', () => {
    expect(newStats()).toEqual({
      served: 0,
      rejectedNotOwner: 0,
      rejectedEpoch: 0,
      fencedLateResults: 0,
      retries: 0,
      metaPushes: 0,
      metaPushFailures: 0,
      metasByPush: 0,
      metasByStore: 0,
      writes: { epoch: 0, meta: 0, metaCleanup: 0, addr: 0, incarnation: 0, status: 0, node: 0 },
    });
  });

  it('each call is a separate set of counters, write counts included', () => {
    const a = newStats();
    const b = newStats();
    a.served++;
    a.writes.meta += 3;
    expect(b.served).toBe(0);
    expect(b.writes.meta).toBe(0);
    expect(a.writes).not.toBe(b.writes);
  });
});
