/**
 * The data plane's server side: every request is checked before its handler runs
 * (job, target task and token, a live session, the epoch) and again after it (an
 * answer computed while the lease or the epoch ended is dropped), so a node that
 * lost its task never answers for it.
 */
import { DecodeFailedError, EpochChangedError, MethodNotFoundError, NotOwnerError, TaskGraphError } from '@taskgraph/api';
import type { AnyMethodHandler, Clock, EpochContext, InboundRequest, Logger, RefusalReason } from '@taskgraph/api';
import type { Instruments } from './instruments.js';
import { withTimeout } from './async.js';
import { INTERNAL_PREFIX } from './replication-wire.js';
import type { NodeStats } from './stats.js';
import { traceServe } from './tracing.js';

/** The task a node serves now. */
export interface ServedTask {
  readonly id: number;
  /** The incarnation's fencing token, in decimal. */
  readonly token: string;
  /** The incarnation (for the lines fenced requests leave). */
  readonly incarnation?: number;
  readonly methods: ReadonlyMap<string, AnyMethodHandler>;
}

export interface RequestServerOptions {
  readonly job: string;
  readonly stats: NodeStats;
  /** The task served now: undefined unless the node runs one. */
  served(): ServedTask | undefined;
  /** Synchronous: true once the session is lost (including a deadline passed during a pause). */
  sessionLost(): boolean;
  readonly epochs: { readonly epoch: number; readonly context: EpochContext };
  /** Serves the framework's own methods (`taskgraph_*`), which application methods cannot be. */
  internal(req: InboundRequest): Promise<Uint8Array>;
  /** Told of each application request served or refused (with the clock its durations are read from). */
  readonly instruments?: Instruments;
  readonly clock?: Clock;
  /** The node's logger now: a fenced request leaves one line (see `fenced`). */
  logger?(): Logger;
}

export class RequestServer {
  /** Application handlers running now (their answers are still to be checked). */
  private running = 0;
  private idle: (() => void) | undefined;
  /** Stale tokens whose requests were logged (one line each), and whether a lost lease or a late answer was. */
  private readonly loggedTokens = new Set<string>();
  private loggedLeaseLost = false;
  private loggedLate = false;

  constructor(private readonly o: RequestServerOptions) {}

  /**
   * Resolves once no application handler runs any more, or after `ms`. A node that
   * leaves waits for this (bounded), so that a handler caught mid-way by the end of
   * the lease (a pause, say) finishes and has its late answer fenced and counted
   * before the node reports how it ended.
   */
  async drain(clock: Clock, ms: number): Promise<void> {
    if (this.running === 0) return;
    const idle = new Promise<void>((resolve) => (this.idle = resolve));
    await withTimeout(clock, idle, ms);
  }

  /** The transport's handler: serves the request, in a span when a tracing SDK is installed. */
  readonly handle = (req: InboundRequest): Promise<Uint8Array> => {
    const t = traceServe(this.o.job, req, req.method.startsWith(INTERNAL_PREFIX));
    return t === undefined ? this.serve(req) : t.run(() => this.serve(req));
  };

