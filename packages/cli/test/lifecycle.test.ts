/**
 * `taskgraph run` and `taskgraph node` as OS processes on a real etcd that requires
 * a password: signals, a closed output pipe, configuration errors, the restart
 * budget, and where the password may (not) appear. The CLI is built first.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import type { Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createController, resolveCoordinator } from '@taskgraph/core';
import type { Controller } from '@taskgraph/core';
import { eventually, startEtcd } from '@taskgraph/testkit';
import type { EtcdServer } from '@taskgraph/testkit';
import type { Coordinator } from '@taskgraph/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXIT, JobRun, defaultCliEntry } from '../src/index.js';

const PASSWORD = 'pw-Zq81-never-shown';
const TIMEOUT = 120_000;
const SLOW = { timeoutMs: 60_000, intervalMs: 100 };
/** Regression, but a standby blocks on SIGTERM instead of leaving. */
const STUBBORN_APP = fileURLToPath(new URL('./fixtures/stubborn-app.mjs', import.meta.url));

interface Cli {
  readonly child: ChildProcess;
  readonly out: string[];
  readonly exited: Promise<number | null>;
}

/** Starts the CLI with `env` added; its stdout and stderr lines are collected. */
function cli(args: readonly string[], env: Record<string, string> = {}): Cli {
  const child = spawn(process.execPath, [defaultCliEntry(), ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  const out: string[] = [];
  let partial = '';
  const collect = (chunk: Buffer) => {
    const lines = (partial + chunk.toString('utf8')).split('\n');
    partial = lines.pop()!;
    out.push(...lines);
  };
  child.stdout!.on('data', collect);
  child.stderr!.on('data', collect);
  const exited = new Promise<number | null>((resolve) =>
    child.once('close', (code) => {
      if (partial) out.push(partial);
      resolve(code);
    }),
  );
  return { child, out, exited };
}

/** A shell pipeline; resolves with the exit code of its first command. */
function pipeline(script: string, env: Record<string, string>): Promise<{ code: number; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-c', `${script}; echo "first-exit=\${PIPESTATUS[0]}"`], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } });
    let out = '';
    child.stdout!.on('data', (c: Buffer) => (out += c.toString('utf8')));
    child.once('error', reject);
    child.once('close', () => {
      const m = /first-exit=(\d+)/.exec(out);
      if (!m) reject(new Error(`no exit status in ${out}`));
      else resolve({ code: Number(m[1]), out });
    });
  });
}

function childrenOf(pid: number): number[] {
  const file = `/proc/${pid}/task/${pid}/children`;
  return existsSync(file) ? readFileSync(file, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number) : [];
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A port something else listens on. */
async function busyPort(): Promise<{ port: number; server: Server }> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (typeof address !== 'object' || address === null) throw new Error('no port');
  return { port: address.port, server };
}

/** Turns on etcd's authentication with a root user, through its JSON gateway. */
async function enableAuth(etcd: EtcdServer): Promise<void> {
  for (const [path, body] of [
    ['auth/role/add', { name: 'root' }],
    ['auth/user/add', { name: 'root', password: PASSWORD }],
    ['auth/user/grant', { user: 'root', role: 'root' }],
    ['auth/enable', {}],
  ] as const) {
    const res = await fetch(`${etcd.clientUrl}/v3/${path}`, { method: 'POST', body: JSON.stringify(body) });
    if (!res.ok) throw new Error(`etcd ${path}: ${res.status} ${await res.text()}`);
  }
}

