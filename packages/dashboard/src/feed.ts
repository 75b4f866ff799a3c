/**
 * One job's live feed: ONE store watch of `<job>/` (after one list), whatever the
 * number of pages showing the job; a JobModel kept from its events; and the pages
 * it sends to. Changes are gathered for `flushMs` and go out as one delta, made
 * and serialized once for every page. A page that joins gets a snapshot, then the
 * deltas. The watch resumes after its last revision through transient failures,
 * re-lists after a compaction (every page then gets a new snapshot), and ends when
 * the last page leaves.
 */
import { TaskGraphError } from '@taskgraph/api';
import type { Coordinator, Logger } from '@taskgraph/api';
import { JobModel } from './model.js';
import { sseFrame } from './sse.js';
import type { SseClient } from './sse.js';
import type { RequestRateSource } from './types.js';

export interface JobFeedOptions {
  readonly coordinator: Coordinator;
  readonly logger: Logger;
  readonly flushMs: number;
  readonly rates?: RequestRateSource;
  /** Called once the feed has stopped (its last page left). */
  readonly onStopped: (feed: JobFeed) => void;
}

export interface FeedStats {
  lists: number;
  watches: number;
  batches: number;
  deltas: number;
  snapshots: number;
  /** Bytes of the last delta sent. */
  lastDeltaBytes: number;
}

/** How the feed's store watch is doing, as pages are told (`status` events). */
export interface FeedStatus {
  readonly job: string;
  readonly ok: boolean;
  readonly message?: string;
}

export class JobFeed {
  readonly model: JobModel;
  readonly stats: FeedStats = { lists: 0, watches: 0, batches: 0, deltas: 0, snapshots: 0, lastDeltaBytes: 0 };
  private readonly clients = new Set<SseClient>();
  private readonly ctrl = new AbortController();
  private readonly loop: Promise<void>;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private listed = false;
  private status: FeedStatus;
  private stopRates: (() => void) | undefined;
  private stopping: Promise<void> | undefined;

  constructor(
    readonly job: string,
    private readonly o: JobFeedOptions,
  ) {
    this.model = new JobModel(job, { rates: o.rates ? { available: true, ...(o.rates.label ? { label: o.rates.label } : {}) } : { available: false } });
    this.status = { job, ok: true };
    this.loop = this.run();
  }

  get size(): number {
    return this.clients.size;
  }

  /** True once stop() was called: a page that comes now needs a new feed. */
  get stopped(): boolean {
    return this.ctrl.signal.aborted;
  }

  /** A page joins: it gets the snapshot now (or once the first list is done), then the deltas. */
  add(client: SseClient): void {
    if (this.ctrl.signal.aborted) return;
    // Changes not sent yet go to the pages that have the older state, so the new
    // page's snapshot and the deltas after it fit together.
    if (this.listed) this.flush();
    this.clients.add(client);
    if (!this.status.ok) client.send(sseFrame('status', JSON.stringify(this.status)));
    if (this.listed) {
      this.stats.snapshots++;
      client.send(sseFrame('snapshot', JSON.stringify(this.model.snapshot())));
    }
  }

  /** A page leaves; the last one stops the feed. */
  remove(client: SseClient): void {
    if (!this.clients.delete(client) || this.clients.size > 0) return;
    void this.stop();
  }

