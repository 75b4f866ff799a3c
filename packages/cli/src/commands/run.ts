/**
 * `taskgraph run <app>`: runs a whole job on this machine. The controller creates
 * the job; every node is a separate OS process (`taskgraph node`), so nodes can be
 * killed, paused and restarted like real ones. Progress (epoch, live nodes,
 * failovers) is printed as the job moves; the exit code says whether the job
 * finished and its answer verified. With a `memory://` coordinator the nodes run
 * in this process instead (the embedded store is per process).
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { InvalidArgumentError, systemClock } from '@taskgraph/api';
import type { Coordinator } from '@taskgraph/api';
import { Controller, LocalCluster, createLogger, resolveCoordinator, resolveTransport, silentLogger, sleep } from '@taskgraph/core';
import type { AppVerdict, JobStatus, TaskGraphApp } from '@taskgraph/core';
import { securedTransportUrl } from '../config.js';
import type { CliConfig } from '../config.js';
import { loadApp } from '../app-loader.js';
import { loadPlugins } from '../plugins.js';

export interface RunOptions {
  readonly app: string;
  readonly tasks: number;
  /** Backups per task (hot standby). Default 0. */
  readonly backups?: number;
  readonly standbys: number;
  readonly config: CliConfig;
  readonly args?: Record<string, string>;
  readonly job?: string;
  /** Keep the job in the store afterwards (default: delete it). */
  readonly keepJob?: boolean;
  /** Start a new node process when one exits before the job is done (default true). */
  readonly restart?: boolean;
  /** At most this many restarts (default: 2 x nodes). */
  readonly maxRestarts?: number;
  /** Where node logs go (default: a new temporary directory). */
  readonly logDir?: string;
  /** The CLI script node processes run (default: this package's dist/cli.js). */
  readonly cliEntry?: string;
  /** Gives up after this long (ms). */
  readonly timeoutMs?: number;
  /** Progress lines (default: stdout). */
  readonly print?: (line: string) => void;
  /** Called with every result a node process reports (tests act on them). */
  readonly onReport?: (node: NodeProcess, record: unknown) => void;
}

export interface NodeProcess {
  readonly index: number;
  readonly nodeId: string;
  readonly child: ChildProcess;
  readonly logFile: string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  outcome?: Record<string, unknown>;
}

export interface RunResult {
  readonly ok: boolean;
  readonly job: string;
  readonly status: JobStatus | undefined;
  readonly verdict: AppVerdict | undefined;
  readonly results: readonly unknown[];
  readonly failovers: number;
  readonly durationMs: number;
  readonly reason: string;
}

/** The package's own dist/cli.js, found from wherever this module was loaded. */
export function defaultCliEntry(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === '@taskgraph/cli') {
      const entry = join(dir, 'dist', 'cli.js');
      if (!existsSync(entry)) throw new InvalidArgumentError(`the taskgraph CLI is not built (${entry} is missing): run \`npm run build\``);
      return entry;
    }
    dir = dirname(dir);
  }
  throw new InvalidArgumentError('cannot find the @taskgraph/cli package to start node processes from');
}

export class JobRun {
  readonly job: string;
  readonly processes: NodeProcess[] = [];
  readonly results: unknown[] = [];
  /** Every result with the node process that reported it (in-process runs: -1). */
  readonly reports: Array<{ node: number; record: unknown }> = [];
  private readonly print: (line: string) => void;
  private readonly logDir: string;
  private app!: TaskGraphApp;
  private coordinator!: Coordinator;
  private controller!: Controller;
  private restarts = 0;
  private finished = false;
  private readonly stopAll = new AbortController();

