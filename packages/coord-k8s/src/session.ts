/**
 * A session is a Lease (holderIdentity = the session id) that its owner renews by
 * compare-and-set every ttl/3: a PUT carrying the Lease's resourceVersion and uid,
 * so a renewal never lands on a Lease that was deleted (or deleted and re-created)
 * in the meantime. The owner trusts the session until its local deadline: the send
 * time of the last acknowledged renewal + TTL - margin, on its monotonic clock.
 * `lost` fires at that deadline, or as soon as a renewal finds the Lease gone or
 * taken, or the observer sees it deleted.
 */
import { randomBytes } from 'node:crypto';
import { V1MicroTime, type V1Lease } from '@kubernetes/client-node';
import { ClosedError, LeaseLostError, TaskGraphError } from '@taskgraph/api';
import type { Clock, Logger, Session, TimerHandle } from '@taskgraph/api';
import type { KubeApi } from './kube.js';
import { LABEL, sessionObjectName } from './names.js';

/** How long before the TTL runs out the owner stops trusting its session. */
export function safetyMargin(ttlMs: number): number {
  return Math.min(ttlMs / 10, 1000);
}

export interface SessionHost {
  readonly api: KubeApi;
  readonly prefix: string;
  readonly clock: Clock;
  readonly logger: Logger;
  /** Removes what the session owns (keys, locks, the Lease itself), best effort. */
  cleanup(session: K8sSession): Promise<void>;
  forget(session: K8sSession): void;
}

/** Anything a session owns that must end with it (its locks, its waiting acquires). */
export interface SessionDependent {
  sessionLost(reason: TaskGraphError): void;
}

export class K8sSession implements Session {
  readonly id: string;
  readonly ttlMs: number;
  readonly lost: AbortSignal;
  readonly leaseName: string;
  readonly leaseUid: string;
  /** Locks and waiting acquires of this session. */
  readonly dependents = new Set<SessionDependent>();
  readonly host: SessionHost;
  private lease: V1Lease;
  private readonly controller = new AbortController();
  private readonly margin: number;
  private lastAck: number;
  private renewTimer: TimerHandle | undefined;
  private deadlineTimer: TimerHandle | undefined;
  private closing: Promise<void> | undefined;
  private renewing = false;

  private constructor(host: SessionHost, id: string, ttlMs: number, lease: V1Lease, sentAt: number) {
    this.host = host;
    this.id = id;
    this.ttlMs = ttlMs;
    this.lease = lease;
    this.leaseName = lease.metadata?.name ?? '';
    this.leaseUid = lease.metadata?.uid ?? '';
    this.lost = this.controller.signal;
    this.margin = safetyMargin(ttlMs);
    this.lastAck = sentAt;
    this.armDeadline();
    this.scheduleRenew(ttlMs / 3);
  }

  /** Creates the session's Lease; the TTL is whole seconds (leaseDurationSeconds). */
  static async open(host: SessionHost, ttlMs: number): Promise<K8sSession> {
    const seconds = Math.ceil(ttlMs / 1000);
    const id = randomBytes(10).toString('hex');
    const now = new V1MicroTime();
    const sentAt = host.clock.now();
    const lease = await host.api.createLease({
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: { name: sessionObjectName(host.prefix, id), labels: { [LABEL.store]: host.prefix, [LABEL.kind]: 'session' } },
      spec: { holderIdentity: id, leaseDurationSeconds: seconds, acquireTime: now, renewTime: now, leaseTransitions: 0 },
    });
    return new K8sSession(host, id, seconds * 1000, lease, sentAt);
  }

  /** When the owner stops trusting the session unless a renewal is acknowledged first. */
  get deadline(): number {
    return this.lastAck + this.ttlMs - this.margin;
  }

  isLost(): boolean {
    if (this.lost.aborted) return true;
    // The deadline timer may run late after a process pause: the clock is the authority.
    if (this.host.clock.now() >= this.deadline) {
      this.lose(this.deadlineError());
      return true;
    }
    return false;
  }

  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  /** The observer saw this session's Lease deleted (a janitor, or an operator). */
  leaseGone(): void {
    this.lose(new LeaseLostError(`session ${this.id} is lost: its Lease ${this.leaseName} was deleted`));
  }

