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
 */
import { ClosedError, InvalidArgumentError, LeaseLostError, TaskGraphError, UnavailableError, abortError } from '@taskgraph/api';
import type { Clock, Lock, Logger } from '@taskgraph/api';
import type { Keyspace } from './keys.js';
import type { ConsulSession } from './session.js';
import { backoffMs, pause } from './timing.js';
import { lockToken, toBase64 } from './wire.js';
import type { KvPair, TxnOp, TxnOutcome } from './wire.js';

export interface LockHost {
  readonly keys: Keyspace;
  readonly clock: Clock;
  readonly logger: Logger;
  /** The signal that aborts when the coordinator closes. */
  readonly closed: AbortSignal;
  txn(ops: readonly TxnOp[], what: string, signal?: AbortSignal): Promise<TxnOutcome>;
  /** Reads one key; with `index`, waits (a blocking query) until it changes past that index. */
  readKey(consulKey: string, what: string, options?: { readonly index?: number; readonly signal?: AbortSignal }): Promise<{ index: number; pair: KvPair | undefined }>;
  readPrefix(consulPrefix: string, what: string, signal?: AbortSignal): Promise<{ index: number; pairs: readonly KvPair[] }>;
  nextTicket(session: ConsulSession): string;
}

const encoder = new TextEncoder();

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

/** Queues a ticket, waits to be first, takes the lock. `give up` decides whether to wait at all. */
export async function acquireLock(
  host: LockHost,
  session: ConsulSession,
  name: string,
  owner: string,
  options: { readonly wait: boolean; readonly signal?: AbortSignal; readonly lockDelayMs: number },
): Promise<ConsulLock | undefined> {
  const signals = [session.lost, host.closed];
  if (options.signal) signals.push(options.signal);
  const signal = AbortSignal.any(signals);
  const failed = (): TaskGraphError => {
    if (session.lost.aborted) return abortError(session.lost, `acquire of ${JSON.stringify(name)}`);
    if (host.closed.aborted) return new ClosedError(`acquire of ${JSON.stringify(name)}: the coordinator was closed`);
    return abortError(options.signal ?? signal, `acquire of ${JSON.stringify(name)}`);
  };
  const what = `acquire of lock ${JSON.stringify(name)}`;
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
  try {
    for (let attempt = 0; ; attempt++) {
      if (signal.aborted) throw failed();
      let tickets: KvPair[];
      try {
        const read = await host.readPrefix(queue, what, signal);
        tickets = read.pairs.filter((p) => !p.Key.slice(queue.length).includes('/')).sort((a, b) => a.CreateIndex - b.CreateIndex || (a.Key < b.Key ? -1 : 1));
      } catch (err) {
        if (signal.aborted) throw failed();
        if (!options.wait || !retryable(err)) throw err;
        await pause(host.clock, backoffMs(attempt), signal);
        continue;
      }
      const mine = tickets.findIndex((p) => p.Key === ticketKey);
      if (mine < 0) throw new LeaseLostError(`${what}: the waiting ticket is gone; session ${session.id} has ended`);
      if (mine > 0) {
        if (!options.wait) return undefined;
        const ahead = tickets[mine - 1] as KvPair;
        await waitForChange(host, ahead.Key, ahead.ModifyIndex, what, signal);
        continue;
      }
      // Held, by anyone: this session too, since locks are not re-entrant (it waits behind itself).
      const current = await host.readKey(lockKey, what, { signal });
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
        await pause(host.clock, Math.max(100, Math.min(options.lockDelayMs || 1000, 1000)), signal);
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

function retryable(err: unknown): boolean {
  return TaskGraphError.is(err) && err.retryable;
}

function leaseOrUnexpected(whats: readonly string[], session: ConsulSession, what: string): TaskGraphError {
  const text = whats.join('; ');
  if (/invalid session|missing session/.test(text)) {
    const err = new LeaseLostError(`${what}: Consul no longer knows session ${session.id} (${text})`);
    session.lose(err);
    return err;
  }
  return new UnavailableError(`${what}: Consul refused the transaction (${text})`);
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
    for (let attempt = 0; ; attempt++) {
      try {
        const { pair } = await host.readKey(lockKey, what, { signal });
        return pair && pair.Session === session.id ? { kind: 'locked', pair } : { kind: 'held' };
      } catch (readErr) {
        if (signal.aborted || !retryable(readErr)) throw readErr;
        await pause(host.clock, backoffMs(attempt), signal);
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
    await pause(host.clock, backoffMs(1), signal);
  }
}

async function dropTicket(host: LockHost, ticketKey: string, session: ConsulSession): Promise<void> {
  if (session.lost.aborted || host.closed.aborted) return;
  try {
    await host.txn([{ Verb: 'delete', Key: ticketKey }], `dropping the lock ticket ${ticketKey}`);
  } catch (err) {
    // The ticket goes away with the session anyway; until then it only delays later waiters.
    host.logger.warn('could not drop a lock ticket', { ticket: ticketKey, error: String(err) });
  }
}

export function checkOwner(owner: unknown, maxBytes: number): string {
  if (typeof owner !== 'string' || owner === '') throw new InvalidArgumentError('lock owner must be a non-empty string');
  const n = encoder.encode(owner).length;
  if (n > maxBytes) throw new InvalidArgumentError(`lock owner is ${n} bytes; the limit is ${maxBytes}`);
  return owner;
}
