/**
 * The master as a task (task 0): gives the application its `MasterFrame`, serves
 * its methods and the workers' announcements, turns neighbour events and
 * announcements into `workerJoined`/`workerFailed`/`workerRestarted` (one at a
 * time, in order, each once), and runs `run` whenever this node becomes the
 * master's primary: a fresh claim, a cold takeover, or a hot backup's promotion.
 */
import { InvalidArgumentError } from '@taskgraph/api';
import type {
  AnyMethodHandler,
  BackedUpFramework,
  Caller,
  Clock,
  EpochContext,
  Logger,
  MasterFrame,
  MasterStart,
  MasterStore,
  MasterTask,
  MethodSpec,
  NeighborEvent,
  NotifyOptions,
  RoleChange,
  Task,
  UpdateLog,
  WorkerEvent,
  WorkerStatus,
} from '@taskgraph/api';
import { CallbackQueue } from '../callback-queue.js';
import type { RuntimeInternals } from '../framework.js';
import { endsTheTask, internalsOf } from './runtime-access.js';
import { FencedMasterStore } from './master-store.js';
import { callPeer, peerMethod, servePeerMethods, staleCaller } from './peer-calls.js';
import { WorkerRoster } from './roster.js';
import type { RosterEvent } from './roster.js';
import { HELLO, taskOfWorker, workerOfTask } from './wire.js';

export class MasterAdapter implements Task {
  methods: readonly AnyMethodHandler[] = [];
  snapshot?: () => Uint8Array | Promise<Uint8Array>;
  restore?: (snapshot: Uint8Array) => void | Promise<void>;
  applyUpdate?: (log: UpdateLog) => void | Promise<void>;
  private fw: BackedUpFramework | undefined;
  private rt: RuntimeInternals | undefined;
  private roster: WorkerRoster | undefined;
  private events: CallbackQueue | undefined;
  private exited = false;

  constructor(
    private readonly master: MasterTask,
    private readonly numWorkers: number,
  ) {
    if (!master || typeof master.setup !== 'function' || typeof master.run !== 'function' || typeof master.exit !== 'function') {
      throw new InvalidArgumentError('a MasterTask needs setup(), run() and exit()');
    }
    const { snapshot, restore, applyUpdate } = master;
    const hot = [snapshot, restore, applyUpdate].filter((f) => typeof f === 'function').length;
    if (hot !== 0 && hot !== 3) throw new InvalidArgumentError('a MasterTask kept by hot backups needs all of snapshot(), restore() and applyUpdate()');
    // Only a master that can be mirrored is one to the replication (a backup of any other restarts it cold).
    if (snapshot && restore && applyUpdate) {
      this.snapshot = () => snapshot.call(master);
      this.restore = (s) => restore.call(master, s);
      this.applyUpdate = (log) => applyUpdate.call(master, log);
    }
  }

  async init(_taskId: number, fw: BackedUpFramework): Promise<void> {
    const rt = internalsOf(fw, 'a master/worker master');
    this.fw = fw;
    this.rt = rt;
    const who = 'the master';
    const serve = { who, rt, intercept: this.master.intercept?.bind(this.master), refuse: (caller: Caller) => this.refuse(caller) };
    const hello = peerMethod(HELLO, (_ctx, _input, caller) => this.announced(caller), { who, rt, intercept: undefined, refuse: serve.refuse });
    await this.master.setup(new Frame(fw, rt, this));
    this.methods = [hello, ...servePeerMethods(this.master.methods, serve)];
  }

  enterEpoch(): void {}

  metaReady(): void {}

  becamePrimary(ctx: EpochContext, change: RoleChange): void {
    const rt = this.rt!;
    this.primaryTerm();
    // A backup of a master that cannot be mirrored holds nothing: its promotion is a cold start.
    const hot = change.promoted && this.snapshot !== undefined;
    const start: MasterStart = { incarnation: change.incarnation, promoted: hot, seq: hot ? change.seq : 0 };
    this.logger().info('master running', { incarnation: start.incarnation, promoted: start.promoted, seq: start.seq });
    // `run` goes beside the callbacks, not in their queue: the worker events must reach the master while it runs.
    // A failure of the shutdown too (the node leaving meanwhile) goes to onError, not to an unhandled rejection.
    void this.master
      .run(ctx, start)
      .then(async () => {
        if (rt.token() === undefined || this.exited) return;
        this.logger().info('master run finished: the job is done');
        await this.fw!.shutdownJob();
      })
      .catch((err: unknown) => this.onError(err));
  }

  neighborFailed(_ctx: EpochContext, event: NeighborEvent): void {
    this.tell(this.primaryTerm().failed(workerOfTask(event.task), event.incarnation));
  }

