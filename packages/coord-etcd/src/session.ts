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
import type { ILeaseKeepAliveResponse } from 'etcd3';
import { ClosedError, ErrorCodes, LeaseLostError } from '@taskgraph/api';
import type { TaskGraphError, TimerHandle } from '@taskgraph/api';
import { LeaseSession } from '@taskgraph/backend-kit';
import type { SessionContext } from '@taskgraph/backend-kit';
import type { KeepAlive, KeepAlivePool } from './keepalive.js';

/** What a session needs from the etcd coordinator that opened it. */
export interface EtcdSessionHost {
  /** The coordinator's keepalive streams, pooled across its sessions. */
  readonly keepAlives: KeepAlivePool;
  /** A failed keepalive stream as a TaskGraph error. */
  mapFailure(err: unknown): TaskGraphError;
  /** Revokes the lease; resolves too when etcd no longer has it. */
  revoke(id: string): Promise<void>;
}

export class EtcdSession extends LeaseSession {
  readonly #host: EtcdSessionHost;
  /** The keepalive written and not yet answered. */
  #inFlight: KeepAlive | undefined;
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
        this.#keepalive(() => waiting && !this.#ended).then(resolve, reject);
      });
    } catch (err) {
      this.#inFlight?.abandon(err);
      const error = this.#host.mapFailure(err);
      if (error.code === ErrorCodes.LeaseLost) throw new LeaseLostError(`session ${this.id}: etcd says its lease no longer exists`, { cause: error });
      if (error.code === ErrorCodes.Closed) throw new LeaseLostError(`session ${this.id}: the etcd client was closed`, { cause: error });
      throw error;
    } finally {
      waiting = false;
      this.#inFlight = undefined;
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

  /** Writes one keepalive on a stream of the pool and waits for its answer; `wanted` says whether the renewal still waits. */
  async #keepalive(wanted: () => boolean): Promise<ILeaseKeepAliveResponse> {
    const keepAlive = await this.#host.keepAlives.send(this.id, wanted);
    this.#inFlight = keepAlive;
    return keepAlive.answer;
  }

  /** A keepalive still waiting fails at once (so its renewal's timer goes). */
  #stop(): void {
    this.#ended = true;
    this.#inFlight?.abandon(new ClosedError(`session ${this.id} ended`));
  }
}
