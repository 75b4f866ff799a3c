/**
 * Part (c) of the coordination benchmark: how many etcd writes the framework
 * makes per task per epoch. The regression job (a master over a tree of slaves)
 * runs in this process on real etcd coordinators and the in-process transport,
 * while a bare etcd3 watch records every revision of its namespace. Each revision
 * is one write (one transaction), classified by the keys it touched; the steady
 * state is the window from the put of epoch 1 (exclusive) to the put of the last
 * epoch (inclusive): whole epochs, none of the start-up (node records, locks,
 * incarnations, addresses) and none of the shut-down.
 *
 * The application's own meta flags (`flagMeta`, one write per neighbour) are the
 * meta writes excluded from `writes_per_task_epoch`; what remains is what the
 * framework adds: the epoch compare-and-set, and the deletion of each receiver's
 * old-epoch meta keys.
 */
import { InternalError } from '@taskgraph/api';
import type { Logger } from '@taskgraph/api';
import { LocalCluster, silentLogger } from '@taskgraph/core';
import type { NodeResources } from '@taskgraph/core';
import { createEtcdCoordinator } from '@taskgraph/coord-etcd';
import { LocalNetwork, LocalTransport } from '@taskgraph/transport-local';
import { REGRESSION_LINK_TYPES, RegressionTaskBuilder, expectedSums, regressionLinkages } from '@taskgraph/workloads';
import type { IWatchResponse, Watcher } from 'etcd3';
import { firstEnded } from './coordination-epoch.js';
import { bareClient, runId } from './coordination-etcd.js';
import { round } from './src/load.js';

export interface StoreWritesOptions {
  readonly endpoints: readonly string[];
  readonly tasks: number;
  /** The job runs epochs 0..epochs; the counted window is epochs 1..epochs-1 (at least 2). */
  readonly epochs: number;
  readonly sessionTtlMs: number;
  readonly progress: (line: string) => void;
  readonly logger?: Logger;
}

export type WriteKind = 'epoch' | 'meta_flag' | 'meta_cleanup' | 'other';

export interface StoreWritesResult {
  readonly part: 'store_writes';
  readonly tasks: number;
  /** Whole epochs in the counted window. */
  readonly epochs_counted: number;
  /** The job's answer was exact (it really ran every epoch). */
  readonly answer_ok: boolean;
  /** Writes (etcd revisions) in the window, by kind. */
  readonly window_writes: Readonly<Record<WriteKind, number>>;
  /** Per task per epoch, by kind. */
  readonly per_task_epoch: Readonly<Record<WriteKind, number>>;
  /** Window writes minus the application's meta flags, per task per epoch. */
  readonly writes_per_task_epoch: number;
  /** The same, meta flags included. */
  readonly writes_per_task_epoch_with_meta: number;
  /** Writes before the window (job creation, node records, locks, incarnations, addresses, epoch 0), excluding meta flags. */
  readonly startup_writes: number;
  /** The store revision went from .. to over the whole run (every write, any kind). */
  readonly revision_delta: number;
  /** The nodes' own counters (stats.writes) over the whole run, summed. */
  readonly node_stats_writes: Readonly<Record<string, number>>;
  /** Keys of the first few window writes of kind "other" (nothing is expected there). */
  readonly other_examples: readonly string[];
}

const JOB = 'regression';
const TIMEOUT_MS = 120_000;

interface Revision {
  readonly revision: bigint;
  readonly events: Array<{ type: 'put' | 'delete'; key: string; value: string }>;
}

export function classify(job: string, r: Revision): WriteKind {
  if (r.events.some((e) => e.key === `${job}/state/epoch`)) return 'epoch';
  const meta = `${job}/meta/`;
  if (r.events.length > 0 && r.events.every((e) => e.key.startsWith(meta) && e.type === 'put')) return 'meta_flag';
  if (r.events.length > 0 && r.events.every((e) => e.key.startsWith(meta) && e.type === 'delete')) return 'meta_cleanup';
  return 'other';
}

