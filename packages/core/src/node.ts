/**
 * One TaskGraph node: it claims a task slot (or waits as a standby), runs the
 * task's event loop through the epochs, serves the task's methods with fencing,
 * and leaves cleanly. It implements both `Bootstrap` (for the driver) and
 * `Framework` (for the task).
 */
import { setMaxListeners } from 'node:events';
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import {
  ClosedError,
  DecodeFailedError,
  EpochChangedError,
  InvalidArgumentError,
  LeaseLostError,
  MethodNotFoundError,
  NotOwnerError,
  TaskGraphError,
  abortError,
  systemClock,
} from '@taskgraph/api';
import type {
  AnyMethodHandler,
  Bootstrap,
  Clock,
  Coordinator,
  DataRequestOptions,
  Entry,
  EpochContext,
  Framework,
  InboundRequest,
  Lock,
  Logger,
  MethodSpec,
  NodeOutcome,
  Session,
  Task,
  TaskBuilder,
  Topology,
  Transport,
  TransportServer,
  Version,
  WatchEvent,
} from '@taskgraph/api';
import { Backoff, Notifier, sleep, uniqueId } from './async.js';
import { CallbackQueue } from './callback-queue.js';
import {
  assertValidJobName,
  assertValidLinkType,
  assertValidNodeId,
  decodeAddr,
  decodeCount,
  decodeEpoch,
  decodeMeta,
  decodeSpec,
  decodeStatus,
  encodeEpoch,
  encodeJson,
  keys,
  parseMetaKey,
  parseTaskKey,
} from './layout.js';
import type { AddrValue, JobSpec, MetaValue } from './layout.js';
import { createLogger } from './logger.js';
import { WatchedPrefix } from './watched-prefix.js';

export interface BootstrapOptions {
  /** The job this node joins (created by a controller). */
  readonly job: string;
  readonly coordinator: Coordinator;
  readonly transport: Transport;
  /** Default: a unique id. */
  readonly nodeId?: string;
  /** The session TTL. Default: 5 s, raised to the backend's minimum. */
  readonly sessionTtlMs?: number;
  /** The task slot to try first (a hint; any free slot is taken). */
  readonly preferredTask?: number;
  /** Deadline of one data-request attempt. Default 10 s. */
  readonly attemptTimeoutMs?: number;
  /** The largest meta string, in UTF-8 bytes. Default 1024. */
  readonly maxMetaBytes?: number;
  /** How long `stop()` lets requests in flight finish. Default 2 s. */
  readonly drainMs?: number;
  readonly clock?: Clock;
  readonly logger?: Logger;
}

/** Counters for logs, tests and benchmarks. */
export interface NodeStats {
  /** Requests this node served. */
  served: number;
  /** Requests refused because this node is not (or no longer) the task's owner, its lease lost. */
  rejectedNotOwner: number;
  /** Requests refused because they named another epoch. */
  rejectedEpoch: number;
  /** Finished handlers whose answers were dropped because the lease or epoch ended meanwhile. */
  fencedLateResults: number;
  /** Data-request attempts that were retried. */
  retries: number;
  /** Store writes this node made (by kind). */
  writes: { epoch: number; meta: number; addr: number; incarnation: number; status: number; node: number };
}

export type Phase = 'new' | 'starting' | 'standby' | 'running' | 'leaving' | 'done';

type LeaveReason = NodeOutcome['reason'] | 'failed';

const enc = new TextEncoder();

/**
 * Builds an error without capturing a stack trace: epoch ends abort every node's
 * context at once, and a stack per node per epoch was a measurable share of the cost.
 */
function withoutStack<T>(make: () => T): T {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return make();
  } finally {
    Error.stackTraceLimit = limit;
  }
}

export class TaskGraphNode implements Bootstrap, Framework {
  readonly nodeId: string;
  readonly stats: NodeStats = {
    served: 0,
    rejectedNotOwner: 0,
    rejectedEpoch: 0,
    fencedLateResults: 0,
    retries: 0,
    writes: { epoch: 0, meta: 0, addr: 0, incarnation: 0, status: 0, node: 0 },
  };

  private readonly job: string;
  private readonly coordinator: Coordinator;
  private readonly transport: Transport;
  private readonly clock: Clock;
  private logger: Logger;
  private readonly attemptTimeoutMs: number;
  private readonly maxMetaBytes: number;
  private readonly drainMs: number;
  private readonly ttlMs: number;
  private readonly preferredTask: number | undefined;

  private builder: TaskBuilder | undefined;
  private readonly linkages = new Map<string, Topology>();
  private phase: Phase = 'new';
  private spec: JobSpec | undefined;

  private session: Session | undefined;
  private server: TransportServer | undefined;
  private lock: Lock | undefined;
  private task: Task | undefined;
  private taskId: number | undefined;
  private tokenStr = '';
  private incarnation = 0;
  private methods = new Map<string, AnyMethodHandler>();

  private epoch = -1;
  private epochVersion: Version | undefined;
  /** The context handed to callbacks and handlers of the current epoch: one per epoch. */
  private scope: EpochScope = epochScope(0);
  /** Request ids are a prefix unique to this node object and a sequence number: no clock read or random draw per request. */
  private readonly requestPrefix = `${randomBytes(6).toString('base64url')}-`;
  private requestSeq = 0;
  private jobDone = false;

