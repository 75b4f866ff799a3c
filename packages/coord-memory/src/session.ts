/**
 * The client half of a memory session. The local deadline, the keepalive schedule
 * and the ways a session ends are LeaseSession's; what is memory's own is that the
 * store's notice of a server-side expiry is heard only while the client can hear
 * the store, and that a failed keepalive is retried at the regular cadence, as the
 * memory backend always did (its fault tests count keepalives by that cadence).
 */
import { LeaseLostError } from '@taskgraph/api';
import { Backoff, LeaseSession } from '@taskgraph/backend-kit';
import type { SessionContext } from '@taskgraph/backend-kit';
import type { SessionEnd } from './store.js';

/** What a session needs from the memory coordinator that opened it. */
export interface MemorySessionHost {
  /** Renews the session on the store; rejects like any call (Unavailable when unreachable, LeaseLost when gone). */
  keepalive(id: string): Promise<void>;
  /** Ends the session on the store. */
  closeRemote(id: string): Promise<void>;
  /** Subscribes to the store ending the session; returns the unsubscribe function. */
  onServerEnd(id: string, listener: (end: SessionEnd) => void): () => void;
  /** False while the client is cut off: it cannot hear the store then. */
  canHear(): boolean;
}

export class MemorySession extends LeaseSession {
  readonly #host: MemorySessionHost;

  /** @internal Opened by MemoryCoordinator; `sentAt` is when the open request was sent. */
  constructor(context: SessionContext, host: MemorySessionHost, id: string, ttlMs: number, sentAt: number) {
    const interval = ttlMs / 3;
    super(context, { id, ttlMs, sentAt, renewalName: 'keepalive', retry: new Backoff(interval, interval, () => 1) });
    this.#host = host;
    const unsubscribe = host.onServerEnd(id, (end) => {
      // 'closed' here is another client's endSession: our own close has already aborted `lost`.
      const how = end === 'expired' ? 'expired on the server' : 'was ended on the server by another client';
      if (host.canHear()) this.lose(new LeaseLostError(`session ${id} ${how}`));
    });
    if (this.lost.aborted) unsubscribe();
    else this.lost.addEventListener('abort', unsubscribe, { once: true });
  }

  protected async renew(): Promise<void> {
    await this.#host.keepalive(this.id);
  }

  protected end(): Promise<void> {
    return this.#host.closeRemote(this.id);
  }
}
