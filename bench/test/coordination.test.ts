/**
 * The coordination benchmark's harness works: a tiny run of each part on a real
 * etcd, checking the shape of what is reported and that the run cleans up after
 * itself. No timing is asserted here; speed is what the benchmark reports.
 */
import { describe, expect, it } from 'vitest';
import { eventually } from '@taskgraph/testkit';
import { ErrorCodes } from '@taskgraph/api';
import { DEFAULTS, TARGETS, checkOptions, runCoordination } from '../coordination-bench.js';
import type { CoordinationResult } from '../coordination-bench.js';
import { USAGE, UsageError, parseCommandLine } from '../coordination-cli.js';
import { counterDelta, counterPer, parseCounters, spread } from '../coordination-etcd.js';
import type { EpochAdvanceResult } from '../coordination-epoch.js';
import type { FailoverResult } from '../coordination-failover.js';
import type { MetaHopResult } from '../coordination-meta.js';
import { classify } from '../coordination-writes.js';
import type { StoreWritesResult } from '../coordination-writes.js';
import { runCommand } from './run-command.js';


/** Handles a run leaves behind if it forgets to close something. */
function openHandles(): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const kind of process.getActiveResourcesInfo()) {
    if (kind === 'TCPServerWrap' || kind === 'TCPSocketWrap' || kind === 'Timeout' || kind === 'ProcessWrap') counts[kind] = (counts[kind] ?? 0) + 1;
  }
  return counts;
}

const TINY = {
  ...DEFAULTS,
  epochTasks: [2],
  epochs: 3,
  warmupTaskEpochs: 2,
  bareRounds: 4,
  rounds: 2,
  gapMs: 5,
  failoverReps: 1,
  standbys: 1,
  regressionTasks: 3,
  // Epochs 1..16 counted: the first meta generation ends inside the window.
  regressionEpochs: 17,
  metaHops: 4,
  metaWarmup: 1,
  metasPerEpoch: 3,
};

const METRICS = `# HELP grpc_server_handled_total Total number of RPCs completed on the server.
grpc_server_handled_total{grpc_code="OK",grpc_method="Txn",grpc_service="etcdserverpb.KV",grpc_type="unary"} 12
grpc_server_handled_total{grpc_code="FailedPrecondition",grpc_method="Txn",grpc_service="etcdserverpb.KV",grpc_type="unary"} 3
grpc_server_handled_total{grpc_code="OK",grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 7
grpc_server_handled_total{grpc_code="OK",grpc_method="Watch",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"} 9
grpc_server_handled_total{grpc_code="OK",grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"} 0
etcd_server_proposals_committed_total 40
etcd_disk_wal_fsync_duration_seconds_count 21
`;

describe('helpers', () => {
  it('reads etcd counters: unary requests by method over every code, proposals, fsyncs', () => {
    const c = parseCounters(METRICS);
    expect(c).toEqual({ requests: { Txn: 15, Range: 7 }, proposals: 40, fsyncs: 21 });
    const later = parseCounters(METRICS.replace('} 12', '} 20').replace('proposals_committed_total 40', 'proposals_committed_total 48'));
    const d = counterDelta(c, later);
    expect(d).toEqual({ requests: { Txn: 8 }, proposals: 8, fsyncs: 0 });
    expect(counterPer(d, 4)).toEqual({ requests: { Txn: 2 }, proposals: 2, fsyncs: 0 });
  });

  it('takes nearest-rank percentiles', () => {
    expect(spread([5, 1, 4, 2, 3])).toEqual({ n: 5, p50: 3, p99: 5, max: 5, mean: 3 });
    expect(spread([])).toEqual({ n: 0, p50: 0, p99: 0, max: 0, mean: 0 });
  });

  it('classifies a revision by the keys it wrote', () => {
    const rev = (events: Array<{ type: 'put' | 'delete'; key: string }>) => ({ revision: 1n, events: events.map((e) => ({ ...e, value: '' })) });
    expect(classify('j', rev([{ type: 'put', key: 'j/state/epoch' }]))).toBe('epoch');
    expect(classify('j', rev([{ type: 'put', key: 'j/meta/1/0/0/0/Children' }]))).toBe('meta_flag');
    expect(classify('j', rev([{ type: 'delete', key: 'j/meta/1/0/0/0/Children' }, { type: 'delete', key: 'j/meta/1/0/0/2/Parents' }]))).toBe('meta_cleanup');
    expect(classify('j', rev([{ type: 'put', key: 'j/tasks/0/addr' }]))).toBe('other');
  });

  it('parses the command line and refuses what it cannot run', () => {
    expect(parseCommandLine([])).toEqual(DEFAULTS);
    expect(parseCommandLine(['--help'])).toBe('help');
    expect(parseCommandLine(['--parts', 'writes,epoch', '--tasks', '4,16', '--ttl-ms', '3000'])).toMatchObject({
      parts: ['writes', 'epoch'],
      epochTasks: [4, 16],
      ttlMs: 3000,
    });
    expect(() => parseCommandLine(['--parts', 'speed'])).toThrow(UsageError);
    expect(() => parseCommandLine(['--epochs', 'many'])).toThrow(UsageError);
    expect(() => parseCommandLine(['--bogus'])).toThrow(UsageError);
    expect(() => checkOptions({ ...DEFAULTS, ttlMs: 1500 })).toThrow(expect.objectContaining({ code: ErrorCodes.InvalidArgument }) as Error);
    expect(() => checkOptions({ ...DEFAULTS, epochTasks: [] })).toThrow(expect.objectContaining({ code: ErrorCodes.InvalidArgument }) as Error);
    expect(() => checkOptions({ ...DEFAULTS, regressionEpochs: 1 })).toThrow(expect.objectContaining({ code: ErrorCodes.InvalidArgument }) as Error);
  });
});

