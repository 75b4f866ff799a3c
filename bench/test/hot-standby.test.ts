/**
 * The hot-standby benchmark's harness works: a tiny run of each part on a real
 * etcd with node processes, checking the shape of what is reported, that each
 * figure comes beside its bare or cold counterpart, that the failovers went the
 * way they were meant to (the backup promoted, the cold standby rebuilding), that
 * no acknowledged update was lost, and that the run cleans up after itself. No
 * timing is asserted here; speed is what the benchmark reports.
 */
import { describe, expect, it } from 'vitest';
import { eventually } from '@taskgraph/testkit';
import { ErrorCodes } from '@taskgraph/api';
import { DEFAULTS, TARGETS, checkOptions, runHotStandby } from '../hot-standby-bench.js';
import type { HotStandbyResult } from '../hot-standby-bench.js';
import { USAGE, UsageError, parseCommandLine } from '../hot-standby-cli.js';
import { decodeFinish, encodeFinish, isAckRecord, isBuiltRecord } from '../hot-standby-app.js';
import type { FailoverResult } from '../hot-standby-failover.js';
import type { LostUpdatesResult } from '../hot-standby-lost.js';
import { buildState, buildStateInSlices, stateWord } from '../hot-standby-state.js';
import type { UpdateResult } from '../hot-standby-update.js';
import { runCommand } from './run-command.js';


/** Handles a run leaves behind if it forgets to close something. */
function openHandles(): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const kind of process.getActiveResourcesInfo()) {
    if (kind === 'TCPServerWrap' || kind === 'TCPSocketWrap' || kind === 'Timeout' || kind === 'ProcessWrap') counts[kind] = (counts[kind] ?? 0) + 1;
  }
  return counts;
}

describe('helpers', () => {
  it('builds the state word by word from its seed, so one word can be checked alone, in slices or at once', async () => {
    const state = buildState(7, 4096);
    expect(state).toHaveLength(1024);
    for (const i of [0, 1, 511, 1023]) expect(state[i]).toBe(stateWord(7, i));
    expect(buildState(7, 4096)).toEqual(state);
    expect(buildState(8, 4096)).not.toEqual(state);
    // Not a constant or a counter: words differ from their neighbours.
    expect(new Set(state).size).toBeGreaterThan(1000);
    // Across slice boundaries (1 MiB each), the sliced build makes the same words.
    const big = 3 * 1024 * 1024 + 12;
    expect(await buildStateInSlices(7, big)).toEqual(buildState(7, big));
  });

  it('carries the last primary state in a finish answer, and recognises the records the nodes print', () => {
    const pairs = Uint32Array.of(1, 1, 1, 2, 2, 3);
    const back = decodeFinish(encodeFinish({ acked: 3, incarnation: 2, pairs }));
    expect(back.acked).toBe(3);
    expect(back.incarnation).toBe(2);
    expect([...back.pairs]).toEqual([...pairs]);
    expect(() => decodeFinish(new Uint8Array(5))).toThrow(expect.objectContaining({ code: ErrorCodes.InvalidArgument }) as Error);
    expect(isAckRecord({ kind: 'ack', incarnation: 1, n: 2, seq: 3 })).toBe(true);
    expect(isAckRecord({ kind: 'ack', incarnation: 1, n: 2 })).toBe(false);
    expect(isBuiltRecord({ kind: 'built', incarnation: 1, ms: 20 })).toBe(true);
    expect(isBuiltRecord({ kind: 'ack', incarnation: 1, ms: 20 })).toBe(false);
  });

  it('parses the command line and refuses what it cannot run', () => {
    expect(parseCommandLine([])).toEqual(DEFAULTS);
    expect(parseCommandLine(['--help'])).toBe('help');
    expect(parseCommandLine(['--parts', 'lost,update', '--backups', '2', '--round-calls', '50', '--ttl-ms', '3000'])).toMatchObject({
      parts: ['lost', 'update'],
      backups: [2],
      round: { calls: 50 },
      ttlMs: 3000,
    });
    expect(() => parseCommandLine(['--parts', 'speed'])).toThrow(UsageError);
    expect(() => parseCommandLine(['--kills', 'many'])).toThrow(UsageError);
    expect(() => parseCommandLine(['--bogus'])).toThrow(UsageError);
    const invalid = expect.objectContaining({ code: ErrorCodes.InvalidArgument }) as Error;
    expect(() => checkOptions({ ...DEFAULTS, ttlMs: 1500 })).toThrow(invalid);
    expect(() => checkOptions({ ...DEFAULTS, backups: [0] })).toThrow(invalid);
    expect(() => checkOptions({ ...DEFAULTS, payloads: [] })).toThrow(invalid);
    expect(() => checkOptions({ ...DEFAULTS, kills: 0 })).toThrow(invalid);
  });
});

