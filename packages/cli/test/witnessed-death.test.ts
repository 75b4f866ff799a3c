/**
 * Witnessed death on a real etcd: `run` saw its node process die, so it ends the
 * node's session at once, and a standby serves the task long before the 10 s TTL
 * could have run out.
 */
import { createController, resolveCoordinator } from '@taskgraph/core';
import type { Controller, JobStatus } from '@taskgraph/core';
import { startEtcd } from '@taskgraph/testkit';
import type { EtcdServer } from '@taskgraph/testkit';
import type { Coordinator } from '@taskgraph/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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

/** The first status (from a stream of them) in which `kill`'s task is served by another node, with the statuses before it. */
async function failoverSeen(ctl: Controller, kill: Kill, signal: AbortSignal): Promise<{ at: number; history: JobStatus[] }> {
  const history: JobStatus[] = [];
  for await (const s of ctl.watch(signal)) {
    history.push(s);
    const t = s.tasks[kill.task];
    if (t?.nodeId !== undefined && t.nodeId !== kill.victim.nodeId && t.incarnations > kill.incarnations) return { at: performance.now(), history };
  }
  throw new Error('the status watch ended before the failover');
}

describe('witnessed death: run ends a dead node\'s session on a real etcd', () => {
  let etcd: EtcdServer;
  let url: string;
  let probe: Coordinator;

  beforeAll(async () => {
    etcd = await startEtcd();
    url = `etcd://${etcd.clientAddress}?namespace=witness`;
    probe = await resolveCoordinator(url);
  }, 60_000);

  afterAll(async () => {
    await probe?.close();
    await etcd?.cleanup();
  });

  it(
    'a supervised node holding a task is SIGKILLed: its session ends at once, a standby serves the task well within the TTL, exact sums',
    async () => {
      const lines: string[] = [];
      let kill: Kill | undefined;
      let killing = false;
      let failover: Promise<{ at: number; history: JobStatus[] }> | undefined;
      const stopWatch = new AbortController();
      const probeCtl: { ctl?: Controller } = {};
      const run = new JobRun({
        app: 'regression',
        tasks: 7,
        standbys: 1,
        // The standby, not a restart of the slot, must take the task over.
        restart: false,
        config: { coordinator: url, transport: 'grpc://127.0.0.1:0', sessionTtlMs: TTL_MS },
        print: (l) => void lines.push(l),
        onReport: (_node, record) => {
          if ((record as { epoch?: unknown }).epoch !== 2 || killing) return;
          killing = true;
          const ctl = probeCtl.ctl!;
          void (async () => {
            const s = await ctl.status();
            const held = (s?.tasks ?? []).find((t) => run.processes.some((p) => p.nodeId === t.nodeId && p.sessionId !== undefined && p.child.exitCode === null));
            const victim = run.processes.find((p) => p.nodeId === held?.nodeId);
            // Left undefined, `kill` fails the test below with the run's lines.
            if (!held || !victim) return;
            kill = { victim, task: held.task, incarnations: held.incarnations, at: performance.now() };
            failover = failoverSeen(ctl, kill, stopWatch.signal);
            victim.child.kill('SIGKILL');
          })();
        },
      });
      probeCtl.ctl = createController({ coordinator: probe, job: run.job });
      let result;
      try {
        result = await run.run();
      } finally {
        stopWatch.abort();
      }
      expect(kill?.victim, lines.join('\n')).toBeDefined();
      const { victim, task } = kill!;
      const seen = await failover!;
      expect(result.verdict?.message, lines.join('\n')).toBe(EXACT);
      expect(result.ok).toBe(true);
      expect(victim.child.signalCode).toBe('SIGKILL');
      expect(victim.sessionId, 'the node reported its session before it claimed a task').toBeDefined();
      await victim.sessionEnded;
      expect(lines, lines.join('\n')).toContain(`${victim.nodeId} died (SIGKILL): ended its session ${victim.sessionId} in the store, its task fails over now`);
      // The store's view when the task moved: the dead node's record, tied to its session,
      // was gone with it (a lock freed any other way would leave the record behind).
      const moved = seen.history.at(-1)!;
      expect(moved.nodes.map((n) => n.nodeId)).not.toContain(victim.nodeId);
      expect(seen.history[0]!.nodes.map((n) => n.nodeId), 'the watch began while the node was alive in the store').toContain(victim.nodeId);
      const took = moved.tasks[task]!;
      expect(took.nodeId).not.toBe(victim.nodeId);
      const failoverMs = seen.at - kill!.at;
      console.log(`witnessed failover: task ${task} served by ${took.nodeId} ${Math.round(failoverMs)} ms after the SIGKILL (TTL ${TTL_MS} ms)`);
      // Its last keepalive was at most a third of the TTL before the kill, so without
      // the run's endSession no other node could hold the task this soon.
      expect(failoverMs).toBeLessThan(TTL_MS);
      expect(result.failovers).toBeGreaterThanOrEqual(1);
    },
    180_000,
  );
});
