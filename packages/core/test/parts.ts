/**
 * What the unit tests of the node's parts share: a memory store on a ManualClock
 * (sessions expire and backoffs end only when a test advances time), a logger that
 * records what it is told, a coordinator wrapper that can hold or misreport a
 * write, and small promise and byte helpers.
 */
import { IndeterminateError, TaskGraphError } from '@taskgraph/api';
import type {
  AcquireOptions,
  Coordinator,
  CoordinatorCaps,
  CreateOptions,
  Entry,
  ListResult,
  Lock,
  LockHolder,
  LockOptions,
  LogFields,
  LogLevel,
  Logger,
  Session,
  SessionOptions,
  Version,
  WatchBatch,
  WatchOptions,
} from '@taskgraph/api';
import { MemoryCoordinator, MemoryStore } from '@taskgraph/coord-memory';
import { ManualClock } from '@taskgraph/testkit';

let seq = 0;

/** A fresh job name (job names are DNS labels). */
export function jobName(): string {
  return `part-${++seq}`;
}

/** One store on a ManualClock, and clients of it that a test closes with `close()`. */
export function memoryWorld() {
  const clock = new ManualClock(1_000_000);
  const store = new MemoryStore({ clock });
  const clients: MemoryCoordinator[] = [];
  return {
    clock,
    store,
    job: jobName(),
    client(): MemoryCoordinator {
      const c = new MemoryCoordinator({ store, namespace: 'tg' });
      clients.push(c);
      return c;
    },
    /** The stored value of a key of namespace `tg`, as text; undefined when absent. */
    text(key: string): string | undefined {
      const e = store.entries().find((x) => x.key === `tg/${key}`);
      return e && new TextDecoder().decode(e.value);
    },
    /** The session a key of namespace `tg` is tied to, if any. */
    sessionOf(key: string): string | undefined {
      return store.entries().find((x) => x.key === `tg/${key}`)?.session;
    },
    async close(): Promise<void> {
      for (const c of clients.reverse()) await c.close();
    },
  };
}

export interface LogLine {
  readonly level: LogLevel;
  readonly message: string;
  readonly fields: LogFields;
}

/** A logger that keeps every line (children write to the same list). */
export function recordingLogger(lines: LogLine[] = [], base: LogFields = {}): Logger & { readonly lines: LogLine[] } {
  const log = (level: LogLevel) => (message: string, fields: LogFields = {}) => void lines.push({ level, message, fields: { ...base, ...fields } });
  return {
    lines,
    debug: log('debug'),
    info: log('info'),
    warn: log('warn'),
    error: log('error'),
    child: (fields) => recordingLogger(lines, { ...base, ...fields }),
  };
}

/** What the next write through a {@link FlakyCoordinator} does instead of a plain write. */
export type WriteTrick =
  /** Applied, then reported as IndeterminateError (the answer was lost). */
  | 'applied-then-indeterminate'
  /** Not applied, reported as IndeterminateError (the request was lost). */
  | 'lost-indeterminate'
  /** Waits until the returned `release` is called, then writes. */
  | { readonly hold: Promise<void> };

/**
 * A real coordinator with a hook on its writes: `tricks` are taken one per create or
 * update, in order, so a test scripts exactly which write is misreported or held.
 */
export class FlakyCoordinator implements Coordinator {
  readonly caps: CoordinatorCaps;
  readonly tricks: WriteTrick[] = [];
  /** Keys written through create or update, in order (including misreported ones). */
  readonly writes: string[] = [];
  /** Prefixes passed to deletePrefix, in order. */
  readonly deletedPrefixes: string[] = [];
  /** Runs before each create or update; a promise it returns holds that write until it settles. */
  beforeWrite: ((key: string) => Promise<void> | undefined) | undefined;

  constructor(
    readonly inner: Coordinator,
    caps?: Partial<CoordinatorCaps>,
  ) {
    this.caps = { ...inner.caps, ...caps };
  }

