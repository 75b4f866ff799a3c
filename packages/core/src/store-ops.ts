/**
 * The store operations the runtime composes: one read-modify-write helper that
 * every compare-and-set in core goes through, one retry for the store's outages
 * that every other call on the join, claim, epoch and meta paths goes through, the
 * create-replacing-a-stale-record step of publishing an address, and waiting for a
 * key to appear.
 */
import { abortError, randomOf, TaskGraphError } from '@taskgraph/api';
import type { Clock, Coordinator, Entry, Logger, Session, Version } from '@taskgraph/api';
import { Backoff, sleep } from '@taskgraph/backend-kit';

export interface CasUpdateOptions {
  readonly clock: Clock;
  /** Bounds the retries: their waits reject with the signal's reason when it aborts. */
  readonly signal: AbortSignal;
  /** A key the update creates is tied to this session (deleted when it ends). */
  readonly session?: Session;
  /**
   * What the caller already knows of the key, to save the first read: its entry, or
   * `null` when it is known to be absent (the first attempt is then a create).
   */
  readonly known?: Entry | null | undefined;
  /** Runs right before every write; throws to stop (a lost lease, a node that left). */
  readonly beforeWrite?: () => void;
  /** Counts the writes attempted (for the node's stats). */
  readonly onWrite?: () => void;
}

export interface CasOutcome {
  /** False when `next` left the key as it was. */
  readonly written: boolean;
  /** The key's version after the update (or as read, when nothing was written). */
  readonly version: Version | undefined;
}

/** After this many lost races in a row, retries wait a jittered backoff before re-reading. */
const FREE_RACES = 3;

/**
 * Read-modify-write of one key by compare-and-set. `next(current)` gets the key's
 * entry (undefined when absent) and returns the bytes to store, or undefined to
 * leave it as it is; it may throw to stop (the epoch moved on, say).
 *
 * Lost races (Conflict, AlreadyExists, NotFound) re-read and call `next` again. An
 * Indeterminate write is re-read: if the key holds exactly the bytes written, the
 * write is taken as applied, otherwise `next` decides again on what is there.
 * Other retryable failures (Unavailable) wait a jittered backoff and try again;
 * anything else is thrown. Every wait ends when `signal` aborts (the first attempt
 * is made whatever the signal: callers check their own state before calling).
 */
export async function casUpdate(
  coordinator: Coordinator,
  key: string,
  next: (current: Entry | undefined) => Uint8Array | undefined,
  options: CasUpdateOptions,
): Promise<CasOutcome> {
  const backoff = new Backoff(20, 1000, randomOf(options.clock));
  let current: Entry | undefined = options.known ?? undefined;
  let mustRead = options.known === undefined;
  let races = 0;
  const pause = () => sleep(options.clock, backoff.next(), options.signal);
  for (;;) {
    if (mustRead) {
      try {
        current = await coordinator.get(key);
      } catch (err) {
        if (!TaskGraphError.is(err) || !err.retryable) throw err;
        await pause();
        continue;
      }
      mustRead = false;
    }
    const value = next(current);
    if (value === undefined) return { written: false, version: current?.version };
    options.beforeWrite?.();
    options.onWrite?.();
    try {
      const version = current
        ? await coordinator.update(key, value, current.version)
        : await coordinator.create(key, value, options.session ? { session: options.session } : undefined);
      return { written: true, version };
    } catch (err) {
      if (TaskGraphError.is(err, 'CONFLICT', 'ALREADY_EXISTS', 'NOT_FOUND')) {
        mustRead = true;
        if (++races > FREE_RACES) await pause();
        continue;
      }
      if (TaskGraphError.is(err, 'INDETERMINATE')) {
        const seen = await readRetrying(coordinator, key, pause);
        if (seen && sameBytes(seen.value, value)) return { written: true, version: seen.version };
        // Not applied (or overwritten since): a store that times out writes is slow; do not hammer it.
        current = seen;
        await pause();
        continue;
      }
      if (TaskGraphError.is(err) && err.retryable) {
        await pause();
        continue;
      }
      throw err;
    }
  }
}

