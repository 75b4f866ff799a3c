/**
 * Part (a) of the coordination benchmark: how long an epoch advance takes, from
 * task 0 calling `incEpoch` until every task has entered the new epoch, for a job
 * of N tasks run as a LocalCluster in this process on real etcd coordinators and
 * the in-process transport. Beside it, in alternating rounds, the bare etcd3
 * figure of the same shape: a compare-and-put on a key with a watch open on it,
 * timed until the watch event arrives; and the bare fan-out of that event to N
 * watchers (what etcd and this process pay for N watches, framework aside).
 */
import { InternalError } from '@taskgraph/api';
import type { Coordinator, EpochContext, Framework, Logger, Task, Topology } from '@taskgraph/api';
import { LocalCluster, jobKeys, shareWatches, silentLogger } from '@taskgraph/core';
import type { NodeResources } from '@taskgraph/core';
import { createEtcdCoordinator } from '@taskgraph/coord-etcd';
import { LocalNetwork, LocalTransport } from '@taskgraph/transport-local';
import type { Etcd3, Namespace, Watcher } from 'etcd3';
import {
  bareClient,
  counterDelta,
  counterPer,
  counterSum,
  ownCpuMs,
  processCpuMs,
  readCounters,
  runId,
  sleepMs,
  spread,
} from './coordination-etcd.js';
import type { EtcdCounters, Spread } from './coordination-etcd.js';
import { round } from './src/load.js';

export interface EpochAdvanceOptions {
  /** etcd's client URLs. */
  readonly endpoints: readonly string[];
  /** The etcd process, for its CPU time (optional). */
  readonly etcdPid?: number;
  readonly tasks: number;
  /** Timed epoch advances. */
  readonly epochs: number;
  /** Untimed advances first (connections, JIT), back to back. */
  readonly warmupEpochs: number;
  /** Timed bare round trips (single watcher, and fan-out to N watchers, each). */
  readonly bareRounds: number;
  /** Rounds the framework and bare sides alternate in. */
  readonly rounds: number;
  /**
   * Nodes sharing one etcd coordinator (one etcd3 client) and, as the nodes of one
   * node host do (`createNodeHost`, `taskgraph node --count`), one watch per shared
   * prefix (`state/`, `tasks/`). 1: every node has its own, as separate processes would.
   */
  readonly nodesPerClient: number;
  /** Pause between advances, so one advance's background work does not land on the next. */
  readonly gapMs: number;
  /** Session TTL of the nodes. */
  readonly sessionTtlMs: number;
  readonly progress: (line: string) => void;
  readonly logger?: Logger;
}

export interface EpochAdvanceResult {
  readonly part: 'epoch_advance';
  readonly case: string;
  readonly tasks: number;
  readonly etcd_clients: number;
  readonly framework: {
    readonly epochs: number;
    /** incEpoch called -> every task entered the new epoch. */
    readonly p50_ms: number;
    readonly p99_ms: number;
    readonly mean_ms: number;
    /** incEpoch called -> its compare-and-set answered. */
    readonly cas_p50_ms: number;
    /** incEpoch called -> the first task entered the new epoch. */
    readonly first_task_p50_ms: number;
    /** First task -> last task entered (the fan-out spread). */
    readonly spread_p50_ms: number;
    /** CPU of this process's event loop (all N nodes run on it) per advance, and per task. */
    readonly cpu_ms_per_epoch: number;
    readonly cpu_us_per_task_epoch: number;
    /** etcd's CPU per advance, when its process could be read. */
    readonly etcd_cpu_ms_per_epoch: number | null;
    /** Requests etcd handled per advance, by method, and raft proposals / WAL fsyncs. */
    readonly etcd_per_epoch: { requests: Record<string, number>; proposals: number; fsyncs: number };
  };
  readonly bare: { readonly rounds: number; readonly p50_ms: number; readonly p99_ms: number; readonly mean_ms: number };
  readonly bare_fanout: {
    readonly watchers: number;
    readonly rounds: number;
    /** Compare-and-put sent -> the event reached every one of the N watchers. */
    readonly p50_ms: number;
    readonly p99_ms: number;
  };
  /** framework.p50_ms / bare.p50_ms */
  readonly ratio_p50: number;
  /** framework.p50_ms / bare_fanout.p50_ms */
  readonly ratio_to_fanout_p50: number;
}

const LINK = 'Peers';
const START_TIMEOUT_MS = 120_000;
const ADVANCE_TIMEOUT_MS = 30_000;

