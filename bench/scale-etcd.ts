/**
 * The scale benchmark's etcd part: jobs of N tasks (plus 10% standbys) on one real
 * etcd, run by at most `maxProcesses` `taskgraph node --count K` processes (node
 * hosts: each process's nodes share one etcd client, one watch per shared prefix and
 * one gRPC server, and keep a session each). Per size:
 *
 * - claim: processes spawned -> every task's address published (and the same from
 *   the first node record, which leaves out the processes' start-up);
 * - epoch advance: one compare-and-set of the epoch key, made by this process with
 *   the framework's store client (what `incEpoch` does), -> every task entered the new
 *   epoch, read from the tasks' own reports (the system-wide monotonic clock);
 * - store writes per task-epoch (etcd revisions over the advances) and etcd's CPU per
 *   epoch (from /proc);
 * - resident memory per node beyond a process's own base: K-node processes against
 *   one extra 1-node process;
 * - at the sizes where a process holds at least `failoverMinTasks` tasks: SIGKILL of
 *   the process holding the most, until every one of its tasks is served again by
 *   another process. Nobody ends the dead sessions (no supervisor here), so this is
 *   bound by the TTL; what counts is how far past the TTL the last task comes back.
 */
import { readFileSync } from 'node:fs';
import { getPriority } from 'node:os';
import { fileURLToPath } from 'node:url';
import { InternalError } from '@taskgraph/api';
import type { Coordinator, Logger } from '@taskgraph/api';
import { createEtcdCoordinator } from '@taskgraph/coord-etcd';
import { createController, jobKeys, silentLogger } from '@taskgraph/core';
import { IDLE_LINK } from './coordination-idle-app.js';
import { counterDelta, parseCounters, processCpuMs, readMetricsText, runId, spread } from './coordination-etcd.js';
import type { EtcdCounters } from './coordination-etcd.js';
import type { EnteredRecord } from './scale-app.js';
import { round } from './src/load.js';
import { NodeProcesses } from './src/node-processes.js';
import type { NodeProcess } from './src/node-processes.js';

export interface EtcdScaleOptions {
  readonly endpoints: readonly string[];
  /** `host:port` of etcd, for the nodes' `etcd://` URL. */
  readonly clientAddress: string;
  readonly etcdPid: number | undefined;
  readonly tasks: number;
  /** Node processes at most, the 1-node base process included (at least 2). */
  readonly maxProcesses: number;
  readonly epochs: number;
  readonly ttlMs: number;
  /** The nice value of the node processes (etcd keeps 0). */
  readonly nodeNice: number;
  /** The failover is measured when a process holds at least this many tasks. */
  readonly failoverMinTasks: number;
  readonly progress: (line: string) => void;
  readonly logger?: Logger;
}

export interface EtcdScaleResult {
  readonly part: 'etcd';
  readonly tasks: number;
  readonly standbys: number;
  /** Node processes, the 1-node base process included. */
  readonly processes: number;
  readonly nodes_per_process: number;
  /** The node processes' nice value, read back from the first host process. */
  readonly node_nice: number | null;
  /** Processes spawned -> every task claimed (its address published). */
  readonly claim_s: number;
  /** The first node record -> every task claimed (process start-up left out). */
  readonly claim_after_first_join_s: number;
  /** etcd's unary calls handled (grpc_server_handled_total) from the first process spawned until every task was claimed, per node. */
  readonly etcd_calls_per_node_claim: number;
  /**
   * etcd under the claims: keepalive streams it ended because a renewal waited over
   * a second for the applied index, applies over 100 ms, the WAL fsync mean.
   */
  readonly etcd_during_claim: { readonly keepalives_refused: number; readonly slow_applies: number; readonly wal_fsync_ms_mean: number | null };
  readonly epoch_advance: { readonly epochs: number; readonly p50_ms: number; readonly p99_ms: number; readonly max_ms: number };
  /** etcd revisions during the advances, per task per epoch. */
  readonly writes_per_task_epoch: number;
  readonly etcd_cpu_ms_per_epoch: number | null;
  /** Resident memory: a 1-node process, the K-node processes' mean, and per node beyond the base. */
  readonly rss_mb: { readonly base: number; readonly host_mean: number; readonly per_node: number | null };
  readonly failover: null | {
    readonly killed_tasks: number;
    readonly ttl_s: number;
    /** SIGKILL -> every task of the killed process served by another one. */
    readonly all_served_s: number;
    readonly over_ttl_s: number;
  };
}

const app = fileURLToPath(new URL('./scale-app.ts', import.meta.url));
const text = new TextDecoder();
const bytes = new TextEncoder();

