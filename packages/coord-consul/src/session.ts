/**
 * A Consul session as the contract's Session: renewed every ttl/3, lost when
 * Consul answers a renewal with 404 (it invalidated the session) or when no
 * renewal has been acknowledged for ttl - margin on the local monotonic clock.
 *
 * Consul invalidates a session TTL x 2 after its last renewal, measured from when
 * the server handled it; the local deadline counts from when the renewal was sent,
 * so it always passes first.
 */
import { ClosedError, LeaseLostError, TaskGraphError } from '@taskgraph/api';
import type { Clock, Logger, Session, TimerHandle } from '@taskgraph/api';

/** What a session needs from its coordinator. */
export interface SessionHost {
  readonly clock: Clock;
  readonly logger: Logger;
  /** Renews on the server: resolves true, false when Consul no longer knows the session, rejects when unreachable. */
  renew(id: string, timeoutMs: number): Promise<boolean>;
  /** Destroys the session on the server (its locks first, so no lock-delay starts). */
  destroy(session: ConsulSession): Promise<void>;
  /** The session passed its local deadline: destroy it on the server in the background, best effort. */
  abandon(session: ConsulSession): void;
  forget(session: ConsulSession): void;
}

/** How long before the TTL runs out the client stops trusting its session. */
export function safetyMargin(ttlMs: number): number {
  return Math.min(ttlMs / 10, 1000);
}

export class ConsulSession implements Session {
  readonly id: string;
  readonly ttlMs: number;
  readonly lost: AbortSignal;
  /** @internal */
  readonly host: SessionHost;
  /** @internal The locks this session holds, released before the session is destroyed. */
  readonly locks = new Set<{ releaseForClose(): Promise<void> }>();
  readonly #controller = new AbortController();
  readonly #margin: number;
  #lastAck: number;
  #renewTimer: TimerHandle | undefined;
  #deadlineTimer: TimerHandle | undefined;
  #renewing: Promise<void> | undefined;
  #closing: Promise<void> | undefined;

  /** @internal `sentAt` is when the create request was sent. */
  constructor(host: SessionHost, id: string, ttlMs: number, sentAt: number) {
    this.host = host;
    this.id = id;
    this.ttlMs = ttlMs;
    this.lost = this.#controller.signal;
    this.#margin = safetyMargin(ttlMs);
    this.#lastAck = sentAt;
    this.#armDeadline();
    this.#scheduleRenew(ttlMs / 3);
  }

  /** When the client stops trusting the session unless a renewal is acknowledged first. */
  get deadline(): number {
    return this.#lastAck + this.ttlMs - this.#margin;
  }

  isLost(): boolean {
    if (this.lost.aborted) return true;
    // After a process pause the deadline timer may not have run yet: the clock decides.
    if (this.host.clock.now() >= this.deadline) {
      this.#loseByDeadline();
      return true;
    }
    return false;
  }

  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    const wasLost = this.lost.aborted;
    this.lose(new ClosedError(`session ${this.id} was closed`));
    await this.#renewing;
    if (wasLost) return;
    try {
      await this.host.destroy(this);
    } catch (err) {
      // Closing must not fail the caller: Consul expires a session it cannot be told about.
      this.host.logger.warn('could not destroy the Consul session; it will expire after its TTL', { session: this.id, error: String(err) });
    }
  }

  /** @internal Called when Consul says the session is gone, or on close. */
  lose(reason: TaskGraphError): void {
    if (this.lost.aborted) return;
    if (this.#renewTimer !== undefined) this.host.clock.clearTimeout(this.#renewTimer);
    if (this.#deadlineTimer !== undefined) this.host.clock.clearTimeout(this.#deadlineTimer);
    this.#renewTimer = undefined;
    this.#deadlineTimer = undefined;
    this.host.forget(this);
    this.#controller.abort(reason);
  }

  #scheduleRenew(ms: number): void {
    if (this.lost.aborted) return;
    this.#renewTimer = this.host.clock.setTimeout(() => {
      this.#renewTimer = undefined;
      this.#renewing = this.#renew().finally(() => {
        this.#renewing = undefined;
      });
    }, ms);
    this.#renewTimer.unref?.();
  }

  async #renew(): Promise<void> {
    const sentAt = this.host.clock.now();
    const interval = this.ttlMs / 3;
    try {
      // A renewal that hangs must not hold up the next one.
      const known = await this.host.renew(this.id, interval);
      if (this.lost.aborted) return;
      if (!known) {
        this.lose(new LeaseLostError(`session ${this.id} was invalidated by Consul (expired or destroyed)`));
        return;
      }
      this.#lastAck = sentAt;
      this.#armDeadline();
      this.#scheduleRenew(interval);
    } catch (err) {
      if (this.lost.aborted) return;
      this.host.logger.debug('session renewal failed; retrying', { session: this.id, error: String(err) });
      // Retry sooner than the regular cadence so one lost renewal does not cost the session.
      this.#scheduleRenew(Math.min(interval, 1000));
    }
  }

  #armDeadline(): void {
    if (this.#deadlineTimer !== undefined) this.host.clock.clearTimeout(this.#deadlineTimer);
    this.#deadlineTimer = undefined;
    const wait = this.deadline - this.host.clock.now();
    if (wait <= 0) {
      this.#loseByDeadline();
      return;
    }
    this.#deadlineTimer = this.host.clock.setTimeout(() => {
      this.#deadlineTimer = undefined;
      if (!this.isLost()) this.#armDeadline();
    }, wait);
    this.#deadlineTimer.unref?.();
  }

  /** The client gave up on the session; Consul may still hold it (and its keys) until its own timer runs out. */
  #loseByDeadline(): void {
    if (this.lost.aborted) return;
    this.lose(
      new LeaseLostError(
        `session ${this.id} is lost: no renewal was acknowledged for ${this.ttlMs - this.#margin} ms (ttl ${this.ttlMs} ms less a ${this.#margin} ms margin)`,
      ),
    );
    this.host.abandon(this);
  }
}
