/**
 * The Kubernetes coordinator: keys as ConfigMaps, sessions and locks as Leases, one
 * namespace, one store prefix. See README.md for the mapping and its costs.
 *
 * The Coordinator contract's checks, the closed guard, session ownership and the
 * close sequence are CoordinatorBase's (@taskgraph/backend-kit); what is here is
 * how Kubernetes does each operation, and the janitor that removes what expired
 * sessions left behind.
 */
import type { KubeConfig } from '@kubernetes/client-node';
import { AlreadyExistsError, ClosedError, ConflictError, InvalidArgumentError, NotFoundError, TaskGraphError } from '@taskgraph/api';
import type { Clock, CoordinatorCaps, Entry, ListResult, LockHolder, Logger, TimerHandle, Version, WatchBatch } from '@taskgraph/api';
import { CoordinatorBase, describeKey } from '@taskgraph/backend-kit';
import { byteOrder, decodeKey, decodeKeyAt, encodeValue, newKeyObject, replacedKeyObject } from './codec.js';
import { isTransient, KubeApi } from './kube.js';
import { watchKeys } from './key-watch.js';
import { acquireLock, handOverLease, K8sLock, lockHolder, type LockHost } from './locks.js';
import { kindSelector, keyObjectName, keySelector, LABEL, sessionObjectName } from './names.js';
import { Gate } from './gate.js';
import { JANITORS_ACTING, LeaseObserver, type ObservedSession } from './observer.js';
import { K8sSession, type SessionHost } from './session.js';

/** What the Kubernetes backend offers; see README.md for why each value is what it is. */
export const K8S_CAPS: CoordinatorCaps = {
  backend: 'k8s',
  watchCoalesces: false,
  // leaseDurationSeconds is whole seconds; an hour is plenty for a job's liveness.
  ttlRangeMs: [1000, 3_600_000],
  ttlGranularityMs: 1000,
  // The API server never expires a Lease: live participants do, one TTL (plus an observation
  // slack) after they last saw it change.
  expiryFactor: 1,
  // A ConfigMap's data + binaryData may total 1 MiB; the value is its only entry.
  maxValueBytes: 1024 * 1024,
  maxKeyBytes: 4096,
};

export interface K8sCoordinatorSettings {
  readonly kubeConfig: KubeConfig;
  readonly namespace: string;
  readonly prefix: string;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly requestTimeoutMs: number;
  /** The timeoutSeconds each watch connection asks for (a new random value per connection in [min, max]). */
  readonly watchTimeoutSeconds: readonly [number, number];
  /** A watch connection that stays silent this long is replaced. */
  readonly watchIdleTimeoutMs: number;
  readonly watchAuditIntervalMs: number;
  /** Whether this coordinator removes other participants' expired sessions. */
  readonly janitor: boolean;
  readonly janitorSweepIntervalMs: number;
  readonly lockPollMs: number;
}

export class K8sCoordinator extends CoordinatorBase<K8sSession> {
  readonly namespace: string;
  readonly prefix: string;
  /** @internal */
  readonly api: KubeApi;
  private readonly settings: K8sCoordinatorSettings;
  /** Aborts requests in flight: the very last step of close. */
  private readonly apiClosed = new AbortController();
  /**
   * Ends the Lease observer and the janitor. Not `closedSignal`: closing sessions hands
   * their locks on, which asks the observer whether waiters are alive, so these stop
   * only once the sessions are closed (in doClose).
   */
  private readonly stopped = new AbortController();
  /** This client's sessions until their clean-up is over: the janitor leaves what they own to them. */
  private readonly mine = new Map<string, K8sSession>();
  private readonly cleanups = new Map<string, Promise<void>>();
  /**
   * The janitor's work in flight. Not the base's `track`, which close lets finish before
   * doClose: close cuts a janitor's requests short instead (a sweep during a partition
   * would hold it up for a request timeout per request).
   */
  private readonly janitorWork = new Set<Promise<void>>();
  /** Maintenance requests (janitor, expiry checks): two at a time, see Gate. */
  private readonly maintenance = new Gate(2);
  private readonly observer: LeaseObserver;
  private readonly lockHost: LockHost;
  private readonly sessionHost: SessionHost;
  private sweepTimer: TimerHandle | undefined;

