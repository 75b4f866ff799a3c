/**
 * The sending half of meta notifications for one running task: one record per
 * (receiver, epoch, sender, link type) holding the set of metas flagged, tied to
 * the sender's session so that a dead incarnation's late flags cannot land (the
 * store refuses a lost session's writes).
 */
import { TaskGraphError } from '@taskgraph/api';
import type { Clock, Coordinator, Entry, EpochContext, Logger, Session } from '@taskgraph/api';
import { decodeMeta, encodeJson, keys } from './layout.js';
import type { MetaValue } from './layout.js';
import type { NodeStats } from './stats.js';
import { casUpdate, retryStore } from './store-ops.js';

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
}

export class MetaOutbox {
  /** Meta keys this incarnation created in the current epoch: a second flag goes straight to compare-and-set. */
  private readonly written = new Set<string>();

  constructor(private readonly o: MetaOutboxOptions) {}

  /** Flags `meta` to every receiver; resolves when each record holds it. */
  async flag(ctx: EpochContext, receivers: readonly number[], linkType: string, meta: string): Promise<void> {
    await Promise.all(receivers.map((to) => this.send(ctx, to, linkType, meta)));
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