export async function runStoreWrites(o: StoreWritesOptions): Promise<StoreWritesResult> {
  if (!Number.isInteger(o.epochs) || o.epochs < 2) throw new InternalError(`the store-writes part needs at least 2 epochs, got ${o.epochs}`);
  const namespace = `bench-writes-${runId()}`;
  const prefix = `${namespace}/`;
  const logger = o.logger ?? silentLogger;
  const coordinatorOptions = { hosts: [...o.endpoints], namespace, logger };
  const controllerCoordinator = await createEtcdCoordinator(coordinatorOptions);
  const client = bareClient(o.endpoints);
  const network = new LocalNetwork();
  const revisions = new Map<bigint, Revision>();
  let watcher: Watcher | undefined;
  let cluster: LocalCluster | undefined;
  try {
    watcher = await client.watch().prefix(prefix).create();
    watcher.on('data', (res: IWatchResponse) => {
      for (const e of res.events) {
        const revision = BigInt(e.kv.mod_revision);
        let r = revisions.get(revision);
        if (!r) revisions.set(revision, (r = { revision, events: [] }));
        r.events.push({ type: e.type === 'Delete' ? 'delete' : 'put', key: e.kv.key.toString().slice(prefix.length), value: e.kv.value.toString() });
      }
    });
    const first = BigInt((await client.get(`${prefix}~start`).exec()).header.revision);

    const sums = new Map<number, number>();
    cluster = new LocalCluster({
      job: JOB,
      numTasks: o.tasks,
      linkTypes: REGRESSION_LINK_TYPES,
      standbys: 0,
      controllerCoordinator,
      replaceLostNodes: false,
      node: { sessionTtlMs: o.sessionTtlMs },
      logger,
      resources: async (): Promise<NodeResources> => {
        const transport = new LocalTransport({ network });
        const coordinator = await createEtcdCoordinator(coordinatorOptions);
        return { coordinator, transport, close: async () => void (await Promise.allSettled([transport.close(), coordinator.close()])) };
      },
      builder: () => new RegressionTaskBuilder({ numTasks: o.tasks, numEpochs: o.epochs, onResult: (epoch, sum) => sums.set(epoch, sum) }),
      linkages: () => regressionLinkages({ numTasks: o.tasks }),
    });
    const started = performance.now();
    await cluster.start();
    const ended = firstEnded(cluster);
    const done = cluster.controller.waitUntilDone(AbortSignal.timeout(TIMEOUT_MS));
    await Promise.race([done, ended]);
    await cluster.settled();
    o.progress(`store writes: the regression job (${o.tasks} tasks, epochs 0..${o.epochs}) finished in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    const stats: Record<string, number> = {};
    for (const n of cluster.nodes) for (const [k, v] of Object.entries(n.node.stats.writes)) stats[k] = (stats[k] ?? 0) + v;

    // A write after everything else: once the watch has it, it has everything before it.
    const barrier = BigInt((await client.put(`${prefix}~end`).value('').exec()).header.revision);
    const deadline = performance.now() + 30_000;
    while (!revisions.has(barrier)) {
      if (performance.now() > deadline) throw new InternalError('the history watch did not catch up with the store');
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    revisions.delete(barrier);

    const epochPut = (epoch: number): bigint => {
      for (const r of revisions.values()) {
        if (r.events.some((e) => e.type === 'put' && e.key === `${JOB}/state/epoch` && e.value === String(epoch))) return r.revision;
      }
      throw new InternalError(`no write of epoch ${epoch} was seen`);
    };
    const from = epochPut(1);
    const to = epochPut(o.epochs);
    const window: Record<WriteKind, number> = { epoch: 0, meta_flag: 0, meta_cleanup: 0, other: 0 };
    const otherExamples: string[] = [];
    let startup = 0;
    for (const r of [...revisions.values()].sort((a, b) => (a.revision < b.revision ? -1 : 1))) {
      const kind = classify(JOB, r);
      if (r.revision > from && r.revision <= to) {
        window[kind]++;
        if (kind === 'other' && otherExamples.length < 5) otherExamples.push(r.events.map((e) => `${e.type} ${e.key}`).join(', '));
      } else if (r.revision < from && kind !== 'meta_flag') {
        startup++;
      }
    }
    const epochsCounted = o.epochs - 1;
    const per = o.tasks * epochsCounted;
    const all = window.epoch + window.meta_flag + window.meta_cleanup + window.other;
    const expected = expectedSums(o.tasks, o.epochs);
    return {
      part: 'store_writes',
      tasks: o.tasks,
      epochs_counted: epochsCounted,
      answer_ok: expected.every((s, e) => sums.get(e) === s),
      window_writes: window,
      per_task_epoch: {
        epoch: round(window.epoch / per, 3),
        meta_flag: round(window.meta_flag / per, 3),
        meta_cleanup: round(window.meta_cleanup / per, 3),
        other: round(window.other / per, 3),
      },
      writes_per_task_epoch: round((all - window.meta_flag) / per, 3),
      writes_per_task_epoch_with_meta: round(all / per, 3),
      startup_writes: startup,
      revision_delta: Number(barrier - 1n - first),
      node_stats_writes: stats,
      other_examples: otherExamples,
    };
  } finally {
    await watcher?.cancel().catch(() => undefined);
    if (cluster) await cluster.close();
    await controllerCoordinator.deletePrefix(`${JOB}/`).catch(() => undefined);
    await client.delete().prefix(prefix).exec().catch(() => undefined);
    client.close();
    await controllerCoordinator.close();
  }
}