async function readRetrying(coordinator: Coordinator, key: string, pause: () => Promise<void>): Promise<Entry | undefined> {
  for (;;) {
    try {
      return await coordinator.get(key);
    } catch (err) {
      if (!TaskGraphError.is(err) || !err.retryable) throw err;
      await pause();
    }
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export interface RetryStoreOptions {
  readonly clock: Clock;
  /** Retries end when it aborts (the node leaves, or its session is lost): the last error is thrown. */
  readonly signal: AbortSignal;
  readonly logger: Logger;
  /** Names the operation in the log. */
  readonly what: string;
}

/** The store's failures that say nothing about the operation itself: the store was away. */
export function isOutage(err: unknown): err is TaskGraphError {
  return TaskGraphError.is(err, 'UNAVAILABLE', 'INDETERMINATE', 'DEADLINE_EXCEEDED');
}

/**
 * Runs a store operation until the store answers it: an outage (Unavailable,
 * Indeterminate, DeadlineExceeded) waits a jittered backoff and tries again, for as
 * long as `signal` lets it. Only for operations that may be repeated whatever the
 * first attempt did: reads, and writes that each backend settles itself when their
 * answer is lost (opening a session: a stray lease expires; `tryAcquire`: the
 * backends read the lock back). The first failure is logged, and the recovery.
 */
export async function retryStore<T>(op: () => Promise<T>, o: RetryStoreOptions): Promise<T> {
  const backoff = new Backoff(50, 2000, randomOf(o.clock));
  let failures = 0;
  for (;;) {
    try {
      const out = await op();
      if (failures > 0) o.logger.info('the store answers again', { what: o.what, failures });
      return out;
    } catch (err) {
      if (!isOutage(err) || o.signal.aborted) throw err;
      if (failures++ === 0) o.logger.warn('the store is unavailable; retrying', { what: o.what, error: err.message });
      try {
        await sleep(o.clock, backoff.next(), o.signal);
      } catch {
        throw err;
      }
    }
  }
}

export interface CreateReplacingOptions {
  readonly session: Session;
  readonly logger: Logger;
  readonly clock: Clock;
  /** Ends the retries through the store's outages. */
  readonly signal: AbortSignal;
  readonly beforeWrite?: () => void;
  readonly onWrite?: () => void;
  /** Gives up after this many stale records removed in a row. Default 20. */
  readonly maxAttempts?: number;
}

/**
 * Creates an ephemeral record that a predecessor may still hold: a predecessor's
 * record outlives its lock only until its session ends, and the caller holds the
 * lock now, so a record found in the way is stale and is removed. (An update would
 * not do: the key would keep the predecessor's session and vanish with it.) A record
 * holding exactly `value` is the caller's own, from an attempt whose answer was lost
 * (values name their writer and its token). Outages are retried while `signal` lets.
 * Resolves with the record's version.
 */
export async function createReplacing(coordinator: Coordinator, key: string, value: Uint8Array, options: CreateReplacingOptions): Promise<Version> {
  const max = options.maxAttempts ?? 20;
  const retry = { clock: options.clock, signal: options.signal, logger: options.logger };
  const backoff = new Backoff(20, 1000, randomOf(options.clock));
  for (let stale = 0; ; ) {
    options.beforeWrite?.();
    options.onWrite?.();
    try {
      return await coordinator.create(key, value, { session: options.session });
    } catch (err) {
      if (isOutage(err)) {
        // Applied or not: what is there tells, once the store answers.
        if (options.signal.aborted) throw err;
        options.logger.warn('the store is unavailable; retrying', { what: `create ${key}`, error: err.message });
        await sleep(options.clock, backoff.next(), options.signal).catch(() => {
          throw err;
        });
      } else if (!TaskGraphError.is(err, 'ALREADY_EXISTS') || stale++ >= max) {
        throw err;
      }
    }
    const old = await retryStore(() => coordinator.get(key), { ...retry, what: `read ${key}` });
    if (!old) continue;
    if (sameBytes(old.value, value)) return old.version;
    options.logger.info("removing the previous incarnation's record", { key });
    try {
      await coordinator.delete(key, old.version);
    } catch (err) {
      // A lost race, or an outage (the next create, or read, tells what happened).
      if (!TaskGraphError.is(err, 'CONFLICT', 'NOT_FOUND') && !isOutage(err)) throw err;
    }
  }
}

export interface WaitForKeyOptions {
  readonly clock: Clock;
  /** Ends the wait, and the retries through the store's outages. */
  readonly signal: AbortSignal;
  readonly logger: Logger;
  /** Re-reads at least this often, in case a watch misses the creation. Default 2 s. */
  readonly recheckMs?: number;
  /** Called once when the key is not there at first. */
  readonly onWait?: () => void;
}

/** Resolves with the key's entry once it exists: a read, then a watch, re-read every `recheckMs`. */
export async function waitForKey(coordinator: Coordinator, key: string, options: WaitForKeyOptions): Promise<Entry> {
  const { clock, signal } = options;
  const backoff = new Backoff(50, 2000, randomOf(clock));
  let waited = false;
  for (;;) {
    const e = await retryStore(() => coordinator.get(key), { clock, signal, logger: options.logger, what: `read ${key}` });
    if (e) return e;
    if (!waited) {
      options.onWait?.();
      waited = true;
    }
    const ctrl = new AbortController();
    const onAbort = () => ctrl.abort(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    const timer = clock.setTimeout(() => ctrl.abort(), options.recheckMs ?? 2000);
    timer.unref?.();
    let failed = false;
    try {
      for await (const batch of coordinator.watch(key, { signal: ctrl.signal })) {
        if (batch.events.some((ev) => ev.type === 'put' && ev.key === key)) break;
      }
    } catch (err) {
      if (!TaskGraphError.is(err) || !err.retryable) throw err;
      failed = true;
    } finally {
      clock.clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
    }
    // A watch that fails at once would make this a busy loop of reads.
    if (failed) await sleep(clock, backoff.next(), signal).catch(() => undefined);
    if (signal.aborted) throw abortError(signal, `waiting for ${key}`);
  }
}
