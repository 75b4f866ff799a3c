/**
 * One store watch per prefix for many followers in one process: a coordinator
 * that wraps another and, for the prefixes it is told to share, answers `list`
 * from one view kept by one underlying `list` + `watch`, and `watch` from that
 * view's stream. A node host puts its nodes on one of these, so N nodes following
 * `<job>/state/` and `<job>/tasks/` cost the store two watches, not 2N, and each
 * batch is decoded from the wire once.
 *
 * Each follower sees exactly what its own watch would have shown:
 * - `list` of a shared prefix answers the view: a consistent snapshot at the
 *   revision of the view's last batch (as old as the watch's delivery delay, never
 *   torn), paired with that revision;
 * - `watch(after: R)` replays the view's batches after R, then follows live,
 *   when R is one of the view's own revisions (its snapshot's or one of the last
 *   `historyBatches` batches'). Any other R (a revision from elsewhere, one the
 *   view no longer keeps, no `after` at all) gets a watch of its own on the
 *   wrapped coordinator, which is exact by construction, so sharing never guesses:
 *   revisions are opaque and compared only for equality;
 * - when the view's stream hits `Compacted`, every follower gets `Compacted` after
 *   the batches it was already given (they were at or behind the view, so their own
 *   watches would have failed too) and re-lists, from the view it rebuilds;
 * - a transient failure of the stream is retried inside (the followers see a
 *   delay, as a resumed watch of their own would have given them); one that is not
 *   retryable ends the view and reaches every follower, as it would have their own.
 * Every other call goes straight to the wrapped coordinator. A view lives while it
 * has followers (or from its first `list` to its first follower) and stops with
 * its last one, or at `stop()`.
 */
import { randomOf, systemClock, TaskGraphError } from '@taskgraph/api';
import type {
  AcquireOptions,
  Clock,
  Coordinator,
  CoordinatorCaps,
  CreateOptions,
  Entry,
  ListResult,
  Lock,
  LockHolder,
  LockOptions,
  Logger,
  Revision,
  Session,
  SessionOptions,
  Version,
  WatchBatch,
  WatchOptions,
} from '@taskgraph/api';
import { Backoff, sleep } from '@taskgraph/backend-kit';
import { silentLogger } from './logger.js';

export interface SharedWatchOptions {
  /** Which prefixes get one shared view (exact prefix strings); every other prefix passes through. */
  shares(prefix: string): boolean;
  /** Batches a view keeps for followers that listed before the latest ones (default 256). */
  readonly historyBatches?: number;
  readonly clock?: Clock;
  readonly logger?: Logger;
}

/** What the sharing saves, for tests and stats. */
export interface SharingStats {
  /** Views running now (one underlying watch each). */
  readonly views: number;
  /** Followers of a view now. */
  readonly followers: number;
  /** Lists answered from a view. */
  readonly listsShared: number;
  /** Watches of a shared prefix that could not join a view and went to the store on their own. */
  readonly ownWatches: number;
}

export class SharedWatchCoordinator implements Coordinator {
  readonly caps: CoordinatorCaps;
  private readonly views = new Map<string, PrefixView>();
  private readonly historyBatches: number;
  private readonly clock: Clock;
  private readonly logger: Logger;
  private listsShared = 0;
  private ownWatches = 0;
  private stopped = false;

  constructor(
    readonly base: Coordinator,
    private readonly options: SharedWatchOptions,
  ) {
    this.caps = base.caps;
    this.historyBatches = Math.max(1, options.historyBatches ?? 256);
    this.clock = options.clock ?? systemClock;
    this.logger = options.logger ?? silentLogger;
  }

  get sharing(): SharingStats {
    let followers = 0;
    for (const v of this.views.values()) followers += v.followers;
    return { views: this.views.size, followers, listsShared: this.listsShared, ownWatches: this.ownWatches };
  }

  async list(prefix: string): Promise<ListResult> {
    if (this.stopped || !this.options.shares(prefix)) return this.base.list(prefix);
    let view = this.views.get(prefix);
    if (!view) {
      view = new PrefixView(this.base, prefix, this.historyBatches, this.clock, this.logger, () => {
        if (this.views.get(prefix) === view) this.views.delete(prefix);
      });
      this.views.set(prefix, view);
    }
    const snapshot = await view.snapshot();
    this.listsShared++;
    return snapshot;
  }

