/**
 * Hot standby as separate OS processes on a real etcd: `taskgraph run` with a
 * primary and a backup per task, a stream of updates from a task's primary
 * (test/fixtures/standby-app.ts), and node processes SIGKILLed or SIGSTOPped in
 * the middle of it. Each job's verdict is that the final state is exactly the
 * acknowledged updates.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createController, resolveCoordinator } from '@taskgraph/core';
import type { Controller, TaskState } from '@taskgraph/core';
import { eventually, startEtcd } from '@taskgraph/testkit';
import type { EtcdServer } from '@taskgraph/testkit';
import type { Coordinator } from '@taskgraph/api';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JobRun } from '../src/index.js';
import type { NodeProcess, RunResult } from '../src/index.js';
import { checkStream } from './fixtures/standby-app.js';
import type { StreamRecord } from './fixtures/standby-app.js';

const TTL = 2000;
const TIMEOUT = 180_000;
/** Failovers take a TTL; starting node processes on a busy machine can take longer. */
const SLOW = { timeoutMs: 60_000, intervalMs: 100 };
const HERE = dirname(fileURLToPath(import.meta.url));

type Backup = TaskState['backups'][number];

let jobs = 0;

/** Node processes import plain JavaScript: the fixture is compiled once per file. */
function compileFixture(dir: string): string {
  const source = readFileSync(join(HERE, 'fixtures', 'standby-app.ts'), 'utf8');
  const out = ts.transpileModule(source, {
    compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext, verbatimModuleSyntax: true },
  });
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `standby-app-${process.pid}.mjs`);
  writeFileSync(file, out.outputText);
  return file;
}

/** The backup that holds the state of the task's current primary. */
function readyBackup(t: TaskState | undefined): Backup | undefined {
  return t?.backups.find((b) => b.state === 'ready' && b.primaryToken === t.token);
}

function exited(p: NodeProcess): boolean {
  return p.child.exitCode !== null || p.child.signalCode !== null;
}

/** A role or neighbour event, written the way the expectations are. */
function describeEvent(r: StreamRecord): string | undefined {
  if (r.t === 'role') return r.role === 'backup' ? `backup of ${r.task} (incarnation ${r.incarnation})` : `primary of ${r.task}, incarnation ${r.incarnation}, promoted ${r.promoted}, seq ${r.seq}`;
  if (r.t === 'neighbor') return `${r.change} ${r.neighbor} on ${r.linkTypes.join(',')}, incarnation ${r.incarnation}`;
  return undefined;
}

class Harness {
  readonly run: JobRun;
  readonly ctl: Controller;
  readonly lines: string[] = [];
  private readonly signals: string;

  constructor(
    app: string,
    url: string,
    probe: Coordinator,
    o: { tasks: number; backups: number; standbys: number; restart?: boolean },
  ) {
    this.signals = mkdtempSync(join(tmpdir(), 'tg-standby-signals-'));
    this.run = new JobRun({
      app,
      job: `standby-${(jobs++).toString()}-${Date.now().toString(36)}`,
      tasks: o.tasks,
      backups: o.backups,
      standbys: o.standbys,
      restart: o.restart ?? true,
      args: { signals: this.signals },
      config: { coordinator: url, transport: 'grpc://127.0.0.1:0', sessionTtlMs: TTL },
      timeoutMs: TIMEOUT - 30_000,
      print: (l) => void this.lines.push(l),
    });
    this.ctl = createController({ coordinator: probe, job: this.run.job });
  }

  /** Tells the streaming primary to pause or to finish (see the fixture). */
  signal(name: 'stop' | 'pause'): void {
    writeFileSync(join(this.signals, name), '');
  }

  records(): Array<{ node: NodeProcess; record: StreamRecord }> {
    return this.run.reports.map((r) => ({ node: this.run.processes[r.node]!, record: r.record as StreamRecord }));
  }

