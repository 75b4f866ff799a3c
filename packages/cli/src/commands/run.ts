/**
 * `taskgraph run <app>`: runs a whole job on this machine. The controller creates
 * the job; every node is a separate OS process (`taskgraph node`), so nodes can be
 * killed, paused and restarted like real ones. Progress (epoch, live nodes,
 * failovers) is printed as the job moves; the exit code says whether the job
 * finished and its answer verified. With a `memory://` coordinator the nodes run
 * in this process instead (the embedded store is per process).
 *
 * Both ways the run supervises its nodes alike: a node that fails is restarted in
 * its slot after a growing, jittered delay, within a budget per slot and window;
 * a configuration error (which a restart cannot cure) stops the run at once; an
 * interrupt (`interrupt()`, SIGINT/SIGTERM from the command) stops every node
 * gracefully, then kills what is left after the grace period. The coordinator URL
 * reaches node processes through their environment, never their command line.
 *
 * With `nodesPerProcess` K > 1 each process (each in-process unit) is a node host
 * of up to K nodes (`taskgraph node --count K`), supervised as one slot.
 *
 * Witnessed death: a node process that exits other than cleanly (a signal, a
 * crash, any exit code but 0) has its store sessions ended by the run at once
 * (`Coordinator.endSession`, the ids from its `TG-SESSION` lines: every node of a
 * host), so its tasks fail over now instead of after the TTL. Only the run may do this: it saw the process
 * exit, so nothing can still act under that session. A store that cannot be
 * reached in time leaves the session to its TTL, as without a supervisor.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { InvalidArgumentError, systemClock } from '@taskgraph/api';
import type { Coordinator, Logger, NodeOutcome } from '@taskgraph/api';
import { Controller, MAX_NODES_PER_HOST, createBootstrap, createNodeHost, resolveCoordinator, resolveTransport, silentLogger, sleep } from '@taskgraph/core';
import type { AppVerdict, JobStatus, NodeHost, TaskGraphApp, TaskGraphNode } from '@taskgraph/core';
import { securedTransportUrl } from '../config.js';
import type { CliConfig } from '../config.js';
import { loadApp } from '../app-loader.js';
import { loadPlugins } from '../plugins.js';
import { EXIT, interruptedExitCode, isConfigurationError } from '../exit-codes.js';
import { RestartBudget } from '../restart-budget.js';
import { maskUrl, redactor, scrubbedLogger } from '../secrets.js';
import { STOP_WITH_PARENT_ENV } from './node.js';
import { CLEAR_LINE, paint, PLAIN, type Terminal } from '../terminal.js';
import { startMetrics, type MetricsEndpoint } from '../observability.js';
import type { MetricsServer } from '@taskgraph/metrics';

/** A job name from an application's name: a DNS label, made unique by the time. */
export function defaultJobName(appName: string, now = Date.now()): string {
  const base = appName.toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 40).replace(/-+$/, '');
  return `${base || 'job'}-${now.toString(36)}`;
}

/** How long stopped nodes have to leave gracefully before they are killed. */
export const DEFAULT_GRACE_MS = 10_000;

/** How long the run tries to end a dead node's session before leaving it to its TTL. */
const END_SESSION_WITHIN_MS = 5_000;

export interface RunOptions {
  readonly app: string;
  /** The job's tasks, for a task-graph application. */
  readonly tasks?: number;
  /** The workers, for a master/worker application (its job has `workers + 1` tasks). */
  readonly workers?: number;
  /** Backups per task (hot standby). Default 0. */
  readonly backups?: number;
  readonly standbys: number;
  readonly config: CliConfig;
  readonly args?: Record<string, string>;
  readonly job?: string;
  /** Keep the job in the store afterwards (default: delete it). */
  readonly keepJob?: boolean;
  /** Start a new node when one fails before the job is done (default true). */
  readonly restart?: boolean;
  /** At most this many restarts per slot within `restartWindowMs` (default 5); one more stops the run. */
  readonly maxRestarts?: number;
  /** The window of the restart budget, in ms (default 60 000). */
  readonly restartWindowMs?: number;
  /** The delay before a slot's first restart in a window, in ms (default 500); it doubles with each further one. */
  readonly restartDelayMs?: number;
  /** How long nodes asked to stop may take to leave before they are killed, in ms (default 10 000). */
  readonly graceMs?: number;
  /** Where node logs go (default: a new temporary directory). */
  readonly logDir?: string;
  /** The CLI script node processes run (default: this package's dist/cli.js). */
  readonly cliEntry?: string;
  /** Gives up after this long (ms). */
  readonly timeoutMs?: number;
  /** Progress lines (default: stdout). */
  readonly print?: (line: string) => void;
  /** A terminal gets the progress as one line redrawn in place, and colour (default: plain lines). */
  readonly terminal?: Terminal;
  /**
   * Metrics: an in-process run serves all its nodes' metrics and `/healthz` there (healthy
   * while any node is); a run of node processes gives process slot i the port + 1 + i
   * (each serves its own nodes; 0: every process takes a free port).
   */
  readonly metrics?: MetricsEndpoint;
  /** Called with every result a node process reports (tests act on them). */
  readonly onReport?: (node: NodeProcess, record: unknown) => void;
  /**
   * Nodes per process (default 1): each process is then a node host (`taskgraph
   * node --count K`), its nodes sharing one store client, one watch per prefix and
   * one server; a host that dies has the sessions of all its nodes ended at once.
   * A restart replaces the whole process.
   */
  readonly nodesPerProcess?: number;
}