  get(key: string): Promise<Entry | undefined> {
    return this.inner.get(key);
  }

  list(prefix: string): Promise<ListResult> {
    return this.inner.list(prefix);
  }

  create(key: string, value: Uint8Array, options?: CreateOptions): Promise<Version> {
    return this.write(key, () => this.inner.create(key, value, options));
  }

  update(key: string, value: Uint8Array, expect: Version): Promise<Version> {
    return this.write(key, () => this.inner.update(key, value, expect));
  }

  delete(key: string, expect: Version): Promise<void> {
    return this.inner.delete(key, expect);
  }

  deletePrefix(prefix: string): Promise<void> {
    this.deletedPrefixes.push(prefix);
    return this.inner.deletePrefix(prefix);
  }

  watch(prefix: string, options: WatchOptions): AsyncIterable<WatchBatch> {
    return this.inner.watch(prefix, options);
  }

  openSession(options: SessionOptions): Promise<Session> {
    return this.inner.openSession(options);
  }

  endSession(id: string): Promise<void> {
    return this.inner.endSession(id);
  }

  acquire(name: string, session: Session, options?: AcquireOptions): Promise<Lock> {
    return this.inner.acquire(name, session, options);
  }

  tryAcquire(name: string, session: Session, options?: LockOptions): Promise<Lock | undefined> {
    return this.inner.tryAcquire(name, session, options);
  }

  holder(name: string): Promise<LockHolder | undefined> {
    return this.inner.holder(name);
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  private async write(key: string, apply: () => Promise<Version>): Promise<Version> {
    this.writes.push(key);
    await this.beforeWrite?.(key);
    const trick = this.tricks.shift();
    if (trick === 'lost-indeterminate') throw new IndeterminateError(`write of ${key}: no answer (not applied)`);
    if (trick === 'applied-then-indeterminate') {
      await apply();
      throw new IndeterminateError(`write of ${key}: no answer (applied)`);
    }
    if (trick !== undefined) await trick.hold;
    return apply();
  }
}

/** A promise a test resolves when it wants. */
export function gate(): { readonly promise: Promise<void>; open(): void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { promise, open };
}

/** Watches a promise without awaiting it: `state.settled` turns true when it settles. */
export function track<T>(p: Promise<T>): { readonly state: { settled: boolean; value?: T; error?: unknown }; readonly promise: Promise<T> } {
  const state: { settled: boolean; value?: T; error?: unknown } = { settled: false };
  void p.then(
    (value) => {
      state.settled = true;
      state.value = value;
    },
    (error: unknown) => {
      state.settled = true;
      state.error = error;
    },
  );
  return { state, promise: p };
}

/** The rejection of `p` (fails the test when it resolves). */
export async function rejectionOf(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    (v: unknown) => {
      throw new Error(`expected a rejection, got ${JSON.stringify(v)}`);
    },
    (err: unknown) => err,
  );
}

/** The code of a TaskGraphError (or the text of anything else). */
export function codeOf(err: unknown): string {
  return TaskGraphError.is(err) ? err.code : String(err);
}

/**
 * Awaits `p` while moving `clock` on in `stepMs` steps, for code whose waits (backoffs)
 * a test does not want to pin down; fails after `maxSteps` steps.
 */
export async function settleOn<T>(clock: ManualClock, p: Promise<T>, stepMs = 1000, maxSteps = 100): Promise<T> {
  const t = track(p);
  for (let i = 0; !t.state.settled; i++) {
    if (i === maxSteps) throw new Error(`still pending after ${maxSteps} steps of ${stepMs} ms`);
    await turn();
    if (!t.state.settled) await clock.advance(stepMs);
  }
  return p;
}

/** Lets promise jobs and immediates queued so far run. */
export function turn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

const enc = new TextEncoder();
const dec = new TextDecoder();

export const bytes = (s: string): Uint8Array => enc.encode(s);
export const text = (b: Uint8Array): string => dec.decode(b);