  recordsOf(p: NodeProcess): StreamRecord[] {
    return this.records()
      .filter((r) => r.node === p)
      .map((r) => r.record);
  }

  /** The records of one kind, of one process or of all. */
  of<T extends StreamRecord['t']>(t: T, p?: NodeProcess): Array<Extract<StreamRecord, { t: T }>> {
    const records = p ? this.recordsOf(p) : this.records().map((r) => r.record);
    return records.filter((r): r is Extract<StreamRecord, { t: T }> => r.t === t);
  }

  acksBy(by: number): number {
    return this.of('ack').filter((r) => r.by === by).length;
  }

  lastAckBy(by: number): number {
    return Math.max(0, ...this.of('ack').flatMap((r) => (r.by === by ? [r.v] : [])));
  }

  final(): Extract<StreamRecord, { t: 'final' }> | undefined {
    return this.of('final')[0];
  }

  process(nodeId: string): NodeProcess {
    const p = this.run.processes.find((x) => x.nodeId === nodeId);
    if (!p) throw new Error(`no node process ${nodeId}`);
    return p;
  }

  /** Sends `signal` to the process of a live node, found by the pid its record in the store holds. */
  async kill(nodeId: string, signal: NodeJS.Signals): Promise<NodeProcess> {
    const pid = (await this.ctl.status())?.nodes.find((n) => n.nodeId === nodeId)?.pid;
    const p = this.run.processes.find((x) => x.child.pid === pid);
    if (pid === undefined || p?.nodeId !== nodeId) throw new Error(`node ${nodeId} has no live process (pid ${String(pid)})`);
    p.child.kill(signal);
    return p;
  }

  async task(id: number): Promise<TaskState | undefined> {
    return (await this.ctl.status())?.tasks[id];
  }

  /** Waits until task 0's `incarnation` streams (10 values acknowledged) with a backup that holds its state. */
  streaming(incarnation: number): Promise<TaskState> {
    return eventually(
      `primary ${incarnation} streaming with a backup in sync`,
      async () => {
        const t = await this.task(0);
        return t?.incarnations === incarnation && t.nodeId !== undefined && readyBackup(t) && this.acksBy(incarnation) >= 10 ? t : undefined;
      },
      SLOW,
    );
  }

  /**
   * Runs the job while `steps` drive it, then tells the stream to stop and waits for
   * the job to end and for every process's output to be read (a process's last
   * records may still be in its pipe when it has exited).
   */
  async drive(steps: () => Promise<void>): Promise<RunResult> {
    const running = this.run.run();
    let failure: unknown;
    try {
      await steps();
    } catch (err) {
      failure = err;
    }
    this.signal('stop');
    const result = await running;
    await eventually('every node process’s output read', () => this.run.processes.every((p) => p.child.stdout?.readableEnded !== false), SLOW);
    rmSync(this.signals, { recursive: true, force: true });
    if (failure !== undefined) throw new Error(`${(failure as Error).message}\n${this.lines.join('\n')}`, { cause: failure });
    return result;
  }

  /** The verdict again, on every record (the run's verdict saw those read by the job's end). */
  recheck(): string {
    const v = checkStream(this.run.reports.map((r) => r.record));
    expect(v.ok, v.message).toBe(true);
    console.log(v.message);
    return v.message;
  }
}