export interface NodeProcess {
  readonly index: number;
  /** The slot the process runs in: the first process of the slot and those restarted in its place share it. */
  readonly slot: number;
  /** The process's node id (a host's nodes are `<nodeId>.<index>`). */
  readonly nodeId: string;
  /** How many nodes the process runs. */
  readonly count: number;
  readonly child: ChildProcess;
  readonly logFile: string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** The last node outcome the process reported. */
  outcome?: Record<string, unknown>;
  /** Every node outcome the process reported (one per node). */
  readonly outcomes: Array<Record<string, unknown>>;
  /** The node's store session, from its `TG-SESSION` line (none before it opened one); a host's first. */
  sessionId?: string;
  /** The store session of each of the process's nodes that opened one, by node id. */
  readonly sessions: Map<string, string>;
  /** Settles once the run is done ending the session of this process after it died (never rejects). */
  sessionEnded?: Promise<void>;
}

export interface RunResult {
  readonly ok: boolean;
  /** What the command exits with (see EXIT). */
  readonly exitCode: number;
  readonly job: string;
  readonly status: JobStatus | undefined;
  readonly verdict: AppVerdict | undefined;
  readonly results: readonly unknown[];
  readonly failovers: number;
  readonly durationMs: number;
  readonly reason: string;
  /** The signal that interrupted the run, if one did. */
  readonly interrupted?: NodeJS.Signals;
}

/** Why a node ended, as the supervisor sees it. */
type NodeEnd = { readonly kind: 'left' } | { readonly kind: 'configuration'; readonly message: string } | { readonly kind: 'lost'; readonly detail: string };

/** What ends a run before its job does. */
type EarlyEnd = { readonly kind: 'interrupted'; readonly signal: NodeJS.Signals } | { readonly kind: 'configuration' | 'failed'; readonly message: string };

/** One running node, a process or in this process: what the supervisor needs of it. */
interface Supervised {
  readonly slot: number;
  readonly nodeId: string;
  /** Asks the node to leave gracefully. */
  stop(): void;
  kill(): void;
  readonly ended: Promise<unknown>;
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
  private jobName: string;
  /** Whether the job's name was read (or given): from then on it stays as it is. */
  private jobNameFixed: boolean;
  readonly processes: NodeProcess[] = [];
  readonly results: unknown[] = [];
  /** Every result with the node process that reported it (in-process runs: -1). */
  readonly reports: Array<{ node: number; record: unknown }> = [];
  private readonly print: (line: string) => void;
  private readonly redact: (line: string) => string;
  private logDir = '';
  private readonly terminal: Terminal;
  /** Whether the live progress line is on the terminal (cleared before any other line). */
  private liveShown = false;
  private readonly budget: RestartBudget;
  private app!: TaskGraphApp;
  private coordinator!: Coordinator;
  /** The job's tasks (from --tasks, or --workers + 1 for a master/worker application). */
  private numTasks = 0;
  private controller!: Controller;
  private transportUrl = '';
  private finished = false;
  private metricsServer: MetricsServer | undefined;
  private readonly stopAll = new AbortController();
  private readonly live = new Set<Supervised>();
  /** Sessions of dead nodes being ended: the run's coordinator closes only after them. */
  private readonly endingSessions = new Set<Promise<void>>();
  private pendingRestarts = 0;
  private started = 0;
  private earlyEnd: EarlyEnd | undefined;
  private resolveEarly!: (e: EarlyEnd) => void;
  private readonly early = new Promise<EarlyEnd>((resolve) => {
    this.resolveEarly = resolve;
  });

