/**
 * Why a wait ends early. A waiting acquire must give up when the caller's signal
 * aborts, when its session is lost, or when the coordinator closes, each with its
 * own error; every backend needs the same three checks before, during and after
 * each step of its wait. `Stops` names them once, in order of precedence.
 */
import type { TaskGraphError } from '@taskgraph/api';

export interface Stop {
  readonly signal: AbortSignal;
  /** The error the wait ends with when this signal aborts. */
  readonly error: () => TaskGraphError;
}

export class Stops {
  readonly #stops: readonly Stop[];

  constructor(stops: readonly Stop[]) {
    this.#stops = stops;
  }

  /** The signals, for APIs that take a list of them. */
  get signals(): AbortSignal[] {
    return this.#stops.map((s) => s.signal);
  }

  /** The error of the first stop (in the given order) whose signal has aborted, if any. */
  reason(): TaskGraphError | undefined {
    return this.#stops.find((s) => s.signal.aborted)?.error();
  }

  throwIfStopped(): void {
    const err = this.reason();
    if (err) throw err;
  }

  /**
   * Calls `listener` once with the error of the first stop to fire, synchronously
   * if one already has. Returns the function that unsubscribes.
   */
  onStop(listener: (err: TaskGraphError) => void): () => void {
    const early = this.reason();
    if (early) {
      listener(early);
      return () => undefined;
    }
    const unsubscribe = (): void => {
      for (const s of this.#stops) s.signal.removeEventListener('abort', onAbort);
    };
    const onAbort = (): void => {
      unsubscribe();
      const err = this.reason();
      if (err) listener(err);
    };
    for (const s of this.#stops) s.signal.addEventListener('abort', onAbort, { once: true });
    return unsubscribe;
  }

  /**
   * Settles like `work`, unless a stop fires first: then rejects with its error.
   * A failure of `work` after that is nobody's to handle, so it is swallowed.
   */
  race<T>(work: Promise<T>): Promise<T> {
    work.catch(() => undefined);
    return new Promise<T>((resolve, reject) => {
      const unsubscribe = this.onStop(reject);
      work.then(
        (value) => {
          unsubscribe();
          resolve(value);
        },
        (err: unknown) => {
          unsubscribe();
          reject(err);
        },
      );
    });
  }
}
