/**
 * The master/worker paradigm (the seed's second paradigm, which it declared and
 * never ran): one master that makes the global decisions and keeps every worker's
 * state, and N workers that compute and pull data from each other. It runs on the
 * task-graph runtime: the master is task 0 and worker `w` is task `w + 1`, so
 * claiming, leases, fencing tokens, standbys and hot backups work as for any task.
 *
 * Calls between them (`notifyWorker`, `notifyMaster`, worker-to-worker
 * `dataRequest`) are typed request/response calls in the `MethodSpec` style of
 * `dataRequest`: retried through failures and re-resolved to the peer's current
 * node until they succeed, the context's epoch ends, or the call's own signal aborts.
 */
import type { MethodSpec } from './codec.js';
import type { UpdateLog } from './standby.js';
import type { EpochContext } from './task.js';
import type { Clock, Logger } from './runtime.js';

/** Who made a call, as the callee's interceptor and handlers see it. */
export type Caller =
  | { readonly role: 'master'; readonly incarnation: number }
  | { readonly role: 'worker'; readonly workerId: number; readonly incarnation: number };

/**
 * A method served to the other side of the paradigm (the master's methods are
 * called with `notifyMaster`, a worker's with `notifyWorker` and `dataRequest`).
 * The framework has checked the call's job, epoch and target, and has run the
 * interceptor, before `handle` runs.
 */
export interface PeerMethodHandler<I, O> {
  readonly spec: MethodSpec<I, O>;
  handle(ctx: EpochContext, input: I, caller: Caller): O | Promise<O>;
}

/** Any served peer method, whatever its types. */
export type AnyPeerMethodHandler = PeerMethodHandler<unknown, unknown>;

/** One incoming call, as the interceptor sees it (the input is already decoded). */
export interface InterceptedCall {
  readonly method: string;
  readonly caller: Caller;
  readonly input: unknown;
}

/**
 * Called before every handler of the side that declares it (the seed's `Intercept`).
 * Returning lets the call through; throwing rejects it: a TaskGraphError reaches the
 * caller with its code (throw a non-retryable one, such as ApplicationError or
 * UnauthenticatedError, to end the call; a retryable one makes the caller retry),
 * any other error reaches it as an ApplicationError with the message.
 */
export type Interceptor = (ctx: EpochContext, call: InterceptedCall) => void | Promise<void>;

export interface NotifyOptions {
  /** Ends the call early (AbortedError, or the signal's reason); the epoch still bounds it. */
  readonly signal?: AbortSignal;
  /** Deadline of each attempt, in ms. */
  readonly attemptTimeoutMs?: number;
}

/** A worker incarnation, as the master's events name it. */
export interface WorkerEvent {
  readonly workerId: number;
  readonly incarnation: number;
}

/** A master incarnation, as a worker's event names it. */
export interface MasterEvent {
  readonly incarnation: number;
}

/** What the master knows of one worker now. */
export interface WorkerStatus {
  readonly workerId: number;
  /** The incarnation whose node holds the worker now (0 when no node does). */
  readonly incarnation: number;
  /** True once that incarnation has announced itself to this master (it is set up and serving). */
  readonly ready: boolean;
}

/** How the master's `run` starts. */
export interface MasterStart {
  /** The master's incarnation (1 for the first; a cold or hot failover gives a higher one). */
  readonly incarnation: number;
  /** True when a hot backup was promoted: the state is the one its backups held. */
  readonly promoted: boolean;
  /** The `seq` of the last hot-standby update the state holds (0 for none). */
  readonly seq: number;
}

/**
 * Small durable state of the master, kept in the coordinator under the job, so that
 * a master that fails over cold (no hot backup) can rebuild from it. Writes are
 * fenced: each is made only while this master holds its task (checked right before
 * the write), and a key written by a newer master incarnation is never overwritten
 * by an older one (LeaseLostError). Keys are 1 to 128 characters of letters,
 * digits, `_`, `-`, `.` and `/`; a value is at most `maxValueBytes`.
 */
export interface MasterStore {
  readonly maxValueBytes: number;
  get(key: string): Promise<Uint8Array | undefined>;
  /** Every key and value under `prefix` ('' for all), sorted by key. */
  list(prefix?: string): Promise<ReadonlyMap<string, Uint8Array>>;
  put(key: string, value: Uint8Array): Promise<void>;
  /** Deletes the key (nothing happens when it does not exist). */
  delete(key: string): Promise<void>;
}