  constructor(settings: K8sCoordinatorSettings) {
    super({ caps: K8S_CAPS, label: 'Kubernetes coordinator', clock: settings.clock, logger: settings.logger });
    this.settings = settings;
    this.namespace = settings.namespace;
    this.prefix = settings.prefix;
    this.api = new KubeApi({
      kubeConfig: settings.kubeConfig,
      namespace: settings.namespace,
      requestTimeoutMs: settings.requestTimeoutMs,
      closed: this.apiClosed.signal,
    });
    this.observer = new LeaseObserver({
      api: this.api,
      clock: this.clock,
      logger: this.logger,
      labelSelector: `${LABEL.store}=${this.prefix}`,
      closed: this.stopped.signal,
      timeoutSeconds: () => this.watchTimeout(),
      idleTimeoutMs: settings.watchIdleTimeoutMs,
      gate: this.maintenance,
      hooks: {
        onSessionGone: (id) => this.onSessionGone(id),
        onSessionExpired: (s) => this.onSessionExpired(s),
        ownSessions: () => this.mine.keys(),
      },
    });
    this.lockHost = {
      api: this.api,
      prefix: this.prefix,
      clock: this.clock,
      logger: this.logger,
      observer: this.observer,
      pollMs: settings.lockPollMs,
      isSessionGone: (id) => this.isSessionGone(id),
    };
    this.sessionHost = {
      api: this.api,
      prefix: this.prefix,
      janitor: settings.janitor,
      cleanup: (session) => this.cleanupSession(session.id, { uid: session.leaseUid }),
      forget: (session) => {
        if (this.mine.get(session.id) === session) this.mine.delete(session.id);
      },
    };
    if (settings.janitor) this.scheduleSweep(Math.min(5000, settings.janitorSweepIntervalMs));
  }

  // ---- keys ----

  protected async doGet(key: string): Promise<Entry | undefined> {
    const cm = await this.api.getConfigMap(keyObjectName(this.prefix, key));
    if (cm === undefined) return undefined;
    const k = decodeKeyAt(cm, key);
    return { key, value: k.value, version: k.version };
  }

  protected async doList(prefix: string): Promise<ListResult> {
    const list = await this.api.listConfigMaps({ labelSelector: keySelector(this.prefix, prefix) });
    const entries: Entry[] = [];
    for (const item of list.items) {
      const k = decodeKey(item);
      if (k !== undefined && k.key.startsWith(prefix)) entries.push({ key: k.key, value: k.value, version: k.version });
    }
    entries.sort((a, b) => byteOrder(a.key, b.key));
    return { entries, revision: list.metadata?.resourceVersion ?? '' };
  }

  protected async doCreate(key: string, value: Uint8Array, session: K8sSession | undefined): Promise<Version> {
    const body = newKeyObject(
      this.prefix,
      key,
      encodeValue(value),
      session === undefined ? undefined : { id: session.id, leaseName: session.leaseName, leaseUid: session.leaseUid },
    );
    try {
      const created = await this.api.createConfigMap(body);
      return created.metadata?.resourceVersion ?? '';
    } catch (err) {
      if (TaskGraphError.is(err, 'ALREADY_EXISTS')) {
        // The name is taken: by this key (AlreadyExists), or by another that hashes alike.
        const existing = await this.api.getConfigMap(keyObjectName(this.prefix, key));
        if (existing !== undefined) decodeKeyAt(existing, key);
        throw new AlreadyExistsError(`key ${JSON.stringify(key)} already exists`, { cause: err });
      }
      throw err;
    }
  }

