/**
 * Small runtime services the framework and backends take by injection, so that
 * tests can replace them: a clock (monotonic, pausable, skewable) and a logger.
 */

/** A timer handle returned by {@link Clock.setTimeout}. */
export interface TimerHandle {
  /** Lets the process exit while this timer is pending (Node's `unref`). */
  unref?(): void;
}

/**
 * Monotonic time and timers. `now()` is milliseconds on a monotonic scale (not wall
 * time): leases and deadlines are judged with it, never with `Date.now()`.
 */
export interface Clock {
  now(): number;
  setTimeout(callback: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
  /**
   * Runs `callback` on a later turn of the event loop, after the promise jobs queued
   * now (Node's `setImmediate`). Default ({@link deferOn}): `setImmediate`.
   */
  defer?(callback: () => void): void;
  /**
   * Wall-clock milliseconds since 1970, for timestamps written to records and never
   * for judging a lease. Default ({@link wallNow}): `Date.now()`.
   */
  wallNow?(): number;
  /**
   * Numbers in [0, 1) for the jitter of waits (backoff) and the ids the framework
   * makes. Default ({@link randomOf}): `Math.random` (ids: `crypto.randomBytes`).
   * A simulator gives one seeded source, so that a run replays from its seed.
   */
  random?(): number;
}

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export type LogFields = Readonly<Record<string, unknown>>;

/** A structured logger. `child` adds fields to every line it writes. */
export interface Logger {
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
  child(fields: LogFields): Logger;
}

/** Runs `callback` on a later turn: the clock's `defer`, else `setImmediate`. */
export function deferOn(clock: Clock, callback: () => void): void {
  if (clock.defer) clock.defer(callback);
  else setImmediate(callback);
}

/** Wall-clock ms since 1970 by the clock's `wallNow`, else `Date.now()`. */
export function wallNow(clock: Clock): number {
  return clock.wallNow ? clock.wallNow() : Date.now();
}

/** The clock's source of randomness in [0, 1), else `Math.random`. */
export function randomOf(clock: Clock): () => number {
  return clock.random ? () => clock.random!() : Math.random;
}

/**
 * `bytes` random bytes as lowercase hex, from the clock's `random` when it has one
 * (a simulation), else from the platform's cryptographic source.
 */
export function randomHex(clock: Clock, bytes: number): string {
  const b = new Uint8Array(bytes);
  if (clock.random) for (let i = 0; i < bytes; i++) b[i] = Math.floor(clock.random() * 256);
  else globalThis.crypto.getRandomValues(b);
  let out = '';
  for (const x of b) out += x.toString(16).padStart(2, '0');
  return out;
}

/** The real clock: `performance.now()` and the platform's timers. */
export const systemClock: Clock = {
  now: () => performance.now(),
  setTimeout: (callback, ms) => setTimeout(callback, ms),
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};
