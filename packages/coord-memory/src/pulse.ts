/**
 * A level-free wake-up: waiters re-check their condition after every pulse. The
 * store pulses on every commit and state change; watches and frozen calls wait on
 * it instead of polling.
 */
export class Pulse {
  readonly #waiters = new Set<() => void>();

  /** Wakes every current waiter. */
  fire(): void {
    if (this.#waiters.size === 0) return;
    const waiters = [...this.#waiters];
    this.#waiters.clear();
    for (const wake of waiters) wake();
  }

  /** How many waiters are registered now (tests check that stopped watches leave none). */
  get waiting(): number {
    return this.#waiters.size;
  }

  /** @internal */
  add(wake: () => void): () => void {
    this.#waiters.add(wake);
    return () => this.#waiters.delete(wake);
  }
}

/**
 * Resolves on the next pulse of any of `pulses`, or when any signal aborts (also
 * when one already has). Every registration is removed when it settles, so an
 * abandoned wait leaves nothing behind.
 */
export function nextPulse(pulses: readonly Pulse[], signals: readonly AbortSignal[]): Promise<void> {
  return new Promise((resolve) => {
    if (signals.some((s) => s.aborted)) {
      resolve();
      return;
    }
    const undo: (() => void)[] = [];
    const done = (): void => {
      for (const u of undo) u();
      resolve();
    };
    for (const p of pulses) undo.push(p.add(done));
    for (const s of signals) {
      s.addEventListener('abort', done, { once: true });
      undo.push(() => s.removeEventListener('abort', done));
    }
  });
}
