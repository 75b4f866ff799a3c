/**
 * The sending half of meta notifications for one running task: one record per
 * (receiver, epoch, sender, link type) holding the set of metas flagged, tied to
 * the sender's session so that a dead incarnation's late flags cannot land (the
 * store refuses a lost session's writes).
 */
import type { Clock, Coordinator, EpochContext, Session } from '@taskgraph/api';
import { decodeMeta, encodeJson, keys } from './layout.js';
import type { MetaValue } from './layout.js';
import type { NodeStats } from './stats.js';
import { casUpdate } from './store-ops.js';

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
    const known = this.written.has(key) ? undefined : null;
    await casUpdate(
      this.o.coordinator,
      key,
      (entry) => {
        if (!entry) return encodeJson({ token, metas: [meta] });
        let current: MetaValue;
        try {
          current = decodeMeta(key, entry.value);
        } catch {
          current = { token, metas: [] };
        }
        if (current.token === token && current.metas.includes(meta)) return undefined;
        return encodeJson({ token, metas: current.token === token ? [...current.metas, meta] : [meta] });
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
    this.written.add(key);
  }
}
