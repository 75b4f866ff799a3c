/**
 * Every bug the simulator found, by the seed that found it: each must now pass. The
 * schedule is the seed's own (or the shrunk part of it, `keep`), so the run is the
 * one that failed, apart from the fix.
 */
import { describe, expect, it } from 'vitest';
import { simulate } from '../src/index.js';
import type { WorkloadName } from '../src/index.js';

const FOUND: ReadonlyArray<{ workload: WorkloadName; seed: number; keep?: number[]; bug: string }> = [
  {
    workload: 'hot-standby',
    seed: 56,
    keep: [0, 1, 2],
    bug: 'a backup retrying its sync with the same primary released the held updates as "deposed"; the live primary abdicated and the task restarted cold (core backup-task)',
  },
  {
    workload: 'regression',
    seed: 10,
    keep: [1, 2],
    bug: "a lock acquired whose answer was lost: the standby's retry found the lock held (by its own session) and waited; nobody ran the task (every backend: a session now gets back a lock it holds without a Lock object)",
  },
  { workload: 'mapreduce', seed: 46, bug: 'the master adapter left the job shutdown\'s rejection unhandled when the node was leaving (lease lost)' },
  { workload: 'mapreduce', seed: 132, bug: "the same, with the job done: ClosedError 'the node is leaving (job-done)' unhandled" },
];

describe('seeds that found bugs', () => {
  for (const f of FOUND) {
    it(`${f.workload} seed ${f.seed}${f.keep ? ` (faults ${f.keep.join(',')})` : ''}: ${f.bug}`, async () => {
      const r = await simulate({ seed: f.seed, workload: f.workload, ...(f.keep ? { keep: f.keep } : {}) });
      expect(r.violations).toEqual([]);
      expect(r.faults.length).toBeGreaterThan(0);
    }, 60_000);
  }
});
