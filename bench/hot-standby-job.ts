/**
 * A job of the hot-standby application on etcd, set up so that the benchmark
 * knows where everything runs: task 1 (the prober) in this process, task 0's
 * primary, backups and cold standbys as `taskgraph node` OS processes, which is
 * what the benchmark SIGKILLs.
 *
 * The claim order puts a node in the free primary slot first, then in the backup
 * slot of the task with the fewest backups; so the order of start-up decides the
 * placement: the prober first (it prefers task 1), then task 0's primary process;
 * with backups, task 1's backup slots are filled by in-process nodes that prefer
 * task 1, each before one backup process of task 0 (the tie goes to the preferred
 * task, the fewer to task 0), so that no process ever holds a slot of task 1.
 * Every step waits for its claim and checks it.
 */
import { fileURLToPath } from 'node:url';
import { InternalError } from '@taskgraph/api';
import type { Logger, MethodSpec } from '@taskgraph/api';
import { Controller, createBootstrap, silentLogger } from '@taskgraph/core';
import type { JobStatus, TaskGraphNode } from '@taskgraph/core';
import { createEtcdCoordinator } from '@taskgraph/coord-etcd';
import type { EtcdCoordinator } from '@taskgraph/coord-etcd';
import { createGrpcTransport } from '@taskgraph/transport-grpc';
import type { GrpcTransport } from '@taskgraph/transport-grpc';
import { waitFor } from './coordination-etcd.js';
import { NoNeighbors } from './coordination-idle-app.js';
import { LINK, PROBE_TASK, ProbeTask, STATE_TASK, hotStandbyBuilder } from './hot-standby-app.js';
import { NodeProcesses } from './src/node-processes.js';
import type { NodeProcess } from './src/node-processes.js';

export const STEP_TIMEOUT_MS = 60_000;
/** In-process nodes keep a long session: a busy machine must not end the prober's. */
const IN_PROCESS_TTL_MS = 30_000;

export interface ProcessJobOptions {
  readonly endpoints: readonly string[];
  /** `host:port` of etcd, for the processes' `etcd://` URL. */
  readonly clientAddress: string;
  readonly namespace: string;
  readonly job: string;
  /** Backups of each task. */
  readonly backups: number;
  /** Cold standby processes beside task 0's primary and backups. */
  readonly standbys: number;
  /** The processes' session TTL. */
  readonly ttlMs: number;
  /** The application's arguments (mode, mib, ...). */
  readonly args: Readonly<Record<string, string>>;
  readonly onResult?: (proc: NodeProcess, record: unknown) => void;
  readonly logger?: Logger;
}

interface InProcessNode {
  readonly node: TaskGraphNode;
  readonly coordinator: EtcdCoordinator;
  readonly transport: GrpcTransport;
  readonly finished: Promise<unknown>;
}

/** Task 0's primary as the store shows it, and the process that runs it. */
export interface Primary {
  readonly proc: NodeProcess;
  readonly token: string;
  readonly status: JobStatus;
}

export class ProcessJob {
  readonly probe = new ProbeTask();
  readonly procs: NodeProcesses;
  readonly #inProcess: InProcessNode[] = [];
  readonly #logger: Logger;

  private constructor(
    readonly o: ProcessJobOptions,
    readonly controller: Controller,
    private readonly coordinator: EtcdCoordinator,
  ) {
    this.#logger = o.logger ?? silentLogger;
    this.procs = new NodeProcesses({
      app: fileURLToPath(new URL('./hot-standby-app.ts', import.meta.url)),
      job: o.job,
      coordinatorUrl: `etcd://${o.clientAddress}?namespace=${o.namespace}`,
      ttlMs: o.ttlMs,
      nodeIdPrefix: o.job,
      args: o.args,
      ...(o.onResult ? { onResult: o.onResult } : {}),
    });
  }

  /** Creates the job and starts its nodes, each in its place; resolves once the job is steady. */
  static async start(o: ProcessJobOptions): Promise<ProcessJob> {
    const logger = o.logger ?? silentLogger;
    const coordinator = await createEtcdCoordinator({ hosts: [...o.endpoints], namespace: o.namespace, logger });
    const job = new ProcessJob(o, new Controller({ coordinator, job: o.job, logger }), coordinator);
    try {
      await job.controller.createJob({ numTasks: 2, linkTypes: [LINK], backups: o.backups });
      const prober = await job.#startInProcess(job.probe);
      await job.until(() => prober.node.currentTask === PROBE_TASK, 'the prober to run task 1');
      await Promise.race([job.probe.entered, prober.finished.then(() => Promise.reject(new InternalError('the prober node ended before its first epoch')))]);
      job.procs.spawn();
      await job.until(async () => (await job.controller.status())?.tasks[STATE_TASK]?.token !== undefined, "task 0's primary process to claim it");
      for (let k = 1; k <= o.backups; k++) {
        const filler = await job.#startInProcess(new ProbeTask());
        await job.until(() => filler.node.backupOf === PROBE_TASK || filler.node.currentTask !== undefined, `an in-process backup of task 1 (${k})`);
        if (filler.node.backupOf !== PROBE_TASK) throw new InternalError(`the in-process node meant for task 1's backup slot took task ${String(filler.node.currentTask)}`);
        job.procs.spawn();
        await job.until(async () => (await job.controller.status())?.tasks[STATE_TASK]?.backups.length === k, `task 0's backup process ${k} to claim a slot`);
      }
      for (let s = 0; s < o.standbys; s++) job.procs.spawn();
      await job.until(async () => (await job.controller.status())?.standbys.length === o.standbys, 'the standby processes to register');
      await job.steady();
      return job;
    } catch (err) {
      await job.close();
      throw err;
    }
  }

