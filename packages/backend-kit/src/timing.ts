/**
 * Waiting on an injected clock, and the one retry backoff. Everything that waits
 * takes the clock as an argument so tests can drive it with a manual clock.
 */
import { abortError, randomOf, systemClock } from '@taskgraph/api';
import type { Clock } from '@taskgraph/api';

/** Resolves after `ms` on `clock`; rejects with the signal's abort error when it aborts first. */
export function sleep(clock: Clock, ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.reject(abortError(signal, 'sleep'));
  return new Promise<void>((resolve, reject) => {
    const onAbort = (): void => {
      clock.clearTimeout(timer);
      if (signal) reject(abortError(signal, 'sleep'));
    };
    const timer = clock.setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    timer.unref?.();
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Resolves after `ms` on `clock`, or as soon as the signal aborts (at once if it
 * has): it never rejects. For loops that look at their own stop conditions after
 * every wait and would only catch a rejection to ignore it.
 */
export function pause(clock: Clock, ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const done = (): void => {
      clock.clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = clock.setTimeout(done, ms);
    timer.unref?.();
    signal?.addEventListener('abort', done, { once: true });
  });
}

/**
 * Exponential backoff with jitter: `next()` grows from `initialMs` to `maxMs`,
 * doubling per call, and `reset()` starts over (after a success). Each delay is
 * drawn from the upper half of its step, so retries spread without collapsing to
 * zero. `random` returning 1 makes it exact (100, 200, 400, ...), and
 * `initialMs === maxMs` with it a fixed delay.
 */
export class Backoff {
  readonly #initialMs: number;
  readonly #maxMs: number;
  readonly #random: () => number;
  #attempt = 0;

  constructor(initialMs = 20, maxMs = 1000, random: () => number = randomOf(systemClock)) {
    this.#initialMs = initialMs;
    this.#maxMs = maxMs;
    this.#random = random;
  }

  next(): number {
    const base = Math.min(this.#maxMs, this.#initialMs * 2 ** this.#attempt);
    // Capped so the power never overflows however long the failures last.
    this.#attempt = Math.min(this.#attempt + 1, 30);
    return base / 2 + (base / 2) * this.#random();
  }

  reset(): void {
    this.#attempt = 0;
  }
}