  protected async doUpdate(key: string, value: Uint8Array, expect: Version): Promise<Version> {
    const encoded = encodeValue(value);
    // A PUT replaces the whole object: read it first to keep its labels and owner (its session).
    const current = await this.api.getConfigMap(keyObjectName(this.prefix, key));
    if (current === undefined) throw new NotFoundError(`update of ${JSON.stringify(key)}: no such key`);
    const k = decodeKeyAt(current, key);
    if (k.version !== expect) throw new ConflictError(`update of ${JSON.stringify(key)}: version ${expect} is not the current ${k.version}`);
    const updated = await this.api.replaceConfigMap(replacedKeyObject(current, expect, encoded));
    return updated.metadata?.resourceVersion ?? '';
  }

  protected async doDelete(key: string, expect: Version): Promise<void> {
    // resourceVersions are unique store-wide: matching one can only be this key's object.
    await this.api.deleteConfigMap(keyObjectName(this.prefix, key), { resourceVersion: expect });
  }

  protected async doDeletePrefix(prefix: string): Promise<void> {
    const list = await this.api.listConfigMaps({ labelSelector: keySelector(this.prefix, prefix) });
    const names: string[] = [];
    for (const item of list.items) {
      const k = decodeKey(item);
      if (k !== undefined && k.key.startsWith(prefix) && item.metadata?.name) names.push(item.metadata.name);
    }
    await inParallel(names, 8, async (name) => {
      try {
        await this.api.deleteConfigMap(name);
      } catch (err) {
        if (!TaskGraphError.is(err, 'NOT_FOUND')) throw err;
      }
    });
  }

  /** Starts from `after`, or from the state its first list finds (a revision takes a request, made on the first `next()`). */
  protected doWatch(prefix: string, after: string | undefined, signal: AbortSignal): AsyncIterable<WatchBatch> {
    if (after !== undefined && !/^\d+$/.test(after)) {
      throw new InvalidArgumentError(`watch of ${describeKey(prefix)}: after must be a revision from list() or a batch, got ${JSON.stringify(after)}`);
    }
    return watchKeys({
      api: this.api,
      clock: this.clock,
      logger: this.logger,
      keyPrefix: prefix,
      labelSelector: keySelector(this.prefix, prefix),
      after,
      signal,
      closed: this.closedSignal,
      timeoutSeconds: () => this.watchTimeout(),
      idleTimeoutMs: this.settings.watchIdleTimeoutMs,
      auditIntervalMs: this.settings.watchAuditIntervalMs,
    });
  }

  // ---- sessions ----

  protected async doOpenSession(ttlMs: number): Promise<K8sSession> {
    const session = await K8sSession.open(this.sessionContext, this.sessionHost, ttlMs);
    this.mine.set(session.id, session);
    return session;
  }

  // ---- locks ----

  /**
   * A Lease has one holder and a queue of sessions, so a session cannot queue behind
   * its own holding on the server: while this client holds a live Lock of the session
   * for `name`, the acquire waits for it here, like anyone. (The base runs one acquire
   * or tryAcquire per session and name at a time, and answers a tryAcquire undefined
   * while such a Lock is live.) A Lease held by the session with no live Lock here is
   * an earlier call's whose answer was lost: acquireLock adopts it.
   */
  protected async doAcquire(name: string, session: K8sSession, owner: string, signal: AbortSignal | undefined): Promise<K8sLock> {
    const stops = this.acquireStops(`acquire of lock ${describeKey(name)}`, session, signal);
    await this.untilLockFree(session, name, stops);
    const lock = await acquireLock(this.lockHost, name, session, owner, 'wait', stops);
    return lock as K8sLock;
  }

  protected async doTryAcquire(name: string, session: K8sSession, owner: string): Promise<K8sLock | undefined> {
    const stops = this.acquireStops(`tryAcquire of lock ${describeKey(name)}`, session, undefined);
    return acquireLock(this.lockHost, name, session, owner, 'try', stops);
  }

