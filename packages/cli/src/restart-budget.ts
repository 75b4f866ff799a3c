/**
 * When `run` restarts a node that failed: after a delay that grows with the
 * restarts of the same slot in the last window (doubling, jittered so nodes that
 * failed together do not come back together), and not at all once the slot has
 * used its budget for the window. A budget per window, not a fixed total, lets a
 * long job survive many separate faults while a node that fails in a loop stops
 * the run soon, with a reason.
 */
export interface RestartBudgetOptions {
  /** Restarts allowed per slot within one window. Default 5. */
  readonly maxPerWindow?: number;
  /** The window, in ms. Default 60 000. */
  readonly windowMs?: number;
  /** The delay before a slot's first restart in a window (before jitter), in ms. Default 500. */
  readonly baseDelayMs?: number;
  /** The longest delay, in ms. Default 15 000. */
  readonly maxDelayMs?: number;
  readonly now: () => number;
  /** In [0, 1); scales each delay to between half and all of its ceiling. */
  readonly random?: () => number;
}

export const DEFAULT_MAX_RESTARTS = 5;
export const DEFAULT_RESTART_WINDOW_MS = 60_000;

export class RestartBudget {
  readonly maxPerWindow: number;
  readonly windowMs: number;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly random: () => number;
  private readonly history = new Map<number, number[]>();

  constructor(private readonly o: RestartBudgetOptions) {
    this.maxPerWindow = o.maxPerWindow ?? DEFAULT_MAX_RESTARTS;
    this.windowMs = o.windowMs ?? DEFAULT_RESTART_WINDOW_MS;
    this.baseDelayMs = o.baseDelayMs ?? 500;
    this.maxDelayMs = o.maxDelayMs ?? 15_000;
    this.random = o.random ?? Math.random;
  }

  /**
   * Takes one restart of `slot` from its budget: the delay to wait before it, or
   * undefined when the slot already restarted `maxPerWindow` times in the window.
   */
  take(slot: number): number | undefined {
    const now = this.o.now();
    const recent = (this.history.get(slot) ?? []).filter((t) => now - t < this.windowMs);
    this.history.set(slot, recent);
    if (recent.length >= this.maxPerWindow) return undefined;
    const ceiling = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** recent.length);
    recent.push(now);
    return Math.round(ceiling * (0.5 + 0.5 * this.random()));
  }
}
