/**
 * A session is a Lease (holderIdentity = the session id) that its owner renews by
 * compare-and-set every ttl/3: a PUT carrying the Lease's resourceVersion and uid,
 * so a renewal never lands on a Lease that was deleted (or deleted and re-created)
 * in the meantime.
 *
 * The local deadline, the renewal schedule and the one way a session ends are
 * LeaseSession's (@taskgraph/backend-kit). What is Kubernetes' own: the Lease, the
 * renewal by compare-and-set with a re-read on conflict (gone or taken: lost;
 * merely touched: renewed on top), the observer telling a session its Lease was
 * deleted, and that a lost session cleans up what it owned at once.
 */
import { randomBytes } from 'node:crypto';
import { V1MicroTime, type V1Lease } from '@kubernetes/client-node';
import { LeaseLostError, TaskGraphError } from '@taskgraph/api';
import { LeaseSession } from '@taskgraph/backend-kit';
import type { SessionContext } from '@taskgraph/backend-kit';
import type { KubeApi } from './kube.js';
import { LABEL, sessionObjectName } from './names.js';

/**
 * How many times one renewal renews on top of someone else's write before it gives
 * up and leaves the next try to the retry schedule.
 */
const MAX_RENEWALS_ON_TOP = 3;

export interface SessionHost {
  readonly api: KubeApi;
  readonly prefix: string;
  /** Whether this client is a janitor: its sessions say so in a label, so others can rank it for janitor duty. */
  readonly janitor: boolean;
  /** Removes what the session owns (keys, locks, the Lease itself). */
  cleanup(session: K8sSession): Promise<void>;
  /** The session's clean-up is over (whether or not it succeeded). */
  forget(session: K8sSession): void;
}

export class K8sSession extends LeaseSession {
  readonly leaseName: string;
  readonly leaseUid: string;
  readonly #host: SessionHost;
  #lease: V1Lease;

  private constructor(context: SessionContext, host: SessionHost, id: string, ttlMs: number, lease: V1Lease, sentAt: number) {
    super(context, { id, ttlMs, sentAt });
    this.#host = host;
    this.#lease = lease;
    this.leaseName = lease.metadata?.name ?? '';
    this.leaseUid = lease.metadata?.uid ?? '';
  }

  /** Creates the session's Lease; the TTL is whole seconds (leaseDurationSeconds). */
  static async open(context: SessionContext, host: SessionHost, ttlMs: number): Promise<K8sSession> {
    const seconds = Math.ceil(ttlMs / 1000);
    const id = randomBytes(10).toString('hex');
    const now = new V1MicroTime();
    const sentAt = context.clock.now();
    const lease = await host.api.createLease({
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: { name: sessionObjectName(host.prefix, id), labels: sessionLabels(host) },
      spec: { holderIdentity: id, leaseDurationSeconds: seconds, acquireTime: now, renewTime: now, leaseTransitions: 0 },
    });
    return new K8sSession(context, host, id, seconds * 1000, lease, sentAt);
  }

  /** The observer saw this session's Lease deleted (a janitor, or an operator). */
  leaseGone(): void {
    this.lose(new LeaseLostError(`session ${this.id} is lost: its Lease ${this.leaseName} was deleted`));
  }

  protected async renew(): Promise<void> {
    for (let onTop = 0; ; onTop++) {
      const spec = { ...this.#lease.spec, renewTime: new V1MicroTime() };
      try {
        this.#lease = await this.#host.api.replaceLease({ ...this.#lease, spec });
        return;
      } catch (err) {
        if (!TaskGraphError.is(err, 'CONFLICT') || onTop === MAX_RENEWALS_ON_TOP) throw err;
      }
      // The compare-and-set lost: the Lease is gone, taken, or merely touched by someone.
      const current = await this.#host.api.getLease(this.leaseName);
      if (current === undefined || current.metadata?.uid !== this.leaseUid || current.spec?.holderIdentity !== this.id) {
        throw new LeaseLostError(`session ${this.id} is lost: its Lease ${this.leaseName} was deleted or taken over`);
      }
      // Someone else wrote the Lease (a label, an annotation): renew on top of their version.
      this.#lease = current;
    }
  }

  /** Hands the session's locks on, deletes its ephemeral keys, then its Lease. */
  protected async end(): Promise<void> {
    try {
      await this.#host.cleanup(this);
    } finally {
      this.#host.forget(this);
    }
  }

  /** Whatever the session owned goes now if the server can be reached; janitors cover the rest. */
  protected override onLost(): Promise<void> {
    return this.close();
  }
}

function sessionLabels(host: SessionHost): Record<string, string> {
  const labels: Record<string, string> = { [LABEL.store]: host.prefix, [LABEL.kind]: 'session' };
  if (host.janitor) labels[LABEL.janitor] = 'true';
  return labels;
}
