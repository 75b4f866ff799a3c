/**
 * Nodes of a job as OS processes: `taskgraph node <app>` started from the built CLI
 * (`packages/cli/dist/cli.js`), with tsx's loader only for the benchmark's own
 * application module (TypeScript). What the benchmarks SIGKILL: a process that
 * dies on its own is an error (`checkNoneDied`), one the benchmark killed is not.
 * The loader costs start-up time, which the benchmarks keep outside their timed
 * windows (a replacement is started after each measurement). Each node's session id
 * (its `TG-SESSION` line) is kept, for a benchmark that plays the supervisor.
 */
import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { setPriority } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { InternalError } from '@taskgraph/api';

const rootDir = fileURLToPath(new URL('../..', import.meta.url));
const require = createRequire(import.meta.url);

export interface NodeProcess {
  readonly nodeId: string;
  readonly child: ChildProcess;
  readonly exited: Promise<void>;
  /** The last lines of its stderr (its log), for the error that names a dead node. */
  readonly stderr: string[];
  /** Killed by the benchmark (so its end is no failure). */
  killed: boolean;
  /** Its store session, from its `TG-SESSION` line, once it has one. */
  sessionId?: string;
}

export interface NodeProcessesOptions {
  /** The application module's path. */
  readonly app: string;
  readonly job: string;
  /** The coordinator URL the nodes open (`etcd://host:port?namespace=...`). */
  readonly coordinatorUrl: string;
  /** The nodes' session TTL. */
  readonly ttlMs: number;
  /** Node ids are `<prefix>-0`, `<prefix>-1`, ... Default `node`. */
  readonly nodeIdPrefix?: string;
  /**
   * Nodes per process (`taskgraph node --count`; default 1). A process of several
   * is a node host: its nodes are `<process's node id>.0`, `.1`, ...
   */
  readonly count?: number;
  /** The processes' nice value (default: the benchmark's own). */
  readonly nice?: number;
  /** Application arguments (`--arg key=value`). */
  readonly args?: Readonly<Record<string, string>>;
  /**
   * Each `TG-RESULT` record a node prints, with the node that printed it. Without it
   * the nodes' stdout is not read.
   */
  readonly onResult?: (proc: NodeProcess, record: unknown) => void;
}

const RESULT = 'TG-RESULT ';

function withoutKey(env: NodeJS.ProcessEnv, key: string): NodeJS.ProcessEnv {
  const copy = { ...env };
  delete copy[key];
  return copy;
}
const SESSION = 'TG-SESSION ';

export class NodeProcesses {
  readonly all: NodeProcess[] = [];
  readonly #tsxLoader = pathToFileURL(require.resolve('tsx')).href;
  readonly #cli = `${rootDir}packages/cli/dist/cli.js`;

  constructor(private readonly o: NodeProcessesOptions) {}

  /** Starts one more node process (of `count` nodes: the option's unless given). */
  spawn(count = this.o.count ?? 1): NodeProcess {
    const o = this.o;
    const nodeId = `${o.nodeIdPrefix ?? 'node'}-${this.all.length}`;
    const args = ['--import', this.#tsxLoader, this.#cli, 'node', o.app, '--job', o.job, '--coordinator', o.coordinatorUrl, '--transport', 'grpc://127.0.0.1:0'];
    // TASKGRAPH_BENCH_NODE_LOGS=<dir>: each node process's whole log, at level info, in <dir>/<node id>.log.
    const logDir = process.env['TASKGRAPH_BENCH_NODE_LOGS'];
    args.push('--node-id', nodeId, '--ttl', String(o.ttlMs), '--log-level', logDir ? 'info' : 'warn');
    if (count !== 1) args.push('--count', String(count));
    for (const [k, v] of Object.entries(o.args ?? {})) args.push('--arg', `${k}=${v}`);
    const child = spawn(process.execPath, args, {
      cwd: rootDir,
      stdio: ['ignore', 'pipe', 'pipe'],
      // A tsconfig path that tsx took relative to our working directory would not resolve from the child's.
      env: { ...withoutKey(process.env, 'TSX_TSCONFIG_PATH'), TASKGRAPH_LOG_FORMAT: 'text' },
    });
    if (o.nice !== undefined && child.pid !== undefined) setPriority(child.pid, o.nice);
    const stderr: string[] = [];
    child.stderr!.setEncoding('utf8');
    const logFile = logDir ? createWriteStream(join(logDir, `${nodeId}.log`)) : undefined;
    child.stderr!.on('data', (chunk: string) => {
      logFile?.write(chunk);
      stderr.push(chunk);
      if (stderr.length > 50) stderr.shift();
    });
    const exited = new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) resolve();
      else child.once('exit', () => resolve());
    });
    const proc: NodeProcess = { nodeId, child, exited, stderr, killed: false };
    const onResult = o.onResult;
    let partial = '';
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => {
      const lines = (partial + chunk).split('\n');
      partial = lines.pop()!;
      for (const line of lines) {
        const tag = line.startsWith(SESSION) ? SESSION : line.startsWith(RESULT) && onResult ? RESULT : undefined;
        if (tag === undefined) continue;
        let record: unknown;
        try {
          record = JSON.parse(line.slice(tag.length));
        } catch {
          stderr.push(`(an unreadable ${tag.trim()} line: ${line.slice(0, 200)})\n`);
          continue;
        }
        if (tag === RESULT) onResult?.(proc, record);
        else {
          const id = (record as { sessionId?: unknown } | null)?.sessionId;
          if (typeof id === 'string') proc.sessionId = id;
        }
      }
    });
    this.all.push(proc);
    return proc;
  }

  live(): NodeProcess[] {
    return this.all.filter((p) => p.child.exitCode === null && p.child.signalCode === null);
  }

  byId(nodeId: string | undefined): NodeProcess | undefined {
    return this.all.find((p) => p.nodeId === nodeId);
  }

  /** Throws, with the tail of its log, when a node the benchmark did not kill has ended. */
  checkNoneDied(): void {
    const dead = this.all.find((p) => !p.killed && (p.child.exitCode !== null || p.child.signalCode !== null));
    if (dead) {
      throw new InternalError(`node process ${dead.nodeId} exited (${String(dead.child.exitCode ?? dead.child.signalCode)}): ${dead.stderr.join('').trim().slice(-2000)}`);
    }
  }

  /** SIGKILLs a node; resolves with the time of the kill (performance.now()). */
  kill(proc: NodeProcess): number {
    proc.killed = true;
    const at = performance.now();
    proc.child.kill('SIGKILL');
    return at;
  }

  /**
   * Waits up to `graceMs` for every node to leave on its own (after the job was
   * finished), then kills what is left and waits for every process to end.
   */
  async close(graceMs: number): Promise<void> {
    const deadline = performance.now() + graceMs;
    while (this.live().length > 0 && performance.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    for (const p of this.live()) {
      p.killed = true;
      p.child.kill('SIGKILL');
    }
    await Promise.all(this.all.map((p) => p.exited));
  }
}