describe('runCoordination', () => {
  it('runs a tiny case of each part on a real etcd and reports every figure beside its bare one', async () => {
    const before = openHandles();
    const seen: CoordinationResult[] = [];
    const lines: string[] = [];
    const { results, summary } = await runCoordination({ ...TINY, progress: (l) => lines.push(l) }, (r) => seen.push(r));
    expect(seen).toEqual(results);
    expect(results.map((r) => r.part)).toEqual(['epoch_advance', 'failover', 'store_writes', 'meta_hop']);
    expect(lines.some((l) => l.startsWith('starting etcd'))).toBe(true);

    const epoch = results[0] as EpochAdvanceResult;
    expect(Object.keys(epoch)).toEqual(['part', 'case', 'tasks', 'etcd_clients', 'framework', 'bare', 'bare_fanout', 'ratio_p50', 'ratio_to_fanout_p50']);
    expect(epoch).toMatchObject({ case: '2 tasks', tasks: 2, etcd_clients: 2 });
    expect(epoch.framework.epochs).toBe(3);
    expect(epoch.framework.p50_ms).toBeGreaterThan(0);
    expect(epoch.framework.p99_ms).toBeGreaterThanOrEqual(epoch.framework.p50_ms);
    // Every advance writes the epoch once: etcd saw at least one transaction per advance.
    expect(epoch.framework.etcd_per_epoch.requests['Txn']).toBeGreaterThanOrEqual(1);
    expect(epoch.bare).toMatchObject({ rounds: 4 });
    expect(epoch.bare.p50_ms).toBeGreaterThan(0);
    expect(epoch.bare_fanout).toMatchObject({ watchers: 2, rounds: 4 });
    expect(epoch.ratio_p50).toBeCloseTo(epoch.framework.p50_ms / epoch.bare.p50_ms, 1);

    const failover = results[1] as FailoverResult;
    expect(failover).toMatchObject({ part: 'failover', ttl_s: 2, repetitions: 1 });
    expect(failover.framework.samples_s).toHaveLength(1);
    expect(failover.bare.samples_s).toHaveLength(1);
    // Nothing takes over before etcd expired the dead owner's lease.
    expect(failover.framework.p50_s).toBeGreaterThanOrEqual(failover.framework.expiry_p50_s);
    expect(failover.failover_over_ttl_s).toBeCloseTo(failover.framework.p50_s - 2, 3);
    expect(failover.bare.p50_s).toBeGreaterThan(0);
    expect(failover.witnessed.samples_s).toHaveLength(1);
    // Ending the dead owner's session moved the task before its lease could have expired.
    expect(failover.witnessed.p50_s).toBeLessThan(2);
    expect(failover.witnessed.p50_s * 1000).toBeGreaterThanOrEqual(failover.witnessed.reap_p50_ms + failover.witnessed.end_session_p50_ms - 1);

    const writes = results[2] as StoreWritesResult;
    expect(writes).toMatchObject({ part: 'store_writes', tasks: 3, epochs_counted: 16, answer_ok: true });
    // 16 epochs in the window: one epoch write each. Each of the 3 receivers clears the first meta
    // generation (epochs 0-15) once, on entering epoch 16 (the node stats count all 3); a clean-up
    // is not awaited, so one may commit after the window's last epoch write. 4 flags per epoch: the
    // store copies of at most 64. A copy still unsent when its epoch ends (the receiver had it by
    // push and moved on) is cancelled with the epoch: only a receiver's new incarnation in that
    // epoch would need it.
    const { meta_flag: metaFlags, meta_cleanup: cleanups, ...others } = writes.window_writes;
    expect(others).toEqual({ epoch: 16, other: 0 });
    expect(cleanups).toBeLessThanOrEqual(3);
    // Most are written: each is sent when flagged, and the epoch ends only after a compare-and-set.
    expect(metaFlags).toBeGreaterThanOrEqual(32);
    expect(metaFlags).toBeLessThanOrEqual(64);
    expect(writes.per_task_epoch.meta_cleanup).toBeCloseTo(cleanups / 48, 2);
    expect(writes.writes_per_task_epoch).toBeCloseTo((16 + cleanups) / 48, 3);
    // Each receiver clears generation 0 on entering epoch 16; a store copy of an epoch-15 meta that
    // commits after that clean-up (copies are not awaited either) is cleared on a later epoch: 3 to 6.
    const { metaCleanup, ...nodeWrites } = writes.node_stats_writes as Record<string, number>;
    expect(nodeWrites).toMatchObject({ addr: 3, incarnation: 3, node: 3, epoch: 17 });
    expect(metaCleanup).toBeGreaterThanOrEqual(3);
    expect(metaCleanup).toBeLessThanOrEqual(6);

    const hop = results[3] as MetaHopResult;
    expect(hop).toMatchObject({ part: 'meta_hop', push: { hops: 4 }, store: { hops: 4 }, bare_grpc: { calls: 4 } });
    for (const p50 of [hop.push.p50_ms, hop.store.p50_ms, hop.bare_grpc.p50_ms]) expect(p50).toBeGreaterThan(0);
    // Every timed meta arrived exactly once, by one path or the other.
    expect(hop.push.by_push + hop.push.by_store).toBe(4);
    expect(hop.meta_hop_ratio).toBeCloseTo(hop.push.p50_ms / hop.bare_grpc.p50_ms, 1);

    expect(summary).toMatchObject({
      summary: true,
      epoch_advance_ratio_64: null,
      failover_over_ttl_s: failover.failover_over_ttl_s,
      witnessed_failover_s: failover.witnessed.p50_s,
      writes_per_task_epoch: writes.writes_per_task_epoch,
      meta_cleanup_writes_per_task_epoch: writes.per_task_epoch.meta_cleanup,
      meta_hop_ratio: hop.meta_hop_ratio,
      targets: TARGETS,
      epoch_advance_ratios: { '2': epoch.ratio_p50 },
    });
    expect(summary.met).toEqual({
      epoch_advance_ratio_64: false,
      failover_over_ttl_s: failover.failover_over_ttl_s <= 1,
      witnessed_failover_s: failover.witnessed.p50_s <= 0.2,
      writes_per_task_epoch: writes.writes_per_task_epoch <= 2,
      meta_hop_ratio: hop.meta_hop_ratio <= 3,
      meta_cleanup_writes_per_task_epoch: writes.per_task_epoch.meta_cleanup <= 0.1,
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
  const runCli = (args: readonly string[]) => runCommand('coordination.ts', args);

  it('prints only JSON lines on stdout, the summary last, and exits 0', async () => {
    const { code, stdout, stderr } = await runCli(['--parts', 'writes', '--regression-tasks', '3', '--regression-epochs', '2']);
    expect(code, stderr).toBe(0);
    const lines = stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatchObject({ part: 'store_writes', tasks: 3 });
    expect(lines[1]).toMatchObject({ summary: true, targets: TARGETS, epoch_advance_ratio_64: null, failover_over_ttl_s: null });
    expect(stderr).toContain('[coordination]');
  });

  it('exits 2 with the usage on a bad argument', async () => {
    const { code, stdout, stderr } = await runCli(['--ttl-ms', '1500']);
    expect(code).toBe(2);
    expect(stdout).toBe('');
    expect(stderr).toContain(USAGE);
  });
});
