/**
 * Locks as Leases, one per lock name, changed only by compare-and-set (a PUT with
 * the Lease's resourceVersion and uid):
 *
 * - spec.holderIdentity is the holding session's id (a `holder` label mirrors it, so
 *   a janitor can find the locks of a dead session), the `owner` annotation what
 *   holder() reports.
 * - spec.leaseTransitions counts every change of holder and is the fencing token: it
 *   only grows, because lock Leases are never deleted.
 * - Kubernetes has no queue, so the Lease carries one: the `queue` annotation lists
 *   the waiting sessions in the order their compare-and-set appended them. A release
 *   hands the lock to the first waiter whose session is alive; a waiter takes a free
 *   lock only when no live waiter is ahead of it. That is first come, first served,
 *   "come" being the moment the append was stored.
 * - A holder whose session is gone (closed, or removed by a janitor after it was
 *   observed expired) is replaced the same way, by any waiter or janitor.
 */
import { V1MicroTime, type V1Lease } from '@kubernetes/client-node';
import { ClosedError, InternalError, TaskGraphError } from '@taskgraph/api';
import type { Clock, Lock, LockHolder, Logger, TimerHandle } from '@taskgraph/api';
import { Backoff, sleep } from '@taskgraph/backend-kit';
import type { Stops } from '@taskgraph/backend-kit';
import { isTransient, type KubeApi } from './kube.js';
import { ANNOTATION, LABEL, lockObjectName } from './names.js';
import type { LeaseObserver } from './observer.js';
import type { K8sSession } from './session.js';

/** How often a hand-over retries after the API server failed to answer: after 100, 200, 400, 800, 1600 ms. */
const HAND_OVER_RETRIES = 5;

export interface LockHost {
  readonly api: KubeApi;
  readonly prefix: string;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly observer: LeaseObserver;
  /** How long a waiter sleeps without news before it looks again. */
  readonly pollMs: number;
  /** Whether the session's Lease is gone (checked against the server when unsure). */
  isSessionGone(id: string): Promise<boolean>;
}

interface Waiter {
  readonly s: string;
  readonly o: string;
}

interface LockState {
  readonly lease: V1Lease;
  readonly holder: Waiter | undefined;
  readonly token: number;
  readonly queue: readonly Waiter[];
}

function decodeQueue(text: string | undefined): Waiter[] {
  if (text === undefined || text === '') return [];
  try {
    const parsed: unknown = JSON.parse(text);
    if (!Array.isArray(parsed)) return [];
    return parsed.filter((w): w is Waiter => typeof w === 'object' && w !== null && typeof (w as Waiter).s === 'string' && typeof (w as Waiter).o === 'string');
  } catch {
    return [];
  }
}

function decode(lease: V1Lease): LockState {
  const id = lease.spec?.holderIdentity;
  const annotations = lease.metadata?.annotations ?? {};
  return {
    lease,
    holder: id ? { s: id, o: annotations[ANNOTATION.owner] ?? id } : undefined,
    token: lease.spec?.leaseTransitions ?? 0,
    queue: decodeQueue(annotations[ANNOTATION.queue]),
  };
}

/** The Lease with a new holder (or none), token and queue. */
function next(st: LockState, holder: Waiter | undefined, token: number, queue: readonly Waiter[], durationSeconds?: number): V1Lease {
  const meta = st.lease.metadata ?? {};
  const labels = { ...(meta.labels ?? {}) };
  const annotations = { ...(meta.annotations ?? {}) };
  if (holder === undefined) {
    delete labels[LABEL.holder];
    delete annotations[ANNOTATION.owner];
  } else {
    labels[LABEL.holder] = holder.s;
    annotations[ANNOTATION.owner] = holder.o;
  }
  if (queue.length === 0) delete annotations[ANNOTATION.queue];
  else annotations[ANNOTATION.queue] = JSON.stringify(queue);
  const spec = { ...(st.lease.spec ?? {}) };
  if (holder === undefined) {
    delete spec.holderIdentity;
  } else {
    spec.holderIdentity = holder.s;
    if (holder.s !== st.holder?.s) {
      const now = new V1MicroTime();
      spec.acquireTime = now;
      spec.renewTime = now;
    }
  }
  if (durationSeconds !== undefined) spec.leaseDurationSeconds = durationSeconds;
  spec.leaseTransitions = token;
  return { ...st.lease, metadata: { ...meta, labels, annotations }, spec };
}

function newLease(prefix: string, name: string, holder: Waiter, durationSeconds: number): V1Lease {
  const now = new V1MicroTime();
  return {
    apiVersion: 'coordination.k8s.io/v1',
    kind: 'Lease',
    metadata: {
      name: lockObjectName(prefix, name),
      labels: { [LABEL.store]: prefix, [LABEL.kind]: 'lock', [LABEL.holder]: holder.s },
      annotations: { [ANNOTATION.lock]: name, [ANNOTATION.owner]: holder.o },
    },
    spec: { holderIdentity: holder.s, leaseDurationSeconds: durationSeconds, acquireTime: now, renewTime: now, leaseTransitions: 1 },
  };
}

