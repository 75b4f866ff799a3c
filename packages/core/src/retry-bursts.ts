/**
 * One log line per burst of data-request retries to one task. A failover makes
 * every request to the task's old node fail and retry until the task's new owner
 * answers: an operator needs to see that it happened, once, not every attempt.
 *
 * A burst to task T opens at the first retry of a request to T (a WARN line naming
 * this node, its task and incarnation, and T's incarnation as this node knows it),
 * and closes when a request to T is answered after retrying, or when the epoch
 * changes (a DEBUG line with the count and duration). Retries because the target
 * has not entered the epoch yet (`EPOCH_BEHIND`) are routine at every epoch change:
 * they open no burst.
 */
import type { Clock, Logger } from '@taskgraph/api';

export interface RetryBurstsOptions {
  readonly clock: Clock;
  /** The node's logger now (with its task, once it holds one). */
  logger(): Logger;
  /** The incarnation of the task this node runs (0 if none). */
  incarnation(): number;
  /** The incarnation of task `to` as this node's address book knows it. */
  targetIncarnation(to: number): number | undefined;
}

interface Burst {
  readonly since: number;
  retries: number;
  readonly reasons: Set<string>;
}

export class RetryBursts {
  private readonly open = new Map<number, Burst>();

  constructor(private readonly o: RetryBurstsOptions) {}

  /** A request to `to` is retried. */
  retrying(to: number, method: string, reason: string): void {
    if (reason === 'EPOCH_BEHIND') return;
    const burst = this.open.get(to);
    if (burst) {
      burst.retries++;
      burst.reasons.add(reason);
      return;
    }
    this.open.set(to, { since: this.o.clock.now(), retries: 1, reasons: new Set([reason]) });
    const targetIncarnation = this.o.targetIncarnation(to);
    this.o.logger().warn(`data requests to task ${to} fail and are being retried (${reason}); logged once until task ${to} answers again`, {
      incarnation: this.o.incarnation(),
      to,
      method,
      reason,
      ...(targetIncarnation === undefined ? {} : { targetIncarnation }),
    });
  }

  /** A request to `to` was answered after retries: its burst, if one is open, ends. */
  recovered(to: number): void {
    this.close(to, 'answered again');
  }

  /** The epoch changed: the requests of every open burst are over. */
  onEpochChange(): void {
    for (const to of [...this.open.keys()]) this.close(to, 'no longer retried: the epoch changed');
  }

  private close(to: number, how: string): void {
    const burst = this.open.get(to);
    if (!burst) return;
    this.open.delete(to);
    this.o.logger().debug(`data requests to task ${to} ${how}`, {
      to,
      retries: burst.retries,
      reasons: [...burst.reasons].join(','),
      ms: Math.round(this.o.clock.now() - burst.since),
      targetIncarnation: this.o.targetIncarnation(to),
    });
  }

  /** Bursts open now (for tests). */
  get openBursts(): readonly number[] {
    return [...this.open.keys()];
  }
}
