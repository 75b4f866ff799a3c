/**
 * Where each task runs now: the owners' address records under `<job>/tasks/`, kept
 * from the watch so that data requests never touch the store. It also wakes the
 * two kinds of waiters: requests waiting for a task's (new) address, and standbys
 * waiting for a slot to free.
 */
import type { Clock, Entry, Logger, Transport, WatchEvent } from '@taskgraph/api';
import { Notifier } from './async.js';
import { decodeAddr, parseTaskKey } from './layout.js';
import type { AddrValue } from './layout.js';
import type { PrefixHandlers } from './watched-prefix.js';

export class AddressBook implements PrefixHandlers {
  private readonly addrs = new Map<number, AddrValue>();
  private readonly changed = new Notifier();
  private readonly freed = new Notifier();

  constructor(
    private readonly job: string,
    private readonly transport: Pick<Transport, 'forget'>,
    private readonly logger: Logger,
  ) {}

  get(task: number): AddrValue | undefined {
    return this.addrs.get(task);
  }

  has(task: number): boolean {
    return this.addrs.has(task);
  }

  /** Records this node's own address as soon as it is published (before the watch echoes it). */
  set(task: number, addr: AddrValue): void {
    this.addrs.set(task, addr);
  }

  /** The full state under `<job>/tasks/` (on start, and after a compaction). */
  snapshot(entries: readonly Entry[]): void {
    const seen = new Set<number>();
    for (const e of entries) {
      const k = parseTaskKey(this.job, e.key);
      if (k?.kind !== 'addr') continue;
      try {
        this.addrs.set(k.task, decodeAddr(e.key, e.value));
        seen.add(k.task);
      } catch (err) {
        this.logger.warn('ignoring a corrupt task address', { key: e.key, error: (err as Error).message });
      }
    }
    for (const [id, a] of [...this.addrs]) {
      if (!seen.has(id)) {
        this.addrs.delete(id);
        if (!this.anyAt(a.address)) this.transport.forget(a.address);
      }
    }
    this.changed.notify();
    this.freed.notify();
  }

  /** One change under `<job>/tasks/`. */
  event(ev: WatchEvent): void {
    const k = parseTaskKey(this.job, ev.key);
    if (k?.kind !== 'addr') return;
    const old = this.addrs.get(k.task);
    if (ev.type === 'put') {
      try {
        const a = decodeAddr(ev.key, ev.value);
        this.addrs.set(k.task, a);
        if (old && old.address !== a.address && !this.anyAt(old.address)) this.transport.forget(old.address);
      } catch (err) {
        this.logger.warn('ignoring a corrupt task address', { key: ev.key, error: (err as Error).message });
      }
    } else {
      this.addrs.delete(k.task);
      // The owner's node went away (a failover is a delete, then a put): drop its connection.
      if (old && !this.anyAt(old.address)) this.transport.forget(old.address);
      this.freed.notify();
    }
    this.changed.notify();
  }

  /** Wakes the standbys (the job finished: they should look again and leave). */
  wakeStandbys(): void {
    this.freed.notify();
  }

  /** Resolves at the next address change, or after `ms`; rejects when `signal` aborts. */
  waitForChange(clock: Clock, ms: number, signal: AbortSignal): Promise<void> {
    return this.changed.wait(clock, ms, signal);
  }

  /** Resolves when an owner's address disappears (a slot may be free), or after `ms`; rejects when `signal` aborts. */
  waitForFreeSlot(clock: Clock, ms: number, signal: AbortSignal): Promise<void> {
    return this.freed.wait(clock, ms, signal);
  }

  private anyAt(address: string): boolean {
    for (const a of this.addrs.values()) if (a.address === address) return true;
    return false;
  }
}
