/**
 * A session is an etcd lease kept alive by this process over the Lease
 * keepalive stream, with a local deadline beside it.
 *
 * The deadline is what makes `lost` trustworthy: etcd's answer to a keepalive
 * sent at time t says the lease lives TTL seconds from when etcd handled it,
 * which is after t, so t + TTL - margin on our monotonic clock is a moment the
 * lease is certainly still alive. When no later keepalive has been acknowledged
 * by then, the session is lost, whatever the network says: the Node client is
 * known to miss lease loss when a connection stalls instead of failing (etcd3
 * issue #110), and a partitioned client hears nothing at all.
 */
import type { IDuplexStream, ILeaseKeepAliveRequest, ILeaseKeepAliveResponse } from 'etcd3';
import { ClosedError, ErrorCodes, LeaseLostError } from '@taskgraph/api';
import type { Clock, Logger, Session, TaskGraphError, TimerHandle } from '@taskgraph/api';
import { closeStream } from './watch.js';

export type KeepAliveStream = IDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse>;

export interface SessionHost {
  readonly clock: Clock;
  readonly logger: Logger;
  openKeepAlive(): Promise<KeepAliveStream>;
  mapFailure(err: unknown): TaskGraphError;
  /** Revokes the lease (best effort); the session is done with it. */
  revoke(session: EtcdSession): Promise<void>;
  /** The session ended (lost or closed): stop tracking it. */
  ended(session: EtcdSession, revoking: Promise<void> | undefined): void;
}

const MAX_RETRY_MS = 1000;

/** Time kept between our deadline and etcd's: covers a slow clock tick and etcd's 500 ms expiry sweep being early. */
export function deadlineMargin(ttlMs: number): number {
  return Math.min(1000, Math.max(100, Math.round(ttlMs / 10)));
}

export class EtcdSession implements Session {
  /** The lease id, in decimal. */
  readonly id: string;
  /** The TTL etcd granted (it may raise a short one to its minimum). */
  readonly ttlMs: number;
  readonly #host: SessionHost;
  readonly #lost = new AbortController();
  readonly #margin: number;
  readonly #interval: number;
  #deadline: number;
  #deadlineTimer: TimerHandle | undefined;
  #keepaliveTimer: TimerHandle | undefined;
  #answerTimer: TimerHandle | undefined;
  #stream: KeepAliveStream | undefined;
  #opening = false;
  /** When the keepalive awaiting its answer was sent. */
  #sentAt: number | undefined;
  #retryMs = 100;
  #ended = false;
  #closing: Promise<void> | undefined;

  constructor(host: SessionHost, id: string, grantedTtlMs: number, grantSentAt: number) {
    this.#host = host;
    this.id = id;
    this.ttlMs = grantedTtlMs;
    this.#margin = deadlineMargin(grantedTtlMs);
    this.#interval = Math.max(100, Math.floor(grantedTtlMs / 3));
    this.#deadline = grantSentAt + grantedTtlMs - this.#margin;
    this.#armDeadline();
    this.#scheduleKeepalive(this.#interval);
  }

  get lost(): AbortSignal {
    return this.#lost.signal;
  }

  /** The local deadline on the coordinator's clock (for tests and logs). */
  get deadline(): number {
    return this.#deadline;
  }

  isLost(): boolean {
    return this.#lost.signal.aborted || this.#host.clock.now() >= this.#deadline;
  }

  /** Marks the session lost because etcd said so (e.g. a write with its lease found no lease). */
  markLost(reason: string): void {
    this.#lose(new LeaseLostError(`session ${this.id}: ${reason}`));
  }

