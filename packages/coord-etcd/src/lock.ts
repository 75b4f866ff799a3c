/**
 * Locks as etcd's own recipe has them, written here against the coordinator's
 * calls: each acquisition puts a waiter key under the lock's prefix with the
 * session's lease; the waiter whose key has the lowest create_revision holds the
 * lock, and that create_revision is its fencing token (store-wide revisions only
 * grow, so tokens strictly increase per name). A waiter watches only the key
 * just before its own, so a release wakes one waiter, not the herd.
 *
 * Waiter keys are per acquisition (lease id plus a nonce), not per lease: a
 * session that asks twice while it holds a live Lock queues behind itself, as it
 * would on any backend, instead of being handed the lock it already holds.
 *
 * A key of the session that no Lock of this client stands for (its put committed
 * but the answer was lost, and a withdrawal failed too) is an earlier call's: when it
 * holds the lock, the next acquire or tryAcquire of the session adopts it (its
 * create_revision is the token, its value the owner); when it only waits, an acquire
 * behind it removes it rather than wait for a key nobody will ever release.
 */
import type { IKeyValue, IRangeResponse, IRequestOp, ITxnRequest, ITxnResponse } from 'etcd3';
import { ClosedError, ErrorCodes, LeaseLostError, TaskGraphError } from '@taskgraph/api';
import type { Clock, Lock, LockHolder, Logger } from '@taskgraph/api';
import { Backoff, pause } from '@taskgraph/backend-kit';
import type { Stops } from '@taskgraph/backend-kit';
import type { CallKind } from './errors.js';
import type { Keyspace } from './keys.js';
import type { EtcdSession } from './session.js';

export interface LockHost {
  readonly keys: Keyspace;
  readonly logger: Logger;
  readonly clock: Clock;
  txn(request: ITxnRequest, kind: CallKind, what: string): Promise<ITxnResponse>;
  /** Resolves when `key` is deleted after revision `after`, or when one of `signals` aborts. */
  waitForDelete(key: Buffer, after: bigint, signals: readonly AbortSignal[], what: string): Promise<void>;
  /** Whether this client holds a live Lock of `session` for `name` (CoordinatorBase.holdsLock). */
  holdsLock(session: EtcdSession, name: string): boolean;
}

let nonce = 0;
const instance = Math.random().toString(36).slice(2, 8);

function waiterKey(host: LockHost, name: string, session: EtcdSession): Buffer {
  return Buffer.concat([host.keys.lockKey(name, session.id), Buffer.from(`-${instance}${(++nonce).toString(36)}`)]);
}

function rangeOf(res: ITxnResponse, i: number): IRangeResponse | undefined {
  return res.responses[i]?.response_range;
}

/** Whether `key` is a waiter key of `session` for lock `name`: the waiter key prefix, then the nonce after a `-`. */
function isSessionKey(host: LockHost, name: string, session: EtcdSession, key: Buffer): boolean {
  const prefix = Buffer.concat([host.keys.lockKey(name, session.id), Buffer.from('-')]);
  return key.length > prefix.length && key.subarray(0, prefix.length).equals(prefix);
}

/** The range request of the lock's holder: the waiter key with the lowest create_revision. */
function holderRange(host: LockHost, name: string, keysOnly: boolean): IRequestOp {
  const range = host.keys.lockRange(name);
  return { request_range: { key: range.start, range_end: range.end, sort_target: 'Create', sort_order: 'Ascend', limit: 1, keys_only: keysOnly } };
}

/** A Lock for the holding of `session` that `kv` (the holder key) records, with the owner and token it recorded. */
function adopt(host: LockHost, name: string, session: EtcdSession, kv: IKeyValue, what: string): EtcdLock {
  host.logger.info('the lock is held by this session with no Lock here (an earlier answer was lost): adopting it', {
    lock: name,
    key: kv.key.toString(),
    what,
  });
  return new EtcdLock(host, name, kv.value.toString('utf8'), BigInt(kv.create_revision), session, kv.key);
}

