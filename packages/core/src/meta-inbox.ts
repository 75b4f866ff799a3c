/**
 * The receiving half of meta notifications for one running task. A meta reaches it
 * by two paths: pushed by the sender over the transport (the fast path) and as a
 * record under the task's `<job>/meta/<id>/` prefix (the store copy, from the watch,
 * which a new incarnation reads). Whichever comes first is delivered; each (epoch,
 * sender, link type, meta) is delivered exactly once per incarnation. It holds metas
 * of epochs the task has not entered yet until it does, drops metas from dead
 * incarnations of the sender, and knows which old meta generations to delete.
 */
import type { Entry, EpochContext, Logger, WatchEvent } from '@taskgraph/api';
import { decodeMeta, metaGeneration, parseMetaKey } from './layout.js';
import type { MetaValue } from './layout.js';
import type { PrefixHandlers } from './watched-prefix.js';

interface PendingMeta {
  readonly from: number;
  readonly linkType: string;
  readonly meta: string;
  readonly via: 'push' | 'store';
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
  /** Counts what each path delivered first. */
  readonly counts?: { metasByPush: number; metasByStore: number };
  /** Told of each meta delivered, with the path that delivered it first. */
  onDelivered?(via: 'push' | 'store', from: number, linkType: string): void;
}

export class MetaInbox implements PrefixHandlers {
  private readonly delivered = new Set<string>();
  private readonly pending = new Map<number, PendingMeta[]>();
  /** Meta generations with records addressed to this task, not yet deleted. */
  private readonly generationsWithMeta = new Set<number>();

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
    this.generationsWithMeta.add(metaGeneration(mk.epoch));
    let mv: MetaValue;
    try {
      mv = decodeMeta(key, value);
    } catch (err) {
      this.o.logger.warn('ignoring a corrupt meta value', { key, error: (err as Error).message });
      return;
    }
    if (this.fromDeadIncarnation(mk.from, mv.token)) return;
    for (const meta of mv.metas) this.receive(mk.epoch, mk.from, mk.linkType, meta, 'store');
  }

  /**
   * A meta pushed by its sender (incarnation `senderToken`). Judged like a record: a
   * sender this node knows to be replaced is dropped, and the store copy, written
   * under the sender's session, is what a later incarnation of this task reads.
   */
  push(epoch: number, from: number, senderToken: string, linkType: string, meta: string): void {
    if (this.fromDeadIncarnation(from, senderToken)) return;
    this.receive(epoch, from, linkType, meta, 'push');
  }

  private fromDeadIncarnation(from: number, token: string): boolean {
    const known = this.o.senderToken(from);
    return known !== undefined && BigInt(known) > BigInt(token);
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
    for (const p of held) this.receive(epoch, p.from, p.linkType, p.meta, p.via);
  }

  /** The meta generations wholly before `current`'s that had metas, forgotten as they are returned (to be deleted). */
  takeOldGenerations(current: number): number[] {
    const now = metaGeneration(current);
    const old = [...this.generationsWithMeta].filter((g) => g < now);
    for (const g of old) this.generationsWithMeta.delete(g);
    return old;
  }

  private receive(epoch: number, from: number, linkType: string, meta: string, via: 'push' | 'store'): void {
    const current = this.o.epochs.epoch;
    if (epoch < current) return;
    if (epoch > current) {
      let list = this.pending.get(epoch);
      if (!list) this.pending.set(epoch, (list = []));
      list.push({ from, linkType, meta, via });
      return;
    }
    const id = `${epoch}|${from}|${linkType}|${meta}`;
    if (this.delivered.has(id)) return;
    this.delivered.add(id);
    if (this.o.counts) {
      if (via === 'push') this.o.counts.metasByPush++;
      else this.o.counts.metasByStore++;
    }
    this.o.onDelivered?.(via, from, linkType);
    this.o.deliver(this.o.epochs.context, epoch, from, linkType, meta);
  }
}
