import { describe, expect, it } from 'vitest';
import { FAULT_KINDS, Guard, Rng, campaign, drawSchedule, shrink, simulate } from '../src/index.js';
import { main } from '../src/cli.js';

describe('the simulator', () => {
  it('gives the same trace, byte for byte, for the same seed (and another for another seed)', async () => {
    for (const workload of ['regression', 'hot-standby', 'mapreduce'] as const) {
      const a = await simulate({ seed: 8, workload });
      const b = await simulate({ seed: 8, workload });
      const c = await simulate({ seed: 9, workload });
      expect(a.faults.length, `${workload}: seed 8 draws faults`).toBeGreaterThan(0);
      expect(b.traceHash, workload).toBe(a.traceHash);
      expect(b.steps, workload).toBe(a.steps);
      expect(c.traceHash, workload).not.toBe(a.traceHash);
    }
  }, 120_000);

  it('runs each workload to its exact answer without faults', async () => {
    for (const workload of ['regression', 'hot-standby', 'mapreduce'] as const) {
      const r = await simulate({ seed: 1, workload, noFaults: true });
      expect(r.violations, workload).toEqual([]);
      expect(r.end).toBe('done');
    }
  }, 60_000);

  it('runs 210 seeds across the regression, hot-standby and MapReduce jobs under seeded faults with no violation', async () => {
    const failures: string[] = [];
    const summary = await campaign({ seeds: 210, onFailure: (r) => failures.push(`seed ${r.seed} ${r.workload}: ${r.violations.join(' | ')}`) });
    // The CI log shows the seed count, the faults by kind and the violations.
    console.log(`simulation: ${JSON.stringify({ seeds: summary.seeds, byWorkload: summary.byWorkload, faults: summary.faults, violations: summary.violations, checked: summary.checked, seedsPerSecond: summary.seedsPerSecond })}`);
    expect(failures).toEqual([]);
    expect(summary.byWorkload).toEqual({ regression: 70, 'hot-standby': 70, mapreduce: 70 });
    // Every invariant was put to the test, many times.
    for (const [name, n] of Object.entries(summary.checked)) expect(n, name).toBeGreaterThan(100);
    // Every kind of fault struck somewhere in the run.
    expect(Object.keys(summary.faults).sort()).toEqual([...FAULT_KINDS].sort());
  }, 600_000);

  it('shrinks a schedule to the faults a failure needs, and replays the shrunk schedule exactly', async () => {
    // The predicate stands for a failure: "a crash struck". Seed 8's schedule has other faults too.
    const seed = 8;
    const full = await simulate({ seed, workload: 'regression' });
    expect(full.faults.filter((f) => f.kind === 'crash').length).toBeGreaterThan(0);
    expect(full.faults.length).toBeGreaterThan(1);
    const s = await shrink({ seed, workload: 'regression' }, (x) => (x.injected.crash ?? 0) > 0);
    expect(s.faults.map((f) => f.kind)).toEqual(['crash']);
    const again = await simulate({ seed, workload: 'regression', keep: s.kept });
    expect(again.traceHash).toBe(s.result.traceHash);
  }, 120_000);

  it('catches simulated code that reads the real clock or Math.random', () => {
    const guard = new Guard();
    guard.install();
    try {
      Math.random();
      Date.now();
    } finally {
      guard.uninstall();
    }
    expect(guard.violations.map((v) => v.what)).toEqual(['Math.random', 'Date.now']);
    expect(guard.violations[0]!.stack).toContain('sim.test.ts');
  });

  it('draws a schedule from the seed alone', () => {
    const o = { horizonMs: 500, ttlMs: 1000, maxFaults: 6 };
    expect(drawSchedule(new Rng(42), o)).toEqual(drawSchedule(new Rng(42), o));
    const spaced = drawSchedule(new Rng(7), { ...o, spacingMs: 4000, maxFaults: 20 });
    const nodeFaults = spaced.filter((f) => ['crash', 'pause', 'store-partition', 'peer-partition', 'store-outage'].includes(f.kind));
    for (let i = 1; i < nodeFaults.length; i++) expect(nodeFaults[i]!.at).toBeGreaterThanOrEqual(nodeFaults[i - 1]!.at + nodeFaults[i - 1]!.durationMs + 4000 - 0.2);
  });

  it('has a command line: a replay prints PASS and the trace; bad usage exits 2', async () => {
    const lines: string[] = [];
    expect(await main(['--workload', 'regression', '--seed', '2'], (s) => void lines.push(s))).toBe(0);
    expect(lines.at(-1)).toMatch(/^PASS seed 2 \(regression\): \d+ steps, .* trace [0-9a-f]{64}$/);
    expect(await main(['--seed', '2'], () => undefined)).toBe(2);
    expect(await main(['--seeds', 'x'], () => undefined)).toBe(2);
    expect(await main(['--workload', 'nope'], () => undefined)).toBe(2);
  }, 60_000);
});