  constructor(private readonly o: RunOptions) {
    if (!Number.isInteger(o.tasks) || o.tasks < 1) throw new InvalidArgumentError(`--tasks must be a positive integer, got ${String(o.tasks)}`);
    if (!Number.isInteger(o.standbys) || o.standbys < 0) throw new InvalidArgumentError(`--standbys must be a non-negative integer, got ${String(o.standbys)}`);
    if (o.backups !== undefined && (!Number.isInteger(o.backups) || o.backups < 0)) throw new InvalidArgumentError(`--backups must be a non-negative integer, got ${String(o.backups)}`);
    if (!o.config.coordinator) throw new InvalidArgumentError('no coordinator: pass --coordinator URL (e.g. etcd://127.0.0.1:2379) or set TASKGRAPH_COORDINATOR');
    this.job = o.job ?? `${o.app.replace(/[^a-z0-9-]/g, '').slice(0, 30) || 'job'}-${Date.now().toString(36)}`;
    this.print = o.print ?? ((line) => process.stdout.write(`${line}\n`));
    this.logDir = o.logDir ?? mkdtempSync(join(tmpdir(), `taskgraph-${this.job}-`));
    mkdirSync(this.logDir, { recursive: true });
  }

  private get backups(): number {
    return this.o.backups ?? 0;
  }

  /** Every node the job runs: a primary and its backups per task, and the cold standbys. */
  private get nodeCount(): number {
    return this.o.tasks * (1 + this.backups) + this.o.standbys;
  }

  get inProcess(): boolean {
    return this.o.config.coordinator!.startsWith('memory:');
  }