describe('runHotStandby', () => {
  it('runs a tiny case of each part on a real etcd and reports every figure beside its counterpart', { timeout: 400_000 }, async () => {
    const before = openHandles();
    const seen: HotStandbyResult[] = [];
    const lines: string[] = [];
    const { results, summary } = await runHotStandby(
      {
        ...DEFAULTS,
        failoverReps: 1,
        stateMib: 1,
        payloads: [64],
        backups: [1, 2],
        rounds: 2,
        round: { calls: 20 },
        warmup: { calls: 5 },
        kills: 1,
        streamInFlight: 2,
        progress: (l) => lines.push(l),
      },
      (r) => seen.push(r),
    );
    expect(seen).toEqual(results);
    expect(results.map((r) => r.part)).toEqual(['failover', 'update', 'update', 'lost_updates']);
    expect(lines.some((l) => l.startsWith('starting etcd'))).toBe(true);

    const failover = results[0] as FailoverResult;
    expect(failover).toMatchObject({ part: 'failover', ttl_s: 2, state_mib: 1, repetitions: 1 });
    // The hot job's backup took over with the state; the cold job's standby built it again.
    expect(failover.hot).toMatchObject({ promoted: 1, rebuild_p50_ms: null });
    expect(failover.cold.promoted).toBe(0);
    expect(failover.cold.rebuild_p50_ms).toEqual(expect.any(Number));
    for (const side of [failover.hot, failover.cold]) {
      expect(side.samples_s).toHaveLength(1);
      expect(side.p50_s).toBeGreaterThan(0);
      // Seen on one watch, in order: the dead primary's address goes before the new one's comes.
      expect(side.address_p50_s).toBeGreaterThanOrEqual(side.expiry_p50_s);
    }
    expect(failover.hot_failover_over_ttl_s).toBeCloseTo(failover.hot.p50_s - 2, 3);
    expect(failover.cold_failover_over_ttl_s).toBeCloseTo(failover.cold.p50_s - 2, 3);
    expect(failover.build_p50_ms).toBeGreaterThanOrEqual(0);

    const [one, two] = results.slice(1, 3) as [UpdateResult, UpdateResult];
    expect(Object.keys(one)).toEqual([
      'part',
      'case',
      'payload_bytes',
      'backups',
      'in_flight',
      'framework',
      'raw',
      'raw_fanout',
      'ratio_p50',
      'ratio_p99',
      'p50_added_us',
      'cpu_ratio',
      'ratio_to_fanout_p50',
    ]);
    expect(one).toMatchObject({ case: '64B 1b x1', payload_bytes: 64, backups: 1, in_flight: 1, raw_fanout: null, ratio_to_fanout_p50: null });
    expect(two).toMatchObject({ case: '64B 2b x1', backups: 2 });
    for (const r of [one, two]) {
      // 2 timed rounds of 20 calls a side.
      expect(r.framework.calls).toBe(40);
      expect(r.raw.calls).toBe(40);
      expect(r.framework.p99_us).toBeGreaterThanOrEqual(r.framework.p50_us);
      expect(r.ratio_p50).toBeCloseTo(r.framework.p50_us / r.raw.p50_us, 2);
    }
    expect(two.raw_fanout?.calls).toBe(40);
    expect(two.ratio_to_fanout_p50).toBeCloseTo(two.framework.p50_us / two.raw_fanout!.p50_us, 2);

    const lost = results[3] as LostUpdatesResult;
    expect(lost).toMatchObject({ part: 'lost_updates', kills: 1, promoted: 1, in_flight: 2, lost_acknowledged_updates: 0, duplicate_updates: 0 });
    expect(lost.acknowledged_updates).toBeGreaterThan(0);
    // Two primaries streamed: the one killed and the backup that took over.
    expect(lost.primaries).toBe(2);
    expect(lost.final_state_updates).toBe(lost.acknowledged_updates + lost.unacknowledged_in_state);

    expect(summary).toMatchObject({
      summary: true,
      hot_failover_over_ttl_s: failover.hot_failover_over_ttl_s,
      cold_failover_over_ttl_s: failover.cold_failover_over_ttl_s,
      update_ratio_1b: one.ratio_p50,
      update_ratio_2b: two.ratio_p50,
      update_ratio_p99_1b: one.ratio_p99,
      update_ratio_p99_2b: two.ratio_p99,
      lost_acknowledged_updates: 0,
      kills: 1,
      acknowledged_updates: lost.acknowledged_updates,
      duplicate_updates: 0,
      targets: TARGETS,
      ttl_s: 2,
      state_mib: 1,
    });
    expect(summary.met).toEqual({
      hot_failover_over_ttl_s: failover.hot_failover_over_ttl_s <= 0.3,
      update_ratio_1b: one.ratio_p50 <= 1.5,
      update_ratio_2b: two.ratio_p50 <= 2,
      // 0 lost, but over 1 kill: the target asks for at least 5.
      lost_acknowledged_updates: false,
    });
    expect(summary.etcd_version).toMatch(/^\d+\.\d+/);

    // Node processes, etcd, sockets and timers are all gone.
    const leftOver = (): string[] => Object.entries(openHandles()).flatMap(([kind, n]) => (n > (before[kind] ?? 0) ? [kind] : []));
    // On timeout the assertion below names what is still open.
    await eventually('every handle is closed', () => leftOver().length === 0, { timeoutMs: 15_000 }).catch(() => undefined);
    expect(leftOver()).toEqual([]);
  });
});

describe('the command', () => {
  const runCli = (args: readonly string[]) => runCommand('hot-standby.ts', args);

  it('prints only JSON lines on stdout, the summary last, and exits 0', { timeout: 120_000 }, async () => {
    const { code, stdout, stderr } = await runCli(['--parts', 'update', '--backups', '1', '--payloads', '64', '--rounds', '1', '--round-calls', '10', '--warmup-calls', '2']);
    expect(code, stderr).toBe(0);
    const lines = stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatchObject({ part: 'update', case: '64B 1b x1' });
    expect(lines[1]).toMatchObject({ summary: true, targets: TARGETS, hot_failover_over_ttl_s: null, update_ratio_2b: null, lost_acknowledged_updates: null });
    expect(stderr).toContain('[hot-standby]');
  });

  it('exits 2 with the usage on a bad argument', async () => {
    const { code, stdout, stderr } = await runCli(['--ttl-ms', '1500']);
    expect(code).toBe(2);
    expect(stdout).toBe('');
    expect(stderr).toContain(USAGE);
  });
});
