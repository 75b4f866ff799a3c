/**
 * The one way tests wait for something: poll a condition until it holds. Tests
 * wait on conditions, never on fixed sleeps, and never measure how fast a thing
 * happened; the timeout only bounds how long a broken build hangs.
 */
import { inspect } from 'node:util';

export interface EventuallyOptions {
  /** How long to keep trying before failing, in ms. Default 10 000. */
  readonly timeoutMs?: number;
  /**
   * The longest pause between two tries, in ms. Default 50. The first tries come
   * sooner (5 ms apart, doubling up to this), so a condition that holds almost at
   * once is seen almost at once, and a slow one is not polled in a busy loop.
   */
  readonly intervalMs?: number;
}

/** The values `if (v)` accepts. */
export type Truthy<T> = Exclude<T, false | 0 | 0n | '' | null | undefined>;

/**
 * Calls `condition` until it returns (or resolves with) a truthy value, and
 * resolves with that value. A try that throws counts as "not yet". On timeout it
 * throws an Error that names `what` ("… waiting until <what>") and the last value
 * or error the condition gave; the last error is also its `cause`.
 */
export async function eventually<T>(
  what: string,
  condition: () => T | Promise<T>,
  options: EventuallyOptions = {},
): Promise<Truthy<T>> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const intervalMs = options.intervalMs ?? 50;
  if (!(timeoutMs >= 0) || !(intervalMs > 0)) {
    throw new RangeError(`eventually(${JSON.stringify(what)}): timeoutMs must be >= 0 and intervalMs > 0`);
  }
  const deadline = performance.now() + timeoutMs;
  let pause = Math.min(5, intervalMs);
  let last: { value: unknown } | { error: unknown } = { value: undefined };
  for (;;) {
    try {
      const value = await condition();
      if (value) return value as Truthy<T>;
      last = { value };
    } catch (error) {
      last = { error };
    }
    if (performance.now() >= deadline) {
      const seen = 'error' in last ? `last error: ${describe(last.error)}` : `last value: ${describe(last.value)}`;
      throw new Error(`timed out after ${timeoutMs} ms waiting until ${what} (${seen})`, 'error' in last ? { cause: last.error } : undefined);
    }
    await new Promise((resolve) => setTimeout(resolve, pause));
    pause = Math.min(pause * 2, intervalMs);
  }
}

function describe(v: unknown): string {
  // A last value is falsy, so short; inspect tells '' from undefined.
  return v instanceof Error ? `${v.name}: ${v.message}` : inspect(v);
}