/** The master's view of the job. */
export interface MasterFrame {
  getJob(): string;
  getLogger(): Logger;
  /** The node's clock: time and timers go through it, so a test or a simulator can drive them. */
  getClock(): Clock;
  getNumWorkers(): number;
  getIncarnation(): number;
  /** Every worker's current incarnation and whether it announced itself to this master. */
  getWorkers(): readonly WorkerStatus[];
  /**
   * Calls `method` on worker `workerId`, following it to its current node, retrying
   * through failures until it answers, `ctx`'s epoch ends or `options.signal` aborts.
   * A worker's node that dies with the call in flight is not waited for beyond its
   * replacement: the call is re-sent to the next incarnation (so a method should be
   * idempotent, or the master should abort the call on `workerFailed`).
   */
  notifyWorker<I, O>(ctx: EpochContext, workerId: number, method: MethodSpec<I, O>, input: I, options?: NotifyOptions): Promise<O>;
  /** The master's durable key/value state (for a cold failover). */
  readonly store: MasterStore;
  /** The hot backups the master has (0 unless the job was created with master backups). */
  getNumBackups(): number;
  /**
   * Ships a state change to the master's hot backups (see `BackedUpFramework.update`:
   * the same guarantees); the master task must then implement `snapshot`, `restore`
   * and `applyUpdate`.
   */
  update(ctx: EpochContext, data: Uint8Array): Promise<UpdateLog>;
  /** Resolves once `count` (default: all) hot backups hold this master's state. */
  waitForBackups(ctx: EpochContext, count?: number): Promise<void>;
  /** Finishes the job: every node leaves. (Returning from `run` does the same.) */
  shutdownJob(): Promise<void>;
}

/** A worker's view of the job. */
export interface WorkerFrame {
  getJob(): string;
  getLogger(): Logger;
  /** The node's clock (see `MasterFrame.getClock`). */
  getClock(): Clock;
  getWorkerId(): number;
  getNumWorkers(): number;
  /** This worker's incarnation (1 for the first node to run it). */
  getIncarnation(): number;
  /** The master's current incarnation (0 while no node holds the master). */
  getMasterIncarnation(): number;
  /** Calls one of the master's methods; retried and re-resolved as `notifyWorker` is. */
  notifyMaster<I, O>(ctx: EpochContext, method: MethodSpec<I, O>, input: I, options?: NotifyOptions): Promise<O>;
  /** Worker-to-worker data flow: calls one of worker `workerId`'s methods. */
  dataRequest<I, O>(ctx: EpochContext, workerId: number, method: MethodSpec<I, O>, input: I, options?: NotifyOptions): Promise<O>;
}

/**
 * The master's code. Its callbacks (`workerJoined`, `workerFailed`,
 * `workerRestarted`) run one at a time, in order, each once per change; `run` and
 * the served methods run concurrently with them.
 */
export interface MasterTask {
  /** Called once on the node that holds the master (as its primary or a hot backup). */
  setup(frame: MasterFrame): void | Promise<void>;
  /**
   * The master's work. Started when this node becomes the master's primary; when
   * it resolves the job is finished (every node leaves). After a failover the new
   * master's `run` starts again: with the state intact after a hot failover
   * (`start.promoted`), or from what the master put in `frame.store` after a cold
   * one. A rejection other than the end of the node's task fails the node (a
   * standby takes the master over).
   */
  run(ctx: EpochContext, start: MasterStart): Promise<void>;
  /** An incarnation of a worker announced itself to this master for the first time since the master started. */
  workerJoined?(ctx: EpochContext, event: WorkerEvent): void | Promise<void>;
  /**
   * A worker incarnation's node went away: what it held in memory is gone. Told for
   * every incarnation this master knew of: one that announced itself to it, or one
   * that was live when this master started (it may hold what a previous master
   * recorded), even if it never announced itself to this one.
   */
  workerFailed?(ctx: EpochContext, event: WorkerEvent): void | Promise<void>;
  /** A later incarnation of a worker this master knew announced itself (after its `workerFailed`). */
  workerRestarted?(ctx: EpochContext, event: WorkerEvent): void | Promise<void>;
  /** The node is leaving; no more callbacks follow. */
  exit(): void | Promise<void>;
  /** The methods workers call with `notifyMaster`. */
  readonly methods?: readonly AnyPeerMethodHandler[];
  readonly intercept?: Interceptor;
  /** Hot standby (with master backups): a full copy of the state. */
  snapshot?(): Uint8Array | Promise<Uint8Array>;
  restore?(snapshot: Uint8Array): void | Promise<void>;
  applyUpdate?(log: UpdateLog): void | Promise<void>;
}

/** A worker's code. Its `masterChanged` callback runs in order with the framework's. */
export interface WorkerTask {
  /** Called once on the node that runs this worker incarnation. */
  setup(frame: WorkerFrame): void | Promise<void>;
  /**
   * Optional work of its own, started once the worker serves (workers are mostly
   * driven by the master's calls). A rejection other than the end of the node's
   * task fails the node.
   */
  run?(ctx: EpochContext): Promise<void>;
  /** A new master incarnation runs (a failover of the master). */
  masterChanged?(ctx: EpochContext, event: MasterEvent): void | Promise<void>;
  exit(): void | Promise<void>;
  /** The methods the master (`notifyWorker`) and other workers (`dataRequest`) call. */
  readonly methods?: readonly AnyPeerMethodHandler[];
  readonly intercept?: Interceptor;
}

/** Something that runs one node until it finishes (the node `createBootstrap` makes is one, for either paradigm). */
export interface Bootup {
  start(): Promise<void>;
}
