/**
 * Waiting on the injected clock, stoppable by a signal.
 */
import type { Clock } from '@taskgraph/api';

/** Resolves after `ms` on the clock, or as soon as the signal aborts (it never rejects). */
export function pause(clock: Clock, ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) {
      resolve();
      return;
    }
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

/** Exponential backoff with jitter: 100 ms, 200 ms, ... up to `maxMs`. */
export function backoffMs(attempt: number, maxMs = 5000): number {
  const base = Math.min(maxMs, 100 * 2 ** Math.min(attempt, 16));
  return base / 2 + Math.random() * (base / 2);
}