  constructor(private readonly o: RunOptions) {
    if (o.tasks !== undefined && (!Number.isInteger(o.tasks) || o.tasks < 1)) throw new InvalidArgumentError(`--tasks must be a positive integer, got ${String(o.tasks)}`);
    if (o.workers !== undefined && (!Number.isInteger(o.workers) || o.workers < 1)) throw new InvalidArgumentError(`--workers must be a positive integer, got ${String(o.workers)}`);
    if (!Number.isInteger(o.standbys) || o.standbys < 0) throw new InvalidArgumentError(`--standbys must be a non-negative integer, got ${String(o.standbys)}`);
    if (o.backups !== undefined && (!Number.isInteger(o.backups) || o.backups < 0)) throw new InvalidArgumentError(`--backups must be a non-negative integer, got ${String(o.backups)}`);
    if (o.nodesPerProcess !== undefined && (!Number.isInteger(o.nodesPerProcess) || o.nodesPerProcess < 1 || o.nodesPerProcess > MAX_NODES_PER_HOST)) {
      throw new InvalidArgumentError(`--nodes-per-process must be an integer from 1 to ${MAX_NODES_PER_HOST}, got ${String(o.nodesPerProcess)}`);
    }
    if (!o.config.coordinator) throw new InvalidArgumentError('no coordinator: pass --coordinator URL (e.g. etcd://127.0.0.1:2379) or set TASKGRAPH_COORDINATOR');
    // Named after the application: the name it declares once run() has loaded it, unless
    // given, or read before (then the one read stays, made from the name on the command line).
    this.jobName = o.job ?? defaultJobName(basename(o.app).replace(/\.[cm]?[jt]s$/, ''));
    this.jobNameFixed = o.job !== undefined;
    this.redact = redactor(o.config);
    this.terminal = o.terminal ?? PLAIN;
    const print = o.print ?? ((line: string) => void process.stdout.write(`${line}\n`));
    this.print = (line) => {
      if (this.liveShown) {
        this.terminal.write(CLEAR_LINE);
        this.liveShown = false;
      }
      print(this.redact(line));
    };
    this.budget = new RestartBudget({
      now: () => systemClock.now(),
      ...(o.maxRestarts !== undefined ? { maxPerWindow: o.maxRestarts } : {}),
      ...(o.restartWindowMs !== undefined ? { windowMs: o.restartWindowMs } : {}),
      ...(o.restartDelayMs !== undefined ? { baseDelayMs: o.restartDelayMs } : {}),
    });
  }

  /** The in-process nodes' metrics (with `metrics`), kept after the run for a last look. */
  get metrics(): MetricsServer['metrics'] | undefined {
    return this.metricsServer?.metrics;
  }

  /** The job's name (known once `run` has loaded the application, unless given). */
  get job(): string {
    this.jobNameFixed = true;
    return this.jobName;
  }

  private get backups(): number {
    return this.o.backups ?? 0;
  }

  /** The tasks that get the backups (every task, unless the application says which). */
  private get backupTasks(): readonly number[] | undefined {
    return this.app.backupTasks?.(this.numTasks);
  }

  private get backedUp(): number {
    return this.backupTasks?.length ?? this.numTasks;
  }

  /** Every node the job runs: a primary per task and the backups, and the cold standbys. */
  private get nodeCount(): number {
    return this.numTasks + this.backedUp * this.backups + this.o.standbys;
  }

  private get perProcess(): number {
    return this.o.nodesPerProcess ?? 1;
  }

  /** The supervised units: a node each, or a host of up to `nodesPerProcess` nodes each. */
  private get slotCount(): number {
    return Math.ceil(this.nodeCount / this.perProcess);
  }

  /** How many nodes the unit of `slot` runs (the last may run fewer). */
  private countOf(slot: number): number {
    return Math.min(this.perProcess, this.nodeCount - slot * this.perProcess);
  }

  get inProcess(): boolean {
    return this.o.config.coordinator!.startsWith('memory:');
  }

  /**
   * Stops the run: every node is asked to leave gracefully and killed after the
   * grace period; the job is deleted unless kept. A second call kills at once.
   */
  interrupt(signal: NodeJS.Signals = 'SIGTERM'): void {
    if (this.earlyEnd?.kind === 'interrupted') {
      for (const n of this.live) n.kill();
      return;
    }
    this.endEarly({ kind: 'interrupted', signal });
  }

  private endEarly(e: EarlyEnd): void {
    if (this.earlyEnd) return;
    this.earlyEnd = e;
    this.resolveEarly(e);
  }