  watch(prefix: string, options: WatchOptions): AsyncIterable<WatchBatch> {
    const view = this.options.shares(prefix) && options.after !== undefined ? this.views.get(prefix) : undefined;
    const joined = view?.join(options.after!, options.signal);
    if (joined) return joined;
    if (this.options.shares(prefix)) this.ownWatches++;
    return this.base.watch(prefix, options);
  }

  /** Stops every view (their followers' watches end); the wrapped coordinator stays open. */
  async stop(): Promise<void> {
    this.stopped = true;
    const views = [...this.views.values()];
    this.views.clear();
    await Promise.all(views.map((v) => v.stop()));
  }

  /** Stops the views and closes the wrapped coordinator. */
  async close(): Promise<void> {
    await this.stop();
    await this.base.close();
  }

  get(key: string): Promise<Entry | undefined> {
    return this.base.get(key);
  }

  create(key: string, value: Uint8Array, options?: CreateOptions): Promise<Version> {
    return this.base.create(key, value, options);
  }

  update(key: string, value: Uint8Array, expect: Version): Promise<Version> {
    return this.base.update(key, value, expect);
  }

  delete(key: string, expect: Version): Promise<void> {
    return this.base.delete(key, expect);
  }

  deletePrefix(prefix: string): Promise<void> {
    return this.base.deletePrefix(prefix);
  }

  openSession(options: SessionOptions): Promise<Session> {
    return this.base.openSession(options);
  }

  endSession(id: string): Promise<void> {
    return this.base.endSession(id);
  }

  acquire(name: string, session: Session, options?: AcquireOptions): Promise<Lock> {
    return this.base.acquire(name, session, options);
  }

  tryAcquire(name: string, session: Session, options?: LockOptions): Promise<Lock | undefined> {
    return this.base.tryAcquire(name, session, options);
  }

  holder(name: string): Promise<LockHolder | undefined> {
    return this.base.holder(name);
  }
}

/** Wraps a coordinator so that the given prefixes are watched once for all followers. */
export function shareWatches(base: Coordinator, options: SharedWatchOptions): SharedWatchCoordinator {
  return new SharedWatchCoordinator(base, options);
}

/** One prefix's view: its entries at `revision`, its recent batches, its followers. */
class PrefixView {
  private readonly entries = new Map<string, Entry>();
  private revision: Revision = '';
  /** The revision the kept batches follow: a follower may join after it or after any of them. */
  private historyBase: Revision = '';
  private readonly history: WatchBatch[] = [];
  private readonly subs = new Set<Follower>();
  private readonly life = new AbortController();
  /** Settles once the view holds a snapshot (again, after a compaction). */
  private ready: Promise<void>;
  private hadFollowers = false;
  private loop: Promise<void> | undefined;

  constructor(
    private readonly base: Coordinator,
    private readonly prefix: string,
    private readonly historyBatches: number,
    private readonly clock: Clock,
    private readonly logger: Logger,
    private readonly onEnd: () => void,
  ) {
    this.ready = this.relist();
    // The first list's error reaches its callers through snapshot(); the view is gone then.
    this.ready.then(
      () => (this.loop = this.run()),
      () => this.end(),
    );
  }

  get followers(): number {
    return this.subs.size;
  }

