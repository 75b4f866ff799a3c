/**
 * Part (b) of the coordination benchmark: failover time. A one-task job of the
 * idle application runs as `taskgraph node` OS processes (one owner, standbys),
 * all on a session TTL of 2 s. Each repetition SIGKILLs the process running the
 * task, at a random point of its keepalive cycle, and times until a standby has
 * published the task's address with a new fencing token (seen by a bare etcd3
 * watch on `<job>/tasks/0/addr`). Beside it, in alternating repetitions, the bare
 * figure: how long etcd takes to expire a lease of the same TTL once its
 * keepalives stop (grant, put a key with it, keep it alive a while, stop, time
 * until the key's delete event). And, after each of those pairs, the witnessed
 * failover: the benchmark plays `taskgraph run`, which saw the process exit, and
 * ends its session at once (`Coordinator.endSession`, the id from the node's
 * `TG-SESSION` line); timed from the SIGKILL to the standby's address, as above.
 *
 * The node processes run the built CLI (`npm run bench:coordination` builds first),
 * with tsx's loader only for the idle application's TypeScript; the loader costs
 * start-up time, which is outside the timed window (a replacement standby is
 * started after each repetition).
 */
import { fileURLToPath } from 'node:url';
import { InternalError } from '@taskgraph/api';
import type { Logger } from '@taskgraph/api';
import { Controller, silentLogger } from '@taskgraph/core';
import type { JobStatus } from '@taskgraph/core';
import { createEtcdCoordinator } from '@taskgraph/coord-etcd';
import type { Etcd3, Namespace, Watcher } from 'etcd3';
import { IDLE_LINK } from './coordination-idle-app.js';
import { KeyEvents, bareClient, runId, sleepMs, spread, tokenOf, waitFor } from './coordination-etcd.js';
import { round } from './src/load.js';
import { NodeProcesses } from './src/node-processes.js';

export interface FailoverOptions {
  readonly endpoints: readonly string[];
  /** `host:port` of etcd, for the nodes' `etcd://` URL. */
  readonly clientAddress: string;
  /** The nodes' session TTL, and the bare lease's. A whole number of seconds (etcd's granularity). */
  readonly ttlMs: number;
  /** Timed failovers (and as many bare lease expiries). */
  readonly repetitions: number;
  /** Standby processes beside the owner. */
  readonly standbys: number;
  readonly progress: (line: string) => void;
  readonly logger?: Logger;
}

export interface FailoverResult {
  readonly part: 'failover';
  readonly ttl_s: number;
  readonly repetitions: number;
  readonly framework: {
    /** SIGKILL -> the new owner's address is in etcd. */
    readonly p50_s: number;
    readonly max_s: number;
    readonly samples_s: readonly number[];
    /** SIGKILL -> etcd deleted the dead owner's address (its lease expired). */
    readonly expiry_p50_s: number;
    /** Address deleted -> the new owner's address put (claim, incarnation, publish). */
    readonly takeover_p50_ms: number;
    readonly takeover_max_ms: number;
  };
  readonly bare: {
    /** Keepalives stopped -> etcd deleted the lease's key. */
    readonly p50_s: number;
    readonly max_s: number;
    readonly samples_s: readonly number[];
  };
  /** SIGKILL, the exit seen, endSession -> the new owner's address is in etcd: no TTL to wait out. */
  readonly witnessed: {
    readonly p50_s: number;
    readonly max_s: number;
    readonly samples_s: readonly number[];
    /** SIGKILL -> the exit seen by this process. */
    readonly reap_p50_ms: number;
    /** endSession called -> it resolved (the revoke). */
    readonly end_session_p50_ms: number;
  };
  /** framework.p50_s - ttl_s */
  readonly failover_over_ttl_s: number;
  /** bare.p50_s - ttl_s: what etcd alone adds to the TTL. */
  readonly bare_over_ttl_s: number;
}

const JOB = 'failover';
const STEP_TIMEOUT_MS = 60_000;

