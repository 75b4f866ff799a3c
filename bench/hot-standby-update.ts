/**
 * Part (b) of the hot-standby benchmark: the latency of `update()`, the call that
 * returns once every backup has applied a change, beside a bare grpc-js unary call
 * of the same size (answered with an empty message, as a backup answers an
 * update), in one process and one run.
 *
 * The framework side is a real one-task job with 1 or 2 backups, as a
 * `LocalCluster` in this process: each node its own etcd coordinator (on the
 * run's etcd) and its own gRPC transport on 127.0.0.1. update()'s data path does
 * not touch the store (the primary knows its backups from its watch), so etcd
 * only holds the sessions; it is the coordinator here because the benchmark is
 * run on etcd, and a store on the path would show. The primary's task changes its
 * state and calls `update()` with the epoch context the framework gave it; each
 * backup applies the change in `applyUpdate`.
 *
 * Both sides run through the same closed-loop driver (src/load.ts), warmed up and
 * then in alternating rounds, as in the data-plane benchmark. With 2 backups a
 * third side, `raw_fanout`, makes one bare call to each of two servers at once and
 * waits for both: the floor of shipping to two backups in parallel.
 */
import { InternalError, InvalidArgumentError } from '@taskgraph/api';
import type { BackedUpFramework, Backupable, EpochContext, Logger, Task, UpdateLog } from '@taskgraph/api';
import { LocalCluster, nodeResources, silentLogger } from '@taskgraph/core';
import { createEtcdCoordinator } from '@taskgraph/coord-etcd';
import { createGrpcTransport } from '@taskgraph/transport-grpc';
import { waitFor } from './coordination-etcd.js';
import { NoNeighbors } from './coordination-idle-app.js';
import { sizeLabel } from './src/data-plane.js';
import type { SideResult } from './src/data-plane.js';
import { LoadTotals, checkLoadSpec, round, runLoad } from './src/load.js';
import type { LoadResult, LoadSpec } from './src/load.js';
import { Once } from './src/once.js';
import { startRawGrpc } from './src/raw-grpc.js';
import type { RawGrpc } from './src/raw-grpc.js';

const LINK = 'Peers';

export interface UpdateOptions {
  readonly endpoints: readonly string[];
  readonly namespace: string;
  /** Payload sizes, in bytes. */
  readonly payloads: readonly number[];
  /** Backup counts (one job each). */
  readonly backups: readonly number[];
  /** Calls in flight. */
  readonly inFlight: readonly number[];
  readonly rounds: number;
  readonly round: Omit<LoadSpec, 'inFlight'>;
  readonly warmup: Omit<LoadSpec, 'inFlight'>;
  readonly progress: (line: string) => void;
  readonly logger?: Logger;
}

export interface UpdateResult {
  readonly part: 'update';
  readonly case: string;
  readonly payload_bytes: number;
  readonly backups: number;
  readonly in_flight: number;
  /** `update()`: state change and shipping to every backup, until all applied it. */
  readonly framework: SideResult;
  /** One bare unary call of the payload's size, answered empty. */
  readonly raw: SideResult;
  /** With 2 or more backups: one bare call to each of that many servers at once (null with 1). */
  readonly raw_fanout: SideResult | null;
  /** framework.p50_us / raw.p50_us: what the target is on. */
  readonly ratio_p50: number;
  readonly ratio_p99: number;
  readonly p50_added_us: number;
  /** framework.cpu_us_per_call / raw.cpu_us_per_call (both ends of every call run in this process). */
  readonly cpu_ratio: number;
  /** framework.p50_us / raw_fanout.p50_us (null with 1 backup). */
  readonly ratio_to_fanout_p50: number | null;
}

/** A task whose state is a count of updates and of their bytes. */
class CountingTask implements Task, Backupable {
  #framework: BackedUpFramework | undefined;
  #ctx: EpochContext | undefined;
  readonly entered = new Once();
  updates = 0;
  bytes = 0;

  init(_taskId: number, framework: BackedUpFramework): void {
    this.#framework = framework;
  }

  enterEpoch(ctx: EpochContext): void {
    this.#ctx = ctx;
    this.entered.resolve();
  }

  metaReady(): void {}
  exit(): void {}

  /** The change and its update() in one synchronous turn, as Backupable asks. */
  change(payload: Uint8Array): Promise<UpdateLog> {
    this.updates++;
    this.bytes += payload.byteLength;
    return this.#framework!.update(this.#ctx!, payload);
  }