  async run(): Promise<RunResult> {
    const started = systemClock.now();
    await loadPlugins(this.o.config.plugins);
    this.app = await loadApp(this.o.app);
    if (!this.jobNameFixed) this.jobName = defaultJobName(this.app.name);
    this.jobNameFixed = true;
    this.logDir = this.o.logDir ?? mkdtempSync(join(tmpdir(), `taskgraph-${this.job}-`));
    mkdirSync(this.logDir, { recursive: true });
    this.numTasks = jobSize(this.app, this.o);
    // A bad --arg fails every node the same way: refuse it before any starts.
    this.app.taskBuilder(this.context());
    this.transportUrl = securedTransportUrl(this.o.config, this.inProcess ? 'local://' : 'grpc://127.0.0.1:0');
    if (!this.inProcess && this.transportUrl.startsWith('local:')) {
      throw new InvalidArgumentError('local:// only connects nodes inside one process; separate node processes need --transport grpc://127.0.0.1:0');
    }
    const logger = this.logger();
    this.coordinator = await resolveCoordinator(this.o.config.coordinator!, { logger });
    this.controller = new Controller({ coordinator: this.coordinator, job: this.job, logger });
    let status: JobStatus | undefined;
    let reason = '';
    let timer: ReturnType<typeof setTimeout> | undefined;
    let created = false;
    try {
      this.checkTtl();
      const backupTasks = this.backups > 0 ? this.backupTasks : undefined;
      await this.controller.createJob({ numTasks: this.numTasks, linkTypes: this.app.linkTypes, backups: this.backups, ...(backupTasks ? { backupTasks } : {}) });
      created = true;
      this.print(
        `job ${this.job}: ${this.app.name}, ${describeSize(this.app, this.numTasks, this.backups, backupTasks)} + ${this.o.standbys} standbys, ${maskUrl(this.o.config.coordinator!)} / ${maskUrl(this.transportUrl)}` +
          (this.perProcess > 1 ? `, ${this.perProcess} nodes per ${this.inProcess ? 'host' : 'process'}` : '') +
          (this.inProcess ? ' (in-process)' : `, node logs in ${this.logDir}`),
      );
      const metrics = this.o.metrics;
      if (metrics && this.inProcess) {
        // Replaced nodes come under new ids: the run is healthy while any of its nodes is.
        this.metricsServer = await startMetrics(metrics, 'any');
        this.print(`metrics: ${this.metricsServer.url}/metrics and /healthz (every node of the job)`);
      } else if (metrics) {
        if (metrics.port !== 0 && metrics.port + this.slotCount > 65535) throw new InvalidArgumentError(`--metrics-port ${metrics.port} leaves no room for ${this.slotCount} node processes (port + 1 + i <= 65535)`);
        this.print(
          metrics.port === 0
            ? 'metrics: each node process serves its own on a free port (it logs which)'
            : `metrics: node process i serves http://${metrics.host ?? '127.0.0.1'}:${metrics.port + 1}+i/metrics, for i from 0 to ${this.slotCount - 1}`,
        );
      }
      const timeout = new Promise<'timeout'>((resolve) => {
        if (this.o.timeoutMs) timer = setTimeout(() => resolve('timeout'), this.o.timeoutMs);
      });
      const progress = this.followProgress();
      for (let slot = 0; slot < this.slotCount; slot++) this.startNode(slot);
      const done = this.controller.waitUntilDone(this.stopAll.signal).then(
        () => 'done' as const,
        (err: unknown) => {
          // Aborted when the run ends another way: the race is decided by then.
          if (this.stopAll.signal.aborted) return 'aborted' as const;
          throw err;
        },
      );
      const first = await Promise.race([done, timeout, this.early]);
      if (first === 'done') {
        // Let the nodes see the end and leave on their own.
        await endedWithin([...this.live], 15_000);
      }
      reason =
        first === 'timeout' ? `timed out after ${this.o.timeoutMs} ms`
        : first === 'done' || first === 'aborted' ? first
        : first.kind === 'interrupted' ? `interrupted by ${first.signal}`
        : first.message;
      this.finished = true;
      this.stopAll.abort();
      await progress;
      status = await this.controller.status();
    } finally {
      if (timer) clearTimeout(timer);
      this.finished = true;
      this.stopAll.abort();
      await this.stopNodes();
      await Promise.all([...this.endingSessions]);
      if (created && !this.o.keepJob) await this.controller.destroy().catch(() => undefined);
      await this.coordinator.close().catch(() => undefined);
      await this.metricsServer?.close();
    }
    return this.conclude(started, status, reason);
  }

  private conclude(started: number, status: JobStatus | undefined, reason: string): RunResult {
    const durationMs = systemClock.now() - started;
    const seconds = (durationMs / 1000).toFixed(1);
    const failovers = status ? status.tasks.reduce((n, t) => n + Math.max(0, t.incarnations - 1), 0) : 0;
    const base = { job: this.job, status, results: this.results, failovers, durationMs, reason };
    const early = this.earlyEnd;
    if (early?.kind === 'interrupted') {
      const nodes = this.started;
      this.print(
        `${this.verdictWord(false)}: job ${this.job} interrupted by ${early.signal} after ${seconds} s at epoch ${status?.epoch ?? '-'}: ${nodes} node(s) stopped, ` +
          (this.o.keepJob ? 'the job kept in the store (--keep)' : 'the job deleted from the store'),
      );
      return { ...base, ok: false, exitCode: interruptedExitCode(early.signal), verdict: undefined, interrupted: early.signal };
    }
    if (early?.kind === 'configuration') {
      this.print(`taskgraph: ${early.message}`);
      this.print(`${this.verdictWord(false)}: job ${this.job} did not run (configuration)`);
      return { ...base, ok: false, exitCode: EXIT.usage, verdict: undefined };
    }
    const ctx = { numTasks: this.numTasks, args: this.o.args ?? {}, logger: silentLogger };
    const done = status?.state === 'done';
    const verdict = done && this.app.verify ? this.app.verify(ctx, this.results) : undefined;
    const ok = done && (verdict?.ok ?? true);
    if (verdict) this.print(`${this.app.name}: ${verdict.message}`);
    if (!ok) this.printFailedLogs();
    this.print(
      `${this.verdictWord(ok)}: job ${this.job} ${status?.state ?? 'gone'} after ${seconds} s, epoch ${status?.epoch ?? '-'}, ${failovers} failover(s)` +
        (reason && !done ? `: ${reason}` : '') +
        (done && !ok ? `: ${this.app.name}'s answer did not verify` : ''),
    );
    return { ...base, ok, exitCode: ok ? EXIT.ok : EXIT.failed, verdict, reason: reason || (ok ? 'done' : 'failed') };
  }