  private readonly life = new AbortController();
  private readonly watches: WatchedPrefix[] = [];
  private readonly addrs = new Map<number, AddrValue>();
  private readonly addrChanged = new Notifier();
  private readonly slotsChanged = new Notifier();
  private queue: CallbackQueue | undefined;
  private readonly delivered = new Set<string>();
  private readonly pendingMeta = new Map<number, Array<{ from: number; linkType: string; meta: string }>>();
  /** Epochs in which metas were addressed to this task and not yet deleted. */
  private readonly metaEpochs = new Set<number>();
  /** Meta keys this incarnation created (so a second flag goes straight to compare-and-set). */
  private readonly metaKeysWritten = new Set<string>();

  private leaving: Promise<void> | undefined;
  private outcome: { resolve: (o: NodeOutcome) => void; reject: (e: unknown) => void } | undefined;
  private readonly done: Promise<NodeOutcome>;

  constructor(options: BootstrapOptions) {
    assertValidJobName(options.job);
    this.job = options.job;
    this.nodeId = options.nodeId ?? uniqueId('node');
    assertValidNodeId(this.nodeId);
    this.coordinator = options.coordinator;
    this.transport = options.transport;
    this.clock = options.clock ?? systemClock;
    this.logger = (options.logger ?? createLogger()).child({ job: this.job, node: this.nodeId });
    this.attemptTimeoutMs = positive(options.attemptTimeoutMs, 10_000, 'attemptTimeoutMs');
    this.maxMetaBytes = positive(options.maxMetaBytes, 1024, 'maxMetaBytes');
    this.drainMs = positive(options.drainMs, 2000, 'drainMs', true);
    const [minTtl, maxTtl] = this.coordinator.caps.ttlRangeMs;
    this.ttlMs = options.sessionTtlMs ?? Math.min(maxTtl, Math.max(minTtl, 5000));
    this.preferredTask = options.preferredTask;
    this.done = new Promise<NodeOutcome>((resolve, reject) => {
      this.outcome = { resolve, reject };
    });
    // start() is what callers await; a failure before it is awaited must not be unhandled.
    this.done.catch(() => undefined);
  }

  // ---------------------------------------------------------------- Bootstrap

  setTaskBuilder(builder: TaskBuilder): void {
    if (this.phase !== 'new') throw new InvalidArgumentError('setTaskBuilder() must be called before start()');
    if (!builder || typeof builder.getTask !== 'function') throw new InvalidArgumentError('setTaskBuilder() needs an object with getTask(taskId)');
    this.builder = builder;
  }

  addLinkage(linkType: string, topology: Topology): void {
    if (this.phase !== 'new') throw new InvalidArgumentError('addLinkage() must be called before start()');
    assertValidLinkType(linkType);
    if (!topology || typeof topology.getNeighbors !== 'function' || typeof topology.setTaskId !== 'function') {
      throw new InvalidArgumentError(`addLinkage("${linkType}") needs a Topology (setTaskId and getNeighbors)`);
    }
    if (this.linkages.has(linkType)) throw new InvalidArgumentError(`link type "${linkType}" was added twice`);
    this.linkages.set(linkType, topology);
  }

  start(): Promise<NodeOutcome> {
    if (this.phase !== 'new') return Promise.reject(new InvalidArgumentError('start() was already called on this node'));
    if (!this.builder) return Promise.reject(new InvalidArgumentError('setTaskBuilder() must be called before start()'));
    this.phase = 'starting';
    this.run().catch((err: unknown) => {
      // A stop or a lease loss during start-up already decided how the node ends.
      if (!this.life.signal.aborted) this.fail(err);
    });
    return this.done;
  }

  async stop(reason = 'stop requested'): Promise<void> {
    if (this.phase === 'new') {
      this.phase = 'done';
      this.outcome?.resolve({ reason: 'stopped' });
      return;
    }
    if (this.leaving) return this.leaving;
    this.logger.info('stopping', { reason });
    await this.leave('stopped', this.drainMs);
  }

  // ---------------------------------------------------------------- Framework

  getJob(): string {
    return this.job;
  }

  getTaskId(): number {
    if (this.taskId === undefined) throw new InvalidArgumentError('this node has not claimed a task yet');
    return this.taskId;
  }

  getNumTasks(): number {
    if (!this.spec) throw new InvalidArgumentError('the job spec is not loaded yet');
    return this.spec.numTasks;
  }

  /** The task this node runs, if it has claimed one (undefined for a standby). */
  get currentTask(): number | undefined {
    return this.phase === 'running' ? this.taskId : undefined;
  }

  /** Where this node is in its life. */
  get state(): Phase {
    return this.phase;
  }

  getIncarnation(): number {
    return this.incarnation;
  }

  getEpoch(): number {
    return this.epoch;
  }

  getTopology(): ReadonlyMap<string, Topology> {
    return this.linkages;
  }

  getLogger(): Logger {
    return this.logger;
  }

  async flagMeta(ctx: EpochContext, linkType: string, meta: string): Promise<void> {
    this.checkEpoch(ctx);
    const topology = this.linkages.get(linkType);
    if (!topology) throw new InvalidArgumentError(`flagMeta: unknown link type "${linkType}" (added: ${[...this.linkages.keys()].join(', ') || 'none'})`);
    if (typeof meta !== 'string') throw new InvalidArgumentError('flagMeta: meta must be a string');
    const size = enc.encode(meta).length;
    if (size > this.maxMetaBytes) throw new InvalidArgumentError(`flagMeta: meta is ${size} bytes; the limit is ${this.maxMetaBytes}`);
    const neighbors = this.neighbors(topology, linkType, ctx.epoch);
    await Promise.all(neighbors.map((to) => this.writeMeta(ctx, to, linkType, meta)));
  }

