/**
 * Virtual time. Every timer and deferred callback of the simulated code is an event
 * in one queue ordered by (time, sequence); the scheduler runs one event, lets the
 * promise jobs and real turns it caused finish, and only then takes the next one, so
 * time advances only when every actor is idle. Each actor (a node, the store, the
 * network, the controller) reads time through its own clock: a paused actor's events
 * wait until it resumes, a crashed actor's are dropped, and an actor's clock can jump
 * ahead of the others.
 */
import { createHash } from 'node:crypto';
import type { Clock, TimerHandle } from '@taskgraph/api';
import type { Rng } from './rng.js';

/** Captured at load, before any guard: the scheduler's own turn of the real event loop. */
const realSetImmediate = globalThis.setImmediate;

/** Wall-clock time of virtual 0 (2026-01-01T00:00:00Z): records get stable timestamps. */
export const WALL_EPOCH_MS = Date.UTC(2026, 0, 1);

export class Actor {
  dead = false;
  pausedUntil = 0;
  /** How far this actor's clock is ahead of virtual time (clock jumps). */
  offset = 0;
  readonly clock: Clock;

  constructor(
    readonly name: string,
    private readonly scheduler: Scheduler,
  ) {
    this.clock = scheduler.clockOf(this);
  }
}

interface SimEvent {
  time: number;
  seq: number;
  readonly actor: Actor;
  readonly fn: () => void;
  cancelled: boolean;
}

interface SimTimer extends TimerHandle {
  readonly event: SimEvent;
}

/** A binary min-heap of events by (time, seq). */
class EventQueue {
  #items: SimEvent[] = [];

  get size(): number {
    return this.#items.length;
  }

  push(e: SimEvent): void {
    const a = this.#items;
    a.push(e);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!before(a[i]!, a[p]!)) break;
      [a[i], a[p]] = [a[p]!, a[i]!];
      i = p;
    }
  }

  pop(): SimEvent | undefined {
    const a = this.#items;
    if (a.length === 0) return undefined;
    const top = a[0]!;
    const last = a.pop()!;
    if (a.length > 0) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && before(a[l]!, a[m]!)) m = l;
        if (r < a.length && before(a[r]!, a[m]!)) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m]!, a[i]!];
        i = m;
      }
    }
    return top;
  }

  /** Re-times some events (a clock jump) and restores the heap. */
  retime(f: (e: SimEvent) => void): void {
    const items = this.#items;
    this.#items = [];
    for (const e of items) {
      f(e);
      this.push(e);
    }
  }
}

function before(x: SimEvent, y: SimEvent): boolean {
  return x.time < y.time || (x.time === y.time && x.seq < y.seq);
}

export interface DeferJitter {
  /** The chance that a deferred callback waits a little virtual time rather than none. */
  readonly probability: number;
  readonly maxMs: number;
}

export type RunEnd = 'done' | 'idle' | 'time-limit' | 'step-limit';

export class Scheduler {
  now = 0;
  steps = 0;
  readonly #queue = new EventQueue();
  #seq = 0;
  readonly #hash = createHash('sha256');
  readonly actors: Actor[] = [];

  constructor(
    readonly rng: Rng,
    readonly jitter: DeferJitter = { probability: 0.3, maxMs: 2 },
  ) {}

  actor(name: string): Actor {
    const a = new Actor(name, this);
    this.actors.push(a);
    return a;
  }

  /** Pending events (cancelled ones included until they are reached). */
  get pending(): number {
    return this.#queue.size;
  }

  /** The hash of every event run so far and what the step hook added: equal for equal seeds. */
  traceHash(): string {
    return this.#hash.copy().digest('hex');
  }

  /** Adds a line to the trace hash (the step hook records the state it checked). */
  record(line: string): void {
    this.#hash.update(line);
    this.#hash.update('\n');
  }

  at(actor: Actor, delayMs: number, fn: () => void): SimEvent {
    const e: SimEvent = { time: this.now + Math.max(0, delayMs), seq: ++this.#seq, actor, fn, cancelled: false };
    this.#queue.push(e);
    return e;
  }

  clockOf(actor: Actor): Clock {
    const rng = this.rng;
    return {
      now: () => this.now + actor.offset,
      wallNow: () => WALL_EPOCH_MS + this.now + actor.offset,
      random: () => rng.next(),
      setTimeout: (callback, ms) => {
        const event = this.at(actor, Number.isFinite(ms) && ms > 0 ? ms : 0, callback);
        const timer: SimTimer = { event, unref: () => undefined };
        return timer;
      },
      clearTimeout: (handle) => {
        const event = (handle as Partial<SimTimer> | undefined)?.event;
        if (event) event.cancelled = true;
      },
      defer: (callback) => {
        const { probability, maxMs } = this.jitter;
        this.at(actor, probability > 0 && rng.chance(probability) ? rng.between(0, maxMs) : 0, callback);
      },
    };
  }

  /** The actor's clock jumps `ms` ahead: its pending timers come due that much sooner. */
  jump(actor: Actor, ms: number): void {
    actor.offset += ms;
    this.#queue.retime((e) => {
      if (e.actor === actor) e.time = Math.max(this.now, e.time - ms);
    });
  }

  /**
   * Runs events until `done()` holds after a step (checked when everything the last
   * event caused has run), the queue is empty, virtual time passes `maxTimeMs`, or
   * `maxSteps` events ran. `afterStep` runs after every step, outside the event.
   */
  async run(o: { done: () => boolean; afterStep: () => void; maxTimeMs: number; maxSteps: number; onError: (err: unknown, actor: Actor) => void }): Promise<RunEnd> {
    for (;;) {
      await new Promise<void>((resolve) => realSetImmediate(resolve));
      o.afterStep();
      if (o.done()) return 'done';
      const e = this.#queue.pop();
      if (e === undefined) return 'idle';
      if (e.cancelled || e.actor.dead) continue;
      if (e.actor.pausedUntil > e.time) {
        // A paused actor takes its events when it resumes, in their order.
        e.time = e.actor.pausedUntil;
        e.seq = ++this.#seq;
        this.#queue.push(e);
        continue;
      }
      if (e.time > o.maxTimeMs) return 'time-limit';
      if (++this.steps > o.maxSteps) return 'step-limit';
      this.now = Math.max(this.now, e.time);
      this.#hash.update(`${this.now.toFixed(3)} ${e.actor.name}\n`);
      try {
        e.fn();
      } catch (err) {
        o.onError(err, e.actor);
      }
    }
  }
}
