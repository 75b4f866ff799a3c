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

/** The real clock: `performance.now()` and the platform's timers. */
export const systemClock: Clock = {
  now: () => performance.now(),
  setTimeout: (callback, ms) => setTimeout(callback, ms),
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};