describe('taskgraph run and node as OS processes on a real etcd with a password', () => {
  let etcd: EtcdServer;
  let url: string;
  let probe: Coordinator;
  let logs: string;
  let jobs = 0;
  const nextJob = () => `life-${jobs++}-${Date.now().toString(36)}`;
  const ctl = (job: string): Controller => createController({ coordinator: probe, job });

  beforeAll(async () => {
    etcd = await startEtcd();
    await enableAuth(etcd);
    url = `etcd://root:${PASSWORD}@${etcd.clientAddress}?namespace=life`;
    probe = await resolveCoordinator(url);
    logs = mkdtempSync(join(tmpdir(), 'tg-life-'));
  }, 60_000);

  afterAll(async () => {
    await probe?.close();
    await etcd?.cleanup();
    if (logs) rmSync(logs, { recursive: true, force: true });
  });

  /** Starts `run` with the URL in its environment and waits until every task runs and the standby waits. */
  async function startedRun(job: string, extra: readonly string[] = [], app = 'regression'): Promise<{ run: Cli; nodes: number[]; logDir: string }> {
    const logDir = join(logs, job);
    const run = cli(['run', app, '--tasks', '3', '--standbys', '1', '--job', job, '--arg', 'epochs=100000', '--log-dir', logDir, ...extra], {
      TASKGRAPH_COORDINATOR: url,
    });
    await eventually(
      'every task runs and the standby waits',
      async () => {
        const s = await ctl(job).status();
        return s !== undefined && s.tasks.every((t) => t.nodeId !== undefined) && s.standbys.length === 1;
      },
      SLOW,
    );
    const nodes = childrenOf(run.child.pid!);
    const registered = ((await ctl(job).status())?.nodes ?? []).map((n) => n.pid).sort();
    expect(nodes.slice().sort(), 'the node processes are the ones in the store').toEqual(registered);
    return { run, nodes, logDir };
  }

  it(
    'SIGTERM: every node leaves gracefully, none is left behind, the job is deleted; the run says so and exits 143; no password in any command line or output',
    async () => {
      const job = nextJob();
      const { run, nodes, logDir } = await startedRun(job);
      expect(nodes).toHaveLength(4);
      for (const pid of [run.child.pid!, ...nodes]) {
        const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
        expect(cmdline).toContain('regression');
        expect(cmdline).not.toContain(PASSWORD);
      }
      run.child.kill('SIGTERM');
      expect(await run.exited).toBe(EXIT.terminated);
      expect(run.out.at(-1)).toMatch(new RegExp(`^FAIL: job ${job} interrupted by SIGTERM after [0-9.]+ s at epoch \\d+: 4 node\\(s\\) stopped, the job deleted from the store$`));
      for (const pid of nodes) expect(alive(pid), `node process ${pid}`).toBe(false);
      expect(await ctl(job).status()).toBeUndefined();
      // Each node left on its SIGTERM, not killed after the grace period.
      const files = readdirSync(logDir).filter((f) => f.endsWith('.log'));
      expect(files).toHaveLength(4);
      for (const f of files) {
        const log = readFileSync(join(logDir, f), 'utf8');
        expect(log).toMatch(/left .*reason=stopped/);
        expect(log.trimEnd().split('\n').at(-1)).toBe('-- exited with 0');
        expect(log).not.toContain(PASSWORD);
      }
      expect(run.out[0]).toContain(`etcd://root:***@${etcd.clientAddress}?namespace=life`);
      expect(run.out.join('\n')).not.toContain(PASSWORD);
    },
    TIMEOUT,
  );

  it(
    'a node wedged on SIGTERM is SIGKILLed after --grace; the others leave gracefully',
    async () => {
      const job = nextJob();
      const { run, nodes, logDir } = await startedRun(job, ['--grace', '2'], STUBBORN_APP);
      const standby = (await ctl(job).status())!.standbys[0]!.nodeId;
      run.child.kill('SIGTERM');
      expect(await run.exited).toBe(EXIT.terminated);
      for (const pid of nodes) expect(alive(pid), `node process ${pid}`).toBe(false);
      const lastLine = (id: string) => readFileSync(join(logDir, `${id}.log`), 'utf8').trimEnd().split('\n').at(-1);
      expect(lastLine(standby), standby).toBe('-- exited with SIGKILL');
      for (const id of ['node-0', 'node-1', 'node-2', 'node-3'].filter((x) => x !== standby)) expect(lastLine(id), id).toBe('-- exited with 0');
      expect(await ctl(job).status()).toBeUndefined();
    },
    TIMEOUT,
  );

  it(
    'SIGINT with --keep: the nodes leave, the job stays in the store, exit 130',
    async () => {
      const job = nextJob();
      const { run, nodes } = await startedRun(job, ['--keep']);
      run.child.kill('SIGINT');
      expect(await run.exited).toBe(EXIT.interrupted);
      expect(run.out.at(-1)).toMatch(/interrupted by SIGINT .*: 4 node\(s\) stopped, the job kept in the store \(--keep\)$/);
      for (const pid of nodes) expect(alive(pid), `node process ${pid}`).toBe(false);
      const s = await ctl(job).status();
      expect(s?.state).toBe('running');
      expect(s?.nodes).toEqual([]);
      await ctl(job).destroy();
    },
    TIMEOUT,
  );

  it(
    'run SIGKILLed: its nodes see their stdin end and leave on their own',
    async () => {
      const job = nextJob();
      const { run, nodes } = await startedRun(job);
      run.child.kill('SIGKILL');
      await run.exited;
      await eventually('every node process is gone', () => nodes.every((pid) => !alive(pid)), SLOW);
      // They left (deregistered), not merely died: the store lists no node.
      expect((await ctl(job).status())?.nodes).toEqual([]);
      await ctl(job).destroy();
    },
    TIMEOUT,
  );

  it(
    'output to a closed pipe: `run | head -1` and `node | head -1` finish their job and exit 0',
    async () => {
      const entry = defaultCliEntry();
      const job = nextJob();
      const r = await pipeline(`"${process.execPath}" "${entry}" run regression --tasks 3 --job ${job} --arg epochs=20 2>&1 | head -1`, { TASKGRAPH_COORDINATOR: url });
      expect(r.out).toContain(`job ${job}: regression`);
      expect(r.code).toBe(0);
      expect(await ctl(job).status(), 'run went on to the end and deleted its job').toBeUndefined();

      const single = nextJob();
      await ctl(single).createJob({ numTasks: 1, linkTypes: ['Parents', 'Children'] });
      const n = await pipeline(`"${process.execPath}" "${entry}" node regression --job ${single} --transport grpc://127.0.0.1:0 --arg epochs=20 2>&1 | head -1`, {
        TASKGRAPH_COORDINATOR: url,
      });
      expect(n.code).toBe(0);
      expect((await ctl(single).status())?.state).toBe('done');
      await ctl(single).destroy();
    },
    TIMEOUT,
  );

  it(
    'configuration errors stop the run at once with exit 2 and one sentence: a refused TTL, a bad --arg, an address in use',
    async () => {
      const env = { TASKGRAPH_COORDINATOR: url };
      const ttl = cli(['run', 'regression', '--tasks', '2', '--ttl', '500'], env);
      expect(await ttl.exited).toBe(EXIT.usage);
      expect(ttl.out.filter(Boolean)).toEqual(['taskgraph: --ttl 500 ms is outside the range the coordinator accepts, [2000, 3600000] ms']);
      const arg = cli(['run', 'regression', '--tasks', '2', '--arg', 'fanout=0'], env);
      expect(await arg.exited).toBe(EXIT.usage);
      expect(arg.out.filter(Boolean)).toEqual(['taskgraph: regression: --arg fanout=0 must be an integer >= 1']);

      // Only a node can find its address taken: it exits 2, and run stops instead of restarting it.
      const { port, server } = await busyPort();
      try {
        const job = nextJob();
        const bind = cli(['run', 'regression', '--tasks', '2', '--job', job, '--transport', `grpc://127.0.0.1:${port}`], env);
        expect(await bind.exited).toBe(EXIT.usage);
        expect(bind.out.at(-2)).toMatch(new RegExp(`^taskgraph: node-\\d cannot run: cannot listen on 127\\.0\\.0\\.1:${port}: .*EADDRINUSE`));
        expect(bind.out.at(-1)).toBe(`FAIL: job ${job} did not run (configuration)`);
        expect(bind.out.join('\n')).not.toMatch(/started node-/);
        expect(await ctl(job).status()).toBeUndefined();
      } finally {
        server.close();
      }
    },
    TIMEOUT,
  );

  it(
    'a node says "configuration error" by its exit code: a refused TTL, a bad --arg',
    async () => {
      const job = nextJob();
      await ctl(job).createJob({ numTasks: 1, linkTypes: ['Parents', 'Children'] });
      const env = { TASKGRAPH_COORDINATOR: url, TASKGRAPH_TRANSPORT: 'grpc://127.0.0.1:0' };
      const ttl = cli(['node', 'regression', '--job', job, '--ttl', '500'], env);
      expect(await ttl.exited).toBe(EXIT.usage);
      expect(ttl.out.join('\n')).toMatch(/TG-OUTCOME \{"reason":"configuration","error":"session ttlMs 500 is outside etcd's range/);
      const arg = cli(['node', 'regression', '--job', job, '--arg', 'epochs=-1'], env);
      expect(await arg.exited).toBe(EXIT.usage);
      expect(arg.out.join('\n')).toContain('taskgraph: regression: --arg epochs=-1 must be an integer >= 0');
      await ctl(job).destroy();
    },
    TIMEOUT,
  );

  it(
    'a slot that fails more often than its budget allows stops the run with the reason; earlier failures were restarted with growing delays',
    async () => {
      const lines: string[] = [];
      const run = new JobRun({
        app: 'regression',
        tasks: 2,
        standbys: 0,
        args: { epochs: '100000' },
        config: { coordinator: url, transport: 'grpc://127.0.0.1:0', sessionTtlMs: 2000 },
        maxRestarts: 2,
        restartWindowMs: 600_000,
        restartDelayMs: 200,
        timeoutMs: TIMEOUT - 20_000,
        logDir: join(logs, 'budget'),
        print: (l) => void lines.push(l),
      });
      const result = run.run();
      const killed: number[] = [];
      // Kill whatever runs in slot 0 as soon as it runs, three times: two restarts, then the budget is spent.
      for (let i = 0; i < 3; i++) {
        const p = await eventually('a live process in slot 0', () => run.processes.find((x) => x.slot === 0 && !killed.includes(x.index) && x.child.pid !== undefined), SLOW);
        killed.push(p.index);
        p.child.kill('SIGKILL');
        await p.exited;
      }
      const r = await result;
      expect(r.exitCode).toBe(EXIT.failed);
      expect(r.reason).toBe('node-' + String(killed[2]) + ' exited (SIGKILL), and slot 0 was already restarted 2 time(s) within 600 s: giving up (raise --max-restarts or shorten --restart-window to allow more)');
      const delays = lines.flatMap((l) => /exited \(SIGKILL\); started node-\d+ after (\d+) ms$/.exec(l)?.slice(1) ?? []).map(Number);
      expect(delays).toHaveLength(2);
      // Jittered within [half, all] of 200 ms, then of 400 ms.
      expect(delays[0]).toBeGreaterThanOrEqual(100);
      expect(delays[0]).toBeLessThanOrEqual(200);
      expect(delays[1]).toBeGreaterThanOrEqual(200);
      expect(delays[1]).toBeLessThanOrEqual(400);
      expect(run.processes.filter((p) => p.slot === 0)).toHaveLength(3);
      for (const p of run.processes) expect(alive(p.child.pid!)).toBe(false);
    },
    TIMEOUT,
  );
});