  /** PASS or FAIL, the first word of the run's last line (green or red on a terminal). */
  private verdictWord(ok: boolean): string {
    return ok ? paint(this.terminal, 'green', 'PASS') : paint(this.terminal, 'red', 'FAIL');
  }

  private showProgress(line: string, final: boolean): void {
    if (!this.terminal.tty) {
      this.print(line);
      return;
    }
    this.terminal.write(`${CLEAR_LINE}${this.redact(line)}${final ? '\n' : ''}`);
    this.liveShown = !final;
  }

  private logger(): Logger {
    return scrubbedLogger(this.o.config.logLevel ?? 'warn', this.redact);
  }

  /** A TTL the store refuses would fail every node alike: refuse it before any starts. */
  private checkTtl(): void {
    const ttl = this.o.config.sessionTtlMs;
    if (ttl === undefined) return;
    const [min, max] = this.coordinator.caps.ttlRangeMs;
    if (ttl < min || ttl > max) {
      throw new InvalidArgumentError(`--ttl ${ttl} ms is outside the range the coordinator accepts, [${min}, ${max}] ms`);
    }
  }

  /**
   * The job's progress: on a terminal one line redrawn in place; otherwise a line
   * whenever what it shows changes. Nodes without a role count as standbys only once
   * every slot is held (before that they may simply not have claimed yet: "waiting").
   */
  private async followProgress(): Promise<void> {
    let last = '';
    try {
      for await (const s of this.controller.watch(this.stopAll.signal)) {
        const owned = s.tasks.filter((t) => t.nodeId !== undefined).length;
        const failovers = s.tasks.reduce((n, t) => n + Math.max(0, t.incarnations - 1), 0);
        const backups = s.tasks.reduce((n, t) => n + t.backups.length, 0);
        const ready = s.tasks.reduce((n, t) => n + t.backups.filter((b) => b.state === 'ready').length, 0);
        const allHeld = owned === s.tasks.length && backups >= this.backedUp * this.backups;
        const line =
          `epoch ${s.epoch} | tasks running ${owned}/${s.tasks.length}` +
          (this.backups ? ` | backups ready ${ready}/${this.backedUp * this.backups}` : '') +
          ` | live nodes ${s.nodes.length} (${s.standbys.length} ${allHeld ? 'standby' : 'waiting'}) | failovers ${failovers}${s.state !== 'running' ? ` | ${s.state}` : ''}`;
        if (line !== last) this.showProgress(line, s.state !== 'running');
        last = line;
        if (s.state !== 'running') return;
      }
    } catch (err) {
      if (!this.stopAll.signal.aborted) this.print(`progress watch ended: ${(err as Error).message}`);
    }
  }

  /** Starts the node of `slot`, as a process or in this process, and supervises it. */
  private startNode(slot: number): Supervised {
    const n = this.inProcess ? this.startInProcess(slot) : this.startProcess(slot);
    this.started++;
    this.live.add(n);
    return n;
  }

  /** Decides what follows a node's end: nothing, a restart in its slot, or the end of the run. */
  private nodeEnded(n: Supervised, end: NodeEnd): void {
    this.live.delete(n);
    if (this.finished) return;
    if (end.kind === 'configuration') {
      this.endEarly({ kind: 'configuration', message: `${n.nodeId} cannot run: ${end.message}` });
      return;
    }
    if (end.kind === 'lost' && (this.o.restart ?? true)) {
      const delay = this.budget.take(n.slot);
      if (delay === undefined) {
        const message =
          `${n.nodeId} exited (${end.detail}), and slot ${n.slot} was already restarted ${this.budget.maxPerWindow} time(s) within ${this.budget.windowMs / 1000} s: ` +
          'giving up (raise --max-restarts or shorten --restart-window to allow more)';
        this.print(message);
        this.endEarly({ kind: 'failed', message });
        return;
      }
      this.pendingRestarts++;
      void sleep(systemClock, delay, this.stopAll.signal)
        .then(() => {
          if (this.finished) return;
          const next = this.startNode(n.slot);
          this.print(`${n.nodeId} exited (${end.detail}); started ${next.nodeId} after ${delay} ms`);
        })
        .catch(() => undefined)
        .finally(() => {
          this.pendingRestarts--;
          this.checkAllGone();
        });
      return;
    }
    if (end.kind === 'lost') this.print(`${n.nodeId} exited (${end.detail})`);
    this.checkAllGone();
  }