  async incEpoch(ctx: EpochContext): Promise<void> {
    this.checkEpoch(ctx);
    const key = keys.epoch(this.job);
    const backoff = new Backoff();
    for (;;) {
      this.checkOwner('incEpoch');
      if (this.epoch !== ctx.epoch) throw this.epochChanged(ctx.epoch);
      let version = this.epochVersion;
      try {
        if (version === undefined) {
          const e = await this.coordinator.get(key);
          if (!e) throw new DecodeFailedError(`the job's epoch key ${key} is missing`);
          const current = decodeEpoch(key, e.value);
          if (current !== ctx.epoch) throw this.epochChanged(ctx.epoch, current);
          version = e.version;
        }
        this.checkOwner('incEpoch');
        this.stats.writes.epoch++;
        await this.coordinator.update(key, encodeEpoch(ctx.epoch + 1), version);
        this.logger.debug('epoch advanced', { from: ctx.epoch, to: ctx.epoch + 1 });
        return;
      } catch (err) {
        if (TaskGraphError.is(err, 'CONFLICT', 'INDETERMINATE', 'NOT_FOUND')) {
          const e = await this.coordinator.get(key);
          const current = e ? decodeEpoch(key, e.value) : undefined;
          if (current === ctx.epoch && e) {
            this.epochVersion = e.version;
            continue;
          }
          if (current === ctx.epoch + 1 && TaskGraphError.is(err, 'INDETERMINATE')) return;
          throw this.epochChanged(ctx.epoch, current);
        }
        if (TaskGraphError.is(err) && err.retryable) {
          await sleep(this.clock, backoff.next(), ctx.signal);
          continue;
        }
        throw err;
      }
    }
  }

  async dataRequest<I, O>(ctx: EpochContext, toTask: number, method: MethodSpec<I, O>, input: I, options: DataRequestOptions = {}): Promise<O> {
    this.checkEpoch(ctx);
    this.checkTaskId(toTask, 'dataRequest');
    if (!method || typeof method.name !== 'string' || !method.input || !method.output) {
      throw new InvalidArgumentError('dataRequest needs a MethodSpec ({ name, input, output })');
    }
    let payload: Uint8Array;
    try {
      payload = method.input.encode(input);
    } catch (err) {
      if (TaskGraphError.is(err)) throw err;
      throw new InvalidArgumentError(`dataRequest ${method.name}: cannot encode the input with ${method.input.name}: ${(err as Error).message}`, { cause: err });
    }
    const callOptions = { timeoutMs: options.attemptTimeoutMs ?? this.attemptTimeoutMs, signal: ctx.signal };
    const requestId = this.requestPrefix + String(++this.requestSeq);
    const backoff = new Backoff(10, 1000);
    const from = this.taskId ?? -1;
    for (let attempt = 0; ; attempt++) {
      if (ctx.signal.aborted) throw abortError(ctx.signal, 'dataRequest');
      if (attempt > 0) this.stats.retries++;
      const target = this.addrs.get(toTask);
      if (!target) {
        await this.waitForAddress(ctx.signal, backoff.next());
        continue;
      }
      let out: Uint8Array;
      try {
        out = await this.transport.call(
          target.address,
          method.name,
          { job: this.job, from, to: toTask, epoch: ctx.epoch, token: target.token, requestId },
          payload,
          callOptions,
        );
      } catch (err) {
        if (ctx.signal.aborted) throw abortError(ctx.signal, 'dataRequest');
        if (TaskGraphError.is(err, 'EPOCH_CHANGED')) {
          const theirs = (err as EpochChangedError).currentEpoch;
          if (theirs !== undefined && theirs > ctx.epoch) throw this.epochChanged(ctx.epoch, theirs);
          // The target has not entered our epoch yet: it will.
          await sleep(this.clock, backoff.next(), ctx.signal);
          continue;
        }
        if (TaskGraphError.is(err, 'NOT_OWNER', 'UNAVAILABLE')) {
          this.logger.debug('data request: target not reachable at its address; re-resolving', {
            to: toTask,
            method: method.name,
            address: target.address,
            code: err.code,
          });
          await this.waitForAddress(ctx.signal, backoff.next());
          continue;
        }
        if (TaskGraphError.is(err) && err.retryable) {
          await sleep(this.clock, backoff.next(), ctx.signal);
          continue;
        }
        throw err;
      }
      let output: O;
      try {
        output = method.output.decode(out);
      } catch (err) {
        if (TaskGraphError.is(err)) throw err;
        throw new DecodeFailedError(`dataRequest ${method.name} from task ${toTask}: cannot decode the output: ${(err as Error).message}`, { cause: err });
      }
      const task = this.task;
      if (task?.dataReady) {
        const dataReady = task.dataReady.bind(task);
        this.enqueue(ctx.epoch, () => dataReady(ctx, toTask, method.name, output));
      }
      return output;
    }
  }

  async kill(): Promise<void> {
    this.logger.info('killed');
    await this.leave('killed', 0);
  }