  protected doHolder(name: string): Promise<LockHolder | undefined> {
    return lockHolder(this.lockHost, name);
  }

  // ---- lifecycle ----

  /** After the sessions closed (their clean-up done): the observer and the janitor, then the requests in flight, then the connections. */
  protected override async doClose(): Promise<void> {
    this.stopped.abort(new ClosedError('the Kubernetes coordinator is closed'));
    if (this.sweepTimer !== undefined) this.clock.clearTimeout(this.sweepTimer);
    await this.observer.stop();
    this.apiClosed.abort(new ClosedError('the Kubernetes coordinator is closed'));
    await Promise.allSettled([...this.janitorWork]);
    this.api.destroy();
  }

  /**
   * The Lease goes first, so that the owner's next renewal fails and every observer
   * (the owner's too) sees the session gone; then what the session owned is removed
   * here, now, rather than by a janitor after a random delay.
   */
  protected async doEndSession(id: string): Promise<void> {
    // Session ids are 20 hex digits (K8sSession.open): anything else names no session of ours.
    if (!/^[0-9a-f]{20}$/.test(id)) return;
    try {
      await this.api.deleteLease(sessionObjectName(this.prefix, id));
    } catch (err) {
      if (!TaskGraphError.is(err, 'NOT_FOUND')) throw err;
    }
    await this.cleanupSession(id);
  }

  // ---- janitor ----

  private async isSessionGone(id: string): Promise<boolean> {
    if (this.observer.isSynced && this.observer.isKnown(id)) return false;
    const lease = await this.api.getLease(sessionObjectName(this.prefix, id));
    return lease === undefined;
  }

  private onSessionGone(id: string): void {
    const own = this.mine.get(id);
    own?.leaseGone();
    // An owner's own close cleans up (and deletes the Lease last). Otherwise the first
    // janitors in this session's duty order look, after a random delay; the others leave
    // it to them and to the sweep. Every client listing for every session that ends made
    // the work grow with clients x sessions, and under load that storm cost sessions.
    if (!this.settings.janitor || own !== undefined) return;
    if (this.observer.dutyRank(id) >= JANITORS_ACTING) return;
    const timer = this.clock.setTimeout(() => {
      if (!this.stopped.signal.aborted) this.janitorTask(() => this.cleanupSession(id));
    }, Math.random() * 1000);
    timer.unref?.();
  }

  private onSessionExpired(s: ObservedSession): void {
    if (!this.settings.janitor) return;
    this.logger.info('a session expired (its Lease did not change for longer than its duration); removing it', { session: s.id });
    this.janitorTask(async () => {
      try {
        // The Lease goes first, only if still unrenewed: a renewal that lands first wins.
        await this.api.deleteLease(s.leaseName, { uid: s.uid, resourceVersion: s.rv });
      } catch (err) {
        if (TaskGraphError.is(err, 'CONFLICT')) return;
        if (!TaskGraphError.is(err, 'NOT_FOUND')) throw err;
      }
      await this.cleanupSession(s.id);
    });
  }

  /**
   * Removes what a session owned: its ephemeral keys (each delete conditional on the
   * version read, so a concurrent update is re-read, not lost), its locks (handed to
   * their next live waiter), and, when `lease` is given, its Lease.
   */
  private cleanupSession(id: string, lease?: { uid: string }): Promise<void> {
    const running = this.cleanups.get(id);
    if (running !== undefined && lease === undefined) return running;
    const work = (async () => {
      const keys = await this.api.listConfigMaps({ labelSelector: `${LABEL.store}=${this.prefix},${LABEL.kind}=key,${LABEL.session}=${id}` });
      await inParallel(keys.items, 8, async (item) => this.deleteEphemeral(item.metadata?.name ?? '', id, item.metadata?.uid ?? '', item.metadata?.resourceVersion ?? ''));
      const locks = await this.api.listLeases({ labelSelector: `${kindSelector(this.prefix, 'lock')},${LABEL.holder}=${id}` });
      for (const l of locks.items) {
        await handOverLease(this.lockHost, l.metadata?.name ?? '', id, l.spec?.leaseTransitions ?? 0);
      }
      if (lease !== undefined) {
        try {
          await this.api.deleteLease(sessionObjectName(this.prefix, id), { uid: lease.uid });
        } catch (err) {
          if (!TaskGraphError.is(err, 'NOT_FOUND', 'CONFLICT')) throw err;
        }
      }
    })();
    const tracked = work.finally(() => {
      if (this.cleanups.get(id) === tracked) this.cleanups.delete(id);
    });
    this.cleanups.set(id, tracked);
    return tracked;
  }

