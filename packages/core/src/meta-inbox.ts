/**
 * The receiving half of meta notifications for one running task: it reads the
 * task's `<job>/meta/<id>/` prefix (from the watch), delivers each (epoch, sender,
 * link type, meta) exactly once per incarnation, holds metas of epochs the task has
 * not entered yet until it does, drops metas from dead incarnations of the sender,
 * and knows which old epochs have metas to delete.
 */
import type { Entry, EpochContext, Logger, WatchEvent } from '@taskgraph/api';
import { decodeMeta, parseMetaKey } from './layout.js';
import type { MetaValue } from './layout.js';
import type { PrefixHandlers } from './watched-prefix.js';

interface PendingMeta {
  readonly from: number;
  readonly linkType: string;
  readonly meta: string;
}

export interface MetaInboxOptions {
  readonly job: string;
  /** The task this inbox belongs to. */
  readonly taskId: number;
  /** The node's view of the epoch. */
  readonly epochs: { readonly epoch: number; readonly context: EpochContext };
  /** The current incarnation's fencing token of a sender, if known. */
  senderToken(task: number): string | undefined;
  /** Hands one meta to the task (through its callback queue). */
  deliver(ctx: EpochContext, epoch: number, from: number, linkType: string, meta: string): void;
  readonly logger: Logger;
}

export class MetaInbox implements PrefixHandlers {
  private readonly delivered = new Set<string>();
  private readonly pending = new Map<number, PendingMeta[]>();
  /** Epochs in which metas were addressed to this task and not yet deleted. */
  private readonly epochsWithMeta = new Set<number>();

  constructor(private readonly o: MetaInboxOptions) {}

  snapshot(entries: readonly Entry[]): void {
    for (const e of entries) this.onRecord(e.key, e.value);
  }

  event(ev: WatchEvent): void {
    if (ev.type === 'put') this.onRecord(ev.key, ev.value);
  }

  /** A meta record under the task's prefix. */
  private onRecord(key: string, value: Uint8Array): void {
    const mk = parseMetaKey(this.o.job, key);
    if (!mk || mk.to !== this.o.taskId) return;
    this.epochsWithMeta.add(mk.epoch);
    let mv: MetaValue;
    try {
      mv = decodeMeta(key, value);
    } catch (err) {
      this.o.logger.warn('ignoring a corrupt meta value', { key, error: (err as Error).message });
      return;
    }
    const token = this.o.senderToken(mk.from);
    if (token !== undefined && BigInt(token) > BigInt(mv.token)) return; // from a dead incarnation
    for (const meta of mv.metas) this.receive(mk.epoch, mk.from, mk.linkType, meta);
  }

  /** The node moved to `epoch`: what was delivered or held for older epochs is forgotten. */
  onEpochChange(epoch: number): void {
    for (const id of this.delivered) {
      if (Number(id.slice(0, id.indexOf('|'))) < epoch) this.delivered.delete(id);
    }
    for (const e of this.pending.keys()) if (e < epoch) this.pending.delete(e);
  }

  /** The task entered `epoch`: the metas held for it are delivered now. */
  release(epoch: number): void {
    const held = this.pending.get(epoch);
    if (!held) return;
    this.pending.delete(epoch);
    for (const p of held) this.receive(epoch, p.from, p.linkType, p.meta);
  }

  /** The epochs before `current` that had metas, forgotten as they are returned (to be deleted). */
  takeOldEpochs(current: number): number[] {
    const old = [...this.epochsWithMeta].filter((e) => e < current);
    for (const e of old) this.epochsWithMeta.delete(e);
    return old;
  }

  private receive(epoch: number, from: number, linkType: string, meta: string): void {
    const current = this.o.epochs.epoch;
    if (epoch < current) return;
    if (epoch > current) {
      let list = this.pending.get(epoch);
      if (!list) this.pending.set(epoch, (list = []));
      list.push({ from, linkType, meta });
      return;
    }
    const id = `${epoch}|${from}|${linkType}|${meta}`;
    if (this.delivered.has(id)) return;
    this.delivered.add(id);
    this.o.deliver(this.o.epochs.context, epoch, from, linkType, meta);
  }
}
