/**
 * The client half of every backend's session: the local deadline that makes `lost`
 * trustworthy, the renewal schedule, and the one way a session ends.
 *
 * The deadline is the send time of the last acknowledged renewal + TTL - margin, on
 * the monotonic clock. The server renewed the lease when it handled the request,
 * which is after it was sent, so until that moment the lease is certainly alive on
 * the server, whatever the network says: a partitioned client hears nothing, and a
 * stalled connection may never report an expiry. When no later renewal has been
 * acknowledged by then, the session is lost.
 *
 * A backend subclasses LeaseSession and supplies how to renew once, how to end the
 * session on the server, and, if it must, what to do when the session is lost.
 */
import { ClosedError, LeaseLostError, TaskGraphError, randomOf } from '@taskgraph/api';
import type { Clock, Logger, Session, TimerHandle } from '@taskgraph/api';
import { Backoff } from './timing.js';

/**
 * How long before the TTL runs out the client stops trusting its session: a tenth
 * of the TTL, at most one second. It covers a coarse clock tick and a server that
 * expires a little early (etcd sweeps expired leases every 500 ms). etcd's former
 * `max(100, round(ttl/10))` gives the same value for every TTL etcd accepts
 * (whole seconds, 1 s and up); only sub-second TTLs, which memory alone takes,
 * differ, and for those a tenth keeps the margin proportionate.
 */
export function safetyMargin(ttlMs: number): number {
  return Math.min(ttlMs / 10, 1000);
}

/** What a session needs from the coordinator that opened it (CoordinatorBase provides it). */
export interface SessionContext {
  readonly clock: Clock;
  readonly logger: Logger;
  /**
   * Called once, when the session is closed or lost, with the server-side work its
   * ending still does (end, or onLost): the coordinator stops counting the session
   * as open and waits for `work` before it closes its client.
   */
  ended(session: LeaseSession, work: Promise<void>): void;
}

export interface LeaseSessionInit {
  readonly id: string;
  /** The TTL the server granted (after rounding up to its granularity). */
  readonly ttlMs: number;
  /** When the request that created the session was sent, on the context's clock: the first deadline counts from it. */
  readonly sentAt: number;
  /**
   * The delays between renewals after a failed one, reset by an acknowledged one.
   * Default: `new Backoff(100, min(1000, ttl/3))`, so one lost renewal does not cost
   * the session.
   */
  readonly retry?: Backoff;
  /** What the backend calls a renewal, for messages: "keepalive" (etcd, memory) or "renewal" (the default). */
  readonly renewalName?: string;
}

/** Why a session was lost: its local deadline passed, or the server (or the backend for it) said so. */
export type LossCause = 'deadline' | 'server';

export abstract class LeaseSession implements Session {
  readonly id: string;
  readonly ttlMs: number;
  readonly lost: AbortSignal;
  protected readonly clock: Clock;
  protected readonly logger: Logger;
  /** A renewal is due this long after the last acknowledged one: a third of the TTL. */
  protected readonly renewalIntervalMs: number;
  readonly #context: SessionContext;
  readonly #controller = new AbortController();
  readonly #margin: number;
  readonly #retry: Backoff;
  readonly #renewalName: string;
  #deadline: number;
  #renewTimer: TimerHandle | undefined;
  #deadlineTimer: TimerHandle | undefined;
  #renewal: Promise<void> | undefined;
  #closing: Promise<void> | undefined;

  constructor(context: SessionContext, init: LeaseSessionInit) {
    this.#context = context;
    this.clock = context.clock;
    this.logger = context.logger;
    this.id = init.id;
    this.ttlMs = init.ttlMs;
    this.lost = this.#controller.signal;
    this.#margin = safetyMargin(init.ttlMs);
    this.renewalIntervalMs = init.ttlMs / 3;
    this.#retry = init.retry ?? new Backoff(100, Math.min(1000, this.renewalIntervalMs), randomOf(this.clock));
    this.#renewalName = init.renewalName ?? 'renewal';
    this.#deadline = init.sentAt + init.ttlMs - this.#margin;
    // Timers only: nothing here may call a hook before the subclass is constructed.
    this.#armDeadline();
    this.#scheduleRenewal(this.renewalIntervalMs);
  }

  // ---- what a backend implements ------------------------------------------------

  /**
   * Renews the session once on the server. Resolve when the server acknowledged it,
   * with the TTL in ms the answer granted if it carries one (etcd), else with
   * nothing. Reject with a LeaseLostError when the server says the session no
   * longer exists; any other rejection means "not known": it is retried (see
   * `retry`) until the deadline passes. Only one renewal runs at a time, and a
   * renewal that hangs holds up the next, so give it a timeout of your own (a third
   * of the TTL, `renewalIntervalMs`, is what the others use).
   */
  protected abstract renew(): Promise<number | void>;

  /**
   * Ends the session on the server (best effort): deletes what it owns there. Called
   * once, by `close()`; `wasLost` says the session had been lost before. A rejection
   * is logged, never thrown to the caller: the server expires a session it cannot
   * be told about.
   */
  protected abstract end(wasLost: boolean): Promise<void>;