  /** Ends the session locally with `reason`; idempotent. */
  lose(reason: TaskGraphError): void {
    if (this.controller.signal.aborted) return;
    if (this.renewTimer !== undefined) this.host.clock.clearTimeout(this.renewTimer);
    if (this.deadlineTimer !== undefined) this.host.clock.clearTimeout(this.deadlineTimer);
    this.renewTimer = undefined;
    this.deadlineTimer = undefined;
    this.controller.abort(reason);
    for (const d of [...this.dependents]) d.sessionLost(reason);
    if (reason.code !== 'CLOSED') {
      this.host.logger.warn('session lost', { session: this.id, reason: reason.message });
      // Whatever the session owned goes now if the server can be reached; janitors cover the rest.
      void this.close();
    }
  }

  private async doClose(): Promise<void> {
    this.lose(new ClosedError(`session ${this.id} was closed`));
    try {
      await this.host.cleanup(this);
    } catch (err) {
      this.host.logger.warn('closing a session left work to the janitors', { session: this.id, error: String(err) });
    } finally {
      this.host.forget(this);
    }
  }

  private deadlineError(): LeaseLostError {
    return new LeaseLostError(
      `session ${this.id} is lost: no renewal was acknowledged for ${this.ttlMs - this.margin} ms (TTL ${this.ttlMs} ms less a ${this.margin} ms margin)`,
    );
  }

  private armDeadline(): void {
    if (this.deadlineTimer !== undefined) this.host.clock.clearTimeout(this.deadlineTimer);
    this.deadlineTimer = this.host.clock.setTimeout(() => {
      this.deadlineTimer = undefined;
      this.isLost();
      if (!this.lost.aborted) this.armDeadline();
    }, Math.max(0, this.deadline - this.host.clock.now()));
    this.deadlineTimer.unref?.();
  }

  private scheduleRenew(delayMs: number): void {
    if (this.lost.aborted) return;
    if (this.renewTimer !== undefined) this.host.clock.clearTimeout(this.renewTimer);
    this.renewTimer = this.host.clock.setTimeout(() => {
      this.renewTimer = undefined;
      void this.renew();
    }, delayMs);
    this.renewTimer.unref?.();
  }

  private async renew(): Promise<void> {
    if (this.renewing || this.isLost()) return;
    this.renewing = true;
    const sentAt = this.host.clock.now();
    try {
      const spec = { ...this.lease.spec, renewTime: new V1MicroTime() };
      const updated = await this.host.api.replaceLease({ ...this.lease, spec });
      if (this.lost.aborted) return;
      this.lease = updated;
      this.lastAck = sentAt;
      this.armDeadline();
      this.scheduleRenew(this.ttlMs / 3);
    } catch (err) {
      if (this.lost.aborted || TaskGraphError.is(err, 'CLOSED')) return;
      if (TaskGraphError.is(err, 'CONFLICT')) {
        await this.afterConflict();
        return;
      }
      this.host.logger.debug('session renewal failed; retrying', { session: this.id, error: String(err) });
      this.scheduleRenew(Math.min(this.ttlMs / 6, 500));
    } finally {
      this.renewing = false;
    }
  }

  /** A renewal lost its compare-and-set: the Lease is gone, taken, or merely touched by someone. */
  private async afterConflict(): Promise<void> {
    let current: V1Lease | undefined;
    try {
      current = await this.host.api.getLease(this.leaseName);
    } catch (err) {
      if (!this.lost.aborted && !TaskGraphError.is(err, 'CLOSED')) this.scheduleRenew(Math.min(this.ttlMs / 6, 500));
      return;
    }
    if (this.lost.aborted) return;
    if (current === undefined || current.metadata?.uid !== this.leaseUid || current.spec?.holderIdentity !== this.id) {
      this.lose(new LeaseLostError(`session ${this.id} is lost: its Lease ${this.leaseName} was deleted or taken over`));
      return;
    }
    // Someone else wrote the Lease (a label, an annotation): renew on top of their version.
    this.lease = current;
    this.scheduleRenew(0);
  }
}