  /** Ends the run when no node is left nor about to be restarted, unless the job is done. */
  private checkAllGone(): void {
    if (this.finished || this.live.size > 0 || this.pendingRestarts > 0) return;
    void this.controller.status().then(
      (s) => {
        if (s?.state !== 'done') this.endEarly({ kind: 'failed', message: 'every node exited before the job finished' });
      },
      (err: unknown) => this.endEarly({ kind: 'failed', message: `every node exited, and the job's state cannot be read: ${(err as Error).message}` }),
    );
  }

  private startInProcess(slot: number): Supervised {
    const nodeId = `node-${this.started}`;
    const count = this.countOf(slot);
    // The first nodes of each slot go for their own tasks first (no scramble at start).
    const firstStart = this.started === slot;
    const preferredOf = (index: number): number | undefined => {
      const global = slot * this.perProcess + index;
      return firstStart && global < this.numTasks ? global : undefined;
    };
    let running: Pick<NodeHost, 'stop' | 'kill'> | undefined;
    let stopRequested = false;
    const ended = (async (): Promise<NodeEnd> => {
      const logger = this.logger().child({ node: nodeId });
      const coordinator = await resolveCoordinator(this.o.config.coordinator!, { logger });
      try {
        const transport = await resolveTransport(this.transportUrl);
        try {
          const common = {
            job: this.job,
            coordinator,
            transport,
            logger,
            ...(this.o.config.sessionTtlMs ? { sessionTtlMs: this.o.config.sessionTtlMs } : {}),
            ...(this.metricsServer ? { instruments: this.metricsServer.metrics.observer } : {}),
          };
          let nodes: readonly TaskGraphNode[];
          let host: NodeHost | undefined;
          const wire = (node: TaskGraphNode): void => {
            node.setTaskBuilder(this.app.taskBuilder(this.context()));
            for (const [lt, topo] of Object.entries(this.app.linkages(this.context()))) node.addLinkage(lt, topo);
          };
          if (count === 1) {
            const preferred = preferredOf(0);
            const node = createBootstrap({ ...common, nodeId, ...(preferred !== undefined ? { preferredTask: preferred } : {}) });
            wire(node);
            nodes = [node];
            running = node;
          } else {
            // A hosted node whose session is lost is replaced in the host, under the run's restart limits.
            const rejoin = {
              ...(this.o.maxRestarts !== undefined ? { max: this.o.maxRestarts } : {}),
              ...(this.o.restartWindowMs !== undefined ? { windowMs: this.o.restartWindowMs } : {}),
            };
            host = createNodeHost({ ...common, count, nodeIdPrefix: nodeId, preferredTask: preferredOf, setup: wire, rejoin });
            nodes = host.nodes;
            running = host;
          }
          if (stopRequested) return { kind: 'left' };
          const outcomes: NodeOutcome[] = [];
          if (host) {
            for (const end of await host.start()) {
              if ('error' in end) throw end.error;
              outcomes.push(end.outcome);
            }
          } else outcomes.push(await nodes[0]!.start());
          const lost = outcomes.find((o) => o.reason === 'lease-lost' || o.reason === 'killed');
          return lost ? { kind: 'lost', detail: lost.reason } : { kind: 'left' };
        } finally {
          await transport.close().catch(() => undefined);
        }
      } finally {
        await coordinator.close().catch(() => undefined);
      }
    })().catch((err: unknown): NodeEnd => {
      const message = this.redact(err instanceof Error ? err.message : String(err));
      return isConfigurationError(err) ? { kind: 'configuration', message } : { kind: 'lost', detail: `failed: ${message}` };
    });
    const n: Supervised = {
      slot,
      nodeId,
      stop: () => {
        stopRequested = true;
        void running?.stop('the run is stopping').catch(() => undefined);
      },
      kill: () => void running?.kill().catch(() => undefined),
      ended,
    };
    void ended.then((end) => this.nodeEnded(n, end));
    return n;
  }

  /** Prints the application's line for a record it reported while running (its progress), if it has one. */
  private describe(record: unknown): void {
    const line = this.app.describeRecord?.(record);
    if (line !== undefined && !this.finished) this.print(line);
  }

  private context() {
    return { numTasks: this.numTasks, args: this.o.args ?? {}, logger: silentLogger, report: (r: unknown) => {
        this.results.push(r);
        this.reports.push({ node: -1, record: r });
        this.describe(r);
      },
    };
  }

