/**
 * The benchmark harness works: tiny runs with a fixed number of calls, checking
 * what is reported and that the run cleans up after itself. No timing is
 * asserted here; speed is what the benchmark itself reports.
 */
import { describe, expect, it } from 'vitest';
import { eventually } from '@taskgraph/testkit';
import { ErrorCodes, InternalError } from '@taskgraph/api';
import { TARGETS, runDataPlane, sizeLabel } from '../src/data-plane.js';
import type { CaseResult } from '../src/data-plane.js';
import { LoadTotals, percentile, runLoad } from '../src/load.js';
import { runCommand } from './run-command.js';


/** Handles that a run leaves behind if it forgets to close something. */
function openHandles(): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const kind of process.getActiveResourcesInfo()) {
    if (kind === 'TCPServerWrap' || kind === 'TCPSocketWrap' || kind === 'Timeout') counts[kind] = (counts[kind] ?? 0) + 1;
  }
  return counts;
}

function expectSide(side: unknown, calls: number): void {
  expect(side).toEqual({
    calls,
    calls_per_s: expect.any(Number) as number,
    p50_us: expect.any(Number) as number,
    p99_us: expect.any(Number) as number,
    cpu_us_per_call: expect.any(Number) as number,
  });
  const s = side as { calls_per_s: number; p50_us: number; p99_us: number };
  expect(s.calls_per_s).toBeGreaterThan(0);
  expect(s.p50_us).toBeGreaterThan(0);
  expect(s.p99_us).toBeGreaterThanOrEqual(s.p50_us);
}

describe('runLoad', () => {
  it('makes exactly the calls asked for, never more than inFlight at once', async () => {
    let active = 0;
    let peak = 0;
    let made = 0;
    const result = await runLoad(
      async () => {
        active++;
        made++;
        peak = Math.max(peak, active);
        await new Promise((resolve) => setImmediate(resolve));
        active--;
      },
      { inFlight: 4, calls: 25 },
    );
    expect(made).toBe(25);
    expect(result.calls).toBe(25);
    expect(result.latenciesUs).toHaveLength(25);
    expect(peak).toBe(4);
  });

  it('fails the run with the first call that failed', async () => {
    let n = 0;
    const run = runLoad(
      async () => {
        n++;
        if (n === 3) throw new InternalError('boom');
      },
      { inFlight: 2, calls: 10 },
    );
    await expect(run).rejects.toMatchObject({ code: ErrorCodes.Internal, message: 'boom' });
  });

  it('rejects a load without a limit or with no caller', async () => {
    await expect(runLoad(async () => undefined, { inFlight: 1 })).rejects.toMatchObject({ code: ErrorCodes.InvalidArgument });
    await expect(runLoad(async () => undefined, { inFlight: 0, calls: 1 })).rejects.toMatchObject({ code: ErrorCodes.InvalidArgument });
  });
});

describe('statistics', () => {
  it('takes nearest-rank percentiles and adds rounds up', () => {
    const sorted = Float64Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(percentile(sorted, 0.5)).toBe(5);
    expect(percentile(sorted, 0.99)).toBe(10);
    expect(percentile(new Float64Array(0), 0.5)).toBe(0);
    const totals = new LoadTotals();
    totals.add({ calls: 2, elapsedMs: 100, latenciesUs: Float64Array.from([30, 10]), cpuUs: 100 });
    totals.add({ calls: 2, elapsedMs: 100, latenciesUs: Float64Array.from([20, 40]), cpuUs: 300 });
    expect(totals.summary()).toEqual({ calls: 4, calls_per_s: 20, p50_us: 20, p99_us: 40, cpu_us_per_call: 100 });
  });

  it('labels sizes in round units', () => {
    expect(sizeLabel(64)).toBe('64B');
    expect(sizeLabel(64 * 1024)).toBe('64KiB');
    expect(sizeLabel(1024 * 1024)).toBe('1MiB');
    expect(sizeLabel(1000)).toBe('1000B');
  });
});

