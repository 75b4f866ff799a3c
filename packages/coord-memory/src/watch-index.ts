/**
 * Who watches which prefix, so that a commit reaches only the watches it concerns:
 * each event's key is looked up once per distinct prefix length (a handful), never
 * against every watch. With a thousand watches on one store (a node per task, each
 * with its own `meta/<task>/`), a scan per commit made every write cost O(watches).
 */
import type { HistoryRecord, StoredEvent } from './store.js';

/** A watch as the store sees it: where the records under its prefix go. */
export interface WatchSink {
  push(record: HistoryRecord): void;
}

export class WatchIndex {
  readonly #byPrefix = new Map<string, Set<WatchSink>>();
  /** How many registered prefixes have each length. */
  readonly #lengths = new Map<number, number>();
  #size = 0;

  /** Watches registered now. */
  get size(): number {
    return this.#size;
  }

  /** Registers `sink` for `prefix`; returns the function that removes it (idempotent). */
  add(prefix: string, sink: WatchSink): () => void {
    let sinks = this.#byPrefix.get(prefix);
    if (!sinks) {
      this.#byPrefix.set(prefix, (sinks = new Set()));
      this.#lengths.set(prefix.length, (this.#lengths.get(prefix.length) ?? 0) + 1);
    }
    sinks.add(sink);
    this.#size++;
    const own = sinks;
    return () => {
      if (!own.delete(sink)) return;
      this.#size--;
      if (own.size > 0) return;
      this.#byPrefix.delete(prefix);
      const n = (this.#lengths.get(prefix.length) ?? 1) - 1;
      if (n === 0) this.#lengths.delete(prefix.length);
      else this.#lengths.set(prefix.length, n);
    };
  }

  /** Hands each watch the part of `record` under its prefix (the record itself when all of it is). */
  dispatch(record: HistoryRecord): void {
    if (this.#size === 0) return;
    const matched = new Map<Set<WatchSink>, StoredEvent[]>();
    for (const event of record.events) {
      for (const length of this.#lengths.keys()) {
        if (event.key.length < length) continue;
        const sinks = this.#byPrefix.get(event.key.slice(0, length));
        if (!sinks) continue;
        const events = matched.get(sinks);
        if (events) events.push(event);
        else matched.set(sinks, [event]);
      }
    }
    for (const [sinks, events] of matched) {
      const part = events.length === record.events.length ? record : { revision: record.revision, events };
      // A sink may unsubscribe while it is handed a record: iterate over a copy only then.
      for (const sink of sinks.size === 1 ? sinks : [...sinks]) sink.push(part);
    }
  }
}