  async shutdownJob(): Promise<void> {
    const key = keys.status(this.job);
    const value = encodeJson({ state: 'done', updated: new Date().toISOString(), by: this.nodeId });
    const backoff = new Backoff();
    for (;;) {
      try {
        const e = await this.coordinator.get(key);
        if (e && decodeStatus(key, e.value).state === 'done') break;
        this.stats.writes.status++;
        if (e) await this.coordinator.update(key, value, e.version);
        else await this.coordinator.create(key, value);
        break;
      } catch (err) {
        if (TaskGraphError.is(err, 'CONFLICT', 'ALREADY_EXISTS', 'NOT_FOUND', 'INDETERMINATE') || (TaskGraphError.is(err) && err.retryable)) {
          if (this.life.signal.aborted) throw new ClosedError('shutdownJob: the node stopped before the job was marked done');
          await sleep(this.clock, backoff.next(), this.life.signal);
          continue;
        }
        throw err;
      }
    }
    this.logger.info('job shut down', { epoch: this.epoch });
    this.jobDone = true;
    void this.leave('job-done', this.drainMs);
  }

  // ---------------------------------------------------------------- lifecycle

  private async run(): Promise<void> {
    const session = await this.coordinator.openSession({ ttlMs: this.ttlMs });
    this.session = session;
    session.lost.addEventListener('abort', () => this.onLeaseLost(session.lost.reason), { once: true });
    this.spec = await this.waitForSpec();
    for (const lt of this.linkages.keys()) {
      if (!this.spec.linkTypes.includes(lt)) {
        throw new InvalidArgumentError(`link type "${lt}" is not declared by job ${this.job} (declared: ${this.spec.linkTypes.join(', ')})`);
      }
    }
    this.server = await this.transport.listen({ handler: (req) => this.serveRequest(req), methods: [] });
    this.logger = this.logger.child({ address: this.server.address });
    this.stats.writes.node++;
    await this.coordinator.create(
      keys.node(this.job, this.nodeId),
      encodeJson({ nodeId: this.nodeId, address: this.server.address, pid: process.pid, host: hostname(), started: new Date().toISOString() }),
      { session },
    );
    await this.follow(keys.state(this.job), {
      snapshot: (entries) => {
        for (const e of entries) this.onStateKey(e.key, e.value, e.version);
      },
      event: (ev) => {
        if (ev.type === 'put') this.onStateKey(ev.key, ev.value, ev.version);
      },
    });
    await this.follow(keys.tasks(this.job), {
      snapshot: (entries) => this.onTasksSnapshot(entries),
      event: (ev) => this.onTasksEvent(ev),
    });
    if (this.jobDone) {
      await this.leave('job-done', 0);
      return;
    }
    if (this.phase === 'leaving') return;
    this.logger.info('joined job', { epoch: this.epoch, tasks: this.spec.numTasks });
    await this.claimLoop();
  }

  private async waitForSpec(): Promise<JobSpec> {
    const key = keys.spec(this.job);
    let logged = false;
    for (;;) {
      const e = await this.coordinator.get(key);
      if (e) return decodeSpec(key, e.value);
      if (!logged) {
        this.logger.info('waiting for the job to be created', { key });
        logged = true;
      }
      const ctrl = new AbortController();
      const onLife = () => ctrl.abort(this.life.signal.reason);
      this.life.signal.addEventListener('abort', onLife, { once: true });
      const timer = this.clock.setTimeout(() => ctrl.abort(), 2000);
      timer.unref?.();
      try {
        for await (const batch of this.coordinator.watch(key, { signal: ctrl.signal })) {
          if (batch.events.some((ev) => ev.type === 'put' && ev.key === key)) break;
        }
      } catch (err) {
        if (!TaskGraphError.is(err) || !err.retryable) throw err;
      } finally {
        this.clock.clearTimeout(timer);
        this.life.signal.removeEventListener('abort', onLife);
      }
      if (this.life.signal.aborted) throw abortError(this.life.signal, 'waiting for the job');
    }
  }

  private async follow(prefix: string, handlers: { snapshot(entries: readonly Entry[]): void; event(ev: WatchEvent): void }): Promise<void> {
    const w = new WatchedPrefix(this.coordinator, prefix, handlers, this.clock, this.logger);
    this.watches.push(w);
    await w.start(this.life.signal);
  }

  private async claimLoop(): Promise<void> {
    const n = this.spec!.numTasks;
    this.phase = 'standby';
    let announced = false;
    while (this.phase === 'standby' && !this.life.signal.aborted) {
      const start = this.preferredTask !== undefined && this.preferredTask >= 0 && this.preferredTask < n ? this.preferredTask : Math.floor(Math.random() * n);
      for (let i = 0; i < n && this.phase === 'standby'; i++) {
        const id = (start + i) % n;
        if (this.addrs.has(id)) continue;
        const lock = await this.coordinator.tryAcquire(keys.taskLock(this.job, id), this.session!, { owner: this.nodeId });
        if (!lock) continue;
        if (this.jobDone || this.life.signal.aborted || (await this.jobIsDone())) {
          await lock.release();
          return;
        }
        await this.runTask(id, lock);
        return;
      }
      if (!announced) {
        this.logger.info('all tasks are taken; waiting as a standby');
        announced = true;
      }
      try {
        await this.slotsChanged.wait(this.clock, Math.max(200, this.ttlMs / 2), this.life.signal);
      } catch {
        return;
      }
    }
  }