describe('runDataPlane', () => {
  it('runs the framework and raw sides of each case and reports one connection per peer', async () => {
    const before = openHandles();
    const seen: CaseResult[] = [];
    const { cases, summary } = await runDataPlane(
      { payloads: [64, 64 * 1024], inFlight: [1, 3], rounds: 2, round: { calls: 12 }, warmup: { calls: 3 } },
      (c) => seen.push(c),
    );
    expect(cases.map((c) => c.case)).toEqual(['64B x1', '64B x3', '64KiB x1', '64KiB x3']);
    expect(seen).toEqual(cases);
    for (const c of cases) {
      expect(Object.keys(c)).toEqual(['case', 'payload_bytes', 'in_flight', 'framework', 'raw', 'peer', 'throughput_ratio', 'peer_ratio', 'p50_added_us', 'cpu_ratio']);
      expectSide(c.framework, 24);
      expectSide(c.raw, 24);
      expectSide(c.peer!, 24);
      expect(c.peer_ratio).toBeCloseTo(c.framework.calls_per_s / c.peer!.calls_per_s, 2);
      expect(c.throughput_ratio).toBeCloseTo(c.framework.calls_per_s / c.raw.calls_per_s, 2);
      expect(c.p50_added_us).toBeCloseTo(c.framework.p50_us - c.raw.p50_us, 0);
    }
    expect(summary).toMatchObject({
      summary: true,
      throughput_ratio_min: Math.min(...cases.map((c) => c.throughput_ratio)),
      p50_added_us_max: Math.max(...cases.filter((c) => c.in_flight === 1).map((c) => c.p50_added_us)),
      targets: TARGETS,
      framework_peers: 1,
      raw_connections: 1,
      cpu_ratio_max: Math.max(...cases.map((c) => c.cpu_ratio)),
    });
    // One TCP connection carries every call between the two nodes, whatever the concurrency.
    expect(summary.connections_per_peer).toBe(1);
    expect(summary.met.connections_per_peer).toBe(true);
    expect(summary.met.throughput_ratio_min).toBe(summary.throughput_ratio_min >= 0.8);
    // No case at 16 or 64 in flight ran: the two ratios over those cases are null, and not met.
    expect(summary).toMatchObject({ stream_ratio_min: null, peer_ratio_min: null });
    expect(summary.met).toMatchObject({ stream_ratio_min: false, peer_ratio_min: false });

    // Servers, sockets and timers are all closed (sockets close a moment after the calls end).
    const leftOver = (): string[] => Object.entries(openHandles()).flatMap(([kind, n]) => (n > (before[kind] ?? 0) ? [kind] : []));
    // On timeout the assertion below names what is still open.
    await eventually('every handle is closed', () => leftOver().length === 0, { timeoutMs: 10_000 }).catch(() => undefined);
    expect(leftOver()).toEqual([]);
  });

  it('rejects options that name no case', async () => {
    await expect(runDataPlane({ payloads: [] })).rejects.toMatchObject({ code: ErrorCodes.InvalidArgument });
    await expect(runDataPlane({ inFlight: [0] })).rejects.toMatchObject({ code: ErrorCodes.InvalidArgument });
  });
});

describe('the command', () => {
  const runCli = (args: readonly string[]) => runCommand('data-plane.ts', args);

  it('prints only JSON lines on stdout, the summary last, and exits 0', async () => {
    const { code, stdout, stderr } = await runCli(['--payloads', '64', '--in-flight', '16', '--rounds', '1', '--round-calls', '32', '--warmup-calls', '16']);
    expect(code, stderr).toBe(0);
    const lines = stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatchObject({ case: '64B x16', payload_bytes: 64, in_flight: 16 });
    expect(lines[1]).toMatchObject({ summary: true, connections_per_peer: 1, p50_added_us_max: null });
    // 64 B x16 is one of the cases the two ratios are taken over, here the only one.
    expect(lines[1]!['stream_ratio_min']).toBe(lines[0]!['throughput_ratio']);
    expect(lines[1]!['peer_ratio_min']).toBe(lines[0]!['peer_ratio']);
    expect(stderr).toContain('[data-plane]');
  });

  it('exits 2 with the usage on a bad argument', async () => {
    const { code, stdout, stderr } = await runCli(['--in-flight', 'many']);
    expect(code).toBe(2);
    expect(stdout).toBe('');
    expect(stderr).toContain('usage: bench:data-plane');
  });
});
