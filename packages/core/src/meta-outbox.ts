/**
 * The sending half of meta notifications for one running task: a push of the meta
 * to each receiver's current node (the fast path, see meta-push.ts) and one record per
 * (receiver, epoch, sender, link type) holding the set of metas flagged, tied to
 * the sender's session so that a dead incarnation's late flags cannot land (the
 * store refuses a lost session's writes).
 */
import { randomHex, TaskGraphError } from '@taskgraph/api';
import type { Clock, Coordinator, Entry, EpochContext, Logger, Session, Transport } from '@taskgraph/api';
import type { AddressBook } from './address-book.js';
import { decodeMeta, encodeJson, keys } from './layout.js';
import type { MetaValue } from './layout.js';
import { META_PUSH_METHOD, encodeMetaPush } from './meta-push.js';
import type { NodeStats } from './stats.js';
import { casUpdate, retryStore } from './store-ops.js';
import { withActiveTrace } from './tracing.js';

export interface MetaOutboxOptions {
  readonly job: string;
  /** The sending task. */
  readonly taskId: number;
  /** The sender's fencing token. */
  readonly token: string;
  readonly coordinator: Coordinator;
  readonly session: Session;
  readonly clock: Clock;
  readonly stats: NodeStats;
  readonly logger: Logger;
  /** Throws when the sender may no longer write (its lease is lost, the node left). */
  assertOwner(what: string): void;
  /** Where to push metas; without it, metas travel by the store only. */
  readonly push?: {
    readonly addresses: Pick<AddressBook, 'get'>;
    readonly transport: Transport;
    /** Deadline of one push (it is never retried). */
    readonly attemptTimeoutMs: number;
  };
}

export class MetaOutbox {
  /** Meta keys this incarnation created in the current epoch: a second flag goes straight to compare-and-set. */
  private readonly written = new Set<string>();
  private readonly requestPrefix: string;
  private requestSeq = 0;

  constructor(private readonly o: MetaOutboxOptions) {
    this.requestPrefix = `m${randomHex(o.clock, 4)}-`;
  }

  /** Flags `meta` to every receiver: pushed at once, resolved when each store record holds it. */
  async flag(ctx: EpochContext, receivers: readonly number[], linkType: string, meta: string): Promise<void> {
    if (this.o.push) {
      this.o.assertOwner('flagMeta');
      for (const to of receivers) this.push(ctx, to, linkType, meta);
    }
    await Promise.all(receivers.map((to) => this.send(ctx, to, linkType, meta)));
  }

  /** One attempt, not awaited: a push that fails leaves the delivery to the store copy. */
  private push(ctx: EpochContext, to: number, linkType: string, meta: string): void {
    const push = this.o.push!;
    const target = push.addresses.get(to);
    if (!target) return;
    const { stats, job, taskId, token } = this.o;
    stats.metaPushes++;
    // The push carries the flagMeta's trace context (when an SDK traces it): the receiver's span joins the trace.
    const requestMeta = withActiveTrace({ job, from: taskId, to, epoch: ctx.epoch, token: target.token, requestId: this.requestPrefix + String(++this.requestSeq) });
    push.transport
      .call(target.address, META_PUSH_METHOD, requestMeta, encodeMetaPush({ senderToken: token, linkType, meta }), { timeoutMs: push.attemptTimeoutMs, signal: ctx.signal })
      .catch((err: unknown) => {
        stats.metaPushFailures++;
        this.o.logger.debug('meta push failed; the store copy delivers it', { to, linkType, error: err instanceof Error ? err.message : String(err) });
      });
  }

  /** A new epoch: records of the old one are never written again. */
  onEpochChange(): void {
    this.written.clear();
  }

  private async send(ctx: EpochContext, to: number, linkType: string, meta: string): Promise<void> {
    const { token } = this.o;
    const key = keys.meta(this.o.job, to, ctx.epoch, this.o.taskId, linkType);
    // Most flags are the first of their (epoch, receiver, link type): create without reading.
    let known: Entry | null | undefined = this.written.has(key) ? undefined : null;
    for (;;) {
      let stale: Entry | undefined;
      await casUpdate(
        this.o.coordinator,
        key,
        (entry) => {
          stale = undefined;
          if (!entry) return encodeJson({ token, metas: [meta] });
          let current: MetaValue | undefined;
          try {
            current = decodeMeta(key, entry.value);
          } catch {
            current = undefined;
          }
          if (current === undefined || current.token !== token) {
            // A predecessor's record (or garbage): it is tied to the predecessor's session and
            // would vanish with it, taking this flag along. Replaced below by one of our own.
            stale = entry;
            return undefined;
          }
          if (current.metas.includes(meta)) return undefined;
          return encodeJson({ token, metas: [...current.metas, meta] });
        },
        {
          clock: this.o.clock,
          signal: ctx.signal,
          session: this.o.session,
          known,
          beforeWrite: () => this.o.assertOwner('flagMeta'),
          onWrite: () => this.o.stats.writes.meta++,
        },
      );
      const old: Entry | undefined = stale;
      if (old === undefined) break;
      this.o.assertOwner('flagMeta');
      this.o.stats.writes.meta++;
      await retryStore(
        () =>
          this.o.coordinator.delete(key, old.version).catch((err: unknown) => {
            // Someone else removed or changed it: the next round reads what is there.
            if (!TaskGraphError.is(err, 'CONFLICT', 'NOT_FOUND')) throw err;
          }),
        { clock: this.o.clock, signal: ctx.signal, logger: this.o.logger, what: `replace ${key}` },
      );
      known = undefined;
    }
    this.written.add(key);
  }
}