  private readonly serve = async (req: InboundRequest): Promise<Uint8Array> => {
    const { stats, epochs } = this.o;
    const m = req.meta;
    const started = this.o.instruments?.active && this.o.clock ? this.o.clock.now() : -1;
    // Fencing answers name nothing the caller did not send: a wrong job is not told the
    // job's name, a wrong token not the right one. Only a caller the transport proved a
    // member of the job learns the current epoch, which its data client needs to tell an
    // epoch that is over from one not yet entered.
    if (m.job !== this.o.job) {
      stats.rejectedNotOwner++;
      this.fenced(req, undefined, 'not-owner');
      throw new NotOwnerError('this node does not serve the job the request names');
    }
    if (req.method.startsWith(INTERNAL_PREFIX)) return this.o.internal(req);
    const task = this.o.served();
    if (!task || m.to !== task.id || m.token !== task.token || this.o.sessionLost()) {
      stats.rejectedNotOwner++;
      this.fenced(req, task, task && m.to === task.id ? (this.o.sessionLost() ? 'lease-lost' : 'stale-token') : 'not-owner');
      throw new NotOwnerError(`this node does not run task ${m.to} with the requested token`, { details: { task: m.to } });
    }
    if (m.epoch !== epochs.epoch) {
      stats.rejectedEpoch++;
      this.fenced(req, task, 'epoch');
      throw epochMismatch(req, `task ${m.to} is not in epoch ${m.epoch}`, epochs.epoch);
    }
    const handler = task.methods.get(req.method);
    if (!handler) throw new MethodNotFoundError(`task ${m.to} does not serve method "${req.method}"`);
    let input: unknown;
    try {
      input = handler.spec.input.decode(req.payload);
    } catch (err) {
      if (TaskGraphError.is(err, 'DECODE_FAILED')) throw err;
      throw new DecodeFailedError(`method ${req.method}: cannot decode the input: ${(err as Error).message}`, { cause: err });
    }
    let output: unknown;
    this.running++;
    try {
      output = await handler.handle(epochs.context, input, m.from);
    } finally {
      if (--this.running === 0) this.idle?.();
    }
    // Late work is fenced: if the lease or the epoch ended while the handler ran,
    // its answer may be stale and a successor may already be serving.
    if (this.o.served() !== task || this.o.sessionLost()) {
      stats.fencedLateResults++;
      this.fenced(req, task, 'late-result', 'lease');
      throw new NotOwnerError(`task ${m.to} lost its lease while serving ${req.method}`, { details: { task: m.to } });
    }
    if (epochs.epoch !== m.epoch) {
      stats.fencedLateResults++;
      this.fenced(req, task, 'late-result', 'epoch');
      throw epochMismatch(req, `epoch ${m.epoch} ended while serving ${req.method}`, epochs.epoch);
    }
    stats.served++;
    if (started < 0) return handler.spec.output.encode(output);
    const encoded = handler.spec.output.encode(output);
    this.o.instruments?.emit({ type: 'request-served', from: m.from, method: req.method, seconds: ((this.o.clock?.now() ?? started) - started) / 1000 });
    return encoded;
  };

  /**
   * A request refused (or its answer dropped): counted, and one WARN line for the
   * fencing an operator must see: the first request with each stale token of the
   * task this node runs, the first one after its lease was lost, the first answer
   * dropped because the lease ended while the handler ran. Other refusals (another
   * task, another epoch, an answer overtaken by the epoch) are routine around every
   * failover and epoch change: DEBUG.
   */
  private fenced(req: InboundRequest, task: ServedTask | undefined, reason: RefusalReason, late?: 'lease' | 'epoch'): void {
    const m = req.meta;
    if (this.o.instruments?.active) this.o.instruments.emit({ type: 'request-refused', from: m.from, method: req.method, reason });
    const log = this.o.logger?.();
    if (!log || !task) return;
    const fields = { incarnation: task.incarnation, token: task.token, requestedToken: m.token, from: m.from, method: req.method, epoch: m.epoch, requestId: m.requestId };
    let first = false;
    if (reason === 'stale-token') {
      first = !this.loggedTokens.has(m.token);
      if (first) {
        if (this.loggedTokens.size >= 64) this.loggedTokens.clear();
        this.loggedTokens.add(m.token);
        log.warn(`fenced: refused a request for task ${task.id} carrying another incarnation's token (logged once per token)`, fields);
      }
    } else if (reason === 'lease-lost') {
      first = !this.loggedLeaseLost;
      this.loggedLeaseLost = true;
      if (first) log.warn(`fenced: refusing requests for task ${task.id}: this node's lease is lost (logged once)`, fields);
    } else if (late === 'lease' && this.o.sessionLost()) {
      // (A node that stops serving because it leaves drops late answers too: that is routine.)
      first = !this.loggedLate;
      this.loggedLate = true;
      if (first) log.warn(`fenced: dropped the answer to a request for task ${task.id}: the lease ended while the handler ran (logged once)`, fields);
    }
    if (!first) log.debug('request refused', { ...fields, reason, task: task.id });
  }
}

function epochMismatch(req: InboundRequest, message: string, current: number): EpochChangedError {
  return new EpochChangedError(message, { details: req.authenticated === true ? { current, requested: req.meta.epoch } : { requested: req.meta.epoch } });
}
