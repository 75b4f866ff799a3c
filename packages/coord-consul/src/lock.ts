/**
 * Fair locks on Consul. Consul's `acquire` is a race with no queue, so waiters
 * queue themselves: each takes a ticket, a key under `<ns>/queues/<name>/` held by
 * its session (so it vanishes with the session), and tickets are served in the
 * order Consul created them (CreateIndex, a Raft index). The head of the queue
 * takes the lock key `<ns>/locks/<name>` with the `lock` verb and drops its ticket
 * in the same transaction. Everyone else blocks on the ticket just ahead of theirs.
 *
 * The fencing token is the lock key's CreateIndex and LockIndex together: the key
 * is deleted on release (and by Consul when the holder's session ends), so each
 * holder either recreates it at a higher CreateIndex or, if it survived, takes it
 * at a higher LockIndex. Either way the token strictly increases.
 *
 * A lock key held by the session with no Lock of this client standing for it was
 * taken by an earlier call whose answer was lost: the next acquire or tryAcquire of
 * the session adopts it (the key's value is the owner, its indexes the token) rather
 * than decline or wait for a key nobody will release. A ticket of the session ahead
 * of ours is likewise an earlier call's that nobody waits on: an acquire drops it.
 */
import { ClosedError, LeaseLostError, TaskGraphError, UnavailableError, abortError } from '@taskgraph/api';
import type { Clock, Lock, Logger } from '@taskgraph/api';
import { Backoff, pause } from '@taskgraph/backend-kit';
import type { Stops } from '@taskgraph/backend-kit';
import { retryable } from './http.js';
import type { Keyspace } from './keys.js';
import { refusedSession } from './session.js';
import type { ConsulSession } from './session.js';
import { fromBase64, lockToken, toBase64 } from './wire.js';
import type { KvPair, TxnOp, TxnOutcome } from './wire.js';

export interface LockHost {
  readonly keys: Keyspace;
  readonly clock: Clock;
  readonly logger: Logger;
  /** Aborts when the coordinator closes: tickets are then left to their sessions. */
  readonly closed: AbortSignal;
  txn(ops: readonly TxnOp[], what: string, signal?: AbortSignal): Promise<TxnOutcome>;
  /** Reads one key; with `index`, waits (a blocking query) until it changes past that index. */
  readKey(consulKey: string, what: string, options?: { readonly index?: number; readonly signal?: AbortSignal }): Promise<{ index: number; pair: KvPair | undefined }>;
  readPrefix(consulPrefix: string, what: string, signal?: AbortSignal): Promise<{ index: number; pairs: readonly KvPair[] }>;
  nextTicket(session: ConsulSession): string;
  /** Whether this client holds a live Lock of `session` for `name` (CoordinatorBase.holdsLock). */
  holdsLock(session: ConsulSession, name: string): boolean;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A blocking query that failed is retried after 100 to 200 ms. */
const CHANGE_RETRY = new Backoff(200, 200);

/**
 * How long to wait before trying again a key Consul refuses because of a
 * lock-delay: Consul does not say when the delay ends, so poll, every lock-delay
 * but between 100 ms and 1 s apart.
 */
export function lockDelayPollMs(lockDelayMs: number): number {
  return Math.max(100, Math.min(lockDelayMs || 1000, 1000));
}

export class ConsulLock implements Lock {
  readonly name: string;
  readonly owner: string;
  readonly token: bigint;
  readonly lost: AbortSignal;
  readonly #host: LockHost;
  readonly #session: ConsulSession;
  readonly #released = new AbortController();
  #releasedOnServer = false;