  private async jobIsDone(): Promise<boolean> {
    const key = keys.status(this.job);
    const e = await this.coordinator.get(key);
    return e !== undefined && decodeStatus(key, e.value).state === 'done';
  }

  private async runTask(id: number, lock: Lock): Promise<void> {
    this.lock = lock;
    this.taskId = id;
    this.tokenStr = lock.token.toString();
    lock.lost.addEventListener(
      'abort',
      () => {
        if (this.lock === lock) this.onLeaseLost(lock.lost.reason);
      },
      { once: true },
    );
    this.incarnation = await this.bumpIncarnation(id);
    this.logger = this.logger.child({ task: id });
    this.logger.info('claimed task', { token: this.tokenStr, incarnation: this.incarnation });

    const task = this.builder!.getTask(id);
    if (!task || typeof task.init !== 'function') throw new InvalidArgumentError(`the TaskBuilder returned no Task for task ${id}`);
    for (const topology of this.linkages.values()) topology.setTaskId(id);
    this.task = task;
    this.queue = new CallbackQueue((err) => this.onCallbackError(err));
    await task.init(id, this);
    this.methods = new Map();
    for (const m of task.methods ?? []) {
      if (this.methods.has(m.spec.name)) throw new InvalidArgumentError(`task ${id} declares method "${m.spec.name}" twice`);
      this.methods.set(m.spec.name, m);
    }
    this.server!.serve([...this.methods.keys()]);
    if (this.life.signal.aborted) return;
    this.phase = 'running';
    await this.publishAddress(id);
    // The current epoch first, then the metas already waiting for it.
    this.enterEpoch(this.epoch);
    await this.follow(keys.metaFor(this.job, id), {
      snapshot: (entries) => {
        for (const e of entries) this.onMetaKey(e.key, e.value);
      },
      event: (ev) => {
        if (ev.type === 'put') this.onMetaKey(ev.key, ev.value);
      },
    });
  }

  private async bumpIncarnation(id: number): Promise<number> {
    const key = keys.incarnation(this.job, id);
    for (;;) {
      const e = await this.coordinator.get(key);
      let next = 1;
      if (e) {
        try {
          next = decodeCount(key, e.value) + 1;
        } catch (err) {
          this.logger.warn('resetting a corrupt incarnation counter', { key, error: (err as Error).message });
        }
      }
      this.stats.writes.incarnation++;
      try {
        if (e) await this.coordinator.update(key, encodeJson(next), e.version);
        else await this.coordinator.create(key, encodeJson(next));
        return next;
      } catch (err) {
        if (!TaskGraphError.is(err, 'CONFLICT', 'ALREADY_EXISTS', 'NOT_FOUND')) throw err;
      }
    }
  }

  private async publishAddress(id: number): Promise<void> {
    const key = keys.addr(this.job, id);
    const value: AddrValue = { nodeId: this.nodeId, address: this.server!.address, token: this.tokenStr, incarnation: this.incarnation };
    for (let i = 0; ; i++) {
      this.checkOwner('publishing the task address');
      this.stats.writes.addr++;
      try {
        await this.coordinator.create(key, encodeJson(value), { session: this.session! });
        this.addrs.set(id, value);
        return;
      } catch (err) {
        if (!TaskGraphError.is(err, 'ALREADY_EXISTS') || i > 20) throw err;
      }
      // A predecessor's address outlives its lock only until its session ends; we
      // hold the lock now, so the old record is stale and is removed.
      const old = await this.coordinator.get(key);
      if (old) {
        this.logger.info("removing the previous incarnation's address", { key });
        try {
          await this.coordinator.delete(key, old.version);
        } catch (err) {
          if (!TaskGraphError.is(err, 'CONFLICT', 'NOT_FOUND')) throw err;
        }
      }
    }
  }

  private onLeaseLost(reason: unknown): void {
    if (this.phase === 'leaving' || this.phase === 'done') return;
    if (TaskGraphError.is(reason, 'CLOSED')) return;
    this.logger.warn('session lost: leaving the task so that a standby can take it over', {
      reason: reason instanceof Error ? reason.message : String(reason),
    });
    void this.leave('lease-lost', 0);
  }

  private onCallbackError(err: unknown): void {
    if (TaskGraphError.is(err, 'EPOCH_CHANGED', 'ABORTED', 'CLOSED') || this.phase === 'leaving') {
      this.logger.debug('callback ended by the end of its epoch', { error: (err as Error).message });
      return;
    }
    this.logger.error('task callback failed: the node leaves and a standby takes the task over', {
      error: err instanceof Error ? `${err.name}: ${err.message}` : String(err),
    });
    this.fail(err);
  }

  private fail(err: unknown): void {
    if (this.phase === 'done') return;
    if (this.phase !== 'leaving') {
      this.logger.error('node failed', { error: err instanceof Error ? `${err.name}: ${err.message}` : String(err) });
      void this.leave('failed', 0, err);
      return;
    }
    this.logger.error('node failed while leaving', { error: err instanceof Error ? err.message : String(err) });
  }

