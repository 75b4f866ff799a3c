/**
 * Many nodes per process on a real etcd: `run --nodes-per-process 4` runs the
 * regression job in node hosts (`taskgraph node --count 4`); one host holding
 * several tasks is SIGKILLed, the run ends the sessions of all its nodes at once,
 * the other hosts' standbys take every one of its tasks well within the TTL, and
 * the answer is exact.
 */
import { createController } from '@taskgraph/core';
import type { Controller, JobStatus } from '@taskgraph/core';
import { describe, expect, it } from 'vitest';
import { realEtcd } from './fixtures/real-etcd.js';
import { JobRun } from '../src/index.js';
import type { NodeProcess, RunOptions } from '../src/index.js';

const TASKS = 8;
const EXACT = `sums are exact: ${Array.from({ length: 11 }, (_, e) => e * 28).join(', ')}`;
const TTL_MS = 10_000;

interface Kill {
  readonly victim: NodeProcess;
  /** The tasks the victim's nodes held, with their incarnations then. */
  readonly held: ReadonlyMap<number, number>;
  readonly at: number;
}

const ownedBy = (proc: NodeProcess, nodeId: string | undefined) => nodeId !== undefined && nodeId.startsWith(`${proc.nodeId}.`);

/**
 * Follows the job's status: on the first one, `strike` kills a host (so the watch
 * surely began before the kill); returns once every task it held is served by a
 * node of another process in a later incarnation.
 */
async function failoverSeen(ctl: Controller, signal: AbortSignal, strike: (first: JobStatus) => Kill): Promise<{ kill: Kill; at: number; last: JobStatus }> {
  let kill: Kill | undefined;
  for await (const s of ctl.watch(signal)) {
    kill ??= strike(s);
    const k = kill;
    const moved = [...k.held].every(([task, inc]) => {
      const t = s.tasks[task];
      return t?.nodeId !== undefined && !ownedBy(k.victim, t.nodeId) && t.incarnations > inc;
    });
    if (moved) return { kill: k, at: performance.now(), last: s };
  }
  throw new Error('the status watch ended before the failover');
}