  async run(): Promise<RunResult> {
    const started = systemClock.now();
    await loadPlugins(this.o.config.plugins);
    this.app = await loadApp(this.o.app);
    const transportUrl = securedTransportUrl(this.o.config, this.inProcess ? 'local://' : 'grpc://127.0.0.1:0');
    if (!this.inProcess && transportUrl.startsWith('local:')) {
      throw new InvalidArgumentError('local:// only connects nodes inside one process; separate node processes need --transport grpc://127.0.0.1:0');
    }
    const logger = createLogger({ level: this.o.config.logLevel ?? 'warn' });
    this.coordinator = await resolveCoordinator(this.o.config.coordinator!, { logger });
    this.controller = new Controller({ coordinator: this.coordinator, job: this.job, logger });
    let status: JobStatus | undefined;
    let reason = '';
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await this.controller.createJob({ numTasks: this.o.tasks, linkTypes: this.app.linkTypes, backups: this.backups });
      this.print(
        `job ${this.job}: ${this.app.name}, ${this.o.tasks} tasks${this.backups ? ` x ${1 + this.backups} (a primary and ${this.backups} backup${this.backups > 1 ? 's' : ''} each)` : ''} + ${this.o.standbys} standbys, ${this.o.config.coordinator} / ${transportUrl}` +
          (this.inProcess ? ' (in-process)' : `, node logs in ${this.logDir}`),
      );
      const timeout = new Promise<'timeout'>((resolve) => {
        if (this.o.timeoutMs) timer = setTimeout(() => resolve('timeout'), this.o.timeoutMs);
      });
      const progress = this.followProgress();
      const outcome = this.inProcess ? this.runInProcess(transportUrl) : this.runProcesses(transportUrl);
      const first = await Promise.race([outcome, timeout]);
      if (first === 'timeout') reason = `timed out after ${this.o.timeoutMs} ms`;
      else reason = first;
      this.finished = true;
      this.stopAll.abort();
      await progress;
      status = await this.controller.status();
    } finally {
      if (timer) clearTimeout(timer);
      this.finished = true;
      this.stopAll.abort();
      await this.stopProcesses();
      if (!this.o.keepJob) await this.controller.destroy().catch(() => undefined);
      await this.coordinator.close().catch(() => undefined);
    }
    const ctx = { numTasks: this.o.tasks, args: this.o.args ?? {}, logger: silentLogger };
    const done = status?.state === 'done';
    const verdict = done && this.app.verify ? this.app.verify(ctx, this.results) : undefined;
    const failovers = status ? status.tasks.reduce((n, t) => n + Math.max(0, t.incarnations - 1), 0) : 0;
    const ok = done && (verdict?.ok ?? true);
    this.print(
      `job ${this.job} ${status?.state ?? 'gone'} after ${((systemClock.now() - started) / 1000).toFixed(1)} s, epoch ${status?.epoch ?? '-'}, ${failovers} failover(s)` +
        (reason && !done ? `: ${reason}` : ''),
    );
    if (verdict) this.print(`${this.app.name}: ${verdict.message}`);
    if (!ok) this.printFailedLogs();
    return { ok, job: this.job, status, verdict, results: this.results, failovers, durationMs: systemClock.now() - started, reason: reason || (ok ? 'done' : 'failed') };
  }

  /** Prints a line whenever the epoch, the live nodes or the failovers change. */
  private async followProgress(): Promise<void> {
    let last = '';
    try {
      for await (const s of this.controller.watch(this.stopAll.signal)) {
        const owned = s.tasks.filter((t) => t.nodeId !== undefined).length;
        const failovers = s.tasks.reduce((n, t) => n + Math.max(0, t.incarnations - 1), 0);
        const backups = s.tasks.reduce((n, t) => n + t.backups.filter((b) => b.state === 'ready').length, 0);
        const line =
          `epoch ${s.epoch} | tasks running ${owned}/${s.tasks.length}` +
          (this.backups ? ` | backups ready ${backups}/${s.tasks.length * this.backups}` : '') +
          ` | live nodes ${s.nodes.length} (${s.standbys.length} standby) | failovers ${failovers}${s.state !== 'running' ? ` | ${s.state}` : ''}`;
        if (line !== last) this.print(line);
        last = line;
        if (s.state !== 'running') return;
      }
    } catch (err) {
      if (!this.stopAll.signal.aborted) this.print(`progress watch ended: ${(err as Error).message}`);
    }
  }

  private async runInProcess(transportUrl: string): Promise<string> {
    const cluster = new LocalCluster({
      job: this.job,
      numTasks: this.o.tasks,
      linkTypes: this.app.linkTypes,
      standbys: this.o.standbys,
      backups: this.backups,
      controllerCoordinator: this.coordinator,
      resources: async () => {
        const coordinator = await resolveCoordinator(this.o.config.coordinator!);
        const transport = await resolveTransport(transportUrl);
        return { coordinator, transport, close: async () => void (await Promise.allSettled([transport.close(), coordinator.close()])) };
      },
      builder: () => this.app.taskBuilder(this.context()),
      linkages: () => this.app.linkages(this.context()),
      replaceLostNodes: this.o.restart ?? true,
      ...(this.o.config.sessionTtlMs ? { node: { sessionTtlMs: this.o.config.sessionTtlMs } } : {}),
      logger: createLogger({ level: this.o.config.logLevel ?? 'warn' }),
    });
    try {
      await cluster.start();
      await cluster.waitUntilDone(this.stopAll.signal);
      return 'done';
    } finally {
      await cluster.close();
    }
  }

  private context() {
    return { numTasks: this.o.tasks, args: this.o.args ?? {}, logger: silentLogger, report: (r: unknown) => {
        this.results.push(r);
        this.reports.push({ node: -1, record: r });
      },
    };
  }

  private async runProcesses(transportUrl: string): Promise<string> {
    const entry = this.o.cliEntry ?? defaultCliEntry();
    for (let i = 0; i < this.nodeCount; i++) this.spawnNode(entry, transportUrl);
    const done = this.controller.waitUntilDone(this.stopAll.signal).then(() => 'done');
    const allGone = (async () => {
      for (;;) {
        await sleep(systemClock, 200, this.stopAll.signal).catch(() => undefined);
        if (this.stopAll.signal.aborted) return 'stopped';
        if (this.processes.every((p) => p.child.exitCode !== null || p.child.signalCode !== null)) {
          await sleep(systemClock, 500);
          if ((await this.controller.status())?.state === 'done') return 'done';
          return 'every node process exited before the job finished';
        }
      }
    })();
    const r = await Promise.race([done, allGone]);
    // Let the nodes see the end and exit on their own.
    const deadline = systemClock.now() + 15_000;
    while (systemClock.now() < deadline && this.processes.some((p) => p.child.exitCode === null && p.child.signalCode === null)) {
      await sleep(systemClock, 100);
    }
    return r;
  }

  /** Starts one node process. Public so tests and tools can add nodes. */
  spawnNode(entry: string, transportUrl: string): NodeProcess {
    const index = this.processes.length;
    const nodeId = `node-${index}`;
    const logFile = join(this.logDir, `${nodeId}.log`);
    const log = createWriteStream(logFile);
    const args = [entry, 'node', this.o.app, '--job', this.job, '--coordinator', this.o.config.coordinator!, '--transport', transportUrl, '--node-id', nodeId];
    if (this.o.config.sessionTtlMs) args.push('--ttl', String(this.o.config.sessionTtlMs));
    args.push('--log-level', this.o.config.logLevel === 'silent' ? 'warn' : (this.o.config.logLevel ?? 'info'));
    for (const [k, v] of Object.entries(this.o.args ?? {})) args.push('--arg', `${k}=${v}`);
    // The node processes resolve the same URLs, so they need the same plug-ins.
    for (const p of this.o.config.plugins ?? []) args.push('--plugin', p);
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TASKGRAPH_LOG_FORMAT: 'text' } });
    const proc: NodeProcess = {
      index,
      nodeId,
      child,
      logFile,
      // 'close', not 'exit': the child's stdout and stderr are read to their end first, so no
      // result line printed just before it exited is missed, and its log is not written after it ended.
      exited: new Promise((resolve) => child.once('close', (code, signal) => resolve({ code, signal }))),
    };
    this.processes.push(proc);
    child.stderr!.pipe(log, { end: false });
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line.startsWith('TG-RESULT ')) {
        try {
          const record: unknown = JSON.parse(line.slice(10));
          this.results.push(record);
          this.reports.push({ node: index, record });
          this.o.onReport?.(proc, record);
        } catch {
          log.write(`unparsable result line: ${line}\n`);
        }
      } else if (line.startsWith('TG-OUTCOME ')) {
        try {
          proc.outcome = JSON.parse(line.slice(11)) as Record<string, unknown>;
        } catch {
          log.write(`unparsable outcome line: ${line}\n`);
        }
      } else {
        log.write(`${line}\n`);
      }
    });
    void proc.exited.then(({ code, signal }) => {
      log.end(`-- exited with ${signal ?? code}\n`);
      if (this.finished || code === 0) return;
      const max = this.o.maxRestarts ?? 2 * this.nodeCount;
      if ((this.o.restart ?? true) && this.restarts < max) {
        this.restarts++;
        const n = this.spawnNode(entry, transportUrl);
        this.print(`${nodeId} exited (${signal ?? `code ${code}`}); started ${n.nodeId}`);
      } else {
        this.print(`${nodeId} exited (${signal ?? `code ${code}`})`);
      }
    });
    return proc;
  }

  private async stopProcesses(): Promise<void> {
    const live = () => this.processes.filter((p) => p.child.exitCode === null && p.child.signalCode === null);
    for (const p of live()) p.child.kill('SIGCONT');
    for (const p of live()) p.child.kill('SIGTERM');
    const deadline = systemClock.now() + 5000;
    while (live().length > 0 && systemClock.now() < deadline) await sleep(systemClock, 50);
    for (const p of live()) p.child.kill('SIGKILL');
    await Promise.all(this.processes.map((p) => p.exited));
  }

  private printFailedLogs(): void {
    for (const p of this.processes) {
      if (p.outcome?.['reason'] === 'failed' || (p.child.exitCode !== 0 && p.child.exitCode !== null)) {
        try {
          const tail = readFileSync(p.logFile, 'utf8').trimEnd().split('\n').slice(-5).join('\n  ');
          this.print(`${p.nodeId} (${p.logFile}):\n  ${tail}`);
        } catch {
          // the log may not exist if the process never started
        }
      }
    }
  }
}
