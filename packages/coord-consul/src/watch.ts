/**
 * Watching a prefix with Consul's blocking queries. Consul keeps no history: a
 * blocking query answers the whole current state of the prefix once its index
 * moves past the one given. Each answer is diffed against the previous state into
 * put and delete events, so changes that happen between two answers merge (the
 * backend declares `watchCoalesces`) but the final state of every key is never
 * missed.
 *
 * Consul's index rules are followed: an index of 0 counts as 1; when the index
 * goes backwards (a snapshot restore, a rebuilt cluster, reaped tombstones) the
 * answer is taken as a fresh read and diffed like any other, and the next query
 * blocks on the new, lower index; answers that come back early without a change
 * are rate-limited so a confused server cannot make the loop spin.
 */
import { CompactedError, InvalidArgumentError } from '@taskgraph/api';
import type { Clock, Entry, Logger, Revision, WatchBatch, WatchEvent } from '@taskgraph/api';
import { Backoff, pause } from '@taskgraph/backend-kit';
import { parseIndex, retryable } from './http.js';

/** A prefix's entries as of one read, by contract key, with the read's X-Consul-Index. */
export interface PrefixState {
  readonly index: number;
  readonly entries: ReadonlyMap<string, Entry>;
}

/**
 * Recent states by (prefix, index), so that `watch(prefix, { after })` can start
 * diffing from the state `list` or an earlier batch saw.
 */
export class StateCache {
  readonly #items = new Map<string, { readonly prefix: string; readonly state: PrefixState }>();

  constructor(private readonly limit = 64) {}

  remember(prefix: string, state: PrefixState): void {
    const id = `${state.index}\u0000${prefix}`;
    this.#items.delete(id);
    this.#items.set(id, { prefix, state });
    while (this.#items.size > this.limit) {
      const oldest = this.#items.keys().next().value;
      if (oldest === undefined) break;
      this.#items.delete(oldest);
    }
  }

  /**
   * The entries under `prefix` as of `index`: from a state read for this prefix,
   * or for a shorter one (filtered), at that index. A broader read at index N holds
   * every change up to N under it, so its filtered entries are the prefix's state too.
   */
  recall(prefix: string, index: number): ReadonlyMap<string, Entry> | undefined {
    for (const { prefix: p, state } of [...this.#items.values()].reverse()) {
      if (state.index !== index || !prefix.startsWith(p)) continue;
      if (p === prefix) return state.entries;
      const filtered = new Map<string, Entry>();
      for (const [k, e] of state.entries) if (k.startsWith(prefix)) filtered.set(k, e);
      return filtered;
    }
    return undefined;
  }
}

export interface WatchHost {
  readonly clock: Clock;
  readonly logger: Logger;
  readonly cache: StateCache;
  /** Reads the prefix; with `index`, as a blocking query that waits for a change past it. */
  read(prefix: string, options: { readonly index?: number; readonly signal: AbortSignal }): Promise<PrefixState>;
}

/** Parses a revision this backend handed out (a positive decimal X-Consul-Index). */
export function parseRevision(revision: Revision): number {
  const index = parseIndex(revision);
  if (index === undefined) {
    throw new InvalidArgumentError(`revision ${JSON.stringify(revision)} did not come from the Consul backend (it must be a Consul index)`);
  }
  return index;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** What changed from one state to the next: deletes first, then puts in the order they were written. */
export function diffStates(before: ReadonlyMap<string, Entry>, after: ReadonlyMap<string, Entry>): WatchEvent[] {
  const deletes: WatchEvent[] = [];
  const puts: Entry[] = [];
  for (const key of before.keys()) if (!after.has(key)) deletes.push({ type: 'delete', key });
  for (const [key, entry] of after) {
    const old = before.get(key);
    // After an index reset a version can repeat with another value: compare the bytes too.
    if (!old || old.version !== entry.version || !sameBytes(old.value, entry.value)) puts.push(entry);
  }
  deletes.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  puts.sort((a, b) => Number(a.version) - Number(b.version) || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return [...deletes, ...puts.map((e): WatchEvent => ({ type: 'put', key: e.key, value: e.value, version: e.version }))];
}

/** Reads until it succeeds or the signal aborts (then undefined). Non-retryable errors are thrown. */
async function readRetrying(host: WatchHost, prefix: string, index: number | undefined, signal: AbortSignal): Promise<PrefixState | undefined> {
  const retry = new Backoff(100, 5000);
  for (;;) {
    if (signal.aborted) return undefined;
    try {
      return await host.read(prefix, index === undefined ? { signal } : { index, signal });
    } catch (err) {
      if (signal.aborted) return undefined;
      if (!retryable(err)) throw err;
      host.logger.debug('Consul watch read failed; retrying', { prefix, error: String(err) });
      await pause(host.clock, retry.next(), signal);
    }
  }
}

/** Batches of changes under `prefix` after `after` (or from now), until the signal aborts. */
export async function* watchPrefix(host: WatchHost, prefix: string, after: Revision | undefined, signal: AbortSignal): AsyncGenerator<WatchBatch> {
  let base: ReadonlyMap<string, Entry>;
  let index: number;
  if (after !== undefined) {
    const wanted = parseRevision(after);
    const cached = host.cache.recall(prefix, wanted);
    if (cached) {
      base = cached;
      index = wanted;
    } else {
      const now = await readRetrying(host, prefix, undefined, signal);
      if (!now) return;
      // Nothing changed under the prefix since `after`: the current state is the state at `after`.
      if (now.index !== wanted) {
        throw new CompactedError(
          `cannot resume the watch of ${JSON.stringify(prefix)} after revision ${after}: Consul keeps no history and the prefix has changed since (now at ${now.index}); list it again and watch after the new revision`,
        );
      }
      base = now.entries;
      index = wanted;
    }
  } else {
    const now = await readRetrying(host, prefix, undefined, signal);
    if (!now) return;
    base = now.entries;
    index = now.index;
  }

  // Exact doubling from 20 ms to 1 s, reset by an answer that carried a change or waited.
  const idle = new Backoff(20, 1000, () => 1);
  while (!signal.aborted) {
    const started = host.clock.now();
    const next = await readRetrying(host, prefix, index, signal);
    if (!next) return;
    if (next.index < index) {
      host.logger.info('Consul index went backwards; treating the answer as a fresh read', { prefix, from: index, to: next.index });
    }
    const events = diffStates(base, next.entries);
    base = next.entries;
    index = next.index;
    if (events.length > 0) {
      idle.reset();
      host.cache.remember(prefix, next);
      yield { revision: String(next.index), events };
      continue;
    }
    // An answer without a change that came back at once is not a timeout: do not let it spin.
    if (host.clock.now() - started < 500) await pause(host.clock, idle.next(), signal);
    else idle.reset();
  }
}