  /**
   * Resolves with task 0's primary once the job is as it was set up: a primary, every
   * backup in sync with it (`ready`, following its token), the cold standbys
   * registered, and no process that died on its own.
   */
  async steady(): Promise<Primary> {
    let found: Primary | undefined;
    await this.until(async () => {
      const status = await this.controller.status();
      const t = status?.tasks[STATE_TASK];
      if (!status || t?.token === undefined) return false;
      const proc = this.procs.byId(t.nodeId);
      if (!proc) throw new InternalError(`task 0 is run by ${String(t.nodeId)}, which this benchmark did not start`);
      const synced = t.backups.filter((b) => b.state === 'ready' && b.primaryToken === t.token);
      if (synced.length < this.o.backups || status.standbys.length < this.o.standbys) return false;
      found = { proc, token: t.token, status };
      return true;
    }, 'task 0 to have its primary and every backup in sync');
    return found!;
  }

  /**
   * One `dataRequest` from the prober (task 1) to task 0, with the epoch context the
   * framework gave it. It fails as soon as a process the benchmark did not kill has
   * ended, or after STEP_TIMEOUT_MS: a request to a task no node can take would
   * otherwise wait (and retry) for as long as the epoch lasts.
   */
  async call<I, O>(method: MethodSpec<I, O>, input: I): Promise<O> {
    const { framework, ctx } = this.probe;
    if (!framework || !ctx) throw new InternalError('the prober is not in an epoch yet');
    const call = framework.dataRequest(ctx, STATE_TASK, method, input);
    // Given up on below, the request still ends with the epoch when the job is finished.
    call.catch(() => undefined);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = performance.now() + STEP_TIMEOUT_MS;
    const watchdog = new Promise<never>((_, reject) => {
      const tick = (): void => {
        try {
          this.procs.checkNoneDied();
          if (performance.now() > deadline) throw new InternalError(`timed out after ${STEP_TIMEOUT_MS} ms waiting for task 0 to answer ${method.name}`);
        } catch (err) {
          reject(err as Error);
          return;
        }
        timer = setTimeout(tick, 100);
      };
      tick();
    });
    try {
      return await Promise.race([call, watchdog]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Resolves when `check` is true; fails when a process the benchmark did not kill has ended, or after STEP_TIMEOUT_MS. */
  until(check: () => boolean | Promise<boolean>, what: string): Promise<void> {
    return waitFor(
      async () => {
        this.procs.checkNoneDied();
        return await check();
      },
      STEP_TIMEOUT_MS,
      what,
      50,
    );
  }

  async close(): Promise<void> {
    // Finishing the job lets every node leave on its own; whatever is still up after that is killed.
    await this.controller.finish('done').catch(() => undefined);
    await this.procs.close(10_000);
    for (const n of this.#inProcess) await n.node.stop('benchmark done').catch(() => undefined);
    await Promise.all(this.#inProcess.map((n) => n.finished));
    for (const n of this.#inProcess) {
      await n.transport.close().catch(() => undefined);
      await n.coordinator.close().catch(() => undefined);
    }
    await this.controller.destroy().catch(() => undefined);
    await this.coordinator.close();
  }

  async #startInProcess(task: ProbeTask): Promise<InProcessNode> {
    const coordinator = await createEtcdCoordinator({ hosts: [...this.o.endpoints], namespace: this.o.namespace, logger: this.#logger });
    const transport = await createGrpcTransport({ host: '127.0.0.1', logger: this.#logger });
    const node = createBootstrap({
      job: this.o.job,
      coordinator,
      transport,
      preferredTask: PROBE_TASK,
      sessionTtlMs: IN_PROCESS_TTL_MS,
      logger: this.#logger,
    });
    const app = hotStandbyBuilder({ numTasks: 2, args: this.o.args, logger: this.#logger, report: () => undefined });
    node.setTaskBuilder({ getTask: (id) => (id === PROBE_TASK ? task : app.getTask(id)) });
    node.addLinkage(LINK, new NoNeighbors());
    const finished = node.start().catch((err: unknown) => err);
    const n: InProcessNode = { node, coordinator, transport, finished };
    this.#inProcess.push(n);
    return n;
  }
}