  async snapshot(): Promise<ListResult> {
    await this.ready;
    const entries = [...this.entries.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    return { entries, revision: this.revision };
  }

  /** A follower from `after`, if the view knows that revision; undefined otherwise. */
  join(after: Revision, signal: AbortSignal): AsyncIterable<WatchBatch> | undefined {
    if (this.life.signal.aborted || this.revision === '') return undefined;
    let replay: WatchBatch[];
    if (after === this.historyBase) replay = [...this.history];
    else {
      const i = this.history.findIndex((b) => b.revision === after);
      if (i < 0) return undefined;
      replay = this.history.slice(i + 1);
    }
    const onAbort = (): void => sub.end();
    const sub: Follower = new Follower(replay, () => {
      signal.removeEventListener('abort', onAbort);
      this.unfollow(sub);
    });
    this.subs.add(sub);
    this.hadFollowers = true;
    if (signal.aborted) sub.end();
    else signal.addEventListener('abort', onAbort, { once: true });
    return { [Symbol.asyncIterator]: () => sub };
  }

  async stop(): Promise<void> {
    this.end();
    await this.loop;
  }

  private unfollow(sub: Follower): void {
    // One the view let go of already (a compaction, its end) is no longer counted.
    if (!this.subs.delete(sub)) return;
    if (this.subs.size === 0 && this.hadFollowers) this.end();
  }

  private end(): void {
    if (this.life.signal.aborted) return;
    this.life.abort();
    for (const s of this.subs) s.detach();
    this.subs.clear();
    this.onEnd();
  }

  private async relist(): Promise<void> {
    const snap = await this.base.list(this.prefix);
    this.entries.clear();
    for (const e of snap.entries) this.entries.set(e.key, e);
    this.revision = snap.revision;
    this.historyBase = snap.revision;
    this.history.length = 0;
  }

  private async run(): Promise<void> {
    const signal = this.life.signal;
    const backoff = new Backoff(50, 2000, randomOf(this.clock));
    while (!signal.aborted) {
      try {
        if (this.revision === '') {
          this.ready = this.relist();
          await this.ready;
        }
        for await (const batch of this.base.watch(this.prefix, { after: this.revision, signal })) {
          this.apply(batch);
          backoff.reset();
        }
        if (signal.aborted) return;
      } catch (err) {
        if (signal.aborted) return;
        if (TaskGraphError.is(err, 'COMPACTED')) {
          this.logger.info('shared watch history compacted; its followers re-list', { prefix: this.prefix });
          this.compacted(err);
          continue;
        }
        if (!(err instanceof TaskGraphError && err.retryable)) {
          this.fail(err);
          return;
        }
        this.logger.warn('shared watch failed; resuming', { prefix: this.prefix, error: err.message });
      }
      try {
        await sleep(this.clock, backoff.next(), signal);
      } catch {
        return;
      }
    }
  }

  /**
   * The followers were at or behind the view, so their own watches would have been
   * compacted too: each gets the error after what it was given. Until the view has
   * listed again it lets nobody join (its old revisions are gone from the store).
   */
  private compacted(err: unknown): void {
    for (const s of this.subs) s.detach(err);
    this.subs.clear();
    this.hadFollowers = false;
    this.revision = '';
    this.history.length = 0;
  }

  private fail(err: unknown): void {
    // Callers of snapshot() waiting on a re-list get the error too.
    this.ready = Promise.reject(err instanceof Error ? err : new Error(String(err)));
    this.ready.catch(() => undefined);
    for (const s of this.subs) s.detach(err);
    this.subs.clear();
    this.end();
  }

  private apply(batch: WatchBatch): void {
    for (const ev of batch.events) {
      if (ev.type === 'put') this.entries.set(ev.key, { key: ev.key, value: ev.value, version: ev.version });
      else this.entries.delete(ev.key);
    }
    this.revision = batch.revision;
    this.history.push(batch);
    if (this.history.length > this.historyBatches) this.historyBase = this.history.shift()!.revision;
    for (const s of this.subs) s.push(batch);
  }
}

/** One follower's stream: the batches it has still to take, then its end or error. */
class Follower implements AsyncIterator<WatchBatch> {
  /** Set when the view lets go: after the queued batches the follower ends (or throws `error`). */
  private letGo: { readonly error?: unknown } | undefined;
  private ended = false;
  private wake: (() => void) | undefined;
  private taken = 0;

  constructor(
    private readonly queue: WatchBatch[],
    private readonly leave: () => void,
  ) {}

  push(batch: WatchBatch): void {
    this.queue.push(batch);
    this.wakeUp();
  }

  /** The view lets go of this follower: it ends, or fails with `error`, after the batches it was given. */
  detach(error?: unknown): void {
    this.letGo ??= error === undefined ? {} : { error };
    this.wakeUp();
  }

  /** The follower stops (its signal, or its iterator returned): it leaves the view. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.leave();
    this.wakeUp();
  }

  async next(): Promise<IteratorResult<WatchBatch>> {
    for (;;) {
      if (this.ended) return { value: undefined, done: true };
      // Batches already given come first: the follower's own watch would have delivered them before failing.
      if (this.taken < this.queue.length) {
        const value = this.queue[this.taken++]!;
        if (this.taken > 64 && this.taken * 2 > this.queue.length) {
          this.queue.splice(0, this.taken);
          this.taken = 0;
        }
        return { value, done: false };
      }
      if (this.letGo) {
        this.end();
        if ('error' in this.letGo) throw this.letGo.error;
        return { value: undefined, done: true };
      }
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  return(): Promise<IteratorResult<WatchBatch>> {
    this.end();
    return Promise.resolve({ value: undefined, done: true });
  }

  private wakeUp(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}
