/**
 * A task this node runs as its primary, for exactly as long as it holds the
 * primary slot: the lock and its fencing token, the incarnation, the application's
 * task object, the queue that runs its callbacks one at a time, the methods it
 * serves, its meta inbox and outbox, its replicator (hot standby) and the
 * neighbour events it passes on. Made on claim or promotion, closed on leaving.
 */
import { InvalidArgumentError } from '@taskgraph/api';
import type { AnyMethodHandler, Clock, Coordinator, EpochContext, Lock, Logger, RoleChange, Session, Task, Topology, Transport } from '@taskgraph/api';
import type { AddressBook, AddressChange } from './address-book.js';
import { withTimeout } from './async.js';
import { CallbackQueue } from './callback-queue.js';
import type { EpochTracker } from './epoch.js';
import { keys } from './layout.js';
import { MetaInbox } from './meta-inbox.js';
import { MetaOutbox } from './meta-outbox.js';
import type { MetaPush, PushReceiver } from './meta-push.js';
import type { DataReceiver } from './data-client.js';
import { Replicator } from './replicator.js';
import { INTERNAL_PREFIX } from './replication-wire.js';
import type { ServedTask } from './request-server.js';
import type { NodeStats } from './stats.js';
import type { Instruments } from './instruments.js';

/** What a running task uses of its node. */
export interface TaskEnvironment {
  readonly job: string;
  readonly nodeId: string;
  readonly coordinator: Coordinator;
  readonly session: Session;
  readonly clock: Clock;
  readonly stats: NodeStats;
  readonly epochs: Pick<EpochTracker, 'epoch' | 'context'>;
  readonly addresses: AddressBook;
  readonly transport: Transport;
  readonly attemptTimeoutMs: number;
  /** The topologies, for the link types a neighbour is in. */
  readonly linkages: ReadonlyMap<string, Topology>;
  /** True while the node runs this task (callbacks queued for other times are dropped). */
  isServing(running: RunningTask): boolean;
  /** Push metas to their receivers' nodes as well as writing them to the store (the fast path). */
  readonly metaPush: boolean;
  /** A callback threw. */
  onCallbackError(err: unknown): void;
  /** Throws when the node may no longer act as the task's owner. */
  assertOwner(what: string): void;
  /** The node's observers (metas delivered, replication acknowledged). */
  readonly instruments?: Instruments;
}

export interface TaskClaim {
  readonly id: number;
  readonly lock: Lock;
  readonly incarnation: number;
  readonly task: Task;
  readonly logger: Logger;
  /** The seq of the last change the task's state holds (a promoted backup's; 0 for a fresh state). */
  readonly seq: number;
}

export class RunningTask implements ServedTask, DataReceiver, PushReceiver {
  readonly id: number;
  readonly lock: Lock;
  /** The fencing token, in decimal (as it travels in requests and records). */
  readonly token: string;
  readonly incarnation: number;
  readonly task: Task;
  readonly logger: Logger;
  readonly inbox: MetaInbox;
  readonly outbox: MetaOutbox;
  readonly replicator: Replicator;
  private readonly queue: CallbackQueue;
  private readonly unsubscribe: () => void;
  private served = new Map<string, AnyMethodHandler>();
  /** The epoch the task entered last. */
  private entered: number | undefined;

  constructor(
    private readonly env: TaskEnvironment,
    claim: TaskClaim,
  ) {
    const { id, task } = claim;
    this.id = id;
    this.lock = claim.lock;
    this.token = claim.lock.token.toString();
    this.incarnation = claim.incarnation;
    this.task = task;
    this.logger = claim.logger;
    this.queue = new CallbackQueue((err) => env.onCallbackError(err));
    this.inbox = new MetaInbox({
      job: env.job,
      taskId: id,
      epochs: env.epochs,
      senderToken: (from) => env.addresses.get(from)?.token,
      deliver: (ctx, epoch, from, linkType, meta) => this.enqueue(epoch, () => task.metaReady(ctx, from, linkType, meta)),
      logger: this.logger,
      counts: env.stats,
      ...(env.instruments ? { onDelivered: deliveredTo(env.instruments) } : {}),
    });
    this.outbox = new MetaOutbox({ ...env, taskId: id, token: this.token, logger: this.logger, ...(env.metaPush ? { push: env } : {}) });
    this.replicator = new Replicator({ ...env, taskId: id, token: this.token, incarnation: claim.incarnation, seq: claim.seq, task, logger: this.logger });
    this.unsubscribe = env.addresses.subscribe((c) => this.onAddressChange(c));
  }

  /** True once `begin` queued becamePrimary and the first epoch: a meta pushed before then waits for its store copy. */
  get begun(): boolean {
    return this.entered !== undefined;
  }

  receivePush(epoch: number, from: number, push: MetaPush): void {
    this.inbox.push(epoch, from, push.senderToken, push.linkType, push.meta);
  }

  get methods(): ReadonlyMap<string, AnyMethodHandler> {
    return this.served;
  }

  /** Reads the methods the task declares (after its `init`); a name declared twice is an error. */
  declareMethods(): readonly string[] {
    const methods = new Map<string, AnyMethodHandler>();
    for (const m of this.task.methods ?? []) {
      if (methods.has(m.spec.name)) throw new InvalidArgumentError(`task ${this.id} declares method "${m.spec.name}" twice`);
      if (m.spec.name.startsWith(INTERNAL_PREFIX)) throw new InvalidArgumentError(`task ${this.id} declares method "${m.spec.name}": names starting with "${INTERNAL_PREFIX}" are the framework's`);
      methods.set(m.spec.name, m);
    }
    this.served = methods;
    return [...methods.keys()];
  }