  constructor(host: LockHost, session: ConsulSession, name: string, owner: string, token: bigint) {
    this.#host = host;
    this.#session = session;
    this.name = name;
    this.owner = owner;
    this.token = token;
    this.lost = AbortSignal.any([session.lost, this.#released.signal]);
    session.locks.add(this);
  }

  /** Frees the lock key (no lock-delay, unlike a session ending). Safe to call again after a failure. */
  async release(): Promise<void> {
    this.#markReleased();
    // A lost session no longer holds the key: someone else may, and it is theirs.
    if (this.#session.lost.aborted) return;
    await this.#releaseOnServer();
  }

  /** @internal The session is closing: free the key while Consul still knows the session, so no lock-delay starts. */
  async releaseForClose(): Promise<void> {
    this.#markReleased();
    await this.#releaseOnServer();
  }

  #markReleased(): void {
    if (!this.#released.signal.aborted) this.#released.abort(new ClosedError(`lock ${JSON.stringify(this.name)} was released`));
    this.#session.locks.delete(this);
  }

  async #releaseOnServer(): Promise<void> {
    if (this.#releasedOnServer) return;
    const key = this.#host.keys.lock(this.name);
    // Only while this session still holds it: after a loss the key may be someone else's.
    const outcome = await this.#host.txn(
      [
        { Verb: 'check-session', Key: key, Session: this.#session.id },
        { Verb: 'delete', Key: key },
      ],
      `release of lock ${JSON.stringify(this.name)}`,
    );
    if (!outcome.ok) this.#host.logger.debug('lock was no longer held at release', { lock: this.name, errors: outcome.errors });
    this.#releasedOnServer = true;
  }
}

type Attempt = { readonly kind: 'locked'; readonly pair: KvPair } | { readonly kind: 'held' } | { readonly kind: 'delayed' };

/**
 * Queues a ticket, waits to be first, takes the lock. Without `wait` it gives up
 * (undefined) instead of waiting. It stops when one of `stops` fires.
 */
export async function acquireLock(
  host: LockHost,
  session: ConsulSession,
  name: string,
  owner: string,
  options: { readonly wait: boolean; readonly stops: Stops; readonly what: string; readonly lockDelayMs: number },
): Promise<ConsulLock | undefined> {
  const { stops, what } = options;
  const signal = AbortSignal.any(stops.signals);
  const failed = (): TaskGraphError => stops.reason() ?? abortError(signal, what);
  const lockKey = host.keys.lock(name);
  const queue = host.keys.queue(name);
  const ticketKey = queue + host.nextTicket(session);
  const value = toBase64(encoder.encode(owner));

  let enqueued: TxnOutcome;
  try {
    enqueued = await host.txn(
      [
        { Verb: 'cas', Key: ticketKey, Value: value, Index: 0 },
        { Verb: 'lock', Key: ticketKey, Value: value, Session: session.id },
      ],
      what,
      signal,
    );
  } catch (err) {
    // The ticket may exist: left alone, it would hold up every later waiter until the session ends.
    if (TaskGraphError.is(err, 'INDETERMINATE') || signal.aborted) await dropTicket(host, ticketKey, session);
    throw signal.aborted ? failed() : err;
  }
  if (!enqueued.ok) throw leaseOrUnexpected(enqueued.errors.map((e) => e.What), session, what);

  let taken = false;
  const retry = new Backoff(100, 5000);
  try {
    for (;;) {
      if (signal.aborted) throw failed();
      let tickets: KvPair[];
      try {
        const read = await host.readPrefix(queue, what, signal);
        tickets = read.pairs.filter((p) => !p.Key.slice(queue.length).includes('/')).sort((a, b) => a.CreateIndex - b.CreateIndex || (a.Key < b.Key ? -1 : 1));
      } catch (err) {
        if (signal.aborted) throw failed();
        if (!options.wait || !retryable(err)) throw err;
        await pause(host.clock, retry.next(), signal);
        continue;
      }
      const mine = tickets.findIndex((p) => p.Key === ticketKey);
      if (mine < 0) throw new LeaseLostError(`${what}: the waiting ticket is gone; session ${session.id} has ended`);
      if (mine > 0) {
        // Waiters ahead wait for the holder: if that is this session with no Lock here, nobody would ever release it.
        const orphan = adoptable(host, session, name, (await host.readKey(lockKey, what, { signal })).pair);
        if (orphan) return adopt(host, session, name, orphan, what);
        if (!options.wait) return undefined;
        const ahead = tickets[mine - 1] as KvPair;
        // No call of this session waits on a ticket of it ahead of ours (one call per session and name at a time): it was left behind.
        if (ahead.Session === session.id && (await dropTicket(host, ahead.Key, session))) continue;
        await waitForChange(host, ahead.Key, ahead.ModifyIndex, what, signal);
        continue;
      }
      // Held, by anyone: this session too while it holds a live Lock, since locks are not re-entrant (it waits behind itself).
      const current = await host.readKey(lockKey, what, { signal });
      const orphan = adoptable(host, session, name, current.pair);
      if (orphan) return adopt(host, session, name, orphan, what);
      if (current.pair?.Session) {
        if (!options.wait) return undefined;
        await waitForChange(host, lockKey, current.pair.ModifyIndex, what, signal);
        continue;
      }
      const result = await tryTake(host, session, lockKey, ticketKey, value, what, signal);
      if (result.kind === 'locked') {
        taken = true;
        return new ConsulLock(host, session, name, owner, lockToken(result.pair));
      }
      if (!options.wait) return undefined;
      if (result.kind === 'delayed') {
        // Consul refuses the lock until the previous holder's lock-delay ends; it does not say when.
        await pause(host.clock, lockDelayPollMs(options.lockDelayMs), signal);
        continue;
      }
      const held = await host.readKey(lockKey, what, { signal });
      if (held.pair?.Session) await waitForChange(host, lockKey, held.pair.ModifyIndex, what, signal);
    }
  } catch (err) {
    if (signal.aborted && !TaskGraphError.is(err, 'LEASE_LOST')) throw failed();
    throw err;
  } finally {
    if (!taken) await dropTicket(host, ticketKey, session);
  }
}

/** Whether the lock key is held by `session` with no live Lock of this client for it: an earlier call's, whose answer was lost. */
function adoptable(host: LockHost, session: ConsulSession, name: string, pair: KvPair | undefined): KvPair | undefined {
  return pair !== undefined && pair.Session === session.id && !host.holdsLock(session, name) ? pair : undefined;
}

/** A Lock for the holding the lock key records, with its owner and token. */
function adopt(host: LockHost, session: ConsulSession, name: string, pair: KvPair, what: string): ConsulLock {
  host.logger.info('the lock is held by this session with no Lock here (an earlier answer was lost): adopting it', { lock: name, what });
  return new ConsulLock(host, session, name, decoder.decode(fromBase64(pair.Value)), lockToken(pair));
}

function leaseOrUnexpected(whats: readonly string[], session: ConsulSession, what: string): TaskGraphError {
  const text = whats.join('; ');
  return refusedSession(session, text, what) ?? new UnavailableError(`${what}: Consul refused the transaction (${text})`);
}

async function tryTake(host: LockHost, session: ConsulSession, lockKey: string, ticketKey: string, value: string, what: string, signal: AbortSignal): Promise<Attempt> {
  let outcome: TxnOutcome;
  try {
    outcome = await host.txn(
      [
        { Verb: 'lock', Key: lockKey, Value: value, Session: session.id },
        { Verb: 'delete', Key: ticketKey },
      ],
      what,
      signal,
    );
  } catch (err) {
    if (!TaskGraphError.is(err, 'INDETERMINATE')) throw err;
    // The answer was lost: the lock may be ours. Read it back rather than leak it.
    const retry = new Backoff(100, 5000);
    for (;;) {
      try {
        const { pair } = await host.readKey(lockKey, what, { signal });
        return pair && pair.Session === session.id ? { kind: 'locked', pair } : { kind: 'held' };
      } catch (readErr) {
        if (signal.aborted || !retryable(readErr)) throw readErr;
        await pause(host.clock, retry.next(), signal);
      }
    }
  }
  if (outcome.ok) {
    const pair = outcome.results[0];
    if (!pair) throw new UnavailableError(`${what}: Consul's answer lacks the lock entry`);
    return { kind: 'locked', pair };
  }
  const text = outcome.errors.map((e) => e.What).join('; ');
  if (text.includes('lock delay')) return { kind: 'delayed' };
  if (text.includes('already held')) return { kind: 'held' };
  throw leaseOrUnexpected([text], session, what);
}

/** Blocks until the key changes past `index` (or is deleted), the wait runs out, or the signal aborts. */
async function waitForChange(host: LockHost, consulKey: string, index: number, what: string, signal: AbortSignal): Promise<void> {
  try {
    await host.readKey(consulKey, what, { index, signal });
  } catch (err) {
    if (signal.aborted || !retryable(err)) throw err;
    await pause(host.clock, CHANGE_RETRY.next(), signal);
  }
}

/** Deletes a ticket of the session; false if it could not (failures are logged: the ticket goes with the session). */
async function dropTicket(host: LockHost, ticketKey: string, session: ConsulSession): Promise<boolean> {
  if (session.lost.aborted || host.closed.aborted) return false;
  try {
    await host.txn([{ Verb: 'delete', Key: ticketKey }], `dropping the lock ticket ${ticketKey}`);
    return true;
  } catch (err) {
    // The ticket goes away with the session anyway; until then it only delays later waiters.
    host.logger.warn('could not drop a lock ticket', { ticket: ticketKey, error: String(err) });
    return false;
  }
}