  async exit(): Promise<void> {
    this.exited = true;
    await this.events?.close();
    await this.master.exit();
  }

  /** The master's view of one worker now. */
  status(workerId: number): WorkerStatus {
    const incarnation = this.rt?.addresses.get(taskOfWorker(workerId))?.incarnation ?? 0;
    return { workerId, incarnation, ready: this.roster?.isReady(workerId, incarnation) ?? false };
  }

  logger(): Logger {
    return this.fw!.getLogger();
  }

  private announced(caller: Caller): { incarnation: number } {
    this.refuse(caller);
    return { incarnation: this.fw!.getIncarnation() };
  }

  /** A worker's call: refused when its incarnation is over, else it counts as the worker announcing itself. */
  private refuse(caller: Caller): void {
    if (caller.role !== 'worker') return;
    const events = this.primaryTerm().announce(caller.workerId, caller.incarnation);
    if (!events) throw staleCaller(caller);
    this.tell(events);
  }

  /**
   * The roster and the event queue of this node's time as the master's primary, made
   * at its first need: its `becamePrimary`, or a worker's call or a neighbour event,
   * which can come first (the node serves as soon as it publishes its address; the
   * callback that tells it so is queued). A backup serves nothing and hears nothing.
   */
  private primaryTerm(): WorkerRoster {
    if (this.roster) return this.roster;
    const roster = new WorkerRoster(this.numWorkers);
    // The workers live now: a master that takes over may rely on what they hold, so it hears when they fail.
    for (let w = 0; w < this.numWorkers; w++) {
      const live = this.rt!.addresses.get(taskOfWorker(w))?.incarnation;
      if (live !== undefined) roster.seed(w, live);
    }
    this.roster = roster;
    this.events = new CallbackQueue((err) => this.onError(err));
    return roster;
  }

  private tell(events: readonly RosterEvent[]): void {
    const queue = this.events;
    if (!queue) return;
    for (const e of events) {
      const event: WorkerEvent = { workerId: e.workerId, incarnation: e.incarnation };
      this.logger().info(`worker ${e.kind}`, { worker: e.workerId, incarnation: e.incarnation });
      const m = this.master;
      const callback = e.kind === 'joined' ? m.workerJoined : e.kind === 'failed' ? m.workerFailed : m.workerRestarted;
      if (!callback) continue;
      queue.push(
        () => callback.call(m, this.rt!.epochContext(), event),
        () => !this.exited && this.rt?.token() !== undefined,
      );
    }
  }

  private onError(err: unknown): void {
    if (endsTheTask(err)) {
      this.logger().debug('master work ended with its hold on the task', { error: (err as Error).message });
      return;
    }
    this.rt?.fail(err);
  }
}

class Frame implements MasterFrame {
  readonly store: MasterStore;

  constructor(
    private readonly fw: BackedUpFramework,
    private readonly rt: RuntimeInternals,
    private readonly adapter: MasterAdapter,
  ) {
    this.store = new FencedMasterStore(rt, () => fw.getLogger());
  }

  getJob(): string {
    return this.fw.getJob();
  }

  getLogger(): Logger {
    return this.fw.getLogger();
  }

  getClock(): Clock {
    return this.rt.clock;
  }

  getNumWorkers(): number {
    return this.fw.getNumTasks() - 1;
  }

  getIncarnation(): number {
    return this.fw.getIncarnation();
  }

  getWorkers(): readonly WorkerStatus[] {
    return Array.from({ length: this.getNumWorkers() }, (_, w) => this.adapter.status(w));
  }

  notifyWorker<I, O>(ctx: EpochContext, workerId: number, method: MethodSpec<I, O>, input: I, options?: NotifyOptions): Promise<O> {
    if (!Number.isInteger(workerId) || workerId < 0 || workerId >= this.getNumWorkers()) {
      return Promise.reject(new InvalidArgumentError(`notifyWorker: worker ${String(workerId)} does not exist (workers are 0..${this.getNumWorkers() - 1})`));
    }
    return callPeer(this.fw, this.rt, ctx, taskOfWorker(workerId), method, input, options, 'notifyWorker');
  }

  getNumBackups(): number {
    return this.fw.getNumBackups();
  }

  update(ctx: EpochContext, data: Uint8Array): Promise<UpdateLog> {
    return this.fw.update(ctx, data);
  }

  waitForBackups(ctx: EpochContext, count?: number): Promise<void> {
    return this.fw.waitForBackups(ctx, count);
  }

  shutdownJob(): Promise<void> {
    return this.fw.shutdownJob();
  }
}
