/**
 * The data plane's server side: every request is checked before its handler runs
 * (job, target task and token, a live session, the epoch) and again after it (an
 * answer computed while the lease or the epoch ended is dropped), so a node that
 * lost its task never answers for it.
 */
import { DecodeFailedError, EpochChangedError, MethodNotFoundError, NotOwnerError, TaskGraphError } from '@taskgraph/api';
import type { AnyMethodHandler, Clock, EpochContext, InboundRequest } from '@taskgraph/api';
import { withTimeout } from './async.js';
import { INTERNAL_PREFIX } from './replication-wire.js';
import type { NodeStats } from './stats.js';

/** The task a node serves now. */
export interface ServedTask {
  readonly id: number;
  /** The incarnation's fencing token, in decimal. */
  readonly token: string;
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
}

export class RequestServer {
  /** Application handlers running now (their answers are still to be checked). */
  private running = 0;
  private idle: (() => void) | undefined;

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

  /** The transport's handler. */
  readonly handle = async (req: InboundRequest): Promise<Uint8Array> => {
    const { stats, epochs } = this.o;
    const m = req.meta;
    // Fencing answers name nothing the caller did not send: a wrong job is not told the
    // job's name, a wrong token not the right one. Only a caller the transport proved a
    // member of the job learns the current epoch, which its data client needs to tell an
    // epoch that is over from one not yet entered.
    if (m.job !== this.o.job) {
      stats.rejectedNotOwner++;
      throw new NotOwnerError('this node does not serve the job the request names');
    }
    if (req.method.startsWith(INTERNAL_PREFIX)) return this.o.internal(req);
    const task = this.o.served();
    if (!task || m.to !== task.id || m.token !== task.token || this.o.sessionLost()) {
      stats.rejectedNotOwner++;
      throw new NotOwnerError(`this node does not run task ${m.to} with the requested token`, { details: { task: m.to } });
    }
    if (m.epoch !== epochs.epoch) {
      stats.rejectedEpoch++;
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
      throw new NotOwnerError(`task ${m.to} lost its lease while serving ${req.method}`, { details: { task: m.to } });
    }
    if (epochs.epoch !== m.epoch) {
      stats.fencedLateResults++;
      throw epochMismatch(req, `epoch ${m.epoch} ended while serving ${req.method}`, epochs.epoch);
    }
    stats.served++;
    return handler.spec.output.encode(output);
  };
}

function epochMismatch(req: InboundRequest, message: string, current: number): EpochChangedError {
  return new EpochChangedError(message, { details: req.authenticated === true ? { current, requested: req.meta.epoch } : { requested: req.meta.epoch } });
}