describe('the stream verdict', () => {
  const ack = (v: number, by: number) => ({ t: 'ack', v, by, seq: v });
  const final = (by: number, state: Array<[number, number]>) => ({ t: 'final', task: 0, by, state });

  it('is exact when every acknowledged value is in the state once, a dead primary’s last value maybe unacknowledged', () => {
    const v = checkStream([ack(1, 1), ack(2, 1), { t: 'refused', v: 4, by: 2, code: 'LEASE_LOST' }, ack(4, 3), final(3, [[1, 1], [2, 1], [3, 1], [4, 3]])]);
    expect(v).toEqual({ ok: true, message: 'the stream is exact: 4 values from 2 primaries, 3 acknowledged, 1 in flight when its primary ended, 1 refused' });
  });

  it('finds an acknowledged value lost, a value applied twice, an unacknowledged value of the last primary, a missing final state', () => {
    expect(checkStream([ack(1, 1), ack(2, 1), final(2, [[1, 1], [2, 2]])]).message).toContain('acknowledged value 2 of primary 1 is lost (the state holds 2 of primary 2 there)');
    expect(checkStream([ack(1, 1), ack(2, 2), final(2, [[1, 1], [1, 1], [2, 2]])]).message).toContain('position 2 holds value 1');
    expect(checkStream([ack(1, 1), final(1, [[1, 1], [2, 1]])]).message).toContain('value 2 of primary 1 is in the state but was never acknowledged');
    expect(checkStream([ack(1, 1), { t: 'ack', v: 2, by: 1, seq: 3 }, final(1, [[1, 1], [2, 1]])]).message).toContain('value 2 of primary 1 was acknowledged with seq 3');
    expect(checkStream([ack(1, 1)])).toEqual({ ok: false, message: 'expected one final state, got 0' });
  });
});