  private startProcess(slot: number): Supervised {
    const entry = this.o.cliEntry ?? defaultCliEntry();
    const index = this.processes.length;
    const nodeId = `node-${index}`;
    const logFile = join(this.logDir, `${nodeId}.log`);
    const log = createWriteStream(logFile);
    const count = this.countOf(slot);
    const args = [entry, 'node', this.o.app, '--job', this.job, '--node-id', nodeId];
    if (count > 1) args.push('--count', String(count));
    if (this.o.config.sessionTtlMs) args.push('--ttl', String(this.o.config.sessionTtlMs));
    const metrics = this.o.metrics;
    if (metrics) {
      args.push('--metrics-port', String(metrics.port === 0 ? 0 : metrics.port + 1 + slot));
      if (metrics.host !== undefined) args.push('--metrics-host', metrics.host);
    }
    args.push('--log-level', this.o.config.logLevel === 'silent' ? 'warn' : (this.o.config.logLevel ?? 'info'));
    for (const [k, v] of Object.entries(this.o.args ?? {})) args.push('--arg', `${k}=${v}`);
    // The node processes resolve the same URLs, so they need the same plug-ins.
    for (const p of this.o.config.plugins ?? []) args.push('--plugin', p);
    const child = spawn(process.execPath, args, {
      // stdin stays open, unwritten: it ends when this process does, however it ends,
      // and the node then leaves (STOP_WITH_PARENT_ENV).
      stdio: ['pipe', 'pipe', 'pipe'],
      // Its own process group: a Ctrl-C in the terminal reaches `run` only, which
      // stops each node once, gracefully (a node signalled twice exits at once).
      detached: true,
      // The URLs travel in the environment, which only this user can read, not in
      // the arguments, which every user sees (ps, /proc/<pid>/cmdline).
      env: {
        ...process.env,
        TASKGRAPH_LOG_FORMAT: 'text',
        TASKGRAPH_COORDINATOR: this.o.config.coordinator!,
        TASKGRAPH_TRANSPORT: this.transportUrl,
        [STOP_WITH_PARENT_ENV]: '1',
      },
    });
    let lastLine: string | undefined;
    const proc: NodeProcess = {
      index,
      slot,
      nodeId,
      count,
      child,
      logFile,
      outcomes: [],
      sessions: new Map(),
      // 'close', not 'exit': the child's stdout and stderr are read to their end first, so no
      // result line printed just before it exited is missed, and its log is not written after it ended.
      exited: new Promise((resolve) => child.once('close', (code, signal) => resolve({ code, signal }))),
    };
    this.processes.push(proc);
    child.stdin!.on('error', () => undefined);
    const writeLog = (line: string) => {
      if (!log.writableEnded) log.write(`${this.redact(line)}\n`);
    };
    createInterface({ input: child.stderr! }).on('line', writeLog);
    createInterface({ input: child.stdout! }).on('line', (line) => this.onNodeLine(proc, line, writeLog, (l) => (lastLine = l)));
    const ended = proc.exited.then(({ code, signal }): NodeEnd => {
      log.end(`-- exited with ${signal ?? code}\n`);
      // A clean exit closed its session itself; any other may have left it holding a task.
      if (code !== EXIT.ok) proc.sessionEnded = this.endDeadSession(proc, signal ?? `code ${code}`);
      if (code === EXIT.ok) return { kind: 'left' };
      if (code === EXIT.usage) {
        const error = proc.outcome?.['error'];
        return { kind: 'configuration', message: this.redact(typeof error === 'string' ? error : (lastLine ?? 'configuration error').replace(/^taskgraph: /, '')) };
      }
      return { kind: 'lost', detail: signal ?? `code ${code}` };
    });
    const n: Supervised = {
      slot,
      nodeId,
      stop: () => {
        // A stopped (SIGSTOP) node must run to see its SIGTERM.
        signalProcess(child, 'SIGCONT');
        signalProcess(child, 'SIGTERM');
      },
      kill: () => signalProcess(child, 'SIGKILL'),
      ended,
    };
    void ended.then((end) => this.nodeEnded(n, end));
    return n;
  }

  private onNodeLine(proc: NodeProcess, line: string, writeLog: (line: string) => void, setLast: (line: string) => void): void {
    if (line.startsWith('TG-RESULT ')) {
      try {
        const record: unknown = JSON.parse(line.slice(10));
        this.results.push(record);
        this.reports.push({ node: proc.index, record });
        this.describe(record);
        this.o.onReport?.(proc, record);
      } catch {
        writeLog(`unparsable result line: ${line}`);
      }
    } else if (line.startsWith('TG-SESSION ')) {
      const session = sessionOf(line.slice(11), proc);
      if (session === undefined) writeLog(`unparsable session line: ${line}`);
      else {
        proc.sessionId ??= session.sessionId;
        proc.sessions.set(session.nodeId, session.sessionId);
      }
    } else if (line.startsWith('TG-OUTCOME ')) {
      try {
        proc.outcome = JSON.parse(line.slice(11)) as Record<string, unknown>;
        proc.outcomes.push(proc.outcome);
      } catch {
        writeLog(`unparsable outcome line: ${line}`);
      }
    } else {
      setLast(line);
      writeLog(line);
    }
  }

