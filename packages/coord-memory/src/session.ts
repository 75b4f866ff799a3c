/**
 * The client half of a session: keepalives every ttl/3 on the client's clock, and
 * the local deadline (last acknowledged keepalive + ttl - margin) that declares the
 * session lost even when nothing from the server says so.
 */
import { ClosedError, LeaseLostError, TaskGraphError } from '@taskgraph/api';
import type { Clock, Logger, Session, TimerHandle } from '@taskgraph/api';

/** What a session needs from the coordinator that opened it. */
export interface SessionHost {
  readonly clock: Clock;
  readonly logger: Logger;
  /** Renews the session on the server; rejects like any call (Unavailable when unreachable). */
  keepalive(id: string): Promise<void>;
  /** Ends the session on the server (best effort). */
  closeRemote(id: string): Promise<void>;
  /** Subscribes to the server ending the session; returns the unsubscribe function. */
  onServerEnd(id: string, listener: () => void): () => void;
  /** False while the client is cut off: it cannot hear the server then. */
  canHear(): boolean;
  forget(session: MemorySession): void;
}

/** How long before the TTL runs out the client stops trusting its session. */
export function safetyMargin(ttlMs: number): number {
  return Math.min(ttlMs / 10, 1000);
}

export class MemorySession implements Session {
  readonly id: string;
  readonly ttlMs: number;
  readonly lost: AbortSignal;
  /** @internal */
  readonly host: SessionHost;
  readonly #controller = new AbortController();
  readonly #margin: number;
  #lastAck: number;
  #keepaliveTimer: TimerHandle | undefined;
  #deadlineTimer: TimerHandle | undefined;
  #unsubscribe: (() => void) | undefined;
  #closing: Promise<void> | undefined;

  /** @internal Opened by MemoryCoordinator.openSession; `sentAt` is when the open request was sent. */
  constructor(host: SessionHost, id: string, ttlMs: number, sentAt: number) {
    this.host = host;
    this.id = id;
    this.ttlMs = ttlMs;
    this.lost = this.#controller.signal;
    this.#margin = safetyMargin(ttlMs);
    this.#lastAck = sentAt;
    this.#unsubscribe = host.onServerEnd(id, () => {
      if (host.canHear()) this.#lose(new LeaseLostError(`session ${id} expired on the server`));
    });
    this.#armDeadline();
    this.#scheduleKeepalive();
  }

  /** When the client stops trusting the session unless a keepalive is acknowledged first. */
  get deadline(): number {
    return this.#lastAck + this.ttlMs - this.#margin;
  }

  isLost(): boolean {
    if (this.lost.aborted) return true;
    // The deadline timer may not have run yet after a process pause; the clock is the authority.
    if (this.host.clock.now() >= this.deadline) {
      this.#lose(this.#deadlineError());
      return true;
    }
    return false;
  }

  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#lose(new ClosedError(`session ${this.id} was closed`));
    try {
      await this.host.closeRemote(this.id);
    } catch (err) {
      // Closing must not fail the caller: a server we cannot reach expires the session by its TTL.
      this.host.logger.warn('could not close the session on the server; it will expire after its TTL', {
        session: this.id,
        error: String(err),
      });
    }
  }

  #scheduleKeepalive(): void {
    if (this.lost.aborted) return;
    this.#keepaliveTimer = this.host.clock.setTimeout(() => {
      this.#keepaliveTimer = undefined;
      void this.#keepalive();
    }, this.ttlMs / 3);
    this.#keepaliveTimer.unref?.();
  }

  async #keepalive(): Promise<void> {
    const sentAt = this.host.clock.now();
    try {
      await this.host.keepalive(this.id);
      if (this.lost.aborted) return;
      // The server renewed from when it received the request; counting from when it was sent is the safe side.
      this.#lastAck = sentAt;
      this.#armDeadline();
    } catch (err) {
      if (this.lost.aborted) return;
      if (TaskGraphError.is(err, 'LEASE_LOST')) {
        this.#lose(err);
        return;
      }
      this.host.logger.debug('keepalive failed; retrying', { session: this.id, error: String(err) });
    } finally {
      this.#scheduleKeepalive();
    }
  }

  #armDeadline(): void {
    if (this.#deadlineTimer !== undefined) this.host.clock.clearTimeout(this.#deadlineTimer);
    this.#deadlineTimer = undefined;
    if (this.lost.aborted) return;
    const wait = this.deadline - this.host.clock.now();
    if (wait <= 0) {
      this.#lose(this.#deadlineError());
      return;
    }
    this.#deadlineTimer = this.host.clock.setTimeout(() => {
      this.#deadlineTimer = undefined;
      if (!this.isLost()) this.#armDeadline();
    }, wait);
    this.#deadlineTimer.unref?.();
  }

  #deadlineError(): LeaseLostError {
    return new LeaseLostError(
      `session ${this.id} is lost: no keepalive was acknowledged for ${this.ttlMs - this.#margin} ms (ttl ${this.ttlMs} ms less a ${this.#margin} ms margin)`,
    );
  }

  #lose(reason: TaskGraphError): void {
    if (this.lost.aborted) return;
    if (this.#keepaliveTimer !== undefined) this.host.clock.clearTimeout(this.#keepaliveTimer);
    if (this.#deadlineTimer !== undefined) this.host.clock.clearTimeout(this.#deadlineTimer);
    this.#keepaliveTimer = undefined;
    this.#deadlineTimer = undefined;
    this.#unsubscribe?.();
    this.#unsubscribe = undefined;
    this.host.forget(this);
    this.#controller.abort(reason);
  }
}
