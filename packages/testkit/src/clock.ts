/**
 * A test clock: time moves only when the test says so. Code that takes an
 * injectable `Clock` (sessions, keepalives, deadlines) can then be driven to the
 * exact millisecond, with no sleeps and no timing flakes.
 */
import { InvalidArgumentError } from '@taskgraph/api';
import type { Clock, TimerHandle } from '@taskgraph/api';

/** A timer that has not fired nor been cleared. */
export interface PendingTimer {
  readonly id: number;
  /** When it fires, on this clock's scale. */
  readonly dueAt: number;
}

/** The handle ManualClock returns: unref/ref are accepted and mean nothing here. */
export interface ManualTimerHandle extends TimerHandle {
  readonly id: number;
  unref(): void;
  ref(): void;
}

interface Timer {
  readonly id: number;
  readonly dueAt: number;
  readonly callback: () => void;
}

/** Lets every promise job queued so far (and the jobs they queue) run. */
function flushPromiseJobs(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

export class ManualClock implements Clock {
  #now: number;
  #nextId = 1;
  readonly #timers = new Map<number, Timer>();
  #advancing = false;

  constructor(start = 0) {
    if (!Number.isFinite(start)) throw new InvalidArgumentError(`ManualClock start must be a finite number, got ${start}`);
    this.#now = start;
  }

  now(): number {
    return this.#now;
  }

  setTimeout(callback: () => void, ms: number): ManualTimerHandle {
    const delay = Number.isFinite(ms) && ms > 0 ? ms : 0;
    const id = this.#nextId++;
    this.#timers.set(id, { id, dueAt: this.#now + delay, callback });
    return { id, unref: () => undefined, ref: () => undefined };
  }

  clearTimeout(handle: TimerHandle): void {
    const id = (handle as Partial<ManualTimerHandle>).id;
    if (typeof id === 'number') this.#timers.delete(id);
  }

  /**
   * Moves time forward by `ms`, firing every timer that falls due on the way in
   * time order (ties in the order they were set), including timers that callbacks
   * set during the advance. `now()` reads each timer's due time while it runs.
   * Promise jobs are drained before and after each timer, so async work a timer
   * starts (a keepalive round trip) completes at that instant of the clock.
   */
  async advance(ms: number): Promise<void> {
    const target = this.#targetOf(ms);
    this.#enter();
    try {
      await flushPromiseJobs();
      for (let timer = this.#nextDue(target); timer; timer = this.#nextDue(target)) {
        this.#fire(timer);
        await flushPromiseJobs();
      }
      this.#now = target;
      await flushPromiseJobs();
    } finally {
      this.#advancing = false;
    }
  }

  /** Like {@link advance} but synchronous: promise jobs run only after it returns. */
  advanceSync(ms: number): void {
    const target = this.#targetOf(ms);
    this.#enter();
    try {
      for (let timer = this.#nextDue(target); timer; timer = this.#nextDue(target)) this.#fire(timer);
      this.#now = target;
    } finally {
      this.#advancing = false;
    }
  }

  /** The timers still pending, soonest first: tests assert this is empty after a close. */
  pendingTimers(): PendingTimer[] {
    return [...this.#timers.values()]
      .sort((a, b) => a.dueAt - b.dueAt || a.id - b.id)
      .map(({ id, dueAt }) => ({ id, dueAt }));
  }

  #targetOf(ms: number): number {
    if (!Number.isFinite(ms) || ms < 0) throw new InvalidArgumentError(`ManualClock.advance needs a finite, non-negative ms, got ${ms}`);
    return this.#now + ms;
  }

  #enter(): void {
    // Two overlapping advances would each move time to their own target and fire timers twice over.
    if (this.#advancing) throw new InvalidArgumentError('ManualClock.advance called while another advance is running; await it first');
    this.#advancing = true;
  }

  #nextDue(target: number): Timer | undefined {
    let best: Timer | undefined;
    for (const timer of this.#timers.values()) {
      if (timer.dueAt > target) continue;
      if (!best || timer.dueAt < best.dueAt || (timer.dueAt === best.dueAt && timer.id < best.id)) best = timer;
    }
    return best;
  }

  #fire(timer: Timer): void {
    this.#timers.delete(timer.id);
    if (timer.dueAt > this.#now) this.#now = timer.dueAt;
    timer.callback();
  }
}

/**
 * A ManualClock whose `defer()` queues callbacks for the test to run by hand, as a
 * simulator's scheduler would: what a client or a network defers on this clock waits
 * for {@link runDeferred}.
 */
export class DeferringClock extends ManualClock {
  readonly deferred: (() => void)[] = [];

  defer(callback: () => void): void {
    this.deferred.push(callback);
  }

  /** Runs the callbacks queued so far; returns how many. */
  runDeferred(): number {
    const batch = this.deferred.splice(0);
    for (const callback of batch) callback();
    return batch.length;
  }
}