/** The task of a `<job>/tasks/<id>/addr` key (a primary's address record). */
function addrTask(job: string, key: string): number | undefined {
  const m = /^(\d+)\/addr$/.exec(key.slice(jobKeys.tasks(job).length));
  return key.startsWith(jobKeys.tasks(job)) && m ? Number(m[1]) : undefined;
}
const CLAIM_TIMEOUT_MS = 300_000;
const EPOCH_TIMEOUT_MS = 60_000;

/** Who holds each task (its address record's node id), kept from one watch of `<job>/tasks/`. */
class Holders {
  readonly byTask = new Map<number, string>();
  #waiter: (() => void) | undefined;
  readonly #stop = new AbortController();

  constructor(
    private readonly coordinator: Coordinator,
    private readonly job: string,
  ) {}

  async start(): Promise<void> {
    const prefix = jobKeys.tasks(this.job);
    const snap = await this.coordinator.list(prefix);
    for (const e of snap.entries) this.#put(e.key, e.value);
    void (async () => {
      try {
        for await (const batch of this.coordinator.watch(prefix, { after: snap.revision, signal: this.#stop.signal })) {
          for (const ev of batch.events) {
            if (ev.type === 'put') this.#put(ev.key, ev.value);
            else {
              const task = addrTask(this.job, ev.key);
              if (task !== undefined) this.byTask.delete(task);
            }
          }
          this.#waiter?.();
        }
      } catch {
        // Stopped, or the store went away: the waits below time out with what they saw.
      }
    })();
  }

  #put(key: string, value: Uint8Array): void {
    const task = addrTask(this.job, key);
    if (task === undefined) return;
    const v = JSON.parse(text.decode(value)) as { nodeId?: unknown };
    if (typeof v.nodeId === 'string') this.byTask.set(task, v.nodeId);
  }

  async until(what: string, done: () => boolean, timeoutMs: number, check: () => void): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    while (!done()) {
      check();
      if (performance.now() > deadline) throw new InternalError(`scale: ${what} did not happen within ${timeoutMs} ms (${this.byTask.size} tasks held)`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 250);
        this.#waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  stop(): void {
    this.#stop.abort();
  }
}

/** Every task's entry into each epoch, from the tasks' reports. */
class Entries {
  readonly #latest = new Map<number, { tasks: Set<number>; lastNs: bigint }>();

  add(r: EnteredRecord): void {
    let e = this.#latest.get(r.e);
    if (!e) this.#latest.set(r.e, (e = { tasks: new Set(), lastNs: 0n }));
    e.tasks.add(r.t);
    const ns = BigInt(r.ns);
    if (ns > e.lastNs) e.lastNs = ns;
  }

  entered(epoch: number): number {
    return this.#latest.get(epoch)?.tasks.size ?? 0;
  }