describe('hot standby as OS processes on a real etcd', () => {
  let etcd: EtcdServer;
  let url: string;
  let probe: Coordinator;
  let app: string;
  const buildDir = join(HERE, '..', '.tmp');

  beforeAll(async () => {
    app = compileFixture(buildDir);
    etcd = await startEtcd();
    url = `etcd://${etcd.clientAddress}?namespace=standby`;
    probe = await resolveCoordinator(url);
  }, 60_000);

  afterAll(async () => {
    await probe?.close();
    await etcd?.cleanup();
    if (app) rmSync(app, { force: true });
  });

  it(
    'the primary SIGKILLed four times while it streams: each time its backup takes over with the state; the final state is exactly the acknowledged updates',
    async () => {
      const KILLS = 4;
      const h = new Harness(app, url, probe, { tasks: 1, backups: 1, standbys: 1 });
      const victims: NodeProcess[] = [];
      const result = await h.drive(async () => {
        for (let k = 1; k <= KILLS; k++) {
          const t = await h.streaming(k);
          victims.push(await h.kill(t.nodeId!, 'SIGKILL'));
          await eventually(`primary ${k + 1}`, async () => ((await h.task(0))?.incarnations ?? 0) > k, SLOW);
        }
        await eventually('the last primary streaming', () => h.acksBy(KILLS + 1) >= 10, SLOW);
      });
      expect(result.verdict?.message, h.lines.join('\n')).toMatch(/^the stream is exact: \d+ values from 5 primaries/);
      expect(result.ok).toBe(true);
      expect(h.recheck()).toMatch(/from 5 primaries/);
      expect(h.final()?.by).toBe(KILLS + 1);
      expect(result.failovers).toBe(KILLS);
      for (const v of victims) expect(v.child.signalCode).toBe('SIGKILL');
      // Each promoted backup held every value its primary had acknowledged, and at
      // most the one it was shipping when it died.
      const promotions = h.of('role').filter((r) => r.role === 'primary');
      expect(promotions.map((r) => [r.incarnation, r.promoted])).toEqual([
        [1, false],
        [2, true],
        [3, true],
        [4, true],
        [5, true],
      ]);
      for (const p of promotions.slice(1)) {
        const acked = h.lastAckBy(p.incarnation - 1);
        expect(p.seq, `promotion to incarnation ${p.incarnation}`).toBeGreaterThanOrEqual(acked);
        expect(p.seq).toBeLessThanOrEqual(acked + 1);
      }
    },
    TIMEOUT,
  );

  it(
    'a primary SIGSTOPped past its lease, then continued: none of its later updates is acknowledged, it leaves with lease-lost; the state is exact',
    async () => {
      const h = new Harness(app, url, probe, { tasks: 1, backups: 1, standbys: 1, restart: false });
      let paused: NodeProcess | undefined;
      let backupNode = '';
      const result = await h.drive(async () => {
        const t = await h.streaming(1);
        backupNode = readyBackup(t)!.nodeId;
        // The primary stops itself between two updates, so none is in flight.
        h.signal('pause');
        paused = await eventually('the primary paused', () => h.records().find((r) => r.record.t === 'pause')?.node, SLOW);
        expect(paused.nodeId).toBe(t.nodeId);
        // Its lease has expired once its backup holds the primary slot.
        await eventually(
          'its backup promoted',
          async () => {
            const now = await h.task(0);
            return now?.incarnations === 2 && now.nodeId === backupNode;
          },
          SLOW,
        );
        await eventually('the new primary streaming', () => h.acksBy(2) >= 10, SLOW);
        paused.child.kill('SIGCONT');
        await eventually('the continued node gone', () => exited(paused!), SLOW);
      });
      expect(result.verdict?.message, h.lines.join('\n')).toMatch(/^the stream is exact: \d+ values from 2 primaries, \d+ acknowledged, 0 in flight/);
      expect(result.ok).toBe(true);
      h.recheck();
      expect(h.final()?.by).toBe(2);
      expect((paused!.outcome as { reason?: string } | undefined)?.reason).toBe('lease-lost');
      const pause = h.of('pause', paused)[0]!;
      const acked = h.of('ack', paused).filter((r) => r.v >= pause.v || r.afterPause);
      const refused = h.of('refused', paused);
      // It did try after SIGCONT (its first try comes before the node can notice
      // anything), and no try was acknowledged.
      expect(acked).toEqual([]);
      expect(refused.length).toBeGreaterThanOrEqual(1);
      expect(refused.every((r) => r.afterPause === true && r.v >= pause.v)).toBe(true);
      expect(refused[0]).toMatchObject({ v: pause.v, by: 1, code: 'LEASE_LOST' });
      // The new primary took over with exactly what the paused one had acknowledged.
      const promoted = h.of('role', h.process(backupNode)).filter((r) => r.role === 'primary');
      expect(promoted).toEqual([{ t: 'role', task: 0, role: 'primary', promoted: true, incarnation: 2, seq: pause.v - 1 }]);
      expect(h.lastAckBy(1)).toBe(pause.v - 1);
    },
    TIMEOUT,
  );

  it(
    'a backup SIGKILLed mid-stream is replaced: the new backup catches up from a snapshot, then applies every later update',
    async () => {
      const h = new Harness(app, url, probe, { tasks: 1, backups: 1, standbys: 0 });
      let victim: NodeProcess | undefined;
      let ackedBeforeKill = 0;
      let replacement = '';
      const result = await h.drive(async () => {
        const t = await h.streaming(1);
        victim = await h.kill(readyBackup(t)!.nodeId, 'SIGKILL');
        ackedBeforeKill = h.lastAckBy(1);
        // The run starts a process in its place; it takes the free backup slot.
        replacement = await eventually(
          'a new backup in sync',
          async () => {
            const b = readyBackup(await h.task(0));
            return b && b.nodeId !== victim!.nodeId ? b.nodeId : undefined;
          },
          SLOW,
        );
        const acked = h.acksBy(1);
        await eventually('updates acknowledged with the new backup', () => h.acksBy(1) >= acked + 10, SLOW);
      });
      expect(result.verdict?.message, h.lines.join('\n')).toMatch(/^the stream is exact: \d+ values from 1 primary, \d+ acknowledged, 0 in flight/);
      expect(result.ok).toBe(true);
      h.recheck();
      expect(result.failovers).toBe(0);
      expect(victim!.child.signalCode).toBe('SIGKILL');
      const final = h.final()!;
      const node = h.process(replacement);
      const restored = h.of('restored', node);
      expect(restored).toHaveLength(1);
      const snapshot = restored[0]!.entries;
      // The snapshot held every value acknowledged before the kill, and the stream went on after it.
      expect(snapshot).toBeGreaterThanOrEqual(ackedBeforeKill);
      expect(final.state.length).toBeGreaterThan(snapshot);
      expect(h.of('applied', node)).toEqual([{ t: 'applied', task: 0, seq: snapshot + 1, v: snapshot + 1 }]);
      expect(h.of('exit', node).map((r) => r.state)).toEqual([final.state]);
    },
    TIMEOUT,
  );

  it(
    'a tree of four tasks; task 1’s primary SIGKILLed twice: each node hears exactly its role changes and its neighbours’ fail/restart',
    async () => {
      // Tree, fanout 2: task 0's children are 1 and 2; task 1's child is 3. Task 2 is not task 1's neighbour.
      const h = new Harness(app, url, probe, { tasks: 4, backups: 1, standbys: 0 });
      const primaries: string[] = [];
      const backups: string[] = [];
      const task1: string[] = [];
      const heard = (task: number, incarnation: number) =>
        h.records().some(({ node, record: r }) => node.nodeId === primaries[task] && r.t === 'neighbor' && r.change === 'restarted' && r.incarnation === incarnation);
      const result = await h.drive(async () => {
        const s = await eventually(
          'every task running with a backup in sync',
          async () => {
            const s = await h.ctl.status();
            return s?.tasks.every((t) => readyBackup(t)) ? s : undefined;
          },
          SLOW,
        );
        for (const t of s.tasks) {
          primaries.push(t.nodeId!);
          backups.push(readyBackup(t)!.nodeId);
        }
        task1.push(primaries[1]!, backups[1]!);
        for (const incarnation of [2, 3]) {
          await h.kill(task1.at(-2)!, 'SIGKILL');
          const next = await eventually(
            `task 1's backup promoted to incarnation ${incarnation}, a new backup in sync, its neighbours told`,
            async () => {
              const t = await h.task(1);
              const b = readyBackup(t);
              return t?.incarnations === incarnation && t.nodeId === task1.at(-1) && b && heard(0, incarnation) && heard(3, incarnation) ? b.nodeId : undefined;
            },
            SLOW,
          );
          task1.push(next);
        }
      });
      expect(result.verdict?.message, h.lines.join('\n')).toMatch(/^the stream is exact: /);
      expect(result.ok).toBe(true);
      const [a, b, c, d] = task1 as [string, string, string, string];
      const primary = (task: number) => `primary of ${task}, incarnation 1, promoted false, seq 0`;
      const backup = (task: number) => `backup of ${task} (incarnation 0)`;
      const neighbour1 = (link: string) => [
        `failed 1 on ${link}, incarnation 1`,
        `restarted 1 on ${link}, incarnation 2`,
        `failed 1 on ${link}, incarnation 2`,
        `restarted 1 on ${link}, incarnation 3`,
      ];
      // A backup is told before it follows a primary: its incarnation is 0 then.
      const expected: Record<string, string[]> = {
        [primaries[0]!]: [primary(0), ...neighbour1('Children')],
        [primaries[2]!]: [primary(2)],
        [primaries[3]!]: [primary(3), ...neighbour1('Parents')],
        [backups[0]!]: [backup(0)],
        [backups[2]!]: [backup(2)],
        [backups[3]!]: [backup(3)],
        [a]: [primary(1)],
        [b]: [backup(1), 'primary of 1, incarnation 2, promoted true, seq 0'],
        [c]: [backup(1), 'primary of 1, incarnation 3, promoted true, seq 0'],
        [d]: [backup(1)],
      };
      const actual = Object.fromEntries(h.run.processes.map((p) => [p.nodeId, h.recordsOf(p).flatMap((r) => describeEvent(r) ?? [])]));
      expect(actual).toEqual(expected);
      expect([a, b].map((id) => h.process(id).child.signalCode)).toEqual(['SIGKILL', 'SIGKILL']);
    },
    TIMEOUT,
  );
});