  private leave(reason: LeaveReason, graceMs: number, error?: unknown): Promise<void> {
    if (this.leaving) return this.leaving;
    const taskId = this.taskId;
    this.phase = 'leaving';
    this.leaving = (async () => {
      const why = reason === 'failed' ? new ClosedError('the node failed') : new ClosedError(`the node is leaving (${reason})`);
      this.life.abort(why);
      this.scope.end(() => why);
      const q = this.queue;
      if (q) {
        const running = q.running;
        const closed = q.close();
        // While a callback runs, the caller is almost always that callback (kill() or a
        // lease loss seen from inside it): waiting for it would wait for ourselves.
        if (!running) await withTimeout(this.clock, closed, graceMs + 1000);
      }
      this.logger.debug('leaving: callbacks ended');
      const cleanup: Array<Promise<unknown>> = [];
      if (this.task) {
        try {
          await this.task.exit();
        } catch (err) {
          this.logger.warn('task exit() threw', { error: (err as Error).message });
        }
      }
      if (this.server) cleanup.push(this.server.close({ graceMs }));
      cleanup.push(...this.watches.map((w) => w.stop()));
      await Promise.allSettled(cleanup);
      this.logger.debug('leaving: server and watches stopped');
      if (this.session) {
        // Closing the session releases the lock and deletes this node's ephemeral keys in
        // one step, so a standby can claim the task at once. A store that cannot be reached
        // ends the session at its TTL instead; leaving never waits on it for longer.
        const closing = this.session.close().catch((err: unknown) => {
          this.logger.debug('closing the session failed (it ends at its TTL)', { error: (err as Error).message });
        });
        const boundMs = this.ttlMs + 5000;
        if (!(await withTimeout(this.clock, closing, boundMs))) {
          this.logger.warn('the store did not confirm the end of the session; it ends at its TTL', { waitedMs: boundMs });
        }
      }
      this.phase = 'done';
      this.logger.info('left', { reason });
      if (reason === 'failed') this.outcome?.reject(error);
      else this.outcome?.resolve(taskId === undefined ? { reason } : { reason, taskId });
    })();
    return this.leaving;
  }

  // ---------------------------------------------------------------- store events

  private onStateKey(key: string, value: Uint8Array, version: Version): void {
    try {
      if (key === keys.epoch(this.job)) {
        this.epochVersion = version;
        this.setEpoch(decodeEpoch(key, value));
      } else if (key === keys.status(this.job)) {
        const status = decodeStatus(key, value);
        if (status.state !== 'running' && !this.jobDone) {
          this.jobDone = true;
          this.logger.info('job finished', { state: status.state, ...(status.reason ? { reason: status.reason } : {}) });
          this.slotsChanged.notify();
          if (this.phase !== 'starting') void this.leave('job-done', this.drainMs);
        }
      }
    } catch (err) {
      this.logger.error('ignoring a corrupt job state value', { key, error: (err as Error).message });
    }
  }

  private setEpoch(epoch: number): void {
    if (epoch === this.epoch) return;
    if (epoch < this.epoch) {
      this.logger.error('the epoch went backwards in the store (restored from an old backup?); following it', { from: this.epoch, to: epoch });
    }
    const old = this.epoch;
    this.scope.end(() => withoutStack(() => new EpochChangedError(`epoch ${old} is over`, { details: { current: epoch } })));
    this.scope = epochScope(epoch);
    this.epoch = epoch;
    for (const id of this.delivered) {
      if (Number(id.slice(0, id.indexOf('|'))) < epoch) this.delivered.delete(id);
    }
    for (const e of this.pendingMeta.keys()) if (e < epoch) this.pendingMeta.delete(e);
    this.metaKeysWritten.clear();
    if (this.phase === 'running') {
      this.enterEpoch(epoch);
      this.cleanupMeta(epoch);
    }
  }

  private enterEpoch(epoch: number): void {
    const task = this.task!;
    const ctx = this.context();
    this.enqueue(epoch, () => task.enterEpoch(ctx, epoch));
    const pending = this.pendingMeta.get(epoch);
    if (pending) {
      this.pendingMeta.delete(epoch);
      for (const p of pending) this.deliverMeta(epoch, p.from, p.linkType, p.meta);
    }
  }

  /**
   * Deletes this task's metas of the epochs before `current` that had any (known from
   * the meta watch), after the new epoch's enterEpoch has been queued: off the path of
   * the epoch change, and no write at all for epochs without metas.
   */
  private cleanupMeta(current: number): void {
    const taskId = this.taskId;
    if (taskId === undefined) return;
    const old = [...this.metaEpochs].filter((e) => e < current);
    if (old.length === 0) return;
    for (const e of old) this.metaEpochs.delete(e);
    this.queue?.push(
      () => {
        for (const e of old) {
          this.coordinator.deletePrefix(keys.metaEpoch(this.job, taskId, e)).catch((err: unknown) => {
            this.logger.debug('could not delete an old epoch’s metas (they are ignored)', { epoch: e, error: (err as Error).message });
          });
        }
      },
      () => true,
    );
  }

  private onTasksSnapshot(entries: readonly Entry[]): void {
    const seen = new Set<number>();
    for (const e of entries) {
      const k = parseTaskKey(this.job, e.key);
      if (k?.kind !== 'addr') continue;
      try {
        this.addrs.set(k.task, decodeAddr(e.key, e.value));
        seen.add(k.task);
      } catch (err) {
        this.logger.warn('ignoring a corrupt task address', { key: e.key, error: (err as Error).message });
      }
    }
    for (const [id, a] of [...this.addrs]) {
      if (!seen.has(id)) {
        this.addrs.delete(id);
        this.transport.forget(a.address);
      }
    }
    this.addrChanged.notify();
    this.slotsChanged.notify();
  }

