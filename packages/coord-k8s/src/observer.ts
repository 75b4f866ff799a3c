/**
 * Every coordinator follows the Leases of its store (sessions and locks) with one
 * watch. For sessions this is the local observation expiry is judged by: the API
 * server never expires a Lease, and a remote renewTime means nothing on this
 * machine's clock. A session is expired when its Lease's resourceVersion stayed
 * unchanged for longer than its duration (plus a slack), timed from when this
 * process first saw that version, on its own monotonic clock. Before acting, the
 * verdict is confirmed by reading the Lease: if it moved meanwhile, it is alive.
 *
 * Why that is safe: the owner sends a renewal before the server stores it, and this
 * process sees the stored version after that, so "first seen" is later than the
 * owner's send time. The owner gives up at send time + TTL - margin; an observer
 * acts no sooner than first seen + TTL + slack. With clocks that advance at the same
 * rate, an observer never removes a session its owner still trusts.
 */
import type { V1Lease } from '@kubernetes/client-node';
import { TaskGraphError } from '@taskgraph/api';
import type { Clock, Logger, TimerHandle } from '@taskgraph/api';
import { Backoff, pause } from '@taskgraph/backend-kit';
import type { KubeApi } from './kube.js';
import type { Gate } from './gate.js';
import { LABEL } from './names.js';
import { WatchStream } from './watch-stream.js';

export interface ObservedSession {
  readonly id: string;
  readonly leaseName: string;
  readonly uid: string;
  readonly rv: string;
  readonly durationMs: number;
  /** When this process first saw `rv` (its clock). */
  readonly seenAt: number;
  /** Whether the session's client is a janitor (its Lease's label). */
  readonly janitor: boolean;
}

export type LeaseChange =
  | { readonly kind: 'lock'; readonly leaseName: string }
  | { readonly kind: 'session-gone'; readonly id: string };

export interface ObserverHooks {
  /** A session's Lease is gone (closed, or removed by a janitor). */
  onSessionGone(id: string, leaseName: string): void;
  /** A session's Lease stayed unchanged past its duration, confirmed by a read. */
  onSessionExpired(session: ObservedSession): void;
  /** The ids of this client's own sessions (for its place in the janitors' duty order). */
  ownSessions(): Iterable<string>;
}

/**
 * How many janitors act at once on a session that ended or seems expired: the first in
 * its duty order, and the next in case the first is dead too. The others look only a
 * session duration later (expiry) or leave it to their sweep (clean-up).
 */
export const JANITORS_ACTING = 2;

export interface LeaseObserverOptions {
  readonly api: KubeApi;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly labelSelector: string;
  readonly closed: AbortSignal;
  readonly timeoutSeconds: () => number;
  readonly idleTimeoutMs: number;
  readonly hooks: ObserverHooks;
  /** The client's gate for maintenance requests (expiry checks share it with the janitor). */
  readonly gate: Gate;
}

/** The slack an observer adds to a session's duration before calling it expired. */
export function observationSlack(durationMs: number): number {
  return Math.max(250, Math.round(durationMs * 0.05));
}

interface Entry {
  session: ObservedSession;
  timer: TimerHandle | undefined;
  /** Whether this client, not first in the duty order, already put its look off once. */
  deferred: boolean;
  /** Failed reads in a row while confirming (the next look backs off). */
  failures: number;
}

export class LeaseObserver {
  private readonly sessions = new Map<string, Entry>();
  private readonly listeners = new Set<(change: LeaseChange) => void>();
  private stream: WatchStream | undefined;
  /** Aborted by stop(): ends the loop, and its wait between failed attempts. */
  private readonly halt = new AbortController();
  private synced = false;
  private readonly done: Promise<void>;

  constructor(private readonly o: LeaseObserverOptions) {
    this.done = this.run();
  }

  /** Whether the first list has been applied: until then, `isKnown` knows nothing. */
  get isSynced(): boolean {
    return this.synced;
  }

  /** Whether a Lease of session `id` was seen and not seen deleted. */
  isKnown(id: string): boolean {
    return this.sessions.has(id);
  }

