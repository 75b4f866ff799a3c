/**
 * A session is an etcd lease kept alive by this process over the Lease keepalive
 * stream. The local deadline, the keepalive schedule, the retry backoff and the
 * ways a session ends are LeaseSession's (the backend kit); what is etcd's is the
 * stream, how an answer is read, and the revoke.
 *
 * The local deadline matters more on etcd than anywhere: the Node client is known to
 * miss lease loss when a connection stalls instead of failing (etcd3 issue #110),
 * and a partitioned client hears nothing at all, so the deadline, not the stream,
 * is the authority on whether the lease is alive.
 */
import type { IDuplexStream, ILeaseKeepAliveRequest, ILeaseKeepAliveResponse } from 'etcd3';
import { ClosedError, ErrorCodes, LeaseLostError } from '@taskgraph/api';
import type { TaskGraphError, TimerHandle } from '@taskgraph/api';
import { LeaseSession } from '@taskgraph/backend-kit';
import type { SessionContext } from '@taskgraph/backend-kit';
import { closeStream } from './watch.js';

export type KeepAliveStream = IDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse>;

/** What a session needs from the etcd coordinator that opened it. */
export interface EtcdSessionHost {
  openKeepAlive(): Promise<KeepAliveStream>;
  /** A failed keepalive stream as a TaskGraph error. */
  mapFailure(err: unknown): TaskGraphError;
  /** Revokes the lease; resolves too when etcd no longer has it. */
  revoke(id: string): Promise<void>;
}

interface PendingAnswer {
  resolve(res: ILeaseKeepAliveResponse): void;
  reject(err: unknown): void;
}

export class EtcdSession extends LeaseSession {
  readonly #host: EtcdSessionHost;
  /** The keepalive stream, opened by the first keepalive and kept while it answers. */
  #stream: KeepAliveStream | undefined;
  #opening: Promise<KeepAliveStream> | undefined;
  /** The keepalive written on `#stream` and not yet answered. */
  #answer: PendingAnswer | undefined;
  #ended = false;

  /**
   * @internal Opened by EtcdCoordinator. `id` is the lease id in decimal, `grantedTtlMs`
   * the TTL etcd granted, `sentAt` when the grant request was sent.
   */
  constructor(context: SessionContext, host: EtcdSessionHost, id: string, grantedTtlMs: number, sentAt: number) {
    super(context, { id, ttlMs: grantedTtlMs, sentAt, renewalName: 'keepalive' });
    this.#host = host;
  }

  protected async renew(): Promise<number> {
    let timer: TimerHandle | undefined;
    let waiting = true;
    let res: ILeaseKeepAliveResponse;
    try {
      res = await new Promise<ILeaseKeepAliveResponse>((resolve, reject) => {
        // A stream that swallows keepalives (or never opens) is replaced: on a cluster the next one may reach another member.
        timer = this.clock.setTimeout(() => reject(new Error('no keepalive answer within a third of the TTL')), this.renewalIntervalMs);
        timer.unref?.();
        this.#keepalive(() => waiting).then(resolve, reject);
      });
    } catch (err) {
      this.#dropStream();
      const error = this.#host.mapFailure(err);
      if (error.code === ErrorCodes.LeaseLost) throw new LeaseLostError(`session ${this.id}: etcd says its lease no longer exists`, { cause: error });
      if (error.code === ErrorCodes.Closed) throw new LeaseLostError(`session ${this.id}: the etcd client was closed`, { cause: error });
      throw error;
    } finally {
      waiting = false;
      if (timer !== undefined) this.clock.clearTimeout(timer);
    }
    const ttlSeconds = Number(res.TTL);
    if (!(ttlSeconds > 0)) throw new LeaseLostError(`session ${this.id}: etcd says its lease expired or was revoked`);
    return ttlSeconds * 1000;
  }

  /** Revokes even a lost lease: if etcd still has it, its keys go now rather than at its TTL. */
  protected end(): Promise<void> {
    this.#stop();
    return this.#host.revoke(this.id);
  }

  /** If etcd still has the lease, revoke it: our keys and locks should go now that we act as if they are gone. */
  protected override onLost(): Promise<void> {
    this.#stop();
    return this.#host.revoke(this.id);
  }

  /** Writes one keepalive and waits for its answer; `wanted` says whether the renewal still waits for it. */
  async #keepalive(wanted: () => boolean): Promise<ILeaseKeepAliveResponse> {
    const stream = this.#stream ?? (await this.#open());
    // A stream that opened after its renewal gave up is kept, but the keepalive is not sent: its
    // answer would be taken for the next renewal's, whose deadline counts from a later send time.
    if (!wanted()) throw new Error('the keepalive stream opened after its renewal gave up');
    return new Promise<ILeaseKeepAliveResponse>((resolve, reject) => {
      this.#answer = { resolve, reject };
      stream.write({ ID: this.id });
    });
  }

  /** One stream open at a time: a keepalive that timed out while opening leaves the open to the next. */
  #open(): Promise<KeepAliveStream> {
    this.#opening ??= this.#host.openKeepAlive().then(
      (stream) => {
        this.#opening = undefined;
        if (this.#ended) {
          closeStream(stream);
          throw new ClosedError(`session ${this.id} ended while its keepalive stream opened`);
        }
        this.#stream = stream;
        stream.on('data', (res: ILeaseKeepAliveResponse) => {
          if (stream !== this.#stream) return;
          const answer = this.#answer;
          this.#answer = undefined;
          answer?.resolve(res);
        });
        stream.on('error', (err: Error) => this.#fail(stream, err));
        stream.on('end', () => this.#fail(stream, new Error('etcd ended the keepalive stream')));
        return stream;
      },
      (err: unknown) => {
        this.#opening = undefined;
        throw err;
      },
    );
    return this.#opening;
  }

  #fail(stream: KeepAliveStream, err: unknown): void {
    if (stream === this.#stream) this.#dropStream(err);
  }

  #stop(): void {
    this.#ended = true;
    this.#dropStream(new ClosedError(`session ${this.id} ended`));
  }

  /** Closes the stream; a keepalive still waiting on it fails with `reason` (so its timer goes at once). */
  #dropStream(reason: unknown = new Error('the keepalive stream was replaced')): void {
    const stream = this.#stream;
    const answer = this.#answer;
    this.#stream = undefined;
    this.#answer = undefined;
    if (stream) closeStream(stream);
    answer?.reject(reason);
  }
}