  private onTasksEvent(ev: WatchEvent): void {
    const k = parseTaskKey(this.job, ev.key);
    if (k?.kind !== 'addr') return;
    const old = this.addrs.get(k.task);
    if (ev.type === 'put') {
      try {
        const a = decodeAddr(ev.key, ev.value);
        this.addrs.set(k.task, a);
        if (old && old.address !== a.address && ![...this.addrs.values()].some((x) => x.address === old.address)) {
          this.transport.forget(old.address);
        }
      } catch (err) {
        this.logger.warn('ignoring a corrupt task address', { key: ev.key, error: (err as Error).message });
      }
    } else {
      this.addrs.delete(k.task);
      this.slotsChanged.notify();
    }
    this.addrChanged.notify();
  }

  private onMetaKey(key: string, value: Uint8Array): void {
    const mk = parseMetaKey(this.job, key);
    if (!mk || mk.to !== this.taskId) return;
    this.metaEpochs.add(mk.epoch);
    let mv: MetaValue;
    try {
      mv = decodeMeta(key, value);
    } catch (err) {
      this.logger.warn('ignoring a corrupt meta value', { key, error: (err as Error).message });
      return;
    }
    const sender = this.addrs.get(mk.from);
    if (sender && BigInt(sender.token) > BigInt(mv.token)) return; // from a dead incarnation
    for (const meta of mv.metas) this.deliverMeta(mk.epoch, mk.from, mk.linkType, meta);
  }

  private deliverMeta(epoch: number, from: number, linkType: string, meta: string): void {
    if (epoch < this.epoch) return;
    if (epoch > this.epoch) {
      let list = this.pendingMeta.get(epoch);
      if (!list) this.pendingMeta.set(epoch, (list = []));
      list.push({ from, linkType, meta });
      return;
    }
    const id = `${epoch}|${from}|${linkType}|${meta}`;
    if (this.delivered.has(id)) return;
    this.delivered.add(id);
    const task = this.task!;
    const ctx = this.context();
    this.enqueue(epoch, () => task.metaReady(ctx, from, linkType, meta));
  }

  // ---------------------------------------------------------------- serving

  private async serveRequest(req: InboundRequest): Promise<Uint8Array> {
    const m = req.meta;
    if (m.job !== this.job) {
      this.stats.rejectedNotOwner++;
      throw new NotOwnerError(`this node serves job ${this.job}, not ${m.job}`);
    }
    if (this.phase !== 'running' || m.to !== this.taskId || m.token !== this.tokenStr || this.session!.isLost()) {
      this.stats.rejectedNotOwner++;
      throw new NotOwnerError(`this node does not run task ${m.to} with token ${m.token}`, {
        details: { task: m.to, ...(this.taskId === m.to && this.phase === 'running' ? { token: this.tokenStr } : {}) },
      });
    }
    if (m.epoch !== this.epoch) {
      this.stats.rejectedEpoch++;
      throw new EpochChangedError(`task ${m.to} is in epoch ${this.epoch}, the request is for epoch ${m.epoch}`, {
        details: { current: this.epoch, requested: m.epoch },
      });
    }
    const handler = this.methods.get(req.method);
    if (!handler) throw new MethodNotFoundError(`task ${m.to} does not serve method "${req.method}"`);
    let input: unknown;
    try {
      input = handler.spec.input.decode(req.payload);
    } catch (err) {
      if (TaskGraphError.is(err, 'DECODE_FAILED')) throw err;
      throw new DecodeFailedError(`method ${req.method}: cannot decode the input: ${(err as Error).message}`, { cause: err });
    }
    const ctx = this.context();
    const output = await handler.handle(ctx, input, m.from);
    // Late work is fenced: if the lease or the epoch ended while the handler ran,
    // its answer may be stale and a successor may already be serving.
    if (this.phase !== 'running' || this.session!.isLost() || m.token !== this.tokenStr) {
      this.stats.fencedLateResults++;
      throw new NotOwnerError(`task ${m.to} lost its lease while serving ${req.method}`, { details: { task: m.to } });
    }
    if (this.epoch !== m.epoch) {
      this.stats.fencedLateResults++;
      throw new EpochChangedError(`epoch ${m.epoch} ended while serving ${req.method}`, { details: { current: this.epoch } });
    }
    this.stats.served++;
    return handler.spec.output.encode(output);
  }

  // ---------------------------------------------------------------- helpers

  private context(): EpochContext {
    return this.scope.context;
  }

  private enqueue(epoch: number, run: () => void | Promise<void>): void {
    this.queue?.push(run, () => this.phase === 'running' && this.epoch === epoch);
  }

  private checkEpoch(ctx: EpochContext): void {
    // The current epoch's own context: checked without making its signal.
    if (ctx === this.scope.context && !this.scope.ended) {
      if (this.phase === 'leaving' || this.phase === 'done') throw new ClosedError('the node has left');
      return;
    }
    if (!ctx || typeof ctx.epoch !== 'number' || !(ctx.signal instanceof AbortSignal)) {
      throw new InvalidArgumentError('pass the EpochContext your callback received');
    }
    if (this.phase === 'leaving' || this.phase === 'done') throw new ClosedError('the node has left');
    if (ctx.signal.aborted) throw abortError(ctx.signal);
    if (ctx.epoch !== this.epoch) throw this.epochChanged(ctx.epoch);
  }

