/**
 * The regression job as separate OS processes on a real etcd, under crashes,
 * pauses and store failures. Every test checks the job's exact sums.
 */
import { createController, jobKeys, resolveCoordinator } from '@taskgraph/core';
import type { Controller } from '@taskgraph/core';
import { seededRandom, startEtcd, startEtcdCluster } from '@taskgraph/testkit';
import type { EtcdCluster, EtcdServer } from '@taskgraph/testkit';
import { TaskGraphError } from '@taskgraph/api';
import type { Coordinator } from '@taskgraph/api';
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { realEtcd } from './fixtures/real-etcd.js';
import { JobRun } from '../src/index.js';
import type { NodeProcess, RunOptions } from '../src/index.js';

const EXACT = 'sums are exact: 0, 105, 210, 315, 420, 525, 630, 735, 840, 945, 1050';
const TIMEOUT = 180_000;

function quietRun(options: Omit<RunOptions, 'print'>): { run: JobRun; lines: string[] } {
  const lines: string[] = [];
  const run = new JobRun({ ...options, print: (l) => void lines.push(l) });
  return { run, lines };
}

function epochOf(record: unknown): number | undefined {
  const r = record as { epoch?: unknown; sum?: unknown };
  return typeof r.epoch === 'number' && typeof r.sum === 'number' ? r.epoch : undefined;
}

async function ownerProcess(ctl: Controller, run: JobRun, pick: (n: number) => number): Promise<NodeProcess | undefined> {
  const s = await ctl.status();
  const owners = (s?.tasks ?? []).map((t) => t.nodeId).filter((x): x is string => x !== undefined);
  const live = run.processes.filter((p) => owners.includes(p.nodeId) && p.child.exitCode === null && p.child.signalCode === null);
  return live[pick(live.length)];
}

describe('the regression job as OS processes on one real etcd', () => {
  const store = realEtcd('proc');

  it(
    'three nodes SIGKILLed at random points: standbys take over, exact sums',
    async () => {
      const random = seededRandom(42);
      const killed: string[] = [];
      const probeCtl: { ctl?: Controller } = {};
      const { run, lines } = quietRun({
        app: 'regression',
        tasks: 15,
        standbys: 3,
        restart: false,
        config: { coordinator: store.url, transport: 'grpc://127.0.0.1:0', sessionTtlMs: 2000 },
        onReport: (_node, record) => {
          const e = epochOf(record);
          if (e === 2 || e === 4 || e === 6) {
            void (async () => {
              await new Promise((r) => setTimeout(r, Math.floor(random() * 300)));
              const victim = await ownerProcess(probeCtl.ctl!, run, (n) => Math.floor(random() * n));
              if (victim && killed.length < 3 && !killed.includes(victim.nodeId)) {
                killed.push(victim.nodeId);
                victim.child.kill('SIGKILL');
              }
            })();
          }
        },
      });
      probeCtl.ctl = createController({ coordinator: store.probe, job: run.job });
      const result = await run.run();
      expect(killed).toHaveLength(3);
      expect(result.verdict?.message, lines.join('\n')).toBe(EXACT);
      expect(result.ok).toBe(true);
      expect(result.failovers).toBeGreaterThanOrEqual(3);
      for (const id of killed) expect(run.processes.find((p) => p.nodeId === id)!.child.signalCode).toBe('SIGKILL');
    },
    TIMEOUT,
  );

  it(
    'a node SIGSTOPped mid-request for twice the TTL: on SIGCONT it neither serves nor writes as the owner; exact sums',
    async () => {
      const ttl = 2000;
      let paused: NodeProcess | undefined;
      const { run, lines } = quietRun({
        app: 'regression',
        tasks: 15,
        standbys: 3,
        restart: false,
        // The node serving task 3 stops itself (SIGSTOP) in the middle of answering
        // getGradient in epoch 2; we continue it after twice the TTL.
        args: { 'pause-serve': '3:2' },
        config: { coordinator: store.url, transport: 'grpc://127.0.0.1:0', sessionTtlMs: ttl },
        onReport: (node, record) => {
          if ((record as { pause?: string }).pause === 'start' && !paused) {
            paused = node;
            setTimeout(() => node.child.kill('SIGCONT'), 2 * ttl);
          }
        },
      });
      const result = await run.run();
      expect(paused, 'the node serving task 3 was paused').toBeDefined();
      expect(result.verdict?.message, lines.join('\n')).toBe(EXACT);
      const outcome = paused!.outcome as { reason?: string; stats?: { fencedLateResults: number; rejectedNotOwner: number } } | undefined;
      expect(outcome?.reason, 'the paused node left because its lease was lost').toBe('lease-lost');
      // The answer it was computing when it stopped finished after the lease was gone:
      // it must have been dropped (fenced); requests that reached it after SIGCONT refused.
      expect(outcome?.stats?.fencedLateResults, 'its late answer was dropped, not sent').toBeGreaterThanOrEqual(1);
      const stale = (outcome?.stats?.fencedLateResults ?? 0) + (outcome?.stats?.rejectedNotOwner ?? 0);
      console.log(`stale requests refused by the resumed node: ${stale}`);
      expect(result.failovers).toBeGreaterThanOrEqual(1);
    },
    TIMEOUT,
  );

  it(
    'etcd SIGKILLed and restarted on the same data dir three times mid-job, each outage shorter than the TTL: no node lost, exact sums',
    async () => {
      const outages: number[] = [];
      const outageMs: number[] = [];
      let restarts = Promise.resolve();
      const { run, lines } = quietRun({
        app: 'regression',
        tasks: 15,
        standbys: 3,
        timeoutMs: 150_000,
        // No node may need replacing: every one rides the outages out. The TTL leaves
        // room for a restart of etcd on a busy machine (1-2 s on a quiet one).
        restart: false,
        config: { coordinator: store.url, transport: 'grpc://127.0.0.1:0', sessionTtlMs: 15_000 },
        onReport: (_node, record) => {
          const e = epochOf(record);
          if ((e === 2 || e === 5 || e === 8) && !outages.includes(e)) {
            outages.push(e);
            restarts = restarts.then(async () => {
              const t0 = performance.now();
              await store.etcd.kill();
              await store.etcd.restart();
              outageMs.push(Math.round(performance.now() - t0));
            });
          }
        },
      });
      const result = await run.run();
      await restarts;
      console.log(`etcd down (kill to healthy again), ms: ${outageMs.join(', ')}`);
      expect(result.verdict?.message, lines.join('\n')).toBe(EXACT);
      expect(outages).toEqual([2, 5, 8]);
      expect(store.etcd.running).toBe(true);
      expect(run.processes).toHaveLength(18);
      const reasons = run.processes.map((p) => (p.outcome as { reason?: string } | undefined)?.reason);
      expect(reasons, lines.join('\n')).toEqual(run.processes.map(() => 'job-done'));
      expect(result.failovers).toBe(0);
    },
    TIMEOUT,
  );
});

