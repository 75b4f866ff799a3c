/**
 * What a client has going, per session and lock name: the acquire or tryAcquire in
 * flight, and the Locks it handed out that are not over yet. It is what tells a
 * holding this client knows of (a live Lock) from one whose answer was lost (the
 * store shows the session holding the lock, and no Lock here stands for it): the
 * second is adopted by the next acquire or tryAcquire of that session and name.
 *
 * A Lock is over once it is lost or released and no `release()` of it is in flight:
 * some backends abort `lost` as soon as `release()` is called, before the server
 * has let go, and a call that adopted the holding in between would be handed a lock
 * the release then frees under it.
 */
import type { Lock } from '@taskgraph/api';
import type { Stops } from './stops.js';

/** The calls and Locks of one session for one lock name, in one client. */
export class LockSlot {
  /** An acquire or tryAcquire of this session and name is in flight. */
  calling = false;
  /** Locks handed out and not over (not lost nor released, or with a release in flight). */
  readonly locks = new Set<TrackedLock>();
  #waiters = new Set<() => void>();

  get idle(): boolean {
    return !this.calling && this.locks.size === 0;
  }

  /** Wakes everyone waiting in {@link next}. */
  changed(): void {
    const waiters = this.#waiters;
    this.#waiters = new Set();
    for (const wake of waiters) wake();
  }

  /** Resolves at the next change of this slot; rejects with the stop's error if one fires first. */
  next(stops: Stops): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const wake = (): void => {
        unsubscribe();
        resolve();
      };
      this.#waiters.add(wake);
      const unsubscribe = stops.onStop((err) => {
        this.#waiters.delete(wake);
        reject(err);
      });
    });
  }
}

/** The calls and Locks of one session, per lock name, in one client. */
export class LockRegistry {
  readonly #slots = new Map<string, LockSlot>();

  /** The slot of `name`, made if there is none. */
  slot(name: string): LockSlot {
    let slot = this.#slots.get(name);
    if (slot === undefined) {
      slot = new LockSlot();
      this.#slots.set(name, slot);
    }
    return slot;
  }

  /** The slot of `name` if there is one. */
  find(name: string): LockSlot | undefined {
    return this.#slots.get(name);
  }

  /** Tells the slot's waiters, and forgets the slot once nothing is going on in it. */
  changed(name: string, slot: LockSlot): void {
    if (slot.idle && this.#slots.get(name) === slot) this.#slots.delete(name);
    slot.changed();
  }
}

/**
 * The Lock the coordinator hands out: the backend's Lock, watched so the registry
 * knows when it is over. Every property and `release()` are the backend Lock's.
 */
export class TrackedLock implements Lock {
  readonly name: string;
  readonly owner: string;
  readonly token: bigint;
  readonly lost: AbortSignal;
  readonly #inner: Lock;
  readonly #over: (lock: TrackedLock) => void;
  #releasing: Promise<void> | undefined;
  /** Set before the backend's release runs: it may abort `lost` synchronously. */
  #inRelease = false;
  #ended = false;

  /** `over` is called once, when the lock is lost or released and no release is in flight. */
  constructor(inner: Lock, over: (lock: TrackedLock) => void) {
    this.#inner = inner;
    this.#over = over;
    this.name = inner.name;
    this.owner = inner.owner;
    this.token = inner.token;
    this.lost = inner.lost;
    if (this.lost.aborted) this.#end();
    else this.lost.addEventListener('abort', () => !this.#inRelease && this.#end(), { once: true });
  }

  /** True once the lock is over: the registry no longer counts it. */
  get ended(): boolean {
    return this.#ended;
  }

  /** The backend's release; calls made while one is in flight share it. */
  release(): Promise<void> {
    this.#releasing ??= this.#release();
    return this.#releasing;
  }

  async #release(): Promise<void> {
    this.#inRelease = true;
    try {
      await this.#inner.release();
    } finally {
      this.#inRelease = false;
      this.#releasing = undefined;
      // A release that failed on a backend that aborts `lost` first leaves the holding to the store: the next call adopts it.
      if (this.lost.aborted) this.#end();
    }
  }

  #end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#over(this);
  }
}