  private checkOwner(what: string): void {
    if (this.session?.isLost() || this.phase === 'leaving' || this.phase === 'done') {
      throw new LeaseLostError(`${what}: this node's session is lost; it no longer runs task ${this.taskId ?? '-'}`);
    }
  }

  private checkTaskId(id: number, what: string): void {
    const n = this.spec?.numTasks ?? 0;
    if (!Number.isInteger(id) || id < 0 || id >= n) throw new InvalidArgumentError(`${what}: task ${id} does not exist (tasks are 0..${n - 1})`);
  }

  private neighbors(topology: Topology, linkType: string, epoch: number): readonly number[] {
    const list = topology.getNeighbors(epoch);
    for (const id of list) this.checkTaskId(id, `topology "${linkType}"`);
    return list;
  }

  private epochChanged(asked: number, current: number | undefined = this.epoch): EpochChangedError {
    return new EpochChangedError(`epoch ${asked} is over (the job is in epoch ${current ?? 'unknown'})`, {
      details: current === undefined ? { requested: asked } : { current, requested: asked },
    });
  }

  private async waitForAddress(signal: AbortSignal, ms: number): Promise<void> {
    try {
      await this.addrChanged.wait(this.clock, ms, signal);
    } catch {
      throw abortError(signal, 'dataRequest');
    }
  }

  private async writeMeta(ctx: EpochContext, to: number, linkType: string, meta: string): Promise<void> {
    const key = keys.meta(this.job, to, ctx.epoch, this.taskId!, linkType);
    const backoff = new Backoff();
    for (;;) {
      if (ctx.signal.aborted) throw abortError(ctx.signal, 'flagMeta');
      this.checkOwner('flagMeta');
      try {
        // Most flags are the first of their (epoch, receiver, link type): try to create.
        if (!this.metaKeysWritten.has(key)) {
          try {
            this.stats.writes.meta++;
            await this.coordinator.create(key, encodeJson({ token: this.tokenStr, metas: [meta] }), { session: this.session! });
            this.metaKeysWritten.add(key);
            return;
          } catch (err) {
            if (!TaskGraphError.is(err, 'ALREADY_EXISTS')) throw err;
            this.metaKeysWritten.add(key);
          }
        }
        const existing = await this.coordinator.get(key);
        if (!existing) {
          this.metaKeysWritten.delete(key);
          continue;
        }
        let current: MetaValue;
        try {
          current = decodeMeta(key, existing.value);
        } catch {
          current = { token: this.tokenStr, metas: [] };
        }
        if (current.token === this.tokenStr && current.metas.includes(meta)) return;
        const metas = current.token === this.tokenStr ? [...current.metas, meta] : [meta];
        this.stats.writes.meta++;
        await this.coordinator.update(key, encodeJson({ token: this.tokenStr, metas }), existing.version);
        return;
      } catch (err) {
        if (TaskGraphError.is(err, 'NOT_FOUND')) this.metaKeysWritten.delete(key);
        if (TaskGraphError.is(err, 'CONFLICT', 'NOT_FOUND', 'INDETERMINATE') || (TaskGraphError.is(err) && err.retryable)) {
          await sleep(this.clock, backoff.next(), ctx.signal);
          continue;
        }
        throw err;
      }
    }
  }
}

function positive(v: number | undefined, dflt: number, name: string, zeroOk = false): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || (!zeroOk && v === 0)) {
    throw new InvalidArgumentError(`${name} must be a ${zeroOk ? 'non-negative' : 'positive'} number of ms, got ${String(v)}`);
  }
  return v;
}

interface EpochScope {
  readonly context: EpochContext;
  readonly ended: boolean;
  /** Ends the epoch: its signal, if anyone made it, aborts with `reason()`; one made later is born aborted. */
  end(reason: () => Error): void;
}

/**
 * An epoch's context, whose AbortSignal is made only when first read: most epochs
 * of most tasks never read it, and making, aborting and dispatching a signal (and
 * building its reason) for every task at every epoch is a good part of an epoch
 * change's CPU when many nodes share a process. The getter is an own enumerable
 * property, so a spread copy of the context still has its signal.
 */
function epochScope(epoch: number): EpochScope {
  let controller: AbortController | undefined;
  let reason: (() => Error) | undefined;
  const context: EpochContext = {
    epoch,
    get signal(): AbortSignal {
      if (controller === undefined) {
        controller = new AbortController();
        // Every data request in flight listens on the epoch's signal; dozens at once are normal.
        setMaxListeners(0, controller.signal);
        if (reason !== undefined) controller.abort(reason());
      }
      return controller.signal;
    },
  };
  return {
    context,
    get ended() {
      return reason !== undefined;
    },
    end(why) {
      if (reason !== undefined) return;
      reason = why;
      controller?.abort(why());
    },
  };
}

/** Waits for `p` at most `ms`; true when it settled in time. */
async function withTimeout(clock: Clock, p: Promise<void>, ms: number): Promise<boolean> {
  let timer: ReturnType<Clock['setTimeout']> | undefined;
  const settled = await Promise.race([
    p.then(() => true),
    new Promise<boolean>((resolve) => {
      timer = clock.setTimeout(() => resolve(false), ms);
      timer.unref?.();
    }),
  ]);
  if (timer) clock.clearTimeout(timer);
  return settled;
}

/** Creates a node. Wire the application with `setTaskBuilder` and `addLinkage`, then `start()`. */
export function createBootstrap(options: BootstrapOptions): TaskGraphNode {
  return new TaskGraphNode(options);
}