describe('node hosts: several nodes per process on a real etcd', () => {
  const store = realEtcd('hosts');

  /** The regression job in 3 hosts of 4 nodes (8 tasks, 4 standbys), no process restarted: the other hosts' nodes must take over. */
  const hostedRun = (lines: string[], onReport: RunOptions['onReport'], args?: Record<string, string>): JobRun =>
    new JobRun({
      app: 'regression',
      ...(args ? { args } : {}),
      tasks: TASKS,
      standbys: 4,
      nodesPerProcess: 4,
      restart: false,
      config: { coordinator: store.url, transport: 'grpc://127.0.0.1:0', sessionTtlMs: TTL_MS },
      print: (l) => void lines.push(l),
      ...(onReport ? { onReport } : {}),
    });

  it(
    '3 processes x 4 nodes, 8 tasks: the host holding the most tasks is SIGKILLed, all its tasks fail over at once (TTL 10 s), exact sums',
    async () => {
      const lines: string[] = [];
      let failover: Promise<{ kill: Kill; at: number; last: JobStatus }> | undefined;
      const stopWatch = new AbortController();
      const probeCtl: { ctl?: Controller } = {};
      const run = hostedRun(lines, (_node, record) => {
          if ((record as { epoch?: unknown }).epoch !== 2 || failover) return;
          failover = failoverSeen(probeCtl.ctl!, stopWatch.signal, (s) => {
            const live = run.processes.filter((p) => p.child.exitCode === null && p.sessions.size === p.count);
            const holding = (p: NodeProcess) => s.tasks.filter((t) => ownedBy(p, t.nodeId));
            const victim = live.sort((a, b) => holding(b).length - holding(a).length)[0];
            if (!victim || holding(victim).length < 2) throw new Error(`no live host holds two tasks:\n${lines.join('\n')}`);
            const held = new Map(holding(victim).map((t) => [t.task, t.incarnations]));
            const at = performance.now();
            victim.child.kill('SIGKILL');
            return { victim, held, at };
          });
          // Awaited below; until then a failure must not count as unhandled.
          failover.catch(() => undefined);
      });
      probeCtl.ctl = createController({ coordinator: store.probe, job: run.job });
      let result;
      try {
        result = await run.run();
      } finally {
        stopWatch.abort();
      }
      expect(run.processes.map((p) => p.count), lines.join('\n')).toEqual([4, 4, 4]);
      expect(failover, lines.join('\n')).toBeDefined();
      const seen = await failover!;
      const { victim, held } = seen.kill;
      expect(result.verdict?.message, lines.join('\n')).toBe(EXACT);
      expect(result.ok).toBe(true);
      expect(victim.child.signalCode).toBe('SIGKILL');
      // Four nodes, four sessions of their own, each reported before its node claimed anything.
      expect([...victim.sessions.keys()].sort()).toEqual([0, 1, 2, 3].map((i) => `${victim.nodeId}.${i}`));
      expect(new Set(victim.sessions.values()).size).toBe(4);
      await victim.sessionEnded;
      expect(lines, lines.join('\n')).toContain(`${victim.nodeId} died (SIGKILL): ended the sessions of its 4 nodes in the store; what it held fails over now`);
      expect(lines.filter((l) => l.includes(' died (')), lines.join('\n')).toHaveLength(1);
      // The hosts that lived reported one outcome per node, every one of them done with the job.
      for (const p of run.processes.filter((x) => x !== victim)) {
        expect(p.outcomes.map((o) => [o['nodeId'], o['reason']])).toEqual([0, 1, 2, 3].map((i) => [`${p.nodeId}.${i}`, 'job-done']));
      }
      // Each task the host held is served elsewhere now, under a fencing token of its own.
      for (const task of held.keys()) {
        const t = seen.last.tasks[task]!;
        expect(ownedBy(victim, t.nodeId), `task ${task} moved off the dead host`).toBe(false);
      }
      expect(seen.last.nodes.some((n) => ownedBy(victim, n.nodeId)), 'the dead host\'s node records went with its sessions').toBe(false);
      const failoverMs = seen.at - seen.kill.at;
      console.log(`host failover: ${held.size} tasks of ${victim.nodeId} served elsewhere ${Math.round(failoverMs)} ms after the SIGKILL (TTL ${TTL_MS} ms)`);
      // Its nodes' last keepalives were at most a third of the TTL before the kill:
      // without the run's endSession no other node could hold these tasks this soon.
      expect(failoverMs).toBeLessThan(TTL_MS);
      expect(result.failovers).toBeGreaterThanOrEqual(held.size);
    },
    240_000,
  );

  it(
    'a hosted node holding a task whose lease etcd revokes is replaced in its host (the process lives on); its successor keeps the task, exact sums',
    async () => {
      const lines: string[] = [];
      let struck: Promise<{ proc: NodeProcess; nodeId: string; session: string }> | undefined;
      // Long enough that the node hears of its lost lease (at its next keepalive, within TTL/3) while the job runs.
      const epochs = 80;
      const run = hostedRun(
        lines,
        (_node, record) => {
          if ((record as { epoch?: unknown }).epoch !== 2 || struck) return;
          struck = (async () => {
            // A node holding a task: its lease goes as if it had expired, behind the node's back, while a
            // standby may take the task over before the node hears of it (it must not undo that).
            const status = await probeCtl.status();
            for (const proc of run.processes.filter((p) => p.child.exitCode === null && p.sessions.size === p.count)) {
              const t = status?.tasks.find((x) => x.nodeId !== undefined && ownedBy(proc, x.nodeId));
              if (t?.nodeId === undefined) continue;
              const session = proc.sessions.get(t.nodeId)!;
              await store.probe.endSession(session);
              return { proc, nodeId: t.nodeId, session };
            }
            throw new Error(`no live host holds a task:\n${lines.join('\n')}`);
          })();
          struck.catch(() => undefined);
        },
        { epochs: String(epochs) },
      );
      const probeCtl = createController({ coordinator: store.probe, job: run.job });
      const result = await run.run();
      expect(struck, lines.join('\n')).toBeDefined();
      const { proc, nodeId, session } = await struck!;
      expect(result.verdict?.message, lines.join('\n')).toBe(`sums are exact: ${Array.from({ length: epochs + 1 }, (_, e) => e * 28).join(', ')}`);
      expect(result.ok).toBe(true);
      // The host lived, and a new node of the same id joined with a session of its own.
      expect(lines.filter((l) => l.includes(' died (')), lines.join('\n')).toEqual([]);
      expect(proc.child.exitCode).toBe(0);
      expect(proc.sessions.get(nodeId)).toBeDefined();
      expect(proc.sessions.get(nodeId)).not.toBe(session);
      // One outcome per node of the host, the replacement's among them: every one done with the job.
      expect(proc.outcomes.map((o) => o['reason'])).toEqual(['job-done', 'job-done', 'job-done', 'job-done']);
    },
    240_000,
  );
});