  private async deleteEphemeral(name: string, sessionId: string, uid: string, rv: string): Promise<void> {
    for (let attempt = 0; attempt < 10; attempt++) {
      try {
        await this.api.deleteConfigMap(name, { uid, resourceVersion: rv });
        return;
      } catch (err) {
        if (TaskGraphError.is(err, 'NOT_FOUND')) return;
        if (!TaskGraphError.is(err, 'CONFLICT')) throw err;
      }
      const current = await this.api.getConfigMap(name);
      if (current === undefined || current.metadata?.uid !== uid || current.metadata.labels?.[LABEL.session] !== sessionId) return;
      rv = current.metadata.resourceVersion ?? '';
    }
  }

  private scheduleSweep(delayMs: number): void {
    if (this.stopped.signal.aborted) return;
    this.sweepTimer = this.clock.setTimeout(() => {
      this.janitorTask(() => this.sweep().finally(() => this.scheduleSweep(this.settings.janitorSweepIntervalMs)));
    }, delayMs);
    this.sweepTimer.unref?.();
  }

  /** Ephemeral keys and held locks whose session's Lease no longer exists. */
  private async sweep(): Promise<void> {
    if (!this.observer.isSynced) return;
    const ids = new Set<string>();
    const keys = await this.api.listConfigMaps({ labelSelector: `${LABEL.store}=${this.prefix},${LABEL.kind}=key,${LABEL.session}` });
    for (const item of keys.items) {
      const id = item.metadata?.labels?.[LABEL.session];
      if (id !== undefined) ids.add(id);
    }
    const locks = await this.api.listLeases({ labelSelector: `${kindSelector(this.prefix, 'lock')},${LABEL.holder}` });
    for (const item of locks.items) {
      const id = item.spec?.holderIdentity;
      if (id) ids.add(id);
    }
    for (const id of ids) {
      if (this.stopped.signal.aborted) return;
      // Like a session's end, its leftovers are the first janitors' in its duty order.
      if (this.observer.dutyRank(id) >= JANITORS_ACTING) continue;
      if (await this.isSessionGone(id)) {
        this.logger.info('removing what a vanished session left behind', { session: id });
        await this.cleanupSession(id);
      }
    }
  }

  /** Runs janitor work through the maintenance gate; close cuts it short. */
  private janitorTask(work: () => Promise<unknown>): void {
    const t = this.maintenance.run(() => (this.stopped.signal.aborted ? Promise.resolve() : work())).then(
      () => undefined,
      (err: unknown) => {
        if (!TaskGraphError.is(err, 'CLOSED') && !isTransient(err)) this.logger.warn('janitor work failed', { error: String(err) });
        else this.logger.debug('janitor work interrupted', { error: String(err) });
      },
    );
    this.janitorWork.add(t);
    void t.finally(() => this.janitorWork.delete(t));
  }

  private watchTimeout(): number {
    const [min, max] = this.settings.watchTimeoutSeconds;
    return Math.round(min + Math.random() * (max - min));
  }
}

async function inParallel<T>(items: readonly T[], limit: number, run: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const errors: unknown[] = [];
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const item = items[next++] as T;
      try {
        await run(item);
      } catch (err) {
        errors.push(err);
      }
    }
  });
  await Promise.all(workers);
  if (errors.length > 0) throw errors[0];
}