/** Deletes our waiter key if it is still ours; failures are logged (the lease removes it in the end) and answer false. */
async function withdraw(host: LockHost, key: Buffer, createRevision: bigint | undefined, what: string): Promise<boolean> {
  try {
    await host.txn(
      {
        compare: createRevision === undefined ? [] : [{ key, target: 'Create', result: 'Equal', create_revision: createRevision.toString() }],
        success: [{ request_delete_range: { key } }],
      },
      'write',
      what,
    );
    return true;
  } catch (err) {
    host.logger.warn('could not remove a lock waiter key; it goes when its session ends', { key: key.toString(), error: (err as Error).message });
    return false;
  }
}

/**
 * Waits for lock `name` in the queue of its waiters. `stops` are why the wait ends
 * early (the coordinator closed, the caller's signal, the session lost); `what`
 * names the call for messages.
 */
export async function acquireLock(host: LockHost, name: string, session: EtcdSession, owner: string, stops: Stops, what: string): Promise<Lock> {
  const key = waiterKey(host, name, session);
  const range = host.keys.lockRange(name);

  let token: bigint;
  try {
    // Not raced with the signals: a put still in flight after we gave up would leave a
    // waiter key behind that blocks everyone after it until the session ends.
    const put = await host.txn({ success: [{ request_put: { key, value: Buffer.from(owner), lease: session.id } }] }, 'write', what);
    token = BigInt(put.header.revision);
  } catch (err) {
    if (TaskGraphError.is(err, ErrorCodes.Indeterminate)) await withdraw(host, key, undefined, `${what} (withdrawing)`);
    throw err;
  }
  try {
    for (;;) {
      // One snapshot: the waiter just before ours, whether ours still exists, and the holder.
      const res = await stops.race(
        host.txn(
          {
            success: [
              {
                request_range: {
                  key: range.start,
                  range_end: range.end,
                  max_create_revision: (token - 1n).toString(),
                  sort_target: 'Create',
                  sort_order: 'Descend',
                  limit: 1,
                  keys_only: true,
                },
              },
              { request_range: { key, keys_only: true } },
              holderRange(host, name, false),
            ],
          },
          'read',
          what,
        ),
      );
      const ours = rangeOf(res, 1)?.kvs[0];
      if (!ours || BigInt(ours.create_revision) !== token) {
        throw new LeaseLostError(`${what}: our waiter key is gone (session ${session.id}'s lease expired or was revoked)`);
      }
      const before = rangeOf(res, 0)?.kvs[0];
      if (!before) break;
      const holder = rangeOf(res, 2)?.kvs[0];
      if (holder && isSessionKey(host, name, session, holder.key) && !host.holdsLock(session, name)) {
        // Held by this session through a key no Lock here stands for: an earlier call's whose answer was lost.
        await withdraw(host, key, token, `${what} (withdrawing: the session holds the lock already)`);
        return adopt(host, name, session, holder, what);
      }
      if (isSessionKey(host, name, session, before.key) && !before.key.equals(holder?.key ?? Buffer.alloc(0))) {
        // A waiter key of this session that no call waits on any more: left by a call whose withdrawal failed.
        const removing = `${what} (removing a waiter key of this session that nobody waits on)`;
        if (await withdraw(host, before.key, BigInt(before.create_revision), removing)) continue;
      }
      await stops.race(host.waitForDelete(before.key, BigInt(res.header.revision), stops.signals, what));
    }
  } catch (err) {
    await withdraw(host, key, token, `${what} (withdrawing)`);
    throw err;
  }
  return new EtcdLock(host, name, owner, token, session, key);
}

