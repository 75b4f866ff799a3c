/**
 * A backend written on the kit for its tests: sessions whose renewals the test
 * answers one by one, and a coordinator over a Map that records every hook call.
 * They are real subclasses of the kit's bases, not mocks: the bases are abstract,
 * and this is the smallest backend that exercises them.
 */
import { LeaseLostError, TaskGraphError } from '@taskgraph/api';
import type { Clock, CoordinatorCaps, Entry, ListResult, Lock, LockHolder, Version, WatchBatch } from '@taskgraph/api';
import { ManualClock } from '@taskgraph/testkit';
import { CoordinatorBase, LeaseSession, silentLogger } from '../src/index.js';
import type { LeaseSessionInit, LossCause, SessionContext } from '../src/index.js';

export interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
  reject(err: unknown): void;
}

export function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Lets every promise job queued so far run. */
export const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export const code = (e: unknown): string | undefined => (TaskGraphError.is(e) ? e.code : undefined);

export async function rejection(p: Promise<unknown> | (() => unknown)): Promise<unknown> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

/** A session whose every renewal waits for the test to answer it. */
export class ScriptedSession extends LeaseSession {
  /** The renewals asked for, oldest first, with when each was asked. */
  readonly renewals: { readonly at: number; readonly answer: Deferred<number | void> }[] = [];
  /** `wasLost` of each end() call. */
  readonly ends: boolean[] = [];
  readonly losses: { readonly reason: TaskGraphError; readonly cause: LossCause }[] = [];
  /** What end() does; a test may make it fail or hang. */
  endWith: () => Promise<void> = () => Promise.resolve();

  protected renew(): Promise<number | void> {
    const answer = deferred<number | void>();
    this.renewals.push({ at: this.clock.now(), answer });
    return answer.promise;
  }

  protected end(wasLost: boolean): Promise<void> {
    this.ends.push(wasLost);
    return this.endWith();
  }

  protected override onLost(reason: TaskGraphError, cause: LossCause): void {
    this.losses.push({ reason, cause });
  }

  /** The renewal asked for last, which the test answers. */
  get pending(): Deferred<number | void> {
    const last = this.renewals[this.renewals.length - 1];
    if (!last) throw new Error('no renewal was asked for');
    return last.answer;
  }

  /** For tests: the protected interval. */
  get interval(): number {
    return this.renewalIntervalMs;
  }
}

/** A session context that records what the session reported. */
export function recordingContext(clock: Clock): SessionContext & { readonly endings: Promise<void>[] } {
  const endings: Promise<void>[] = [];
  return {
    clock,
    logger: silentLogger,
    endings,
    ended: (_session, work) => {
      endings.push(work);
    },
  };
}

export function scriptedSession(clock: ManualClock, init: Partial<LeaseSessionInit> = {}) {
  const context = recordingContext(clock);
  const session = new ScriptedSession(context, { id: 's1', ttlMs: 900, sentAt: clock.now(), ...init });
  return { session, context };
}

export const TOY_CAPS: CoordinatorCaps = Object.freeze({
  backend: 'toy',
  watchCoalesces: false,
  ttlRangeMs: Object.freeze([1000, 60_000] as const),
  ttlGranularityMs: 1000,
  expiryFactor: 1,
  maxValueBytes: 16,
  maxKeyBytes: 32,
});

/** How a ToyLock releases: when `lost` aborts (before or after the server answered), and what the server answers. */
export interface ToyRelease {
  /** Abort `lost` when release() is called, before the answer (Consul, Kubernetes); else after a good answer (memory, etcd). */
  readonly abortFirst?: boolean;
  /** The server's answer; default: at once, fine. */
  readonly answer?: () => Promise<void>;
}

export class ToyLock implements Lock {
  readonly #controller = new AbortController();
  readonly lost: AbortSignal = this.#controller.signal;
  releases = 0;
  constructor(
    readonly name: string,
    readonly owner: string,
    readonly token: bigint,
    readonly how: ToyRelease = {},
  ) {}

  /** The lock is lost (its session ended). */
  lose(): void {
    this.#controller.abort(gone('lock'));
  }

  async release(): Promise<void> {
    this.releases++;
    if (this.how.abortFirst) this.#controller.abort(new Error('released'));
    await (this.how.answer?.() ?? Promise.resolve());
    this.#controller.abort(new Error('released'));
  }
}

/** A coordinator over a Map, recording each hook it runs (name and arguments). */
export class ToyCoordinator extends CoordinatorBase<ScriptedSession> {
  readonly calls: { readonly hook: string; readonly args: readonly unknown[] }[] = [];
  readonly entries = new Map<string, Entry>();
  doCloseCalls = 0;
  #sessionSeq = 0;
  #version = 0;
  /** Set by a test to hold doOpenSession until it resolves. */
  openGate: Promise<void> | undefined;
  /** Set by a test to hold doAcquire and doTryAcquire until it resolves (or rejects: the hook then rejects). */
  lockGate: Promise<void> | undefined;
  /** What doTryAcquire answers: a lock by default; undefined when false. */
  tryGrants = true;
  /** How the locks handed out release. */
  lockRelease: ToyRelease = {};
  /** The locks handed out are lost already (their session was lost while the grant was on its way). */
  grantLost = false;
  /** The locks the hooks handed out, oldest first. */
  readonly locks: ToyLock[] = [];
  /** What holdsLock() said when each lock hook ran, in order. */
  readonly heldAtHook: boolean[] = [];

