/**
 * The clock the emulator reads for session timers, lock-delays and blocking-query
 * waits. Structurally the same as `Clock` in `@taskgraph/api` (this package has no
 * dependencies), so a test can pass its manual clock to expire sessions at once.
 */

export interface EmulatorTimerHandle {
  unref?(): void;
}

export interface EmulatorClock {
  /** Milliseconds on a monotonic scale. */
  now(): number;
  setTimeout(callback: () => void, ms: number): EmulatorTimerHandle;
  clearTimeout(handle: EmulatorTimerHandle): void;
}

export const realClock: EmulatorClock = {
  now: () => performance.now(),
  setTimeout: (callback, ms) => setTimeout(callback, ms),
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};
