/**
 * Part (a) of the hot-standby benchmark: failover of a task that holds a large
 * state (64 MiB), from the SIGKILL of its primary's process until the task serves
 * again, with a hot backup beside the same with a cold standby, in one run.
 *
 * Two jobs of the hot-standby application run side by side on the same etcd, the
 * same session TTL, each with its prober (task 1) in this process:
 *  - hot: task 0 has one backup, in sync (it got the state as a snapshot at
 *    start); when the primary dies, the backup is promoted with the state;
 *  - cold: no backup, one cold standby; when the primary dies, the standby claims
 *    the task and must build the state again before it serves.
 * Each repetition SIGKILLs task 0's primary at a random point of its keepalive
 * cycle, and the prober's `dataRequest(probe)` (one call, retried by the
 * framework as any caller's is) times until a new incarnation answers with a
 * correct word of the state. The address record's new token, seen by a bare etcd3
 * watch, splits that time in two. Then a replacement process is started (outside
 * the timed window): in the hot job it becomes the new backup and gets the state
 * as a snapshot, and the next repetition waits until it is in sync. Repetitions
 * alternate which job goes first.
 */
import { InternalError } from '@taskgraph/api';
import type { Logger } from '@taskgraph/api';
import type { Namespace, Watcher } from 'etcd3';
import { KeyEvents, sleepMs, spread, tokenOf } from './coordination-etcd.js';
import { PROBE, isBuiltRecord } from './hot-standby-app.js';
import { ProcessJob, STEP_TIMEOUT_MS } from './hot-standby-job.js';
import { stateWord } from './hot-standby-state.js';
import { round } from './src/load.js';

export interface FailoverOptions {
  readonly endpoints: readonly string[];
  readonly clientAddress: string;
  readonly namespace: string;
  /** A bare etcd3 view of the namespace (for the address watches). */
  readonly ns: Namespace;
  readonly ttlMs: number;
  /** Timed failovers of each job. */
  readonly repetitions: number;
  /** The task's state, in MiB. */
  readonly stateMib: number;
  readonly progress: (line: string) => void;
  readonly logger?: Logger;
}

export interface FailoverSide {
  /** SIGKILL -> a new incarnation of the task answered a probe with a correct word. */
  readonly p50_s: number;
  readonly max_s: number;
  readonly samples_s: readonly number[];
  /** SIGKILL -> the new primary's address record is in etcd. */
  readonly address_p50_s: number;
  /** SIGKILL -> etcd deleted the dead primary's address (its lease expired). */
  readonly expiry_p50_s: number;
  /**
   * etcd deleted the dead primary's address -> the probe answered: what the framework
   * (and the application's rebuild) adds to the lease expiry, whatever the moment of
   * the kill in the keepalive cycle.
   */
  readonly after_expiry_p50_ms: number;
  /** New address in etcd -> the probe answered (the prober hears of it, calls, the task answers once it has its state). */
  readonly serve_after_address_p50_ms: number;
  /** What the new primary spent building the state (cold; null when none did: hot). */
  readonly rebuild_p50_ms: number | null;
  /** Failovers in which a backup took over (hot: every one). */
  readonly promoted: number;
}

export interface FailoverResult {
  readonly part: 'failover';
  readonly ttl_s: number;
  readonly state_mib: number;
  readonly repetitions: number;
  readonly hot: FailoverSide;
  readonly cold: FailoverSide;
  /** hot.p50_s - ttl_s */
  readonly hot_failover_over_ttl_s: number;
  /** cold.p50_s - ttl_s */
  readonly cold_failover_over_ttl_s: number;
  /** The first primary's build of the state, which a cold standby repeats (ms, p50 over both jobs' builds). */
  readonly build_p50_ms: number;
}

interface Sample {
  readonly total: number;
  readonly address: number;
  readonly expiry: number;
  readonly afterAddress: number;
  readonly rebuildMs: number | undefined;
  readonly promoted: boolean;
}

const SEED = 7;

class Side {
  readonly samples: Sample[] = [];
  /** Build times the nodes reported, by incarnation. */
  readonly builds = new Map<number, number>();
  job: ProcessJob | undefined;
  addr: KeyEvents | undefined;

  constructor(readonly kind: 'hot' | 'cold') {}

  result(): FailoverSide {
    const totals = this.samples.map((s) => s.total / 1000);
    const t = spread(totals, 3);
    const rebuilds = this.samples.flatMap((s) => (s.rebuildMs === undefined ? [] : [s.rebuildMs]));
    return {
      p50_s: t.p50,
      max_s: t.max,
      samples_s: totals.map((s) => round(s, 3)),
      address_p50_s: spread(
        this.samples.map((s) => s.address / 1000),
        3,
      ).p50,
      expiry_p50_s: spread(
        this.samples.map((s) => s.expiry / 1000),
        3,
      ).p50,
      after_expiry_p50_ms: spread(this.samples.map((s) => s.total - s.expiry)).p50,
      serve_after_address_p50_ms: spread(this.samples.map((s) => s.afterAddress)).p50,
      rebuild_p50_ms: rebuilds.length === 0 ? null : spread(rebuilds).p50,
      promoted: this.samples.filter((s) => s.promoted).length,
    };
  }
}