  constructor(clock: Clock, caps: CoordinatorCaps = TOY_CAPS) {
    super({ caps, label: 'toy coordinator', clock });
  }

  #record(hook: string, ...args: unknown[]): void {
    this.calls.push({ hook, args });
  }

  get hooks(): string[] {
    return this.calls.map((c) => c.hook);
  }

  protected async doGet(key: string): Promise<Entry | undefined> {
    this.#record('get', key);
    return this.entries.get(key);
  }

  protected async doList(prefix: string): Promise<ListResult> {
    this.#record('list', prefix);
    return { entries: [...this.entries.values()].filter((e) => e.key.startsWith(prefix)), revision: String(this.#version) };
  }

  protected async doCreate(key: string, value: Uint8Array, session: ScriptedSession | undefined): Promise<Version> {
    this.#record('create', key, value, session);
    const version = String(++this.#version);
    this.entries.set(key, { key, value, version });
    return version;
  }

  protected async doUpdate(key: string, value: Uint8Array, expect: Version): Promise<Version> {
    this.#record('update', key, value, expect);
    const version = String(++this.#version);
    this.entries.set(key, { key, value, version });
    return version;
  }

  protected async doDelete(key: string, expect: Version): Promise<void> {
    this.#record('delete', key, expect);
    this.entries.delete(key);
  }

  protected async doDeletePrefix(prefix: string): Promise<void> {
    this.#record('deletePrefix', prefix);
  }

  protected doWatch(prefix: string, after: string | undefined, signal: AbortSignal): AsyncIterable<WatchBatch> {
    this.#record('watch', prefix, after, signal);
    const closed = this.closedSignal;
    return {
      [Symbol.asyncIterator]: () => ({
        next: async (): Promise<IteratorResult<WatchBatch>> => {
          if (signal.aborted || closed.aborted) return { value: undefined, done: true };
          return { value: { revision: String(this.#version), events: [] }, done: false };
        },
      }),
    };
  }

  protected async doOpenSession(ttlMs: number): Promise<ScriptedSession> {
    this.#record('openSession', ttlMs);
    const sentAt = this.clock.now();
    if (this.openGate) await this.openGate;
    return new ScriptedSession(this.sessionContext, { id: `toy-${++this.#sessionSeq}`, ttlMs, sentAt });
  }

  protected async doEndSession(id: string): Promise<void> {
    this.#record('endSession', id);
  }

  protected async doAcquire(name: string, session: ScriptedSession, owner: string, signal: AbortSignal | undefined): Promise<Lock> {
    this.#record('acquire', name, session, owner, signal);
    this.heldAtHook.push(this.holdsLock(session, name));
    if (this.lockGate) await this.lockGate;
    return this.#lock(name, owner);
  }

  protected async doTryAcquire(name: string, session: ScriptedSession, owner: string): Promise<Lock | undefined> {
    this.#record('tryAcquire', name, session, owner);
    this.heldAtHook.push(this.holdsLock(session, name));
    if (this.lockGate) await this.lockGate;
    return this.tryGrants ? this.#lock(name, owner) : undefined;
  }

  #lock(name: string, owner: string): ToyLock {
    const lock = new ToyLock(name, owner, BigInt(this.locks.length + 1), this.lockRelease);
    if (this.grantLost) lock.lose();
    this.locks.push(lock);
    return lock;
  }

  /** For tests: the protected holdsLock. */
  holdsLockForTest(session: ScriptedSession, name: string): boolean {
    return this.holdsLock(session, name);
  }

  /** For tests: the protected untilLockFree. */
  untilLockFreeForTest(session: ScriptedSession, name: string, signal?: AbortSignal): Promise<void> {
    return this.untilLockFree(session, name, this.acquireStops(`acquire of lock ${JSON.stringify(name)}`, session, signal));
  }

  protected async doHolder(name: string): Promise<LockHolder | undefined> {
    this.#record('holder', name);
    return undefined;
  }

  protected override async doClose(): Promise<void> {
    this.#record('close');
    this.doCloseCalls++;
  }

  /** For tests: background work that close() must wait for. */
  trackForTest(work: Promise<unknown>): void {
    this.track(work);
  }

  /** For tests: the protected stop list of a waiting acquire. */
  stopsForTest(session: ScriptedSession, signal: AbortSignal | undefined) {
    return this.acquireStops('acquire of lock "l"', session, signal);
  }
}

/** A LeaseLostError as a backend would report one. */
export const gone = (id: string): LeaseLostError => new LeaseLostError(`session ${id} is gone on the server`);