export async function tryAcquireLock(host: LockHost, name: string, session: EtcdSession, owner: string, what: string): Promise<Lock | undefined> {
  const key = waiterKey(host, name, session);
  const range = host.keys.lockRange(name);
  // The compare covers the whole range: it holds only when no key is in it, so the
  // lock is taken only when nobody holds it nor waits for it, in one step.
  let res: ITxnResponse;
  try {
    res = await host.txn(
      {
        compare: [{ key: range.start, range_end: range.end, target: 'Create', result: 'Equal', create_revision: 0 }],
        success: [{ request_put: { key, value: Buffer.from(owner), lease: session.id } }],
        // Who holds it, from the same snapshot: this session, through a key whose put's answer was lost?
        failure: [holderRange(host, name, false)],
      },
      'write',
      what,
    );
  } catch (err) {
    if (!TaskGraphError.is(err, ErrorCodes.Indeterminate)) throw err;
    // The answer was lost: if the put was applied, our key is alone in the range and the
    // lock is ours. Read it back rather than leave a lock nobody would ever release (a
    // withdrawal can fail as well while etcd is away, and the key lives as long as the session).
    const token = await readBack(host, key, session, what);
    if (token === undefined) return undefined;
    host.logger.info('a lock taken by a write whose answer was lost is ours', { lock: name });
    return new EtcdLock(host, name, owner, token, session, key);
  }
  if (!res.succeeded) {
    const holder = rangeOf(res, 0)?.kvs[0];
    if (holder && isSessionKey(host, name, session, holder.key) && !host.holdsLock(session, name)) return adopt(host, name, session, holder, what);
    return undefined;
  }
  return new EtcdLock(host, name, owner, BigInt(res.header.revision), session, key);
}

/**
 * Our waiter key's create_revision, or undefined when it is not there: read until etcd
 * answers, as long as the session lives (the key goes with it otherwise).
 */
async function readBack(host: LockHost, key: Buffer, session: EtcdSession, what: string): Promise<bigint | undefined> {
  const backoff = new Backoff(100, 2000);
  host.logger.info('the answer to a lock write was lost; reading the lock back', { key: key.toString() });
  for (;;) {
    if (session.isLost()) throw new LeaseLostError(`${what}: the session was lost while reading back a lock write whose answer was lost`);
    try {
      const res = await host.txn({ success: [{ request_range: { key, keys_only: true } }] }, 'read', `${what} (reading back)`);
      const kv = rangeOf(res, 0)?.kvs[0];
      return kv ? BigInt(kv.create_revision) : undefined;
    } catch (err) {
      if (!TaskGraphError.is(err) || !err.retryable) throw err;
      await pause(host.clock, backoff.next(), session.lost);
    }
  }
}

export async function lockHolder(host: LockHost, name: string, what: string): Promise<LockHolder | undefined> {
  const range = host.keys.lockRange(name);
  const res = await host.txn(
    { success: [{ request_range: { key: range.start, range_end: range.end, sort_target: 'Create', sort_order: 'Ascend', limit: 1 } }] },
    'read',
    what,
  );
  const first: IKeyValue | undefined = rangeOf(res, 0)?.kvs[0];
  return first && { owner: first.value.toString('utf8'), token: BigInt(first.create_revision) };
}

class EtcdLock implements Lock {
  readonly name: string;
  readonly owner: string;
  readonly token: bigint;
  readonly #host: LockHost;
  readonly #session: EtcdSession;
  readonly #key: Buffer;
  readonly #lost = new AbortController();
  readonly #onSessionLost = (): void => {
    this.#lost.abort(new LeaseLostError(`lock ${JSON.stringify(this.name)} is lost with session ${this.#session.id}`, { cause: this.#session.lost.reason }));
  };
  #released = false;

  constructor(host: LockHost, name: string, owner: string, token: bigint, session: EtcdSession, key: Buffer) {
    this.#host = host;
    this.name = name;
    this.owner = owner;
    this.token = token;
    this.#session = session;
    this.#key = key;
    if (session.lost.aborted) this.#onSessionLost();
    else session.lost.addEventListener('abort', this.#onSessionLost, { once: true });
  }

  get lost(): AbortSignal {
    return this.#lost.signal;
  }

  async release(): Promise<void> {
    if (this.#released) return;
    if (!this.#session.isLost()) {
      await this.#host.txn(
        {
          compare: [{ key: this.#key, target: 'Create', result: 'Equal', create_revision: this.token.toString() }],
          success: [{ request_delete_range: { key: this.#key } }],
        },
        'write',
        `release of lock ${JSON.stringify(this.name)}`,
      );
    }
    this.#released = true;
    this.#session.lost.removeEventListener('abort', this.#onSessionLost);
    if (!this.#lost.signal.aborted) this.#lost.abort(new ClosedError(`lock ${JSON.stringify(this.name)} was released`));
  }
}
