/**
 * One TaskGraph node, the lifecycle shell: it joins the job (one session, the
 * spec, a transport server, its node record, the watches), claims a slot (a
 * task's primary, one of its backups) or waits as a cold standby, holds what it
 * claimed, and leaves cleanly. The work of each phase is done by the parts it
 * wires: the epoch tracker, the address book, the claimer, the task holder (the
 * running primary with its meta inbox, outbox and replicator, or a backup), the
 * data client and the request server.
 */
import { hostname } from 'node:os';
import { ClosedError, InvalidArgumentError, LeaseLostError, TaskGraphError, wallNow } from '@taskgraph/api';
import type { Bootstrap, Instrumentable, Logger, NodeEvent, NodeObserver, NodeOutcome, NodeRole, NodeSource, RequestHandler, Session, TaskBuilder, Topology, TransportServer } from '@taskgraph/api';
import { AddressBook } from './address-book.js';
import { deferred, withTimeout } from './async.js';
import { Claimer } from './claimer.js';
import type { DataClient } from './data-client.js';
import { EpochTracker } from './epoch.js';
import type { FrameworkHost } from './framework.js';
import { assertValidLinkType, backupSlotsOf, decodeSpec, encodeJson, keys } from './layout.js';
import type { JobStatusValue } from './layout.js';
import { JobState } from './job-state.js';
import { createLogger } from './logger.js';
import { nodeConfig } from './node-options.js';
import type { BootstrapOptions, NodeConfig } from './node-options.js';
import { RequestServer } from './request-server.js';
import { replicationHandler } from './replication-server.js';
import { META_PUSH_METHOD, metaPushHandler } from './meta-push.js';
import { holdsRequestedSlot } from './shared-server.js';
import { InstrumentedDataClient, Instruments, TimedCoordinator } from './instruments.js';
import { RetryBursts } from './retry-bursts.js';
import { TaskHolder } from './task-holder.js';
import type { HolderHost } from './task-holder.js';
import { newStats } from './stats.js';
import type { NodeStats } from './stats.js';
import { createReplacing, retryStore, waitForKey } from './store-ops.js';
import { WatchedPrefix } from './watched-prefix.js';
import type { PrefixHandlers } from './watched-prefix.js';

/** How long a node that lost its lease waits at most for application handlers still running (their answers are dropped). */
const HANDLER_DRAIN_MS = 2000;

export type { BootstrapOptions } from './node-options.js';
export type { NodeStats } from './stats.js';

export type Phase = 'new' | 'starting' | 'standby' | 'backup' | 'running' | 'leaving' | 'done';

/** The role a node reports to its observers in each phase. */
const ROLE_OF: Readonly<Record<Phase, NodeRole>> = { new: 'starting', starting: 'starting', standby: 'standby', backup: 'backup', running: 'primary', leaving: 'left', done: 'left' };

type LeaveReason = NodeOutcome['reason'] | 'failed';

export class TaskGraphNode implements Bootstrap, Instrumentable {
  readonly nodeId: string;
  readonly stats: NodeStats = newStats();

  private readonly config: NodeConfig;
  private logger: Logger;
  private builder: TaskBuilder | undefined;
  private readonly linkages = new Map<string, Topology>();
  private phase: Phase = 'new';

  private readonly life = new AbortController();
  private readonly epochs: EpochTracker;
  private readonly addresses: AddressBook;
  private readonly data: DataClient;
  private readonly watches: WatchedPrefix[] = [];
  /** Joining makes these, one after the other; leaving closes what was made. */
  private session: Session | undefined;
  private server: TransportServer | undefined;
  /** What this node holds of a task, once it claimed a slot. */
  private holder: TaskHolder | undefined;
  private jobDone = false;

  /** What every incarnation's framework calls back into. */
  private readonly frameworkHost: FrameworkHost;
  private leaving: Promise<void> | undefined;
  private requests: RequestServer | undefined;
  /** Why the node is leaving (once it is). */
  private leftFor: LeaveReason | undefined;
  private readonly outcome = deferred<NodeOutcome>();
  /** The node's observers (see `instrument`), the state they were told, and the retry bursts its log tells of. */
  private readonly instruments: Instruments;
  private lease: 'held' | 'lost' | 'released' | undefined;
  private readonly bursts: RetryBursts;