/** Waiters in order, without those whose session is gone. */
async function liveQueue(host: LockHost, queue: readonly Waiter[], except?: string): Promise<Waiter[]> {
  const out: Waiter[] = [];
  for (const w of queue) {
    if (w.s === except) continue;
    if (!(await host.isSessionGone(w.s))) out.push(w);
  }
  return out;
}

export class K8sLock implements Lock {
  readonly lost: AbortSignal;
  readonly #controller = new AbortController();
  readonly #host: LockHost;
  #releasing: Promise<void> | undefined;
  /** A lock ends with its session, for the same reason (LeaseLostError, or ClosedError on close). */
  readonly #onSessionLost = (): void => {
    this.#controller.abort(this.session.lost.reason);
  };

  constructor(
    host: LockHost,
    readonly session: K8sSession,
    readonly name: string,
    readonly owner: string,
    readonly token: bigint,
  ) {
    this.#host = host;
    this.lost = this.#controller.signal;
    // Granted to a session lost while the grant was on its way: the lock is lost from the start.
    if (session.lost.aborted) this.#onSessionLost();
    else session.lost.addEventListener('abort', this.#onSessionLost, { once: true });
  }

  release(): Promise<void> {
    this.#releasing ??= this.#release();
    return this.#releasing;
  }

  async #release(): Promise<void> {
    const wasHeld = !this.lost.aborted;
    this.session.lost.removeEventListener('abort', this.#onSessionLost);
    this.#controller.abort(new ClosedError(`lock ${JSON.stringify(this.name)} was released`));
    // A lost lock may already be someone else's: releasing it takes nothing from them.
    if (wasHeld) await handOver(this.#host, this.name, this.session.id, Number(this.token));
  }
}

/**
 * Hands the lock on from `sessionId` (holding it with `token`) to the first live waiter,
 * or frees it. Does nothing when that session no longer holds it with that token.
 */
export async function handOver(host: LockHost, name: string, sessionId: string, token: number): Promise<void> {
  const leaseName = lockObjectName(host.prefix, name);
  return handOverLease(host, leaseName, sessionId, token);
}

export async function handOverLease(host: LockHost, leaseName: string, sessionId: string, token: number): Promise<void> {
  const backoff = new Backoff(100, 1600, () => 1);
  for (let failures = 0; ; ) {
    try {
      const lease = await host.api.getLease(leaseName);
      if (lease === undefined) return;
      const st = decode(lease);
      if (st.holder?.s !== sessionId || st.token !== token) return;
      const live = await liveQueue(host, st.queue, sessionId);
      const first = live[0];
      const body = first === undefined ? next(st, undefined, st.token, []) : next(st, first, st.token + 1, live.slice(1));
      await host.api.replaceLease(body);
      return;
    } catch (err) {
      if (TaskGraphError.is(err, 'CONFLICT')) continue;
      if (isTransient(err) && failures++ < HAND_OVER_RETRIES) {
        await sleep(host.clock, backoff.next());
        continue;
      }
      throw err;
    }
  }
}

/** Wakes a waiting acquire when its lock's Lease changes, some session goes away, or the wait must stop. */
class Wakeup {
  private dirty = false;
  private resolve: (() => void) | undefined;
  private timer: TimerHandle | undefined;
  private readonly unsubscribe: () => void;
  private readonly unstop: () => void;

  constructor(
    private readonly host: LockHost,
    leaseName: string,
    stops: Stops,
  ) {
    this.unsubscribe = host.observer.subscribe((change) => {
      if (change.kind === 'session-gone' || change.leaseName === leaseName) this.wake();
    });
    this.unstop = stops.onStop(() => this.wake());
  }

  wake(): void {
    this.dirty = true;
    this.resolve?.();
  }

  /** Resolves on news, on a stop, or after `pollMs`. */
  wait(): Promise<void> {
    if (this.dirty) {
      this.dirty = false;
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => {
      this.resolve = () => {
        this.resolve = undefined;
        this.dirty = false;
        if (this.timer !== undefined) this.host.clock.clearTimeout(this.timer);
        resolve();
      };
      this.timer = this.host.clock.setTimeout(() => this.resolve?.(), this.host.pollMs);
      this.timer.unref?.();
    });
  }

  dispose(): void {
    this.unsubscribe();
    this.unstop();
    if (this.timer !== undefined) this.host.clock.clearTimeout(this.timer);
    this.resolve = undefined;
  }
}

/**
 * Takes the lock for `session`: waiting in the queue (`wait`), or only if nobody holds
 * it nor waits for it (`try`, which then answers undefined). Gives up with the error
 * of the first of `stops` to fire: the coordinator closed, the caller's signal
 * aborted, the session was lost.
 */
export async function acquireLock(
  host: LockHost,
  name: string,
  session: K8sSession,
  owner: string,
  mode: 'wait' | 'try',
  stops: Stops,
): Promise<K8sLock | undefined> {
  const leaseName = lockObjectName(host.prefix, name);
  const me: Waiter = { s: session.id, o: owner };
  const seconds = Math.ceil(session.ttlMs / 1000);
  const wakeup = mode === 'wait' ? new Wakeup(host, leaseName, stops) : undefined;
  let queued = false;
  const grant = (lease: V1Lease, recorded = owner): K8sLock => new K8sLock(host, session, name, recorded, BigInt(lease.spec?.leaseTransitions ?? 0));
  const check = (): void => {
    // By the clock: after a process pause the session's deadline timer may not have run yet.
    session.isLost();
    stops.throwIfStopped();
  };
  try {
    for (let round = 0; ; round++) {
      check();
      if (mode === 'try' && round > 8) return undefined;
      const lease = await host.api.getLease(leaseName);
      check();
      if (lease === undefined) {
        try {
          return grant(await host.api.createLease(newLease(host.prefix, name, me, seconds)));
        } catch (err) {
          if (TaskGraphError.is(err, 'ALREADY_EXISTS')) continue;
          throw err;
        }
      }
      if ((lease.metadata?.annotations?.[ANNOTATION.lock] ?? name) !== name) {
        throw new InternalError(`Lease ${leaseName} belongs to the lock ${JSON.stringify(lease.metadata?.annotations?.[ANNOTATION.lock])}, not ${JSON.stringify(name)}: a hash collision of lock names`);
      }
      const st = decode(lease);
      // Handed over to us while we waited; or, with no live Lock of the session here (the caller
      // waited for that), taken by an earlier call whose answer was lost: adopted, with the owner it recorded.
      if (st.holder?.s === me.s) {
        if (!queued) host.logger.info('the lock is held by this session with no Lock here (an earlier answer was lost): adopting it', { lock: name });
        return grant(lease, st.holder.o);
      }
      // A try does not wait for the server to tell whether a holder it has not seen is gone.
      const holderGone =
        st.holder !== undefined &&
        (mode === 'wait' || (host.observer.isSynced && !host.observer.isKnown(st.holder.s))) &&
        (await host.isSessionGone(st.holder.s));
      if (st.holder === undefined || holderGone) {
        const live = await liveQueue(host, st.queue);
        const first = live[0];
        if (first === undefined || first.s === me.s) {
          try {
            const taken = await host.api.replaceLease(next(st, me, st.token + 1, live.filter((w) => w.s !== me.s), seconds));
            return grant(taken);
          } catch (err) {
            if (TaskGraphError.is(err, 'CONFLICT')) continue;
            throw err;
          }
        }
        if (mode === 'try') return undefined;
        if (holderGone || live.length !== st.queue.length) {
          // The holder is gone (or waiters died): pass the lock to the first live waiter.
          try {
            await host.api.replaceLease(next(st, first, st.token + 1, live.slice(1)));
          } catch (err) {
            if (!TaskGraphError.is(err, 'CONFLICT')) throw err;
          }
          continue;
        }
      } else if (mode === 'try') {
        return undefined;
      }
      if (!st.queue.some((w) => w.s === me.s)) {
        try {
          await host.api.replaceLease(next(st, st.holder, st.token, [...st.queue, me]));
          queued = true;
        } catch (err) {
          if (!TaskGraphError.is(err, 'CONFLICT')) throw err;
        }
        continue;
      }
      queued = true;
      await wakeup?.wait();
    }
  } catch (err) {
    if (queued) await leaveQueue(host, leaseName, me).catch((e: unknown) => host.logger.warn('could not leave a lock queue', { lock: name, error: String(e) }));
    throw err;
  } finally {
    wakeup?.dispose();
  }
}

/** A waiter gives up: out of the queue, or, if the lock reached it meanwhile, handed on. */
async function leaveQueue(host: LockHost, leaseName: string, me: Waiter): Promise<void> {
  for (let attempt = 0; attempt < 10; attempt++) {
    const lease = await host.api.getLease(leaseName);
    if (lease === undefined) return;
    const st = decode(lease);
    if (st.holder?.s === me.s) {
      await handOverLease(host, leaseName, me.s, st.token);
      return;
    }
    if (!st.queue.some((w) => w.s === me.s)) return;
    try {
      await host.api.replaceLease(next(st, st.holder, st.token, st.queue.filter((w) => w.s !== me.s)));
      return;
    } catch (err) {
      if (!TaskGraphError.is(err, 'CONFLICT')) throw err;
    }
  }
}

/** Who holds the lock, from its Lease. */
export async function lockHolder(host: LockHost, name: string): Promise<LockHolder | undefined> {
  const lease = await host.api.getLease(lockObjectName(host.prefix, name));
  if (lease === undefined) return undefined;
  const st = decode(lease);
  return st.holder === undefined ? undefined : { owner: st.holder.o, token: BigInt(st.token) };
}
