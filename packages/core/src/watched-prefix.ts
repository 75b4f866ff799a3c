/**
 * Follows a prefix of the store: one snapshot (`list`), then a gap-free `watch`
 * resumed after the last revision it saw. On `Compacted` it re-lists; on a
 * transient failure it backs off and resumes. Consumers are level-triggered (the
 * snapshot callback replaces state, events update it), so the same code is exact
 * on backends whose watches coalesce.
 */
import { randomOf, TaskGraphError } from '@taskgraph/api';
import type { Clock, Coordinator, Entry, Logger, Revision, WatchEvent } from '@taskgraph/api';
import { Backoff, sleep } from '@taskgraph/backend-kit';
import { retryStore } from './store-ops.js';

export interface PrefixHandlers {
  /** The full state under the prefix (on start, and again after a compaction). */
  snapshot(entries: readonly Entry[]): void;
  /** One change after the snapshot, in revision order. */
  event(event: WatchEvent): void;
}

export class WatchedPrefix {
  private readonly controller = new AbortController();
  private loop: Promise<void> | undefined;

  constructor(
    private readonly coordinator: Coordinator,
    private readonly prefix: string,
    private readonly handlers: PrefixHandlers,
    private readonly clock: Clock,
    private readonly logger: Logger,
  ) {}

  /** Applies the first snapshot, then follows changes in the background until `stop()`. */
  async start(parent: AbortSignal): Promise<void> {
    if (parent.aborted) this.controller.abort(parent.reason);
    else parent.addEventListener('abort', () => this.controller.abort(parent.reason), { once: true });
    const first = await retryStore(() => this.coordinator.list(this.prefix), {
      clock: this.clock,
      signal: this.controller.signal,
      logger: this.logger,
      what: `list ${this.prefix}`,
    });
    this.deliverSnapshot(first.entries);
    this.loop = this.follow(first.revision);
  }

  async stop(): Promise<void> {
    this.controller.abort();
    await this.loop;
  }

  private async follow(initial: Revision): Promise<void> {
    const signal = this.controller.signal;
    let after: Revision | undefined = initial;
    const backoff = new Backoff(50, 2000, randomOf(this.clock));
    while (!signal.aborted) {
      try {
        if (after === undefined) {
          const snap = await this.coordinator.list(this.prefix);
          this.deliverSnapshot(snap.entries);
          after = snap.revision;
        }
        for await (const batch of this.coordinator.watch(this.prefix, { after, signal })) {
          for (const ev of batch.events) this.deliverEvent(ev);
          after = batch.revision;
          backoff.reset();
        }
      } catch (err) {
        if (signal.aborted) return;
        if (TaskGraphError.is(err, 'COMPACTED')) {
          this.logger.info('watch history compacted; re-listing', { prefix: this.prefix });
          after = undefined;
          continue;
        }
        this.logger.warn('watch failed; resuming', { prefix: this.prefix, error: err instanceof Error ? err.message : String(err) });
      }
      if (signal.aborted) return;
      try {
        await sleep(this.clock, backoff.next(), signal);
      } catch {
        return;
      }
    }
  }

  /**
   * A handler that throws must not stall the watch: treated as a watch failure, the
   * same batch would be replayed forever. The entry is logged and skipped.
   */
  private deliverEvent(ev: WatchEvent): void {
    try {
      this.handlers.event(ev);
    } catch (err) {
      this.logger.error('a store change could not be handled; skipped', { key: ev.key, error: err instanceof Error ? err.message : String(err) });
    }
  }

  private deliverSnapshot(entries: readonly Entry[]): void {
    try {
      this.handlers.snapshot(entries);
    } catch (err) {
      this.logger.error('a store snapshot could not be handled in full', { prefix: this.prefix, error: err instanceof Error ? err.message : String(err) });
    }
  }
}