  constructor(options: BootstrapOptions) {
    const config = nodeConfig(options);
    const { job, transport } = config;
    this.nodeId = config.nodeId;
    this.logger = (options.logger ?? createLogger()).child({ job, node: this.nodeId });
    this.instruments = new Instruments(this.eventSource(job), () => this.logger);
    for (const o of typeof options.instruments === 'function' ? [options.instruments] : (options.instruments ?? [])) this.instruments.add(o);
    // Every store call is timed for the observers by a decorator: the parts do not know of it.
    this.config = { ...config, coordinator: new TimedCoordinator(config.coordinator, this.instruments, config.clock) };
    this.epochs = new EpochTracker({ ...this.config, stats: this.stats, logger: this.logger, onChange: (epoch) => this.onEpochChange(epoch) });
    this.addresses = this.config.addresses?.join(this.logger) ?? new AddressBook(job, transport, this.logger);
    const bursts = new RetryBursts({
      clock: this.config.clock,
      logger: () => this.logger,
      incarnation: () => this.getIncarnation(),
      targetIncarnation: (to) => this.addresses.get(to)?.incarnation,
    });
    this.bursts = bursts;
    this.data = new InstrumentedDataClient(
      {
        ...this.config,
        addresses: this.addresses,
        stats: this.stats,
        epochChanged: (asked, current) => this.epochs.changed(asked, current),
        logger: () => this.logger,
        onRetry: (to, method, reason) => {
          bursts.retrying(to, method, reason);
          if (this.instruments.active) this.instruments.emit({ type: 'request-retried', to, method, reason });
        },
        onRecovered: (to) => bursts.recovered(to),
      },
      this.instruments,
    );
    this.frameworkHost = {
      job,
      linkages: this.linkages,
      maxMetaBytes: this.config.maxMetaBytes,
      epochs: this.epochs,
      data: this.data,
      assertAlive: () => this.assertAlive(),
      assertOwner: (what) => this.assertOwner(what),
      kill: () => this.kill({ fromTask: true }),
      shutdownJob: () => this.shutdownJob(),
      addresses: this.addresses,
      coordinator: this.config.coordinator,
      clock: this.config.clock,
      onCallbackError: (err) => this.onCallbackError(err),
      instruments: this.instruments,
    };
    // start() is what callers await; a failure before it is awaited must not be unhandled.
    this.outcome.promise.catch(() => undefined);
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
    const builder = this.builder;
    if (!builder) return Promise.reject(new InvalidArgumentError('setTaskBuilder() must be called before start()'));
    this.phase = 'starting';
    this.roleChanged();
    this.run(builder).catch((err: unknown) => {
      // A stop or a lease loss during start-up already decided how the node ends.
      if (!this.life.signal.aborted) this.fail(err);
    });
    return this.outcome.promise;
  }

  async stop(reason = 'stop requested'): Promise<void> {
    if (this.phase === 'new') {
      this.phase = 'done';
      this.roleChanged('stopped');
      this.outcome.resolve({ reason: 'stopped' });
      return;
    }
    if (this.leaving) return this.leaving;
    this.logger.info('stopping', { reason });
    await this.leave('stopped', this.config.drainMs);
  }

  /** This node leaves now; its task is re-run elsewhere (its slot frees at once). */
  async kill(options: { fromTask?: boolean } = {}): Promise<void> {
    this.logger.info('killed');
    await this.leave('killed', 0, options);
  }

  /** Marks the job done: every node calls its task's `exit()` and stops. */
  async shutdownJob(): Promise<void> {
    await JobState.markDone(this.config.coordinator, this.config.job, this.nodeId, {
      clock: this.config.clock,
      signal: this.life.signal,
      logger: this.logger,
      onWrite: () => this.stats.writes.status++,
    });
    this.logger.info('job shut down', { epoch: this.epochs.epoch });
    this.jobDone = true;
    void this.leave('job-done', this.config.drainMs);
  }

  // ---------------------------------------------------------------- state

  /** The current epoch as this node knows it (-1 before it joined). */
  getEpoch(): number {
    return this.epochs.epoch;
  }