describe('the regression job as OS processes through an etcd outage longer than the TTL', () => {
  let etcd: EtcdServer;
  let url: string;

  beforeAll(async () => {
    etcd = await startEtcd();
    url = `etcd://${etcd.clientAddress}?namespace=long`;
  }, 60_000);

  afterAll(async () => {
    await etcd?.cleanup();
  });

  it(
    'etcd down until the nodes have lost their sessions: run restarts them, they wait for the store, rejoin when it is back, and the job finishes with exact sums',
    async () => {
      let down = false;
      let back = false;
      const lost = new Set<string>();
      const { run, lines } = quietRun({
        app: 'regression',
        tasks: 7,
        standbys: 1,
        timeoutMs: 150_000,
        config: { coordinator: url, transport: 'grpc://127.0.0.1:0', sessionTtlMs: 3000 },
        onReport: (_node, record) => {
          if (epochOf(record) === 3 && !down) {
            down = true;
            void etcd.kill();
          }
        },
      });
      // etcd comes back once three nodes have left for a lost lease (exit code 3).
      const watcher = setInterval(() => {
        for (const p of run.processes) if (p.child.exitCode === 3) lost.add(p.nodeId);
        if (down && !back && lost.size >= 3) {
          back = true;
          void etcd.restart();
        }
      }, 100);
      try {
        const result = await run.run();
        expect(back, lines.join('\n')).toBe(true);
        expect(result.verdict?.message, lines.join('\n')).toBe(`sums are exact: ${Array.from({ length: 11 }, (_, e) => 21 * e).join(', ')}`);
      } finally {
        clearInterval(watcher);
      }
    },
    TIMEOUT,
  );
});