  /**
   * This client's place in the order in which janitors act on session `target` (0 acts
   * first). Each live janitor session but `target` ranks by a hash of (target, its id):
   * every client computes the same order from the same view, a different one for each
   * target, so the duty spreads over the clients. A client without a janitor session of
   * its own ranks last.
   */
  dutyRank(target: string): number {
    const janitors: string[] = [];
    for (const [id, e] of this.sessions) if (e.session.janitor) janitors.push(id);
    return dutyRank(target, this.o.hooks.ownSessions(), janitors);
  }

  subscribe(listener: (change: LeaseChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Stops following; resolves when the loop has ended. */
  async stop(): Promise<void> {
    this.halt.abort();
    this.stream?.stop();
    for (const e of this.sessions.values()) if (e.timer !== undefined) this.o.clock.clearTimeout(e.timer);
    this.sessions.clear();
    await this.done;
  }

  private emit(change: LeaseChange): void {
    for (const l of [...this.listeners]) l(change);
  }

  private async run(): Promise<void> {
    // 200, 400 ... 5000 ms between failed attempts.
    const backoff = new Backoff(200, 5000, () => 1);
    while (!this.stopped && !this.o.closed.aborted) {
      try {
        const list = await this.o.api.listLeases({ labelSelector: this.o.labelSelector });
        if (this.stopped) return;
        this.reconcile(list.items);
        this.synced = true;
        backoff.reset();
        this.stream = new WatchStream({
          api: this.o.api,
          resource: 'leases',
          labelSelector: this.o.labelSelector,
          from: list.metadata?.resourceVersion ?? '',
          clock: this.o.clock,
          logger: this.o.logger,
          timeoutSeconds: this.o.timeoutSeconds,
          idleTimeoutMs: this.o.idleTimeoutMs,
        });
        for await (const item of this.stream) {
          if (item.kind === 'event') this.apply(item.type, item.object as V1Lease);
          else if (item.kind === 'expired') break;
        }
      } catch (err) {
        if (this.stopped || TaskGraphError.is(err, 'CLOSED')) return;
        this.o.logger.debug('the Lease observer failed; retrying', { error: String(err) });
        await pause(this.o.clock, backoff.next(), this.halt.signal);
      }
    }
  }

  private get stopped(): boolean {
    return this.halt.signal.aborted;
  }

  /** A fresh list: sessions missing from it are gone; unchanged ones keep when they were first seen. */
  private reconcile(items: readonly V1Lease[]): void {
    const present = new Set<string>();
    for (const lease of items) {
      const id = sessionIdOf(lease);
      if (id !== undefined) {
        present.add(id);
        this.upsert(id, lease);
      }
    }
    for (const [id, e] of [...this.sessions]) {
      if (!present.has(id)) this.gone(id, e.session.leaseName);
    }
    for (const lease of items) if (lease.metadata?.labels?.[LABEL.kind] === 'lock') this.emit({ kind: 'lock', leaseName: lease.metadata.name ?? '' });
  }

  private apply(type: 'ADDED' | 'MODIFIED' | 'DELETED', lease: V1Lease): void {
    const kind = lease.metadata?.labels?.[LABEL.kind];
    if (kind === 'lock') {
      this.emit({ kind: 'lock', leaseName: lease.metadata?.name ?? '' });
      return;
    }
    const id = sessionIdOf(lease);
    if (id === undefined) return;
    if (type === 'DELETED') this.gone(id, lease.metadata?.name ?? '');
    else this.upsert(id, lease);
  }

  private upsert(id: string, lease: V1Lease, seenAt = this.o.clock.now()): void {
    const rv = lease.metadata?.resourceVersion ?? '';
    const existing = this.sessions.get(id);
    if (existing !== undefined && existing.session.rv === rv) return;
    if (existing?.timer !== undefined) this.o.clock.clearTimeout(existing.timer);
    const session: ObservedSession = {
      id,
      leaseName: lease.metadata?.name ?? '',
      uid: lease.metadata?.uid ?? '',
      rv,
      durationMs: (lease.spec?.leaseDurationSeconds ?? 1) * 1000,
      seenAt,
      janitor: lease.metadata?.labels?.[LABEL.janitor] === 'true',
    };
    const entry: Entry = { session, timer: undefined, deferred: false, failures: 0 };
    this.sessions.set(id, entry);
    this.schedule(entry);
  }

  private gone(id: string, leaseName: string): void {
    const e = this.sessions.get(id);
    if (e?.timer !== undefined) this.o.clock.clearTimeout(e.timer);
    this.sessions.delete(id);
    this.emit({ kind: 'session-gone', id });
    this.o.hooks.onSessionGone(id, leaseName);
  }

  private schedule(entry: Entry): void {
    const s = entry.session;
    // Every participant would look at the same moment: a random delay lets the first one
    // remove the session and the others learn it from the watch instead of all acting.
    const spread = Math.random() * Math.min(1000, s.durationMs / 4);
    const due = s.seenAt + s.durationMs + observationSlack(s.durationMs) + spread;
    entry.timer = this.o.clock.setTimeout(() => void this.confirmExpiry(s), Math.max(0, due - this.o.clock.now()));
    entry.timer.unref?.();
  }

  private async confirmExpiry(s: ObservedSession): Promise<void> {
    const current = this.sessions.get(s.id);
    if (this.stopped || current?.session !== s) return;
    if (!current.deferred && this.dutyRank(s.id) >= JANITORS_ACTING) {
      // Not this client's turn: the first janitors in the duty order look now, and their
      // removal reaches this watch. Look once more a session duration later, in case they
      // are gone too.
      current.deferred = true;
      this.lookAgain(current, s.durationMs + Math.random() * s.durationMs);
      return;
    }
    let lease: V1Lease | undefined | null;
    try {
      lease = await this.o.gate.run(async () => {
        // Renewed, or gone, while this check waited for its turn: nothing to read.
        if (this.stopped || this.sessions.get(s.id)?.session !== s) return null;
        return await this.o.api.getLease(s.leaseName);
      });
      if (lease === null) return;
    } catch (err) {
      if (this.stopped || TaskGraphError.is(err, 'CLOSED')) return;
      // Cannot confirm now: look again, backing off, with the same first-seen time.
      const entry = this.sessions.get(s.id);
      if (entry?.session === s) {
        entry.failures++;
        this.lookAgain(entry, Math.min(s.durationMs, 250 * 2 ** entry.failures) * (0.5 + Math.random() / 2));
      }
      return;
    }
    const receivedAt = this.o.clock.now();
    if (this.stopped || this.sessions.get(s.id)?.session !== s) return;
    if (lease === undefined || lease.metadata?.uid !== s.uid) {
      this.gone(s.id, s.leaseName);
      return;
    }
    if (lease.metadata.resourceVersion !== s.rv) {
      // Renewed after all (the watch lagged): a new observation starts when this read came back.
      this.upsert(s.id, lease, receivedAt);
      return;
    }
    this.o.hooks.onSessionExpired(s);
    // If the janitor's removal does not go through (the owner renewed just in time), look again.
    const entry = this.sessions.get(s.id);
    if (entry?.session === s) {
      entry.failures = 0;
      this.lookAgain(entry, Math.min(s.durationMs, 5000));
    }
  }

  private lookAgain(entry: Entry, delayMs: number): void {
    const s = entry.session;
    entry.timer = this.o.clock.setTimeout(() => void this.confirmExpiry(s), delayMs);
    entry.timer.unref?.();
  }
}

/**
 * The place of the best of `own` among `janitors` (both session ids; `target` itself
 * never counts) in the duty order of `target`: how many janitors come before it. With
 * none of `own` among the janitors, the number of janitors (last).
 */
export function dutyRank(target: string, own: Iterable<string>, janitors: Iterable<string>): number {
  const all = new Set(janitors);
  all.delete(target);
  let best: { h: number; id: string } | undefined;
  for (const id of own) {
    if (!all.has(id)) continue;
    const h = dutyHash(target, id);
    if (best === undefined || before(h, id, best.h, best.id)) best = { h, id };
  }
  if (best === undefined) return all.size;
  let rank = 0;
  for (const id of all) if (before(dutyHash(target, id), id, best.h, best.id)) rank++;
  return rank;
}

/** FNV-1a of `target/id`: the janitors' duty order for `target` (not a security boundary). */
function dutyHash(target: string, id: string): number {
  let h = 0x811c9dc5;
  const s = `${target}/${id}`;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

function before(h: number, id: string, bh: number, bid: string): boolean {
  return h < bh || (h === bh && id < bid);
}

function sessionIdOf(lease: V1Lease): string | undefined {
  if (lease.metadata?.labels?.[LABEL.kind] !== 'session') return undefined;
  return lease.spec?.holderIdentity ?? undefined;
}
