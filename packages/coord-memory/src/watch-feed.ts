/**
 * The queue between the store and one watch: the store pushes each record under
 * the watch's prefix as it commits it, the watch's iterator takes them in order.
 * A watch waits on its own feed, not on a store-wide pulse, so a commit wakes only
 * the watches it concerns. It wakes on a later turn of the event loop, as a client
 * of a real server hears of a commit: with every call and watch of a thousand nodes
 * resolving in one process, waking in the same turn made one chain of promise jobs of
 * the whole start-up, and no timer (a keepalive) ran until it ended; and a burst of
 * commits now reaches a watch as one wake-up. A consumer that falls more than `limit` records behind
 * would need history the store no longer keeps: the queue is dropped and the watch
 * ends with CompactedError, as a watch reading the history would.
 */
import { deferOn } from '@taskgraph/api';
import type { Clock } from '@taskgraph/api';
import type { WatchSink } from './watch-index.js';
import type { HistoryRecord } from './store.js';

export class WatchFeed implements WatchSink {
  #records: HistoryRecord[] = [];
  #head = 0;
  #overflowed = false;
  #wake: (() => void) | undefined;
  /** The pending deferred wake-up (0: none); a wake() before it runs makes it a no-op. */
  #scheduled = 0;
  #seq = 0;

  constructor(
    private readonly limit: number,
    private readonly clock: Clock,
  ) {}

  /** True once the queue outgrew the history: the consumer can only be told it was compacted. */
  get overflowed(): boolean {
    return this.#overflowed;
  }

  push(record: HistoryRecord): void {
    if (this.#overflowed) return;
    if (this.#records.length - this.#head >= this.limit) {
      this.#overflowed = true;
      this.#records = [];
      this.#head = 0;
    } else {
      this.#records.push(record);
    }
    if (this.#wake && !this.#scheduled) {
      const mine = ++this.#seq;
      this.#scheduled = mine;
      deferOn(this.clock, () => {
        if (this.#scheduled === mine) this.wake();
      });
    }
  }

  /** The oldest record not taken yet. */
  shift(): HistoryRecord | undefined {
    if (this.#head >= this.#records.length) return undefined;
    const record = this.#records[this.#head++];
    // Reclaim the taken part once it is the larger part, so a long-lived watch stays small.
    if (this.#head > 64 && this.#head * 2 > this.#records.length) {
      this.#records = this.#records.slice(this.#head);
      this.#head = 0;
    }
    return record;
  }

  /** Resolves at the next push or `wake()`. One waiter at a time (the watch's iterator). */
  next(): Promise<void> {
    return new Promise((resolve) => {
      this.#wake = resolve;
    });
  }

  /** Ends the current wait now (the watch was stopped). */
  wake(): void {
    this.#scheduled = 0;
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
}
