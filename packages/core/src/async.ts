/**
 * Timing primitives on an injectable clock: a wake-up signal for level-triggered
 * loops, a bounded wait, a deferred, ids. Sleep and backoff are the backend kit's
 * (one copy in the repository).
 */
import { abortError, randomHex, wallNow } from '@taskgraph/api';
import type { Clock } from '@taskgraph/api';

/**
 * A level-triggered wake-up: `notify()` any number of times, `wait()` resolves at
 * the next notify after it was called (or at once if one is pending).
 */
export class Notifier {
  private pending = false;
  private waiters: Array<() => void> = [];

  notify(): void {
    if (this.waiters.length === 0) {
      this.pending = true;
      return;
    }
    const ws = this.waiters;
    this.waiters = [];
    for (const w of ws) w();
  }

  wait(clock: Clock, timeoutMs: number, signal: AbortSignal): Promise<void> {
    if (this.pending) {
      this.pending = false;
      return Promise.resolve();
    }
    if (signal.aborted) return Promise.reject(abortError(signal));
    return new Promise<void>((resolve, reject) => {
      const done = () => {
        clock.clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        this.waiters = this.waiters.filter((w) => w !== done);
        resolve();
      };
      const onAbort = () => {
        clock.clearTimeout(timer);
        this.waiters = this.waiters.filter((w) => w !== done);
        reject(abortError(signal));
      };
      const timer = clock.setTimeout(done, timeoutMs);
      timer.unref?.();
      signal.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(done);
    });
  }
}

let counter = 0;
/** A process-unique id with some randomness, for node and request ids; time and randomness from `clock`. */
export function uniqueId(prefix: string, clock: Clock): string {
  counter = (counter + 1) % 1_000_000;
  return `${prefix}-${process.pid.toString(36)}-${Math.floor(wallNow(clock)).toString(36)}-${counter.toString(36)}-${randomHex(clock, 3)}`;
}

/** Waits for `p` at most `ms`; true when it settled in time. */
export async function withTimeout(clock: Clock, p: Promise<void>, ms: number): Promise<boolean> {
  let timer: ReturnType<Clock['setTimeout']> | undefined;
  const settled = await Promise.race([
    p.then(() => true),
    new Promise<boolean>((resolve) => {
      timer = clock.setTimeout(() => resolve(false), ms);
      timer.unref?.();
    }),
  ]);
  if (timer) clock.clearTimeout(timer);
  return settled;
}

export interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
  reject(reason: unknown): void;
}

/** A promise with its settle functions (Promise.withResolvers, which Node 20 lacks). */
export function deferred<T>(): Deferred<T> {
  let resolve: (value: T) => void = () => undefined;
  let reject: (reason: unknown) => void = () => undefined;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}