  /**
   * What the backend does when the session is lost (not closed): revoke it on the
   * server, clean up what it owned, or nothing (the default). Called once, after
   * `lost` has fired; the coordinator waits for the returned work before closing.
   */
  protected onLost(_reason: TaskGraphError, _cause: LossCause): Promise<void> | void {
    return undefined;
  }

  // ---- the Session contract ----------------------------------------------------

  /** When the client stops trusting the session unless a renewal is acknowledged first. */
  get deadline(): number {
    return this.#deadline;
  }

  isLost(): boolean {
    if (this.lost.aborted) return true;
    // After a process pause the deadline timer may not have run yet: the clock is the authority.
    if (this.clock.now() < this.#deadline) return false;
    this.#lose(this.#deadlineError(), 'deadline');
    return true;
  }

  /** Ends the session: `lost` aborts with ClosedError at once, then `end()` runs. Idempotent; never rejects. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  /**
   * Marks the session lost because the server said so outside a renewal (a write
   * found no lease, an observer saw it deleted). For the backend; idempotent.
   */
  lose(reason: LeaseLostError): void {
    this.#lose(reason, 'server');
  }

  /** The renewal in flight, if any (Consul's end waits for it before destroying the session). */
  protected get renewal(): Promise<void> | undefined {
    return this.#renewal;
  }

  // ---- internals -------------------------------------------------------------------

  async #close(): Promise<void> {
    const wasLost = this.lost.aborted;
    this.#lose(new ClosedError(`session ${this.id} was closed`), 'closed');
    const work = this.#settle(() => this.end(wasLost), 'could not end the session on the server; it expires after its TTL');
    // A lost session already told the coordinator, with its onLost work.
    if (!wasLost) this.#context.ended(this, work);
    await work;
  }

  #lose(reason: TaskGraphError, cause: LossCause | 'closed'): void {
    if (this.lost.aborted) return;
    for (const timer of [this.#renewTimer, this.#deadlineTimer]) if (timer !== undefined) this.clock.clearTimeout(timer);
    this.#renewTimer = this.#deadlineTimer = undefined;
    this.#controller.abort(reason);
    if (cause === 'closed') return;
    this.logger.warn('session lost', { session: this.id, cause, reason: reason.message });
    this.#context.ended(this, this.#settle(() => this.onLost(reason, cause), 'the work after losing a session failed'));
  }

  /** Runs a hook to completion, logging instead of rejecting. */
  async #settle(hook: () => Promise<void> | void, warning: string): Promise<void> {
    try {
      await hook();
    } catch (err) {
      this.logger.warn(warning, { session: this.id, error: String(err) });
    }
  }

  #scheduleRenewal(delayMs: number): void {
    if (this.lost.aborted) return;
    const timer = this.clock.setTimeout(() => {
      this.#renewTimer = undefined;
      const renewal = this.#renewOnce().finally(() => {
        if (this.#renewal === renewal) this.#renewal = undefined;
      });
      this.#renewal = renewal;
    }, delayMs);
    timer.unref?.();
    this.#renewTimer = timer;
  }

  async #renewOnce(): Promise<void> {
    if (this.isLost()) return;
    const sentAt = this.clock.now();
    let granted: number | void;
    try {
      granted = await this.renew();
    } catch (err) {
      if (this.lost.aborted) return;
      if (TaskGraphError.is(err, 'LEASE_LOST')) {
        this.#lose(err, 'server');
        return;
      }
      const retryMs = this.#retry.next();
      this.logger.debug(`session ${this.#renewalName} failed; retrying`, { session: this.id, error: String(err), retryMs });
      this.#scheduleRenewal(retryMs);
      return;
    }
    // An answer that comes after the deadline (a paused process runs its I/O before
    // its timers) cannot revive the session: someone may already have taken over.
    if (this.isLost()) return;
    // The server renewed from when it received the request; counting from when it was sent is the safe side.
    this.#deadline = sentAt + (typeof granted === 'number' ? granted : this.ttlMs) - this.#margin;
    this.#retry.reset();
    this.#armDeadline();
    this.#scheduleRenewal(this.renewalIntervalMs);
  }

  #armDeadline(): void {
    if (this.#deadlineTimer !== undefined) this.clock.clearTimeout(this.#deadlineTimer);
    const timer = this.clock.setTimeout(
      () => {
        this.#deadlineTimer = undefined;
        // A timer may fire early on some clocks: re-arm until the clock agrees.
        if (!this.isLost()) this.#armDeadline();
      },
      Math.max(0, this.#deadline - this.clock.now()),
    );
    timer.unref?.();
    this.#deadlineTimer = timer;
  }

  #deadlineError(): LeaseLostError {
    return new LeaseLostError(
      `session ${this.id} is lost: no ${this.#renewalName} was acknowledged for ${this.ttlMs - this.#margin} ms (ttl ${this.ttlMs} ms less a ${this.#margin} ms margin)`,
    );
  }
}
