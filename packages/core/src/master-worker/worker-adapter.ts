/**
 * A worker as a task (task `w + 1`): gives the application its `WorkerFrame`, serves
 * its methods, announces each incarnation to the master (again to every new master
 * incarnation), tells the application when the master changes, and starts its
 * optional `run` once the master has heard of it.
 */
import { InvalidArgumentError } from '@taskgraph/api';
import type { AnyMethodHandler, BackedUpFramework, Clock, EpochContext, Logger, MethodSpec, NeighborEvent, NotifyOptions, Task, WorkerFrame, WorkerTask } from '@taskgraph/api';
import type { RuntimeInternals } from '../framework.js';
import { endsTheTask, internalsOf } from './runtime-access.js';
import { callPeer, servePeerMethods } from './peer-calls.js';
import { HELLO, MASTER_TASK, taskOfWorker, workerOfTask } from './wire.js';

export class WorkerAdapter implements Task {
  methods: readonly AnyMethodHandler[] = [];
  private fw: BackedUpFramework | undefined;
  private rt: RuntimeInternals | undefined;
  private started = false;

  constructor(
    private readonly worker: WorkerTask,
    private readonly workerId: number,
  ) {
    if (!worker || typeof worker.setup !== 'function' || typeof worker.exit !== 'function') throw new InvalidArgumentError('a WorkerTask needs setup() and exit()');
    if (worker.run !== undefined && typeof worker.run !== 'function') throw new InvalidArgumentError('a WorkerTask’s run must be a function when present');
  }

  async init(taskId: number, fw: BackedUpFramework): Promise<void> {
    if (workerOfTask(taskId) !== this.workerId) throw new InvalidArgumentError(`worker ${this.workerId} was given task ${taskId}`);
    const rt = internalsOf(fw, 'a master/worker worker');
    this.fw = fw;
    this.rt = rt;
    await this.worker.setup(new Frame(fw, rt, this.workerId));
    const who = `worker ${this.workerId}`;
    // The callers' fence is the address book's (a call from an incarnation older than the one it knows is refused).
    this.methods = servePeerMethods(this.worker.methods, { who, rt, intercept: this.worker.intercept?.bind(this.worker) });
  }

  enterEpoch(): void {}

  metaReady(): void {}

  becamePrimary(ctx: EpochContext): void {
    if (this.started) return;
    this.started = true;
    this.announce(ctx)
      .then(() => this.worker.run?.(ctx))
      .catch((err: unknown) => this.onError(err));
  }

  async neighborRestarted(ctx: EpochContext, event: NeighborEvent): Promise<void> {
    if (event.task !== MASTER_TASK) return;
    this.logger().info('the master runs again: announcing this worker to it', { masterIncarnation: event.incarnation });
    void this.announce(ctx).catch((err: unknown) => this.onError(err));
    await this.worker.masterChanged?.(ctx, { incarnation: event.incarnation });
  }

  async exit(): Promise<void> {
    await this.worker.exit();
  }

  private logger(): Logger {
    return this.fw!.getLogger();
  }

  /** Tells the master (whichever incarnation answers) that this incarnation serves. */
  private async announce(ctx: EpochContext): Promise<void> {
    const answer = await callPeer(this.fw!, this.rt!, ctx, MASTER_TASK, HELLO, {}, undefined, 'announce to the master');
    this.logger().debug('announced to the master', { masterIncarnation: answer.incarnation });
  }

  private onError(err: unknown): void {
    if (endsTheTask(err)) {
      this.logger().debug('worker work ended with its hold on the task', { error: (err as Error).message });
      return;
    }
    this.rt?.fail(err);
  }
}

class Frame implements WorkerFrame {
  constructor(
    private readonly fw: BackedUpFramework,
    private readonly rt: RuntimeInternals,
    private readonly workerId: number,
  ) {}

  getJob(): string {
    return this.fw.getJob();
  }

  getLogger(): Logger {
    return this.fw.getLogger();
  }

  getClock(): Clock {
    return this.rt.clock;
  }

  getWorkerId(): number {
    return this.workerId;
  }

  getNumWorkers(): number {
    return this.fw.getNumTasks() - 1;
  }

  getIncarnation(): number {
    return this.fw.getIncarnation();
  }

  getMasterIncarnation(): number {
    return this.rt.addresses.get(MASTER_TASK)?.incarnation ?? 0;
  }

  notifyMaster<I, O>(ctx: EpochContext, method: MethodSpec<I, O>, input: I, options?: NotifyOptions): Promise<O> {
    return callPeer(this.fw, this.rt, ctx, MASTER_TASK, method, input, options, 'notifyMaster');
  }

  dataRequest<I, O>(ctx: EpochContext, workerId: number, method: MethodSpec<I, O>, input: I, options?: NotifyOptions): Promise<O> {
    if (!Number.isInteger(workerId) || workerId < 0 || workerId >= this.getNumWorkers()) {
      return Promise.reject(new InvalidArgumentError(`dataRequest: worker ${String(workerId)} does not exist (workers are 0..${this.getNumWorkers() - 1})`));
    }
    return callPeer(this.fw, this.rt, ctx, taskOfWorker(workerId), method, input, options, 'dataRequest');
  }
}