  /** Ends the watch, the rate source and the timer; the pages stay open (the caller ends them). */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.ctrl.abort();
      if (this.timer !== undefined) clearTimeout(this.timer);
      this.timer = undefined;
      try {
        this.stopRates?.();
      } catch (err) {
        this.o.logger.warn('the request-rate source failed to stop', { job: this.job, error: String(err) });
      }
      this.stopRates = undefined;
      await this.loop;
      this.o.onStopped(this);
    })();
    return this.stopping;
  }

  /** Sends what changed now (tests and a joining page; otherwise the timer does). */
  flush(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    const d = this.model.takeDelta();
    if (d === undefined) return;
    if (d === 'snapshot') {
      this.stats.snapshots++;
      this.broadcast(sseFrame('snapshot', JSON.stringify(this.model.snapshot())));
      return;
    }
    const frame = sseFrame('delta', JSON.stringify(d));
    this.stats.deltas++;
    this.stats.lastDeltaBytes = frame.length;
    this.broadcast(frame);
  }

  private broadcast(frame: string): void {
    for (const c of this.clients) c.send(frame);
  }

  private schedule(): void {
    if (this.timer !== undefined || this.ctrl.signal.aborted) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flush();
    }, this.o.flushMs);
    this.timer.unref?.();
  }

  private setStatus(ok: boolean, message?: string): void {
    if (this.status.ok === ok && this.status.message === message) return;
    this.status = { job: this.job, ok, ...(message === undefined ? {} : { message }) };
    this.broadcast(sseFrame('status', JSON.stringify(this.status)));
  }

  private startRates(): void {
    const source = this.o.rates;
    if (!source || this.stopRates) return;
    try {
      this.stopRates = source.subscribe(this.job, (rates) => {
        if (this.ctrl.signal.aborted) return;
        this.model.setRates(rates);
        if (this.model.dirty) this.schedule();
      });
    } catch (err) {
      this.o.logger.warn('the request-rate source failed', { job: this.job, error: String(err) });
    }
  }

  private async run(): Promise<void> {
    const { coordinator, logger } = this.o;
    const signal = this.ctrl.signal;
    const prefix = `${this.job}/`;
    let after: string | undefined;
    let failures = 0;
    while (!signal.aborted) {
      try {
        if (after === undefined) {
          this.stats.lists++;
          // A list takes no signal: stop() must not wait for a store that does not answer.
          const snap = await untilAborted(coordinator.list(prefix), signal);
          if (snap === undefined || signal.aborted) return;
          this.model.reset(snap.entries);
          after = snap.revision;
          this.listed = true;
          this.flush(); // the snapshot, to every page
          this.startRates();
        }
        this.stats.watches++;
        for await (const batch of coordinator.watch(prefix, { after, signal })) {
          for (const ev of batch.events) this.model.apply(ev);
          after = batch.revision;
          this.stats.batches++;
          if (failures > 0) {
            failures = 0;
            this.setStatus(true);
          }
          if (this.model.wantsSnapshot) this.flush();
          else if (this.model.dirty) this.schedule();
        }
        // A watch ends by itself only when it is aborted or its client closed (the
        // next call says so); resume after a short pause rather than spin.
        if (!signal.aborted) await pause(250, signal);
      } catch (err) {
        if (signal.aborted) return;
        if (TaskGraphError.is(err, 'COMPACTED')) {
          after = undefined; // fell behind the store's history: list again
          continue;
        }
        const message = err instanceof Error ? err.message : String(err);
        if (TaskGraphError.is(err, 'CLOSED')) {
          logger.error('the store client is closed: the dashboard no longer follows this job', { job: this.job, error: message });
          this.setStatus(false, `the store client is closed: ${message}`);
          return;
        }
        if (failures === 0) logger.warn('the store failed; retrying', { job: this.job, error: message });
        failures++;
        this.setStatus(false, `the store failed (retrying): ${message}`);
        await pause(Math.min(5000, 100 * 2 ** Math.min(failures, 6)) * (0.5 + Math.random() / 2), signal);
      }
    }
  }
}

/** `p`'s value, or undefined as soon as the signal aborts (p's outcome is then ignored). */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T | undefined> {
  if (signal.aborted) {
    p.catch(() => undefined);
    return Promise.resolve(undefined);
  }
  return new Promise<T | undefined>((resolve, reject) => {
    const onAbort = (): void => resolve(undefined);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        if (signal.aborted) resolve(undefined);
        else reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}

/** Waits `ms`, or less when the signal aborts. */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve();
      return;
    }
    const done = (): void => {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
