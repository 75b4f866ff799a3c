/** A held lock, as the client sees it. */
import { ClosedError, LeaseLostError, TaskGraphError } from '@taskgraph/api';
import type { Lock } from '@taskgraph/api';
import type { MemorySession } from './session.js';

/** What a lock needs from the coordinator that acquired it. */
export interface LockHost {
  release(storedName: string, name: string, sessionId: string, token: bigint): Promise<void>;
}

export class MemoryLock implements Lock {
  readonly name: string;
  readonly owner: string;
  readonly token: bigint;
  readonly lost: AbortSignal;
  readonly #controller = new AbortController();
  readonly #host: LockHost;
  readonly #storedName: string;
  readonly #session: MemorySession;
  readonly #onSessionLost = (): void => {
    const reason: unknown = this.#session.lost.reason;
    this.#lose(
      TaskGraphError.is(reason, 'CLOSED')
        ? new ClosedError(`lock ${JSON.stringify(this.name)} ended: its session ${this.#session.id} was closed`, { cause: reason })
        : new LeaseLostError(`lock ${JSON.stringify(this.name)} is lost: its session ${this.#session.id} was lost`, { cause: reason }),
    );
  };

  /** @internal */
  constructor(host: LockHost, storedName: string, name: string, owner: string, token: bigint, session: MemorySession) {
    this.#host = host;
    this.#storedName = storedName;
    this.name = name;
    this.owner = owner;
    this.token = token;
    this.#session = session;
    this.lost = this.#controller.signal;
    if (session.lost.aborted) this.#onSessionLost();
    else session.lost.addEventListener('abort', this.#onSessionLost, { once: true });
  }

  /**
   * Releases the lock; the next waiter gets it. A no-op once the lock is lost.
   * If the server cannot be reached the call rejects and the lock stays held (and
   * `lost` untouched) until a retry succeeds or the session ends.
   */
  async release(): Promise<void> {
    if (this.lost.aborted) return;
    await this.#host.release(this.#storedName, this.name, this.#session.id, this.token);
    this.#lose(new ClosedError(`lock ${JSON.stringify(this.name)} was released`));
  }

  #lose(reason: TaskGraphError): void {
    if (this.lost.aborted) return;
    this.#session.lost.removeEventListener('abort', this.#onSessionLost);
    this.#controller.abort(reason);
  }
}