  /** The incarnation of the task this node runs as primary (0 otherwise). */
  getIncarnation(): number {
    return this.holder?.primary()?.incarnation ?? 0;
  }

  /** The task this node runs as its primary, if any (undefined for a backup or a standby). */
  get currentTask(): number | undefined {
    return this.phase === 'running' ? this.holder?.id : undefined;
  }

  /** The task this node holds a backup of, if any. */
  get backupOf(): number | undefined {
    return this.phase === 'backup' ? this.holder?.id : undefined;
  }

  /** Where this node is in its life. */
  get state(): Phase {
    return this.phase;
  }

  // ---------------------------------------------------------------- instrumentation

  /**
   * Adds an observer of this node's events (`NodeEvent` of `@taskgraph/api`). It is
   * told the node's current role, lease and epoch at once, then every event as it
   * happens; the function returned removes it. What it throws is ignored.
   */
  instrument(observer: NodeObserver): () => void {
    const remove = this.instruments.add(observer);
    this.instruments.tell(observer, this.roleEvent());
    if (this.lease) this.instruments.tell(observer, { type: 'lease', state: this.lease });
    if (this.epochs.epoch >= 0) this.instruments.tell(observer, { type: 'epoch', epoch: this.epochs.epoch });
    return remove;
  }

  private eventSource(job: string): NodeSource {
    // Read when an observer asks: the task the node holds then.
    const taskNow = (): number | undefined => this.holder?.id;
    return {
      job,
      node: this.nodeId,
      get task() {
        return taskNow();
      },
    };
  }

  private roleEvent(reason?: string): NodeEvent {
    const role = ROLE_OF[this.phase];
    const primary = role === 'primary' ? this.holder?.primary() : undefined;
    const token = primary ? primary.token : role === 'backup' ? this.holder?.backup()?.token : undefined;
    return { type: 'role', role, incarnation: primary?.incarnation ?? 0, token, ...(reason === undefined ? {} : { reason }) };
  }

  private roleChanged(reason?: string): void {
    if (this.instruments.active) this.instruments.emit(this.roleEvent(reason));
  }

  private setLease(state: 'held' | 'lost' | 'released'): void {
    this.lease = state;
    if (this.instruments.active) this.instruments.emit({ type: 'lease', state });
  }

  /** The node runs its task now: a failover if the task had an earlier incarnation (or this node was its backup). */
  private onRunning(from: Phase): void {
    const incarnation = this.holder?.primary()?.incarnation ?? 0;
    if (this.instruments.active && (from === 'backup' || incarnation > 1)) {
      this.instruments.emit({ type: 'failover', kind: from === 'backup' ? 'promotion' : 'takeover', incarnation });
    }
    this.roleChanged();
    this.server?.setServingStatus?.(this.nodeId, true);
  }

  // ---------------------------------------------------------------- joining