  /**
   * Ends the store sessions of a node process that exited (every node of a host at
   * once), so what it held fails over now. Safe only because the process is gone:
   * the 'close' event this follows comes after the OS reaped it. Bounded and never
   * throwing: a session the store does not end in time ends at its TTL as it would
   * have anyway.
   */
  private endDeadSession(proc: NodeProcess, how: string): Promise<void> {
    const ids = [...proc.sessions.values()];
    if (ids.length === 0) return Promise.resolve();
    const timer = new AbortController();
    const which = ids.length === 1 ? `its session ${ids[0]}` : `the sessions of its ${ids.length} nodes`;
    const work = Promise.race([
      Promise.all(ids.map((id) => this.coordinator.endSession(id))).then(() => true),
      sleep(systemClock, END_SESSION_WITHIN_MS, timer.signal).then(
        () => false,
        () => false,
      ),
    ]).then(
      (ended) =>
        this.print(
          ended ? `${proc.nodeId} died (${how}): ended ${which} in the store; what it held fails over now`
          : `${proc.nodeId} died (${how}): the store did not confirm the end of ${which} within ${END_SESSION_WITHIN_MS} ms; it ends at its TTL`,
        ),
      (err: unknown) => this.print(`${proc.nodeId} died (${how}): could not end ${which} (${(err as Error).message}); what is left ends at its TTL`),
    ).finally(() => {
      timer.abort();
      this.endingSessions.delete(work);
    });
    this.endingSessions.add(work);
    return work;
  }

  /** Asks every live node to leave, waits the grace period, then kills those left. */
  private async stopNodes(): Promise<void> {
    for (;;) {
      const live = [...this.live];
      if (live.length === 0) return;
      for (const n of live) n.stop();
      if (!(await endedWithin(live, this.o.graceMs ?? DEFAULT_GRACE_MS))) for (const n of live) n.kill();
      await Promise.all(live.map((n) => n.ended));
    }
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

/** True when every node ended within `ms`. */
async function endedWithin(nodes: readonly Supervised[], ms: number): Promise<boolean> {
  const timer = new AbortController();
  try {
    return await Promise.race([Promise.all(nodes.map((n) => n.ended)).then(() => true), sleep(systemClock, ms, timer.signal).then(
        () => false,
        () => false,
      ),
    ]);
  } finally {
    timer.abort();
  }
}

/** The node and session of a `TG-SESSION` line's JSON, if it is one and names a node of this process. */
function sessionOf(json: string, proc: Pick<NodeProcess, 'nodeId' | 'count'>): { nodeId: string; sessionId: string } | undefined {
  try {
    const v = JSON.parse(json) as { nodeId?: unknown; sessionId?: unknown };
    if (typeof v.nodeId !== 'string' || typeof v.sessionId !== 'string' || v.sessionId === '') return undefined;
    const ours = proc.count === 1 ? v.nodeId === proc.nodeId : /^\d+$/.test(v.nodeId.slice(proc.nodeId.length + 1)) && v.nodeId.startsWith(`${proc.nodeId}.`);
    return ours ? { nodeId: v.nodeId, sessionId: v.sessionId } : undefined;
  } catch {
    return undefined;
  }
}

/** Signals a child that may have exited already (then there is nothing to do). */
function signalProcess(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.exitCode !== null || child.signalCode !== null) return;
  try {
    child.kill(signal);
  } catch {
    // it exited in between
  }
}

/** The job's number of tasks: `--tasks` for a task graph, `--workers` + 1 for a master/worker application. */
export function jobSize(app: TaskGraphApp, o: { readonly tasks?: number | undefined; readonly workers?: number | undefined }): number {
  if (app.paradigm === 'master-worker') {
    if (o.tasks !== undefined) throw new InvalidArgumentError(`${app.name} is a master/worker application: give --workers N (its job has N + 1 tasks: the master and N workers), not --tasks`);
    if (o.workers === undefined) throw new InvalidArgumentError(`${app.name} is a master/worker application: it needs --workers N`);
    return o.workers + 1;
  }
  if (o.workers !== undefined) throw new InvalidArgumentError(`${app.name} is a task graph: give --tasks N (--workers is for master/worker applications)`);
  if (o.tasks === undefined) throw new InvalidArgumentError(`${app.name} needs --tasks N`);
  return o.tasks;
}

/** "15 tasks x 2 (a primary and 1 backup each)", "a master (and 1 backup) and 4 workers". */
export function describeSize(app: TaskGraphApp, numTasks: number, backups: number, backupTasks: readonly number[] | undefined): string {
  const plural = (n: number, what: string) => `${n} ${what}${n === 1 ? '' : 's'}`;
  if (app.paradigm === 'master-worker') return `a master${backups ? ` (and ${plural(backups, 'hot backup')})` : ''} and ${plural(numTasks - 1, 'worker')}`;
  if (!backups) return plural(numTasks, 'task');
  if (backupTasks) return `${plural(numTasks, 'task')}, ${plural(backups, 'backup')} each of task${backupTasks.length === 1 ? '' : 's'} ${backupTasks.join(', ')}`;
  return `${plural(numTasks, 'task')} x ${1 + backups} (a primary and ${plural(backups, 'backup')} each)`;
}