export async function runFailover(o: FailoverOptions): Promise<FailoverResult> {
  if (o.ttlMs % 1000 !== 0) throw new InternalError(`the failover TTL must be whole seconds (etcd's granularity), got ${o.ttlMs} ms`);
  const namespace = `bench-failover-${runId()}`;
  const logger = o.logger ?? silentLogger;
  const coordinator = await createEtcdCoordinator({ hosts: [...o.endpoints], namespace, logger });
  const controller = new Controller({ coordinator, job: JOB, logger });
  const client: Etcd3 = bareClient(o.endpoints);
  const ns: Namespace = client.namespace(`${namespace}/`);
  const watchers: Watcher[] = [];
  const procs = new NodeProcesses({
    app: fileURLToPath(new URL('./coordination-idle-app.ts', import.meta.url)),
    job: JOB,
    coordinatorUrl: `etcd://${o.clientAddress}?namespace=${namespace}`,
    ttlMs: o.ttlMs,
  });

  /** The job's state once the task has an owner and every standby has registered. */
  const ready = async (): Promise<JobStatus> => {
    let status: JobStatus | undefined;
    await waitFor(
      async () => {
        procs.checkNoneDied();
        status = await controller.status();
        return status?.tasks[0]?.token !== undefined && status.standbys.length >= o.standbys && status.nodes.length === procs.live().length;
      },
      STEP_TIMEOUT_MS,
      'the task to have an owner and every standby to be registered',
      50,
    );
    return status!;
  };

  try {
    await controller.createJob({ numTasks: 1, linkTypes: [IDLE_LINK] });
    const addr = new KeyEvents(await ns.watch().key(`${JOB}/tasks/0/addr`).create());
    watchers.push(addr.watcher);
    const started = performance.now();
    for (let i = 0; i <= o.standbys; i++) procs.spawn();
    await ready();
    o.progress(`failover: ${o.standbys + 1} node processes are up (${((performance.now() - started) / 1000).toFixed(1)} s)`);

    const framework: Array<{ total: number; expiry: number; takeover: number }> = [];
    const bare: number[] = [];
    const witnessed: Array<{ total: number; reap: number; end: number }> = [];
    const ttlS = o.ttlMs / 1000;

    const frameworkOnce = async (): Promise<void> => {
      const status = await ready();
      const owner = status.tasks[0]!;
      const proc = procs.byId(owner.nodeId);
      if (!proc) throw new InternalError(`task 0 is run by ${String(owner.nodeId)}, which this benchmark did not start`);
      // Some time after its last keepalive, as a crash would be.
      await sleepMs(200 + Math.random() * (o.ttlMs / 3));
      const from = addr.events.length;
      const killedAt = procs.kill(proc);
      const put = await addr.next(from, (e) => e.type === 'put' && tokenOf(e.value) !== owner.token, STEP_TIMEOUT_MS, 'a standby to publish the task');
      const del = addr.events.slice(from, put.index).find((e) => e.type === 'delete');
      const total = put.at - killedAt;
      framework.push({ total, expiry: (del?.at ?? put.at) - killedAt, takeover: del ? put.at - del.at : 0 });
      await proc.exited;
      procs.spawn();
      o.progress(`failover ${framework.length}/${o.repetitions}: ${(total / 1000).toFixed(3)} s (expiry ${(((del?.at ?? put.at) - killedAt) / 1000).toFixed(3)} s)`);
    };

    const bareOnce = async (i: number): Promise<void> => {
      const key = `bare-lease-${i}`;
      const events = new KeyEvents(await ns.watch().key(key).create());
      const lease = ns.lease(ttlS);
      try {
        await lease.grant();
        await lease.put(key).value('x');
        // Kept alive past a keepalive or two, then stopped at a random point of the cycle.
        await sleepMs(o.ttlMs / 3 + 200 + Math.random() * (o.ttlMs / 3));
        const from = events.events.length;
        const stoppedAt = performance.now();
        lease.release();
        const del = await events.next(from, (e) => e.type === 'delete', STEP_TIMEOUT_MS, 'etcd to expire the bare lease');
        bare.push(del.at - stoppedAt);
        o.progress(`bare lease expiry ${bare.length}/${o.repetitions}: ${((del.at - stoppedAt) / 1000).toFixed(3)} s`);
      } finally {
        await events.watcher.cancel();
        await lease.revoke().catch(() => undefined);
      }
    };

    const witnessedOnce = async (): Promise<void> => {
      const status = await ready();
      const owner = status.tasks[0]!;
      const proc = procs.byId(owner.nodeId);
      if (!proc) throw new InternalError(`task 0 is run by ${String(owner.nodeId)}, which this benchmark did not start`);
      const sessionId = proc.sessionId;
      if (sessionId === undefined) throw new InternalError(`${proc.nodeId} runs task 0 but printed no TG-SESSION line`);
      await sleepMs(200 + Math.random() * (o.ttlMs / 3));
      const from = addr.events.length;
      const killedAt = procs.kill(proc);
      // What `taskgraph run` does: the exit is seen, so the session may be ended now.
      await proc.exited;
      const reapedAt = performance.now();
      await coordinator.endSession(sessionId);
      const endedAt = performance.now();
      const put = await addr.next(from, (e) => e.type === 'put' && tokenOf(e.value) !== owner.token, STEP_TIMEOUT_MS, 'a standby to publish the task');
      witnessed.push({ total: put.at - killedAt, reap: reapedAt - killedAt, end: endedAt - reapedAt });
      procs.spawn();
      o.progress(`witnessed failover ${witnessed.length}/${o.repetitions}: ${((put.at - killedAt) / 1000).toFixed(3)} s`);
    };

    for (let i = 0; i < o.repetitions; i++) {
      // Alternating which side goes first, so drift lands on both alike.
      if (i % 2 === 0) {
        await frameworkOnce();
        await bareOnce(i);
      } else {
        await bareOnce(i);
        await frameworkOnce();
      }
      await witnessedOnce();
    }

    const totals = framework.map((f) => f.total / 1000);
    const f = spread(totals, 3);
    const b = spread(
      bare.map((ms) => ms / 1000),
      3,
    );
    const takeover = spread(framework.map((x) => x.takeover));
    const witnessedTotals = witnessed.map((x) => x.total / 1000);
    const w = spread(witnessedTotals, 3);
    return {
      part: 'failover',
      ttl_s: ttlS,
      repetitions: o.repetitions,
      framework: {
        p50_s: f.p50,
        max_s: f.max,
        samples_s: totals.map((s) => round(s, 3)),
        expiry_p50_s: spread(
          framework.map((x) => x.expiry / 1000),
          3,
        ).p50,
        takeover_p50_ms: takeover.p50,
        takeover_max_ms: takeover.max,
      },
      bare: { p50_s: b.p50, max_s: b.max, samples_s: bare.map((ms) => round(ms / 1000, 3)) },
      witnessed: {
        p50_s: w.p50,
        max_s: w.max,
        samples_s: witnessedTotals.map((s) => round(s, 3)),
        reap_p50_ms: spread(witnessed.map((x) => x.reap)).p50,
        end_session_p50_ms: spread(witnessed.map((x) => x.end)).p50,
      },
      failover_over_ttl_s: round(f.p50 - ttlS, 3),
      bare_over_ttl_s: round(b.p50 - ttlS, 3),
    };
  } finally {
    await Promise.allSettled(watchers.map((w) => w.cancel()));
    // Finishing the job lets the nodes leave on their own; whatever is still up after that is killed.
    await controller.finish('done').catch(() => undefined);
    await procs.close(10_000);
    await controller.destroy().catch(() => undefined);
    await ns.delete().prefix('bare-lease-').exec().catch(() => undefined);
    client.close();
    await coordinator.close();
  }
}