  private async run(builder: TaskBuilder): Promise<void> {
    const { coordinator, transport, job, clock } = this.config;
    const session = await retryStore(() => coordinator.openSession({ ttlMs: this.config.ttlMs }), {
      clock,
      signal: this.life.signal,
      logger: this.logger,
      what: 'open a session',
    });
    this.session = session;
    this.setLease('held');
    session.lost.addEventListener('abort', () => this.onLeaseLost(session.lost.reason), { once: true });
    this.config.onSession?.(session.id);
    const specKey = keys.spec(job);
    const specEntry = await waitForKey(coordinator, specKey, {
      clock,
      signal: this.life.signal,
      logger: this.logger,
      onWait: () => this.logger.info('waiting for the job to be created', { key: specKey }),
    });
    const spec = decodeSpec(specKey, specEntry.value);
    for (const lt of this.linkages.keys()) {
      if (!spec.linkTypes.includes(lt)) {
        throw new InvalidArgumentError(`link type "${lt}" is not declared by job ${job} (declared: ${spec.linkTypes.join(', ')})`);
      }
    }
    const requests = new RequestServer({
      job,
      instruments: this.instruments,
      clock,
      logger: () => this.logger,
      stats: this.stats,
      epochs: this.epochs,
      served: () => this.holder?.primary(),
      sessionLost: () => session.isLost(),
      internal: internalHandler(
        metaPushHandler({ primary: () => this.holder?.primary(), sessionLost: () => session.isLost(), maxMetaBytes: this.config.maxMetaBytes }),
        replicationHandler({
          primary: () => this.holder?.primary(),
          backup: () => (this.phase === 'backup' ? this.holder?.backup() : undefined),
          sessionLost: () => session.isLost(),
        }),
      ),
    });
    const server = this.config.listen
      ? await this.config.listen({
          name: this.nodeId,
          handler: requests.handle,
          routes: (req) => holdsRequestedSlot(req, { job, primary: () => this.holder?.primary(), backup: () => (this.phase === 'backup' ? this.holder?.backup() : undefined) }),
        })
      : await transport.listen({ handler: requests.handle, methods: [] });
    this.server = server;
    server.setServingStatus?.(this.nodeId, false);
    this.requests = requests;
    this.logger = this.logger.child({ address: server.address });
    this.stats.writes.node++;
    await createReplacing(
      coordinator,
      keys.node(job, this.nodeId),
      encodeJson({ nodeId: this.nodeId, address: server.address, pid: process.pid, host: hostname(), started: new Date(wallNow(this.config.clock)).toISOString() }),
      { session, logger: this.logger, clock, signal: this.life.signal },
    );
    await this.follow(keys.state(job), new JobState(job, this.epochs, () => this.logger, (status) => this.onJobFinished(status)));
    if (this.config.addresses) await this.config.addresses.ready(this.life.signal);
    else await this.follow(keys.tasks(job), this.addresses);
    if (this.jobDone) {
      await this.leave('job-done', 0);
      return;
    }
    if (this.phase === 'leaving') return;
    this.logger.info('joined job', { epoch: this.epochs.epoch, tasks: spec.numTasks });
    const claimer = new Claimer({
      ...this.config,
      session,
      address: server.address,
      addresses: this.addresses,
      numTasks: spec.numTasks,
      backupSlots: (task) => backupSlotsOf(spec, task),
      stats: this.stats,
      signal: this.life.signal,
      logger: this.logger,
      jobDone: () => this.jobDone,
    });
    this.phase = 'standby';
    this.roleChanged();
    const claim = await claimer.claim(
      () => this.phase === 'standby',
      () => this.logger.info('all slots are taken; waiting as a standby'),
    );
    if (!claim) return;
    const holder = new TaskHolder(this.holderHost(), { spec, session, server, claimer, builder }, claim.id);
    this.holder = holder;
    this.logger = holder.logger;
    await holder.hold(claim);
  }

  private holderHost(): HolderHost {
    return {
      config: this.config,
      stats: this.stats,
      epochs: this.epochs,
      addresses: this.addresses,
      linkages: this.linkages,
      framework: this.frameworkHost,
      life: this.life.signal,
      logger: this.logger,
      holding: () => this.phase === 'backup' || this.phase === 'running',
      nowRunning: () => {
        const from = this.phase;
        this.phase = 'running';
        if (this.holder) this.logger = this.holder.logger;
        this.onRunning(from);
      },
      nowBackup: () => {
        this.phase = 'backup';
        if (this.holder) this.logger = this.holder.logger;
        this.roleChanged();
        this.server?.setServingStatus?.(this.nodeId, true);
      },
      onLeaseLost: (reason) => this.onLeaseLost(reason),
      onCallbackError: (err) => this.onCallbackError(err),
      fail: (err) => this.fail(err),
      assertOwner: (what) => this.assertOwner(what),
      follow: (prefix, handlers) => this.follow(prefix, handlers),
      instruments: this.instruments,
    };
  }

  private async follow(prefix: string, handlers: PrefixHandlers): Promise<void> {
    const w = new WatchedPrefix(this.config.coordinator, prefix, handlers, this.config.clock, this.logger);
    this.watches.push(w);
    await w.start(this.life.signal);
  }

  // ---------------------------------------------------------------- store events

  private onJobFinished(status: JobStatusValue): void {
    if (this.jobDone) return;
    this.jobDone = true;
    this.logger.info('job finished', { state: status.state, ...(status.reason ? { reason: status.reason } : {}) });
    this.addresses.wakeStandbys();
    if (this.phase !== 'starting') void this.leave('job-done', this.config.drainMs);
  }

