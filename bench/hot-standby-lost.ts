/**
 * Part (c) of the hot-standby benchmark: acknowledged updates lost over repeated
 * primary kills. A job of the hot-standby application in stream mode, on etcd:
 * task 0's primary streams updates (several in flight) to its backup and reports
 * each one `update()` acknowledged (a `TG-RESULT` line on its stdout, written
 * before anything else happens in the process, so a SIGKILL cannot lose it).
 *
 * Each kill waits until the backup is in sync with the primary and the primary
 * has been acknowledging for a while, SIGKILLs it at a random moment, waits until
 * a new primary acknowledges, and starts a replacement process, which becomes the
 * next backup through a snapshot. At the end the prober asks the last primary to
 * stop (`finish`) and answer its whole state; every acknowledged update must be in
 * it, and none twice.
 */
import { InternalError } from '@taskgraph/api';
import type { Logger } from '@taskgraph/api';
import { sleepMs } from './coordination-etcd.js';
import { FINISH, decodeFinish, isAckRecord } from './hot-standby-app.js';
import { ProcessJob } from './hot-standby-job.js';
import type { NodeProcess } from './src/node-processes.js';

export interface LostUpdatesOptions {
  readonly endpoints: readonly string[];
  readonly clientAddress: string;
  readonly namespace: string;
  readonly ttlMs: number;
  /** Primary kills. */
  readonly kills: number;
  /** Updates the primary keeps in flight. */
  readonly inFlight: number;
  readonly progress: (line: string) => void;
  readonly logger?: Logger;
}

export interface LostUpdatesResult {
  readonly part: 'lost_updates';
  readonly kills: number;
  /** Kills after which the backup (not a fresh node) took over. */
  readonly promoted: number;
  readonly in_flight: number;
  /** Updates whose update() resolved, as the primaries reported them. */
  readonly acknowledged_updates: number;
  /** Updates in the last primary's state. */
  readonly final_state_updates: number;
  /** Acknowledged updates missing from the final state (must be 0). */
  readonly lost_acknowledged_updates: number;
  /** Updates the final state holds more than once (must be 0). */
  readonly duplicate_updates: number;
  /** Updates in the final state whose acknowledgement was never seen (allowed: in flight when the primary died). */
  readonly unacknowledged_in_state: number;
  /** Incarnations of the task that acknowledged updates. */
  readonly primaries: number;
}

/** Acknowledgements seen before a kill, so that each kill hits a primary in full stream. */
const ACKS_BEFORE_KILL = 200;

const key = (incarnation: number, n: number): string => `${incarnation}:${n}`;

export async function runLostUpdates(o: LostUpdatesOptions): Promise<LostUpdatesResult> {
  const acked = new Set<string>();
  const ackedBy = new Map<NodeProcess, number>();
  const incarnations = new Set<number>();
  let job: ProcessJob | undefined;
  try {
    const started = performance.now();
    job = await ProcessJob.start({
      endpoints: o.endpoints,
      clientAddress: o.clientAddress,
      namespace: o.namespace,
      job: 'lost-updates',
      backups: 1,
      standbys: 0,
      ttlMs: o.ttlMs,
      args: { mode: 'stream', in_flight: String(o.inFlight) },
      onResult: (proc, record) => {
        if (!isAckRecord(record)) return;
        acked.add(key(record.incarnation, record.n));
        incarnations.add(record.incarnation);
        ackedBy.set(proc, (ackedBy.get(proc) ?? 0) + 1);
      },
      ...(o.logger ? { logger: o.logger } : {}),
    });
    o.progress(`lost updates: the job is up (${((performance.now() - started) / 1000).toFixed(1)} s); ${o.kills} kills follow`);
    const j = job;

    let promoted = 0;
    for (let k = 1; k <= o.kills; k++) {
      const before = await j.steady();
      const victim = before.proc;
      const backupNode = before.status.tasks[0]!.backups[0]?.nodeId;
      const floor = (ackedBy.get(victim) ?? 0) + ACKS_BEFORE_KILL;
      await j.until(() => (ackedBy.get(victim) ?? 0) >= floor, `the primary to acknowledge ${ACKS_BEFORE_KILL} more updates`);
      await sleepMs(Math.random() * 300);
      const counts = new Map(ackedBy);
      j.procs.kill(victim);
      await victim.exited;
      let successor: NodeProcess | undefined;
      await j.until(() => (successor = j.procs.live().find((p) => (ackedBy.get(p) ?? 0) > (counts.get(p) ?? 0))) !== undefined, 'a new primary to acknowledge updates');
      const hot = successor!.nodeId === backupNode;
      if (hot) promoted++;
      // The replacement joins while the new primary streams: it becomes the next backup through a snapshot.
      j.procs.spawn();
      o.progress(`lost updates: kill ${k}/${o.kills}: ${acked.size} acknowledged so far${hot ? ', the backup took over' : ''}`);
    }

    const last = await j.steady();
    const answer = decodeFinish(await j.call(FINISH, null));
    // Its acknowledgements were written before it answered; wait until all of them are read.
    await j.until(() => (ackedBy.get(last.proc) ?? 0) >= answer.acked, "the last primary's acknowledgements to be read");
    const seen = new Set<string>();
    let duplicates = 0;
    for (let i = 0; i + 1 < answer.pairs.length; i += 2) {
      const kk = key(answer.pairs[i]!, answer.pairs[i + 1]!);
      if (seen.has(kk)) duplicates++;
      else seen.add(kk);
    }
    let lost = 0;
    for (const a of acked) if (!seen.has(a)) lost++;
    let unacked = 0;
    for (const s of seen) if (!acked.has(s)) unacked++;
    if (acked.size === 0) throw new InternalError('no update was acknowledged: the stream never ran');
    return {
      part: 'lost_updates',
      kills: o.kills,
      promoted,
      in_flight: o.inFlight,
      acknowledged_updates: acked.size,
      final_state_updates: answer.pairs.length / 2,
      lost_acknowledged_updates: lost,
      duplicate_updates: duplicates,
      unacknowledged_in_state: unacked,
      primaries: incarnations.size,
    };
  } finally {
    await job?.close();
  }
}