/** No neighbours: this job only moves through epochs. */
class NoNeighbors implements Topology {
  setTaskId(): void {}
  getNeighbors(): readonly number[] {
    return [];
  }
}

interface EpochEntries {
  readonly seen: Set<number>;
  first: number;
  last: number;
}

/** Sees every task enter every epoch (in-process), and keeps task 0's framework and context. */
export class EpochProbe {
  readonly #entries = new Map<number, EpochEntries>();
  readonly #waiters = new Map<number, () => void>();
  master: { fw: Framework; ctx: EpochContext } | undefined;

  constructor(readonly tasks: number) {}

  entered(task: number, fw: Framework, ctx: EpochContext, epoch: number): void {
    const now = performance.now();
    if (task === 0) this.master = { fw, ctx };
    let e = this.#entries.get(epoch);
    if (!e) this.#entries.set(epoch, (e = { seen: new Set(), first: now, last: now }));
    if (e.seen.has(task)) return;
    e.seen.add(task);
    e.last = now;
    if (e.seen.size === this.tasks) this.#waiters.get(epoch)?.();
  }

  /** Resolves with the first and last entry times once every task entered `epoch`. */
  async allEntered(epoch: number, timeoutMs: number): Promise<{ first: number; last: number }> {
    const done = (): { first: number; last: number } | undefined => {
      const e = this.#entries.get(epoch);
      return e && e.seen.size === this.tasks ? { first: e.first, last: e.last } : undefined;
    };
    let d = done();
    if (!d) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      try {
        await new Promise<void>((resolve, reject) => {
          this.#waiters.set(epoch, resolve);
          timer = setTimeout(() => {
            const n = this.#entries.get(epoch)?.seen.size ?? 0;
            reject(new InternalError(`only ${n} of ${this.tasks} tasks entered epoch ${epoch} within ${timeoutMs} ms`));
          }, timeoutMs);
        });
      } finally {
        clearTimeout(timer);
        this.#waiters.delete(epoch);
      }
      d = done()!;
    }
    for (const k of this.#entries.keys()) if (k < epoch) this.#entries.delete(k);
    return d;
  }
}

class ProbeTask implements Task {
  #fw: Framework | undefined;
  constructor(
    private readonly id: number,
    private readonly probe: EpochProbe,
  ) {}
  init(_taskId: number, framework: Framework): void {
    this.#fw = framework;
  }
  enterEpoch(ctx: EpochContext, epoch: number): void {
    this.probe.entered(this.id, this.#fw!, ctx, epoch);
  }
  metaReady(): void {}
  exit(): void {}
}

/** One bare compare-and-put on a watched key, timed until every watcher has the event. */
class BareRoundTrip {
  #revision = '0';
  #value = 0;
  #pending: { left: number; resolve: () => void } | undefined;
  readonly #seen = new Map<Watcher, number>();

  private constructor(
    private readonly writer: Namespace,
    private readonly key: string,
    private readonly watchers: readonly Watcher[],
  ) {}