  lastNs(epoch: number): bigint {
    return this.#latest.get(epoch)?.lastNs ?? 0n;
  }
}

function isEntered(r: unknown): r is EnteredRecord {
  const v = r as Partial<EnteredRecord> | null;
  return typeof v?.t === 'number' && typeof v.e === 'number' && typeof v.ns === 'string';
}

/** Signs of an overloaded etcd, from its metrics (counters since it started). */
export interface EtcdStrain {
  /** Keepalive streams etcd ended with Unavailable: a renewal waited over a second for the applied index (etcd >= 3.4.20). */
  readonly keepAlivesRefused: number;
  /** `etcd_server_slow_apply_total`: applies that took over 100 ms. */
  readonly slowApplies: number;
  readonly walFsyncSeconds: number;
}

export function parseStrain(text: string): EtcdStrain {
  let keepAlivesRefused = 0;
  let slowApplies = 0;
  let walFsyncSeconds = 0;
  for (const line of text.split('\n')) {
    const value = Number(line.slice(line.lastIndexOf(' ') + 1));
    if (line.startsWith('grpc_server_handled_total{') && line.includes('grpc_method="LeaseKeepAlive"') && line.includes('grpc_code="Unavailable"')) keepAlivesRefused += value;
    else if (line.startsWith('etcd_server_slow_apply_total ')) slowApplies = value;
    else if (line.startsWith('etcd_disk_wal_fsync_duration_seconds_sum ')) walFsyncSeconds = value;
  }
  return { keepAlivesRefused, slowApplies, walFsyncSeconds };
}

/** etcd's counters (unary calls by method, fsyncs) and strain, from one read of /metrics. */
async function readEtcd(clientUrl: string): Promise<{ counters: EtcdCounters; strain: EtcdStrain }> {
  const text = await readMetricsText(clientUrl);
  return { counters: parseCounters(text), strain: parseStrain(text) };
}

function rssMb(pid: number | undefined): number {
  if (pid === undefined) return 0;
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : 0;
}

/** The process whose node ids start `<its node id>.` (a host's nodes), or whose id is the node's. */
function processOf(procs: readonly NodeProcess[], nodeId: string): NodeProcess | undefined {
  return procs.find((p) => nodeId === p.nodeId || nodeId.startsWith(`${p.nodeId}.`));
}

export async function runEtcdScale(o: EtcdScaleOptions): Promise<EtcdScaleResult> {
  const logger = o.logger ?? silentLogger;
  const namespace = `bench-scale-${o.tasks}-${runId()}`;
  const job = 'scale';
  const standbys = Math.ceil(o.tasks / 10);
  // The 1-node base process counts among the processes: `maxProcesses - 1` node hosts beside it.
  const processes = Math.min(o.maxProcesses - 1, o.tasks + standbys);
  const perProcess = Math.ceil((o.tasks + standbys) / processes);
  const coordinator = await createEtcdCoordinator({ hosts: [...o.endpoints], namespace, logger });
  const controller = createController({ coordinator, job, logger });
  const entries = new Entries();
  const nodes = new NodeProcesses({
    app,
    job,
    coordinatorUrl: `etcd://${o.clientAddress}?namespace=${namespace}`,
    ttlMs: o.ttlMs,
    nice: o.nodeNice,
    nodeIdPrefix: 'p',
    count: perProcess,
    onResult: (_proc, record) => {
      if (isEntered(record)) entries.add(record);
    },
  });
  const holders = new Holders(coordinator, job);
  try {
    await controller.createJob({ numTasks: o.tasks, linkTypes: [IDLE_LINK] });
    await holders.start();
    const firstJoin = new Promise<number>((resolve) => {
      const stop = new AbortController();
      void (async () => {
        try {
          for await (const batch of coordinator.watch(jobKeys.nodes(job), { signal: stop.signal })) {
            if (batch.events.some((e) => e.type === 'put')) {
              resolve(performance.now());
              stop.abort();
            }
          }
        } catch {
          // Aborted once the first node joined.
        }
      })();
    });
    const etcdUrl = `http://${o.clientAddress}`;
    const metricsBefore = await readEtcd(etcdUrl);
    // The 1-node process first (a standby when the job fills up), for the base memory.
    const t0 = performance.now();
    const base = nodes.spawn(1);
    const hosts: NodeProcess[] = [];
    for (let i = 0; i < processes; i++) hosts.push(nodes.spawn());
    o.progress(`scale on etcd, ${o.tasks} tasks: ${processes} processes of ${perProcess} nodes and one of 1 (${standbys}+ standbys)`);
    await holders.until('every task claimed', () => holders.byTask.size === o.tasks, CLAIM_TIMEOUT_MS, () => nodes.checkNoneDied());
    const claimed = performance.now();
    // Read back while every process lives (the failover kills one).
    const firstPid = hosts[0]?.child.pid;
    const nodeNice = firstPid === undefined ? null : getPriority(firstPid);
    const metricsClaimed = await readEtcd(etcdUrl);
    const claimCounters = counterDelta(metricsBefore.counters, metricsClaimed.counters);
    const claimCalls = claimCounters.requests;
    const nodeCount = processes * perProcess + 1;
    const claimCallTotal = Object.values(claimCalls).reduce((a, b) => a + b, 0);
    const { fsyncs } = claimCounters;
    const claimHealth = {
      keepalives_refused: metricsClaimed.strain.keepAlivesRefused - metricsBefore.strain.keepAlivesRefused,
      slow_applies: metricsClaimed.strain.slowApplies - metricsBefore.strain.slowApplies,
      wal_fsync_ms_mean: fsyncs > 0 ? round((1000 * (metricsClaimed.strain.walFsyncSeconds - metricsBefore.strain.walFsyncSeconds)) / fsyncs, 2) : null,
    };
    o.progress(`scale on etcd, ${o.tasks} tasks: ${claimCallTotal} etcd calls until all claimed (${round(claimCallTotal / nodeCount, 1)} per node): ${JSON.stringify(claimCalls)}; etcd: ${JSON.stringify(claimHealth)}`);
    const joined = await firstJoin;
    await holders.until('every task in epoch 0', () => entries.entered(0) === o.tasks, EPOCH_TIMEOUT_MS, () => nodes.checkNoneDied());
    o.progress(`scale on etcd, ${o.tasks} tasks: all claimed in ${((claimed - t0) / 1000).toFixed(1)} s`);

    // Epoch advances: one CAS each, timed until the last task reported the new epoch.
    const advances: number[] = [];
    const epochKey = jobKeys.epoch(job);
    const revisionOf = async (): Promise<bigint> => BigInt((await coordinator.list(jobKeys.spec(job))).revision);
    const revBefore = await revisionOf();
    const cpuBefore = processCpuMs(o.etcdPid);
    for (let i = 0; i < o.epochs; i++) {
      const entry = await coordinator.get(epochKey);
      if (!entry) throw new InternalError('scale: the epoch key is gone');
      const next = Number(text.decode(entry.value)) + 1;
      const startNs = process.hrtime.bigint();
      await coordinator.update(epochKey, bytes.encode(String(next)), entry.version);
      await holders.until(`every task in epoch ${next}`, () => entries.entered(next) === o.tasks, EPOCH_TIMEOUT_MS, () => nodes.checkNoneDied());
      advances.push(Number(entries.lastNs(next) - startNs) / 1e6);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const cpuAfter = processCpuMs(o.etcdPid);
    const revAfter = await revisionOf();
    const adv = spread(advances);
    o.progress(`scale on etcd, ${o.tasks} tasks: epoch advance p50 ${adv.p50} ms p99 ${adv.p99} ms`);

    const baseMb = rssMb(base.child.pid);
    const hostMb = hosts.map((p) => rssMb(p.child.pid));
    const hostMean = hostMb.reduce((a, b) => a + b, 0) / hostMb.length;

    let failover: EtcdScaleResult['failover'] = null;
    const held = new Map<NodeProcess, number[]>();
    for (const [task, nodeId] of holders.byTask) {
      const p = processOf(hosts, nodeId);
      if (p) held.set(p, [...(held.get(p) ?? []), task]);
    }
    const [victim, tasks] = [...held].sort((a, b) => b[1].length - a[1].length)[0] ?? [undefined, []];
    // Every task must have a node outside the killed process to move to.
    const nodesOutside = processes * perProcess + 1 - perProcess;
    if (victim && tasks.length >= o.failoverMinTasks && nodesOutside < o.tasks) {
      o.progress(`scale on etcd, ${o.tasks} tasks: no failover measured: the other processes have ${nodesOutside} nodes, too few for ${o.tasks} tasks`);
    } else if (victim && tasks.length >= o.failoverMinTasks) {
      o.progress(`scale on etcd, ${o.tasks} tasks: SIGKILL of ${victim.nodeId}, which holds ${tasks.length} tasks (TTL ${o.ttlMs} ms)`);
      const killedAt = nodes.kill(victim);
      const servedElsewhere = () => tasks.every((t) => {
        const h = holders.byTask.get(t);
        return h !== undefined && processOf(hosts, h) !== victim;
      });
      await holders.until('every task of the killed process served again', servedElsewhere, o.ttlMs + CLAIM_TIMEOUT_MS, () => nodes.checkNoneDied());
      const s = (performance.now() - killedAt) / 1000;
      failover = { killed_tasks: tasks.length, ttl_s: o.ttlMs / 1000, all_served_s: round(s, 3), over_ttl_s: round(s - o.ttlMs / 1000, 3) };
    }
    await controller.finish('done');
    return {
      part: 'etcd',
      tasks: o.tasks,
      standbys: processes * perProcess + 1 - o.tasks,
      processes: processes + 1,
      nodes_per_process: perProcess,
      node_nice: nodeNice,
      claim_s: round((claimed - t0) / 1000, 2),
      claim_after_first_join_s: round((claimed - joined) / 1000, 2),
      etcd_calls_per_node_claim: round(claimCallTotal / nodeCount, 1),
      etcd_during_claim: claimHealth,
      epoch_advance: { epochs: advances.length, p50_ms: adv.p50, p99_ms: adv.p99, max_ms: adv.max },
      writes_per_task_epoch: round(Number(revAfter - revBefore) / (o.tasks * o.epochs), 3),
      etcd_cpu_ms_per_epoch: cpuBefore === undefined || cpuAfter === undefined ? null : round((cpuAfter - cpuBefore) / o.epochs, 2),
      rss_mb: { base: round(baseMb, 1), host_mean: round(hostMean, 1), per_node: perProcess > 1 ? round((hostMean - baseMb) / (perProcess - 1), 3) : null },
      failover,
    };
  } finally {
    holders.stop();
    await nodes.close(10_000);
    await coordinator.deletePrefix(jobKeys.job(job)).catch(() => undefined);
    await coordinator.close();
  }
}