  close(): Promise<void> {
    if (this.#closing) return this.#closing;
    const wasLive = !this.#ended;
    this.#stop();
    if (!this.#lost.signal.aborted) this.#lost.abort(new ClosedError(`session ${this.id} was closed`));
    // Revoke even a lost lease: if etcd still has it, its keys go now rather than at its TTL.
    const revoking = this.#host.revoke(this);
    if (wasLive) this.#host.ended(this, revoking);
    this.#closing = revoking;
    return revoking;
  }

  #scheduleKeepalive(delay: number): void {
    if (this.#ended) return;
    if (this.#keepaliveTimer) this.#host.clock.clearTimeout(this.#keepaliveTimer);
    const timer = this.#host.clock.setTimeout(() => {
      this.#keepaliveTimer = undefined;
      this.#keepalive();
    }, delay);
    timer.unref?.();
    this.#keepaliveTimer = timer;
  }

  #keepalive(): void {
    if (this.#ended || this.#passedDeadline()) return;
    if (this.#stream) {
      this.#send(this.#stream);
      return;
    }
    if (this.#opening) return;
    this.#opening = true;
    let opening: Promise<KeepAliveStream>;
    try {
      opening = this.#host.openKeepAlive();
    } catch (err) {
      this.#opening = false;
      this.#onFailure(undefined, err);
      return;
    }
    opening.then(
      (stream) => {
        this.#opening = false;
        if (this.#ended) {
          closeStream(stream);
          return;
        }
        this.#stream = stream;
        stream.on('data', (res: ILeaseKeepAliveResponse) => this.#onAnswer(stream, res));
        stream.on('error', (err: Error) => this.#onFailure(stream, err));
        stream.on('end', () => this.#onFailure(stream, new Error('etcd ended the keepalive stream')));
        this.#send(stream);
      },
      (err: unknown) => {
        this.#opening = false;
        this.#onFailure(undefined, err);
      },
    );
  }

  #send(stream: KeepAliveStream): void {
    this.#sentAt = this.#host.clock.now();
    stream.write({ ID: this.id });
    if (this.#answerTimer) this.#host.clock.clearTimeout(this.#answerTimer);
    // A stream that swallows keepalives is replaced: on a cluster the next one may reach another member.
    const timer = this.#host.clock.setTimeout(() => {
      this.#answerTimer = undefined;
      if (this.#stream === stream && this.#sentAt !== undefined) this.#onFailure(stream, new Error('no keepalive answer within a third of the TTL'));
    }, this.#interval);
    timer.unref?.();
    this.#answerTimer = timer;
  }

  #onAnswer(stream: KeepAliveStream, res: ILeaseKeepAliveResponse): void {
    if (this.#ended || stream !== this.#stream) return;
    const sentAt = this.#sentAt;
    if (sentAt === undefined) return;
    this.#sentAt = undefined;
    if (this.#answerTimer) {
      this.#host.clock.clearTimeout(this.#answerTimer);
      this.#answerTimer = undefined;
    }
    // An answer that comes after our deadline (a paused process runs its I/O before
    // its timers) cannot revive the session: someone may already have taken over.
    if (this.#passedDeadline()) return;
    const ttlSeconds = Number(res.TTL);
    if (!(ttlSeconds > 0)) {
      this.#lose(new LeaseLostError(`session ${this.id}: etcd says its lease expired or was revoked`));
      return;
    }
    this.#deadline = sentAt + ttlSeconds * 1000 - this.#margin;
    this.#retryMs = 100;
    this.#armDeadline();
    this.#scheduleKeepalive(this.#interval);
  }

  #onFailure(stream: KeepAliveStream | undefined, err: unknown): void {
    if (this.#ended || (stream !== undefined && stream !== this.#stream)) return;
    this.#dropStream();
    const error = this.#host.mapFailure(err);
    if (error.code === ErrorCodes.LeaseLost) {
      this.#lose(new LeaseLostError(`session ${this.id}: etcd says its lease no longer exists`, { cause: error }));
      return;
    }
    if (error.code === ErrorCodes.Closed) {
      this.#lose(new LeaseLostError(`session ${this.id}: the etcd client was closed`, { cause: error }));
      return;
    }
    this.#host.logger.debug('etcd keepalive failed; retrying', { session: this.id, error: error.message, retryMs: this.#retryMs });
    this.#scheduleKeepalive(this.#retryMs);
    this.#retryMs = Math.min(MAX_RETRY_MS, this.#interval, this.#retryMs * 2);
  }

  #armDeadline(): void {
    if (this.#deadlineTimer) this.#host.clock.clearTimeout(this.#deadlineTimer);
    const timer = this.#host.clock.setTimeout(
      () => {
        this.#deadlineTimer = undefined;
        if (!this.#passedDeadline()) this.#armDeadline();
      },
      Math.max(0, this.#deadline - this.#host.clock.now()),
    );
    timer.unref?.();
    this.#deadlineTimer = timer;
  }

  /** Loses the session when the local deadline has passed; true if it has. */
  #passedDeadline(): boolean {
    if (this.#ended) return true;
    if (this.#host.clock.now() < this.#deadline) return false;
    this.#lose(
      new LeaseLostError(
        `session ${this.id}: no keepalive was acknowledged by etcd within its ${this.ttlMs} ms TTL (local deadline); etcd may have expired it`,
      ),
    );
    return true;
  }

  #lose(reason: LeaseLostError): void {
    if (this.#ended) return;
    this.#stop();
    this.#host.logger.warn('etcd session lost', { session: this.id, reason: reason.message });
    this.#lost.abort(reason);
    // If etcd still has the lease, revoke it: our keys and locks should go now that we act as if they are gone.
    const revoking = this.#host.revoke(this);
    this.#host.ended(this, revoking);
  }

  #stop(): void {
    this.#ended = true;
    for (const timer of [this.#deadlineTimer, this.#keepaliveTimer, this.#answerTimer]) {
      if (timer) this.#host.clock.clearTimeout(timer);
    }
    this.#deadlineTimer = this.#keepaliveTimer = this.#answerTimer = undefined;
    this.#dropStream();
  }

  #dropStream(): void {
    const stream = this.#stream;
    this.#stream = undefined;
    this.#sentAt = undefined;
    if (this.#answerTimer) {
      this.#host.clock.clearTimeout(this.#answerTimer);
      this.#answerTimer = undefined;
    }
    if (stream) closeStream(stream);
  }
}
