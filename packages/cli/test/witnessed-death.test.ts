/**
 * Witnessed death on a real etcd: `run` saw its node process die, so it ends the
 * node's session at once, and a standby serves the task long before the 10 s TTL
 * could have run out.
 */
import { createController } from '@taskgraph/core';
import type { Controller, JobStatus } from '@taskgraph/core';
import { describe, expect, it } from 'vitest';
import { realEtcd } from './fixtures/real-etcd.js';
import { JobRun } from '../src/index.js';
import type { NodeProcess } from '../src/index.js';

const EXACT = 'sums are exact: 0, 21, 42, 63, 84, 105, 126, 147, 168, 189, 210';
const TTL_MS = 10_000;

interface Kill {
  readonly victim: NodeProcess;
  readonly task: number;
  readonly incarnations: number;
  readonly at: number;
}

/**
 * Follows the job's status: on the first one, `strike` kills a node holding a task
 * (so the watch surely began before the kill); returns the kill and the first
 * status in which another node serves that task, with every status up to it.
 */
async function failoverSeen(ctl: Controller, signal: AbortSignal, strike: (first: JobStatus) => Kill): Promise<{ kill: Kill; at: number; history: JobStatus[] }> {
  const history: JobStatus[] = [];
  let kill: Kill | undefined;
  for await (const s of ctl.watch(signal)) {
    history.push(s);
    kill ??= strike(s);
    const t = s.tasks[kill.task];
    if (t?.nodeId !== undefined && t.nodeId !== kill.victim.nodeId && t.incarnations > kill.incarnations) return { kill, at: performance.now(), history };
  }
  throw new Error('the status watch ended before the failover');
}

describe('witnessed death: run ends a dead node\'s session on a real etcd', () => {
  const store = realEtcd('witness');

  it(
    'a supervised node holding a task is SIGKILLed: its session ends at once, a standby serves the task well within the TTL, exact sums',
    async () => {
      const lines: string[] = [];
      let failover: Promise<{ kill: Kill; at: number; history: JobStatus[] }> | undefined;
      const stopWatch = new AbortController();
      const probeCtl: { ctl?: Controller } = {};
      const run = new JobRun({
        app: 'regression',
        tasks: 7,
        standbys: 1,
        // The standby, not a restart of the slot, must take the task over.
        restart: false,
        config: { coordinator: store.url, transport: 'grpc://127.0.0.1:0', sessionTtlMs: TTL_MS },
        print: (l) => void lines.push(l),
        onReport: (_node, record) => {
          if ((record as { epoch?: unknown }).epoch !== 2 || failover) return;
          failover = failoverSeen(probeCtl.ctl!, stopWatch.signal, (s) => {
            const held = s.tasks.find((t) => run.processes.some((p) => p.nodeId === t.nodeId && p.sessionId !== undefined && p.child.exitCode === null));
            const victim = run.processes.find((p) => p.nodeId === held?.nodeId);
            if (!held || !victim) throw new Error(`no live node process holds a task:\n${lines.join('\n')}`);
            const at = performance.now();
            victim.child.kill('SIGKILL');
            return { victim, task: held.task, incarnations: held.incarnations, at };
          });
          // Awaited below; until then a failure must not count as unhandled.
          failover.catch(() => undefined);
        },
      });
      probeCtl.ctl = createController({ coordinator: store.probe, job: run.job });
      let result;
      try {
        result = await run.run();
      } finally {
        stopWatch.abort();
      }
      expect(failover, lines.join('\n')).toBeDefined();
      const seen = await failover!;
      const { victim, task } = seen.kill;
      expect(result.verdict?.message, lines.join('\n')).toBe(EXACT);
      expect(result.ok).toBe(true);
      expect(victim.child.signalCode).toBe('SIGKILL');
      expect(victim.sessionId, 'the node reported its session before it claimed a task').toBeDefined();
      await victim.sessionEnded;
      expect(lines, lines.join('\n')).toContain(`${victim.nodeId} died (SIGKILL): ended its session ${victim.sessionId} in the store; what it held fails over now`);
      // The nodes that left cleanly at the end had closed their sessions themselves: nothing to end.
      expect(lines.filter((l) => l.includes(' died (')), lines.join('\n')).toHaveLength(1);
      // The store's view when the task moved: the dead node's record, tied to its session,
      // was gone with it (a lock freed any other way would leave the record behind).
      const moved = seen.history.at(-1)!;
      expect(moved.nodes.map((n) => n.nodeId)).not.toContain(victim.nodeId);
      expect(seen.history[0]!.nodes.map((n) => n.nodeId), 'the watch began while the node was alive in the store').toContain(victim.nodeId);
      const took = moved.tasks[task]!;
      expect(took.nodeId).not.toBe(victim.nodeId);
      const failoverMs = seen.at - seen.kill.at;
      console.log(`witnessed failover: task ${task} served by ${took.nodeId} ${Math.round(failoverMs)} ms after the SIGKILL (TTL ${TTL_MS} ms)`);
      // Its last keepalive was at most a third of the TTL before the kill, so without
      // the run's endSession no other node could hold the task this soon.
      expect(failoverMs).toBeLessThan(TTL_MS);
      expect(result.failovers).toBeGreaterThanOrEqual(1);
    },
    180_000,
  );
});