  /** Queues a callback of `epoch`: it runs only if, at its turn, the task still runs in that epoch. */
  enqueue(epoch: number, run: () => void | Promise<void>): void {
    this.queue.push(run, () => this.env.isServing(this) && this.env.epochs.epoch === epoch);
  }

  /** An answer to one of this task's data requests: to its `dataReady`, if it has one, in order with its callbacks. */
  onData(ctx: EpochContext, from: number, method: string, output: unknown): void {
    const { task } = this;
    if (!task.dataReady) return;
    const dataReady = task.dataReady.bind(task);
    this.enqueue(ctx.epoch, () => dataReady(ctx, from, method, output));
  }

  /** The task starts serving as its primary: `becamePrimary` (if it listens), then the current epoch. */
  begin(change: RoleChange): void {
    const { task } = this;
    if (task.becamePrimary) {
      const becamePrimary = task.becamePrimary.bind(task);
      this.enqueueEvent((ctx) => becamePrimary(ctx, change));
    }
    this.enterEpoch(this.env.epochs.epoch);
  }

  /**
   * Queues a role or neighbour event: told once whatever the epoch is by its turn (an
   * epoch's callbacks are dropped when the epoch is over; a change of the task's world
   * is not), with the context of the epoch current when it runs.
   */
  private enqueueEvent(run: (ctx: EpochContext) => void | Promise<void>): void {
    this.queue.push(
      () => run(this.env.epochs.context),
      () => this.env.isServing(this),
    );
  }

  /**
   * The task enters `epoch`: its enterEpoch, then the metas held for that epoch.
   * Once per epoch: the epoch may change while the task starts serving, and both
   * the start and the change then ask for it.
   */
  enterEpoch(epoch: number): void {
    if (epoch === this.entered) return;
    this.entered = epoch;
    const { task } = this;
    const ctx = this.env.epochs.context;
    this.enqueue(epoch, () => task.enterEpoch(ctx, epoch));
    this.inbox.release(epoch);
  }

  /** The node moved to `epoch`; `serving` tells whether the task runs yet. */
  onEpochChange(epoch: number, serving: boolean): void {
    this.inbox.onEpochChange(epoch);
    this.outbox.onEpochChange();
    if (!serving) return;
    this.enterEpoch(epoch);
    // The old generations' metas go after the new epoch's enterEpoch is queued: off the
    // path of the epoch change, one write per generation (not per epoch), and none at
    // all for generations without metas.
    const old = this.inbox.takeOldGenerations(epoch);
    if (old.length === 0) return;
    const { coordinator, job, stats } = this.env;
    this.queue.push(
      () => {
        for (const g of old) {
          stats.writes.metaCleanup++;
          coordinator.deletePrefix(keys.metaGeneration(job, this.id, g)).catch((err: unknown) => {
            this.logger.debug('could not delete an old meta generation (its metas are ignored)', { generation: g, error: (err as Error).message });
          });
        }
      },
      () => true,
    );
  }

  /**
   * Stops the callbacks: what has not started is dropped; the one running, if any,
   * is given `graceMs` (plus a second) to end before the task's `exit()`, unless the
   * close comes from the task itself (`kill()` awaited inside a callback): waiting
   * for that callback would be waiting for ourselves.
   */
  async close(graceMs: number, options: { fromTask?: boolean } = {}): Promise<void> {
    this.unsubscribe();
    this.replicator.close();
    const closed = this.queue.close();
    if (!options.fromTask) await withTimeout(this.env.clock, closed, graceMs + 1000);
    this.logger.debug('leaving: callbacks ended');
    try {
      await this.task.exit();
    } catch (err) {
      this.logger.warn('task exit() threw', { error: (err as Error).message });
    }
  }

  /** A neighbour's primary went away or came back: the task hears it, once per change. */
  private onAddressChange(c: AddressChange): void {
    if (c.kind !== 'primary' || c.task === this.id || !this.env.isServing(this)) return;
    const { task } = this;
    if (!task.neighborFailed && !task.neighborRestarted) return;
    const { before, after } = c;
    const failed = before !== undefined && (after === undefined || after.incarnation !== before.incarnation);
    // A neighbour's first incarnation appearing is a start, not a restart.
    const restarted = after !== undefined && after.incarnation > 1 && (before === undefined || after.incarnation !== before.incarnation);
    if (!failed && !restarted) return;
    const epoch = this.env.epochs.epoch;
    const linkTypes: string[] = [];
    for (const [linkType, topology] of this.env.linkages) if (topology.getNeighbors(epoch).includes(c.task)) linkTypes.push(linkType);
    if (linkTypes.length === 0) return;
    if (failed && task.neighborFailed) {
      const neighborFailed = task.neighborFailed.bind(task);
      const event = { task: c.task, linkTypes, incarnation: before.incarnation };
      this.enqueueEvent((ctx) => neighborFailed(ctx, event));
    }
    if (restarted && task.neighborRestarted) {
      const neighborRestarted = task.neighborRestarted.bind(task);
      const event = { task: c.task, linkTypes, incarnation: after.incarnation };
      this.enqueueEvent((ctx) => neighborRestarted(ctx, event));
    }
  }
}

/** Reports each meta delivered to the node's observers. */
function deliveredTo(instruments: Instruments): (via: 'push' | 'store', from: number, linkType: string) => void {
  return (path, from, linkType) => {
    if (instruments.active) instruments.emit({ type: 'meta-delivered', path, from, linkType });
  };
}