describe('the regression job as OS processes on a real etcd whose job records are damaged mid-run', () => {
  let etcd: EtcdServer;
  let url: string;
  let probe: Coordinator;
  const enc = new TextEncoder();

  beforeAll(async () => {
    etcd = await startEtcd();
    url = `etcd://${etcd.clientAddress}?namespace=damage`;
    probe = await resolveCoordinator(url);
  }, 60_000);

  afterAll(async () => {
    await probe?.close();
    await etcd?.cleanup();
  });

  /** Overwrites `key` with `bytes` behind the job's back, whatever it holds. */
  /** Puts `bytes` under `key` whatever is there; the job may move the key between the read and the write: read again. */
  async function overwrite(key: string, bytes: Uint8Array): Promise<void> {
    for (;;) {
      try {
        const e = await probe.get(key);
        if (e) await probe.update(key, bytes, e.version);
        else await probe.create(key, bytes);
        return;
      } catch (err) {
        if (!TaskGraphError.is(err, 'CONFLICT', 'ALREADY_EXISTS', 'NOT_FOUND')) throw err;
      }
    }
  }

  it(
    'the epoch key overwritten with "banana" and the status with "zzz" mid-job: no node dies of them, the epoch is repaired by the node advancing it, the status by shutdownJob; exact sums',
    async () => {
      let damaged = false;
      let damage: Promise<void> | undefined;
      const jobName: { job?: string } = {};
      const { run, lines } = quietRun({
        app: 'regression',
        tasks: 7,
        standbys: 1,
        restart: false,
        timeoutMs: 150_000,
        config: { coordinator: url, transport: 'grpc://127.0.0.1:0', sessionTtlMs: 5000 },
        onReport: (_node, record) => {
          if (epochOf(record) === 3 && !damaged) {
            damaged = true;
            damage = (async () => {
              await overwrite(jobKeys.status(jobName.job!), enc.encode('zzz'));
              await overwrite(jobKeys.epoch(jobName.job!), enc.encode('banana'));
            })();
            // Awaited below; until then a failure must not count as unhandled.
            damage.catch(() => undefined);
          }
        },
      });
      jobName.job = run.job;
      const result = await run.run();
      expect(damaged).toBe(true);
      await damage;
      // 7 tasks: epoch e's sum is 21 e.
      expect(result.verdict?.message, lines.join('\n')).toBe(`sums are exact: ${Array.from({ length: 11 }, (_, e) => 21 * e).join(', ')}`);
      const reasons = run.processes.map((p) => (p.outcome as { reason?: string } | undefined)?.reason);
      expect(reasons, lines.join('\n')).toEqual(run.processes.map(() => 'job-done'));
      const logs = (await Promise.all(run.processes.map((p) => readFile(p.logFile, 'utf8')))).join('\n');
      expect(logs).toContain('repairing a corrupt epoch key while advancing from the last readable epoch');
      expect(logs).toContain('repairing a corrupt job status: the job is marked done');
    },
    TIMEOUT,
  );

  it(
    'the spec deleted mid-job: the run ends with an error naming the spec key (unreadable, exit code 4 from the CLI), no node left behind',
    async () => {
      let deleted = false;
      const jobName: { job?: string } = {};
      const { run } = quietRun({
        app: 'regression',
        tasks: 7,
        standbys: 1,
        timeoutMs: 150_000,
        config: { coordinator: url, transport: 'grpc://127.0.0.1:0', sessionTtlMs: 5000 },
        onReport: (_node, record) => {
          if (epochOf(record) === 2 && !deleted) {
            deleted = true;
            void (async () => {
              const e = await probe.get(jobKeys.spec(jobName.job!));
              if (e) await probe.delete(jobKeys.spec(jobName.job!), e.version);
            })();
          }
        },
      });
      jobName.job = run.job;
      const err = await run.run().catch((e: unknown) => e);
      expect(deleted).toBe(true);
      expect(err).toMatchObject({ code: 'DECODE_FAILED', details: { key: jobKeys.spec(run.job) } });
      expect((err as Error).message).toMatch(/is unreadable: its spec .* is missing/);
      for (const p of run.processes) expect(p.child.exitCode !== null || p.child.signalCode !== null, `node ${p.nodeId} is gone`).toBe(true);
    },
    TIMEOUT,
  );
});

describe('the regression job as OS processes on a 3-member etcd cluster', () => {
  let cluster: EtcdCluster;

  beforeAll(async () => {
    cluster = await startEtcdCluster(3);
  }, 90_000);

  afterAll(async () => {
    await cluster?.cleanup();
  });

  it(
    'the cluster loses one member mid-job: exact sums',
    async () => {
      let lost = false;
      const url = `etcd://${cluster.clientAddresses}?namespace=cluster`;
      const { run, lines } = quietRun({
        app: 'regression',
        tasks: 15,
        standbys: 3,
        config: { coordinator: url, transport: 'grpc://127.0.0.1:0', sessionTtlMs: 6000 },
        onReport: (_node, record) => {
          if (epochOf(record) === 3 && !lost) {
            lost = true;
            void cluster.member(0).kill();
          }
        },
      });
      const result = await run.run();
      expect(lost).toBe(true);
      expect(cluster.member(0).running).toBe(false);
      expect(result.verdict?.message, lines.join('\n')).toBe(EXACT);
    },
    TIMEOUT,
  );
});