  static async open(writer: Namespace, watchClients: readonly Namespace[], watchers: number, key: string): Promise<BareRoundTrip> {
    await writer.put(key).value('0').exec();
    const opened = await Promise.all(Array.from({ length: watchers }, (_, i) => watchClients[i % watchClients.length]!.watch().key(key).create()));
    const rt = new BareRoundTrip(writer, key, opened);
    for (const w of opened) {
      w.on('put', (kv) => rt.#onPut(w, Number(kv.value.toString())));
    }
    const current = await writer.get(key).exec();
    rt.#revision = current.kvs[0]?.mod_revision ?? '0';
    return rt;
  }

  #onPut(w: Watcher, value: number): void {
    if (value !== this.#value || this.#seen.get(w) === value) return;
    this.#seen.set(w, value);
    const p = this.#pending;
    if (p && --p.left === 0) {
      this.#pending = undefined;
      p.resolve();
    }
  }

  /** ms from sending the compare-and-put until every watcher saw it. */
  async once(): Promise<number> {
    this.#value++;
    const arrived = new Promise<void>((resolve) => (this.#pending = { left: this.watchers.length, resolve }));
    const t0 = performance.now();
    const res = await this.writer.if(this.key, 'Mod', '==', this.#revision).then(this.writer.put(this.key).value(String(this.#value))).commit();
    if (!res.succeeded) throw new InternalError('the bare compare-and-put lost its compare: something else wrote the key');
    this.#revision = res.header.revision;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([
        arrived,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new InternalError(`a bare watch event did not arrive within ${ADVANCE_TIMEOUT_MS} ms`)), ADVANCE_TIMEOUT_MS);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
    return performance.now() - t0;
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.watchers.map((w) => w.cancel()));
  }
}

/** Splits `total` into `parts` near-equal positive counts (fewer parts if total is small). */
function split(total: number, parts: number): number[] {
  const n = Math.max(1, Math.min(parts, total));
  return Array.from({ length: n }, (_, i) => Math.floor(((i + 1) * total) / n) - Math.floor((i * total) / n));
}

export async function runEpochAdvance(o: EpochAdvanceOptions): Promise<EpochAdvanceResult> {
  const namespace = `bench-epoch-${o.tasks}-${runId()}`;
  const logger = o.logger ?? silentLogger;
  const clientCount = Math.ceil(o.tasks / o.nodesPerClient);
  const shared: Coordinator[] = [];
  const coordinatorOptions = { hosts: [...o.endpoints], namespace, logger };
  const controllerCoordinator = await createEtcdCoordinator(coordinatorOptions);
  const network = new LocalNetwork();
  const probe = new EpochProbe(o.tasks);
  const bareClients: Etcd3[] = [];
  let cluster: LocalCluster | undefined;
  let single: BareRoundTrip | undefined;
  let fanout: BareRoundTrip | undefined;
  try {
    if (o.nodesPerClient > 1) {
      const shares = (prefix: string): boolean => prefix === jobKeys.state('epochs') || prefix === jobKeys.tasks('epochs');
      for (let i = 0; i < clientCount; i++) shared.push(shareWatches(await createEtcdCoordinator(coordinatorOptions), { shares, logger }));
    }
    cluster = new LocalCluster({
      job: 'epochs',
      numTasks: o.tasks,
      linkTypes: [LINK],
      standbys: 0,
      controllerCoordinator,
      replaceLostNodes: false,
      node: { sessionTtlMs: o.sessionTtlMs },
      logger,
      resources: async (index): Promise<NodeResources> => {
        const transport = new LocalTransport({ network });
        const own = o.nodesPerClient > 1 ? undefined : await createEtcdCoordinator(coordinatorOptions);
        const coordinator = own ?? shared[Math.floor(index / o.nodesPerClient) % shared.length]!;
        return {
          coordinator,
          transport,
          close: async () => {
            await Promise.allSettled([transport.close(), own?.close()]);
          },
        };
      },
      builder: () => ({ getTask: (id: number) => new ProbeTask(id, probe) }),
      linkages: () => ({ [LINK]: new NoNeighbors() }),
    });
    const started = performance.now();
    await cluster.start();
    // A node that ends during the run ends it: its task would never enter another epoch.
    const ended = firstEnded(cluster);
    const guard = <T>(p: Promise<T>): Promise<T> => Promise.race([p, ended]);
    await guard(probe.allEntered(0, START_TIMEOUT_MS));
    o.progress(`epoch advance, ${o.tasks} tasks: the job is up (${((performance.now() - started) / 1000).toFixed(1)} s, ${clientCount} etcd clients)`);

    const bareNs = `${namespace}-bare/`;
    const writer = bareClient(o.endpoints);
    bareClients.push(writer);
    for (let i = 0; i < clientCount; i++) bareClients.push(bareClient(o.endpoints));
    single = await BareRoundTrip.open(writer.namespace(bareNs), [writer.namespace(bareNs)], 1, 'single');
    fanout = await BareRoundTrip.open(
      writer.namespace(bareNs),
      bareClients.slice(1).map((c) => c.namespace(bareNs)),
      o.tasks,
      'fanout',
    );

    let epoch = 0;
    const advance = async (): Promise<{ total: number; cas: number; first: number; spread: number }> => {
      const m = probe.master;
      if (!m || m.ctx.epoch !== epoch) throw new InternalError(`task 0 has not entered epoch ${epoch}`);
      const t0 = performance.now();
      const cas = m.fw.incEpoch(m.ctx).then(() => performance.now());
      // Awaited below; if waiting for the tasks fails first, its outcome must not go unhandled.
      cas.catch(() => undefined);
      const { first, last } = await guard(probe.allEntered(epoch + 1, ADVANCE_TIMEOUT_MS));
      const casAt = await cas;
      epoch++;
      return { total: last - t0, cas: casAt - t0, first: first - t0, spread: last - first };
    };

    for (let i = 0; i < o.warmupEpochs; i++) await advance();
    for (let i = 0; i < Math.min(o.bareRounds, 50); i++) {
      await single.once();
      await fanout.once();
    }

    const samples = { total: [] as number[], cas: [] as number[], first: [] as number[], spread: [] as number[] };
    const bare: number[] = [];
    const bareFan: number[] = [];
    const counters: EtcdCounters[] = [];
    let cpuMs = 0;
    let etcdCpuMs: number | undefined = 0;
    const epochBatches = split(o.epochs, o.rounds);
    const bareBatches = split(o.bareRounds, epochBatches.length);
    const frameworkBatch = async (count: number): Promise<void> => {
      const before = await readCounters(o.endpoints[0]!);
      const cpu0 = ownCpuMs();
      const etcd0 = processCpuMs(o.etcdPid);
      for (let i = 0; i < count; i++) {
        await sleepMs(o.gapMs);
        const s = await advance();
        samples.total.push(s.total);
        samples.cas.push(s.cas);
        samples.first.push(s.first);
        samples.spread.push(s.spread);
      }
      cpuMs += ownCpuMs() - cpu0;
      const etcd1 = processCpuMs(o.etcdPid);
      etcdCpuMs = etcdCpuMs === undefined || etcd0 === undefined || etcd1 === undefined ? undefined : etcdCpuMs + etcd1 - etcd0;
      counters.push(counterDelta(before, await readCounters(o.endpoints[0]!)));
    };
    const bareBatch = async (count: number): Promise<void> => {
      for (let i = 0; i < count; i++) {
        bare.push(await single!.once());
        bareFan.push(await fanout!.once());
      }
    };
    for (let r = 0; r < epochBatches.length; r++) {
      if (r % 2 === 0) {
        await frameworkBatch(epochBatches[r]!);
        await bareBatch(bareBatches[r]!);
      } else {
        await bareBatch(bareBatches[r]!);
        await frameworkBatch(epochBatches[r]!);
      }
    }

    const total = spread(samples.total);
    const b = spread(bare, 3);
    const bf = spread(bareFan, 3);
    const n = samples.total.length;
    const result: EpochAdvanceResult = {
      part: 'epoch_advance',
      case: `${o.tasks} tasks`,
      tasks: o.tasks,
      etcd_clients: clientCount,
      framework: {
        epochs: n,
        p50_ms: total.p50,
        p99_ms: total.p99,
        mean_ms: total.mean,
        cas_p50_ms: spread(samples.cas).p50,
        first_task_p50_ms: spread(samples.first).p50,
        spread_p50_ms: spread(samples.spread).p50,
        cpu_ms_per_epoch: round(cpuMs / n, 2),
        cpu_us_per_task_epoch: round((cpuMs * 1000) / n / o.tasks, 1),
        etcd_cpu_ms_per_epoch: etcdCpuMs === undefined ? null : round(etcdCpuMs / n, 2),
        etcd_per_epoch: counterPer(counterSum(counters), n),
      },
      bare: { rounds: b.n, p50_ms: b.p50, p99_ms: b.p99, mean_ms: b.mean },
      bare_fanout: { watchers: o.tasks, rounds: bf.n, p50_ms: bf.p50, p99_ms: bf.p99 },
      ratio_p50: ratio(total.p50, b),
      ratio_to_fanout_p50: ratio(total.p50, bf),
    };
    return result;
  } finally {
    await Promise.allSettled([single?.close(), fanout?.close()]);
    for (const c of bareClients) c.close();
    if (cluster) await cluster.close();
    await Promise.allSettled(shared.map((c) => c.close()));
    await controllerCoordinator.deletePrefix('epochs/').catch(() => undefined);
    await controllerCoordinator.close();
  }
}

/** Rejects when a node of the cluster fails, is killed or loses its lease (never resolves). */
export function firstEnded(cluster: LocalCluster): Promise<never> {
  const p = Promise.race(
    cluster.nodes.map(
      (n) =>
        new Promise<never>((_, reject) => {
          void n.finished.then((r) => {
            if (r.error !== undefined) reject(new InternalError(`node ${n.index} failed during the benchmark: ${String((r.error as Error).message ?? r.error)}`));
            else if (r.outcome?.reason === 'killed' || r.outcome?.reason === 'lease-lost') {
              reject(new InternalError(`node ${n.index} ended (${r.outcome.reason}) during the benchmark`));
            }
          });
        }),
    ),
  );
  p.catch(() => undefined);
  return p;
}

function ratio(value: number, base: Spread): number {
  return base.p50 > 0 ? round(value / base.p50, 2) : 0;
}