export async function runFailover(o: FailoverOptions): Promise<FailoverResult> {
  const words = (o.stateMib * 1024 * 1024) / 4;
  const sides = { hot: new Side('hot'), cold: new Side('cold') };
  const watchers: Watcher[] = [];
  const ttlS = o.ttlMs / 1000;
  try {
    for (const side of [sides.hot, sides.cold]) {
      const name = `failover-${side.kind}`;
      side.addr = new KeyEvents(await o.ns.watch().key(`${name}/tasks/0/addr`).create());
      watchers.push(side.addr.watcher);
      const started = performance.now();
      side.job = await ProcessJob.start({
        endpoints: o.endpoints,
        clientAddress: o.clientAddress,
        namespace: o.namespace,
        job: name,
        backups: side.kind === 'hot' ? 1 : 0,
        standbys: side.kind === 'hot' ? 0 : 1,
        ttlMs: o.ttlMs,
        args: { mode: 'state', mib: String(o.stateMib), seed: String(SEED) },
        onResult: (_proc, record) => {
          if (isBuiltRecord(record)) side.builds.set(record.incarnation, record.ms);
        },
        ...(o.logger ? { logger: o.logger } : {}),
      });
      o.progress(
        `failover: the ${side.kind} job is up (${((performance.now() - started) / 1000).toFixed(1)} s` +
          `${side.kind === 'hot' ? `, its backup holds the ${o.stateMib} MiB state` : ''})`,
      );
    }
    const initialBuilds = [...sides.hot.builds.values(), ...sides.cold.builds.values()];

    const once = async (side: Side): Promise<void> => {
      const job = side.job!;
      const addr = side.addr!;
      const before = await job.steady();
      // The task serves, and the prober's channel to it is open, before the kill.
      const warm = await job.call(PROBE, 0);
      const oldIncarnation = warm.incarnation;
      const backupNode = before.status.tasks[0]!.backups[0]?.nodeId;
      // Some time after its last keepalive, as a crash would be.
      await sleepMs(200 + Math.random() * (o.ttlMs / 3));
      const from = addr.events.length;
      const killedAt = job.procs.kill(before.proc);
      let answer = await job.call(PROBE, Math.floor(Math.random() * words));
      // The old primary may have answered in the instant before the signal landed.
      while (answer.incarnation <= oldIncarnation) answer = await job.call(PROBE, Math.floor(Math.random() * words));
      const servedAt = performance.now();
      if (answer.word !== stateWord(SEED, answer.index)) {
        throw new InternalError(`the ${side.kind} task's new primary answered word ${answer.index} = ${answer.word}, not ${stateWord(SEED, answer.index)}`);
      }
      const put = await addr.next(from, (e) => e.type === 'put' && tokenOf(e.value) !== before.token, STEP_TIMEOUT_MS, 'the new primary to publish its address');
      const del = addr.events.slice(from, put.index).find((e) => e.type === 'delete');
      const after = await job.controller.status();
      const promoted = backupNode !== undefined && after?.tasks[0]?.nodeId === backupNode;
      let rebuildMs: number | undefined;
      if (side.kind === 'cold') {
        await job.until(() => side.builds.has(answer.incarnation), 'the new primary to report its build');
        rebuildMs = side.builds.get(answer.incarnation);
      }
      const sample: Sample = {
        total: servedAt - killedAt,
        address: put.at - killedAt,
        expiry: (del?.at ?? put.at) - killedAt,
        afterAddress: servedAt - put.at,
        rebuildMs,
        promoted,
      };
      side.samples.push(sample);
      await before.proc.exited;
      job.procs.spawn();
      o.progress(
        `failover ${side.kind} ${side.samples.length}/${o.repetitions}: ${(sample.total / 1000).toFixed(3)} s ` +
          `(lease expired at ${(sample.expiry / 1000).toFixed(3)} s, new address +${(sample.address - sample.expiry).toFixed(0)} ms, ` +
          `served +${sample.afterAddress.toFixed(0)} ms` +
          `${rebuildMs === undefined ? '' : `, rebuilt in ${rebuildMs} ms`}${promoted ? ', backup promoted' : ''})`,
      );
    };

    for (let i = 0; i < o.repetitions; i++) {
      // Alternating which job goes first, so drift lands on both alike.
      const order = i % 2 === 0 ? [sides.hot, sides.cold] : [sides.cold, sides.hot];
      for (const side of order) await once(side);
    }

    const hot = sides.hot.result();
    const cold = sides.cold.result();
    return {
      part: 'failover',
      ttl_s: ttlS,
      state_mib: o.stateMib,
      repetitions: o.repetitions,
      hot,
      cold,
      hot_failover_over_ttl_s: round(hot.p50_s - ttlS, 3),
      cold_failover_over_ttl_s: round(cold.p50_s - ttlS, 3),
      build_p50_ms: spread(initialBuilds).p50,
    };
  } finally {
    await Promise.allSettled(watchers.map((w) => w.cancel()));
    await Promise.allSettled([sides.hot.job?.close(), sides.cold.job?.close()]);
  }
}