  private onEpochChange(epoch: number): void {
    this.holder?.onEpochChange(epoch);
    this.bursts.onEpochChange();
    if (this.instruments.active) this.instruments.emit({ type: 'epoch', epoch });
  }

  // ---------------------------------------------------------------- leaving

  private assertAlive(): void {
    if (this.phase === 'leaving' || this.phase === 'done') throw new ClosedError('the node has left');
  }

  private assertOwner(what: string): void {
    if (this.session?.isLost()) {
      throw new LeaseLostError(`${what}: this node's session is lost; it no longer runs task ${this.holder?.id ?? '-'}`);
    }
    if (this.phase === 'leaving' || this.phase === 'done') {
      throw new LeaseLostError(`${what}: this node has left (${this.leftFor ?? 'leaving'}); it no longer runs task ${this.holder?.id ?? '-'}`);
    }
  }

  private onLeaseLost(reason: unknown): void {
    if (this.phase === 'leaving' || this.phase === 'done') return;
    if (TaskGraphError.is(reason, 'CLOSED')) return;
    this.setLease('lost');
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
      void this.leave('failed', 0, { error: err });
      return;
    }
    this.logger.error('node failed while leaving', { error: err instanceof Error ? err.message : String(err) });
  }

  /** `fromTask`: the task itself asked (from inside a callback, perhaps): its running callback is not waited for. */
  private leave(reason: LeaveReason, graceMs: number, options: { error?: unknown; fromTask?: boolean | undefined } = {}): Promise<void> {
    if (this.leaving) return this.leaving;
    const taskId = this.holder?.id;
    this.phase = 'leaving';
    this.leftFor = reason;
    this.server?.setServingStatus?.(this.nodeId, false);
    this.roleChanged(reason);
    this.leaving = (async () => {
      const why = reason === 'failed' ? new ClosedError('the node failed') : new ClosedError(`the node is leaving (${reason})`);
      this.life.abort(why);
      this.epochs.end(why);
      if (this.holder) await this.holder.close(graceMs, options.fromTask ?? false);
      const cleanup: Array<Promise<unknown>> = [];
      if (this.server) cleanup.push(this.server.close({ graceMs }));
      cleanup.push(...this.watches.map((w) => w.stop()));
      await Promise.allSettled(cleanup);
      this.addresses.detach();
      // Handlers the lease's end caught mid-way (a pause) finish first: their answers are fenced, and counted.
      if (reason === 'lease-lost') await this.requests?.drain(this.config.clock, HANDLER_DRAIN_MS);
      this.logger.debug('leaving: server and watches stopped');
      if (this.session) await this.endSession(this.session);
      if (this.lease === 'held') this.setLease('released');
      this.phase = 'done';
      this.logger.info('left', { reason });
      if (reason === 'failed') this.outcome.reject(options.error);
      else this.outcome.resolve(taskId === undefined ? { reason } : { reason, taskId });
    })();
    return this.leaving;
  }

  /**
   * Closing the session releases the lock and deletes this node's ephemeral keys in
   * one step, so a standby can claim the task at once. A store that cannot be
   * reached ends the session at its TTL instead; leaving never waits on it for longer.
   */
  private async endSession(session: Session): Promise<void> {
    const closing = session.close().catch((err: unknown) => {
      this.logger.debug('closing the session failed (it ends at its TTL)', { error: (err as Error).message });
    });
    const boundMs = this.config.ttlMs + 5000;
    if (!(await withTimeout(this.config.clock, closing, boundMs))) {
      this.logger.warn('the store did not confirm the end of the session; it ends at its TTL', { waitedMs: boundMs });
    }
  }
}

/** Creates a node. Wire the application with `setTaskBuilder` and `addLinkage`, then `start()`. */
/** The framework's own methods: meta pushes, and the rest (replication). */
function internalHandler(metaPush: RequestHandler, replication: RequestHandler): RequestHandler {
  return (req) => (req.method === META_PUSH_METHOD ? metaPush(req) : replication(req));
}

export function createBootstrap(options: BootstrapOptions): TaskGraphNode {
  return new TaskGraphNode(options);
}