  snapshot(): Uint8Array {
    return new Uint8Array(Float64Array.of(this.updates, this.bytes).buffer);
  }

  restore(snapshot: Uint8Array): void {
    const v = new Float64Array(snapshot.slice().buffer);
    this.updates = v[0]!;
    this.bytes = v[1]!;
  }

  applyUpdate(log: UpdateLog): void {
    this.updates++;
    this.bytes += log.data.byteLength;
  }
}

interface UpdateJob {
  change(payload: Uint8Array): Promise<UpdateLog>;
  /** Throws unless every backup holds what the primary holds. */
  checkBackups(): void;
  close(): Promise<void>;
}

async function startUpdateJob(o: UpdateOptions, backups: number): Promise<UpdateJob> {
  const logger = o.logger ?? silentLogger;
  const tasks = new Map<number, CountingTask>();
  const controllerCoordinator = await createEtcdCoordinator({ hosts: [...o.endpoints], namespace: o.namespace, logger });
  const cluster = new LocalCluster({
    job: `update-${backups}b`,
    numTasks: 1,
    linkTypes: [LINK],
    backups,
    standbys: 0,
    // A benchmark measures; it does not heal. A node that failed would show as an error.
    replaceLostNodes: false,
    controllerCoordinator,
    resources: async () => {
      const coordinator = await createEtcdCoordinator({ hosts: [...o.endpoints], namespace: o.namespace, logger });
      const transport = await createGrpcTransport({ host: '127.0.0.1', logger });
      return nodeResources(coordinator, transport);
    },
    builder: (index) => ({
      getTask: () => {
        const t = new CountingTask();
        tasks.set(index, t);
        return t;
      },
    }),
    linkages: () => ({ [LINK]: new NoNeighbors() }),
    // A long session, so a machine too busy to run a keepalive in time does not end the job mid-run.
    node: { sessionTtlMs: 60_000, attemptTimeoutMs: 60_000 },
    logger,
  });
  const close = async (): Promise<void> => {
    await cluster.close();
    await cluster.controller.destroy().catch(() => undefined);
    await controllerCoordinator.close();
  };
  try {
    await cluster.start();
    await waitFor(
      async () => {
        const t = (await cluster.controller.status())?.tasks[0];
        return t?.token !== undefined && t.backups.length === backups && t.backups.every((b) => b.state === 'ready' && b.primaryToken === t.token);
      },
      60_000,
      `the primary and its ${backups} backups in sync`,
      50,
    );
    const owner = cluster.ownerOf(0);
    const primary = owner === undefined ? undefined : tasks.get(owner.index);
    if (!primary) throw new InternalError('no node runs the primary of the update job');
    await primary.entered.promise;
    return {
      change: (payload) => primary.change(payload),
      checkBackups: () => {
        const mirrors = cluster.backupsOf(0).map((n) => tasks.get(n.index));
        if (mirrors.length !== backups) throw new InternalError(`the update job has ${mirrors.length} backups, not ${backups}`);
        for (const m of mirrors) {
          if (m?.updates !== primary.updates || m.bytes !== primary.bytes) {
            throw new InternalError(`a backup holds ${String(m?.updates)} updates (${String(m?.bytes)} bytes), the primary ${primary.updates} (${primary.bytes})`);
          }
        }
      },
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

export function checkUpdateOptions(o: Pick<UpdateOptions, 'payloads' | 'backups' | 'inFlight' | 'rounds' | 'round' | 'warmup'>): void {
  if (o.payloads.length === 0) throw new InvalidArgumentError('give at least one payload size');
  for (const p of o.payloads) {
    // An update carries at most the transport's message size less the frame's header room.
    if (!Number.isInteger(p) || p < 1 || p > 8 * 1024 * 1024) throw new InvalidArgumentError(`payload sizes must be integers in [1, 8 MiB], got ${String(p)}`);
  }
  if (o.backups.length === 0) throw new InvalidArgumentError('give at least one backup count');
  for (const b of o.backups) {
    if (!Number.isInteger(b) || b < 1 || b > 4) throw new InvalidArgumentError(`backup counts must be integers in [1, 4], got ${String(b)}`);
  }
  if (o.inFlight.length === 0) throw new InvalidArgumentError('give at least one number of calls in flight');
  for (const n of o.inFlight) checkLoadSpec({ inFlight: n, calls: 1 });
  if (!Number.isInteger(o.rounds) || o.rounds < 1) throw new InvalidArgumentError(`rounds must be a positive integer, got ${String(o.rounds)}`);
  checkLoadSpec({ inFlight: 1, ...o.round });
  checkLoadSpec({ inFlight: 1, ...o.warmup });
}

type SideName = 'framework' | 'raw' | 'raw_fanout';

/** Runs every case; `onResult` gets each as soon as it is known. */
export async function runUpdate(o: UpdateOptions, onResult: (r: UpdateResult) => void): Promise<UpdateResult[]> {
  checkUpdateOptions(o);
  const raws: RawGrpc[] = [];
  const results: UpdateResult[] = [];
  try {
    for (let i = 0; i < Math.max(...o.backups); i++) raws.push(await startRawGrpc(16 * 1024 * 1024));
    for (const backups of o.backups) {
      o.progress(`update: a job with ${backups} backup${backups === 1 ? '' : 's'} (etcd coordinators, gRPC transport on 127.0.0.1)`);
      const job = await startUpdateJob(o, backups);
      try {
        for (const size of o.payloads) {
          const payload = Buffer.alloc(size);
          for (let i = 0; i < size; i++) payload[i] = i & 0xff;
          const fanout = raws.slice(0, backups);
          const calls: Record<SideName, () => Promise<void>> = {
            framework: async () => {
              const log = await job.change(payload);
              if (log.data.byteLength !== size) throw new InternalError(`update() acknowledged ${log.data.byteLength} bytes of ${size}`);
            },
            raw: async () => {
              const out = await raws[0]!.ack(payload);
              if (out.byteLength !== 0) throw new InternalError(`the raw ack answered ${out.byteLength} bytes`);
            },
            raw_fanout: async () => {
              const outs = await Promise.all(fanout.map((r) => r.ack(payload)));
              if (outs.some((b) => b.byteLength !== 0)) throw new InternalError('a raw ack answered bytes');
            },
          };
          const sides: readonly SideName[] = backups > 1 ? ['framework', 'raw', 'raw_fanout'] : ['framework', 'raw'];
          for (const inFlight of o.inFlight) {
            const label = `${sizeLabel(size)} ${backups}b x${inFlight}`;
            const run = (side: SideName, spec: Omit<LoadSpec, 'inFlight'>): Promise<LoadResult> => runLoad(calls[side], { inFlight, ...spec });
            for (const side of sides) await run(side, o.warmup);
            const totals = new Map(sides.map((s) => [s, new LoadTotals()]));
            for (let r = 0; r < o.rounds; r++) {
              const order = r % 2 === 0 ? sides : [...sides].reverse();
              for (const side of order) totals.get(side)!.add(await run(side, o.round));
            }
            job.checkBackups();
            const f = totals.get('framework')!.summary();
            const w = totals.get('raw')!.summary();
            const fan = totals.get('raw_fanout')?.summary() ?? null;
            const result: UpdateResult = {
              part: 'update',
              case: label,
              payload_bytes: size,
              backups,
              in_flight: inFlight,
              framework: f,
              raw: w,
              raw_fanout: fan,
              ratio_p50: w.p50_us > 0 ? round(f.p50_us / w.p50_us, 3) : 0,
              ratio_p99: w.p99_us > 0 ? round(f.p99_us / w.p99_us, 3) : 0,
              p50_added_us: round(f.p50_us - w.p50_us, 1),
              cpu_ratio: w.cpu_us_per_call > 0 ? round(f.cpu_us_per_call / w.cpu_us_per_call, 3) : 0,
              ratio_to_fanout_p50: fan && fan.p50_us > 0 ? round(f.p50_us / fan.p50_us, 3) : null,
            };
            o.progress(
              `update ${label.padEnd(14)} framework p50 ${f.p50_us.toFixed(0).padStart(6)} us p99 ${f.p99_us.toFixed(0).padStart(6)} us | ` +
                `raw p50 ${w.p50_us.toFixed(0).padStart(6)} us${fan ? ` (fan-out ${fan.p50_us.toFixed(0)} us)` : ''} | ratio p50 ${result.ratio_p50.toFixed(2)} ` +
                `p99 ${result.ratio_p99.toFixed(2)} (cpu/call ${f.cpu_us_per_call.toFixed(0)} vs ${w.cpu_us_per_call.toFixed(0)} us)`,
            );
            results.push(result);
            onResult(result);
          }
        }
      } finally {
        await job.close();
      }
    }
    return results;
  } finally {
    await Promise.allSettled(raws.map((r) => r.close()));
  }
}
