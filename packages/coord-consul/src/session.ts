/**
 * A Consul session as the contract's Session. The local deadline, the renewal
 * schedule and the ways a session ends are LeaseSession's; what is Consul's own:
 * a renewal is `PUT /v1/session/renew`, whose 404 says Consul invalidated the
 * session; ending it releases its locks before destroying it (a released lock
 * starts no lock-delay, one that goes with its session would); and a session the
 * client gave up on by its deadline is destroyed in the background, since Consul
 * would otherwise keep it, and its keys, until its own timer runs out.
 *
 * Consul invalidates a session TTL x 2 after its last renewal, measured from when
 * the server handled it; the local deadline counts from when the renewal was sent,
 * so it always passes first.
 */
import { LeaseLostError } from '@taskgraph/api';
import type { TaskGraphError } from '@taskgraph/api';
import { Backoff, LeaseSession } from '@taskgraph/backend-kit';
import type { LossCause, SessionContext } from '@taskgraph/backend-kit';

/** What a session needs from the Consul coordinator that opened it. */
export interface ConsulSessionHost {
  /** Renews on the server: resolves true, false when Consul no longer knows the session, rejects when unreachable. */
  renew(id: string, timeoutMs: number): Promise<boolean>;
  /** Destroys the session on the server (behavior "delete" removes its ephemeral keys). */
  destroy(id: string): Promise<void>;
}

export class ConsulSession extends LeaseSession {
  /** @internal The locks this session holds, released before the session is destroyed. */
  readonly locks = new Set<{ releaseForClose(): Promise<void> }>();
  readonly #host: ConsulSessionHost;

  /** @internal Opened by ConsulCoordinator; `sentAt` is when the create request was sent. */
  constructor(context: SessionContext, host: ConsulSessionHost, id: string, ttlMs: number, sentAt: number) {
    // A failed renewal is retried after a second (sooner for a TTL under 3 s), not
    // after another TTL/3, so one lost renewal does not cost the session.
    const retryMs = Math.min(ttlMs / 3, 1000);
    super(context, { id, ttlMs, sentAt, retry: new Backoff(retryMs, retryMs, () => 1) });
    this.#host = host;
  }

  protected async renew(): Promise<void> {
    // A renewal that hangs must not hold up the next one.
    if (!(await this.#host.renew(this.id, this.renewalIntervalMs))) {
      throw new LeaseLostError(`session ${this.id} was invalidated by Consul (expired or destroyed)`);
    }
  }

  protected async end(wasLost: boolean): Promise<void> {
    // Close leaves no request of its own running, and no renewal reaches Consul after the destroy.
    await this.renewal;
    if (!wasLost) await this.#destroy();
  }

  protected override onLost(_reason: TaskGraphError, cause: LossCause): Promise<void> | void {
    // Lost by the deadline, the session may still live on the server; lost by the server, it does not.
    if (cause === 'deadline') return this.#destroy();
    return undefined;
  }

  async #destroy(): Promise<void> {
    await Promise.allSettled([...this.locks].map((lock) => lock.releaseForClose()));
    await this.#host.destroy(this.id);
  }
}

/**
 * When Consul refused a transaction because it no longer knows `session` (its
 * errors say "invalid session" or "missing session"), the session is lost: marks it
 * so and returns the error to throw. Otherwise undefined.
 */
export function refusedSession(session: ConsulSession, refusal: string, what: string): LeaseLostError | undefined {
  if (!/invalid session|missing session/.test(refusal)) return undefined;
  const err = new LeaseLostError(`${what}: Consul no longer knows session ${session.id} (${refusal})`);
  session.lose(err);
  return err;
}
