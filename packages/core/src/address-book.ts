/**
 * Where each task runs now: the primaries' address records and the backups'
 * records under `<job>/tasks/`, kept from the watch so that data requests never
 * touch the store. It wakes the two kinds of waiters (requests waiting for a
 * task's new address, standbys waiting for a slot to free) and tells subscribers
 * every change (neighbour events, a primary's set of backups, a backup's primary).
 */
import type { Clock, Coordinator, Entry, Logger, Transport, WatchEvent } from '@taskgraph/api';
import { Notifier } from './async.js';
import { decodeAddr, decodeBackup, keys, parseTaskKey } from './layout.js';
import type { AddrValue, BackupValue } from './layout.js';
import { WatchedPrefix } from './watched-prefix.js';
import type { PrefixHandlers } from './watched-prefix.js';

/** One change of where a task runs, as the address book saw it. */
export type AddressChange =
  | { readonly kind: 'primary'; readonly task: number; readonly before: AddrValue | undefined; readonly after: AddrValue | undefined }
  | { readonly kind: 'backup'; readonly task: number; readonly slot: number; readonly before: BackupValue | undefined; readonly after: BackupValue | undefined };

export type AddressListener = (change: AddressChange) => void;

/** What a book hears from the records it reads. */
interface RecordsMember {
  change(change: AddressChange): void;
  /** Some record changed. */
  changed(): void;
  /** A record disappeared (a slot may be free). */
  freed(): void;
}

/** The records themselves, applied from the watch once, read by one book or by all the books of a host. */
export class AddressRecords implements PrefixHandlers {
  readonly addrs = new Map<number, AddrValue>();
  /** Backup records by task, then slot. */
  readonly backups = new Map<number, Map<number, BackupValue>>();
  readonly members = new Set<RecordsMember>();

  constructor(
    private readonly job: string,
    private readonly transport: Pick<Transport, 'forget'>,
    private readonly logger: Logger,
  ) {}

  set(task: number, addr: AddrValue): void {
    this.addrs.set(task, addr);
  }

  snapshot(entries: readonly Entry[]): void {
    const addrs = new Map<number, AddrValue>();
    const backups = new Map<string, { task: number; slot: number; value: BackupValue }>();
    for (const e of entries) {
      const k = parseTaskKey(this.job, e.key);
      try {
        if (k?.kind === 'addr') addrs.set(k.task, decodeAddr(e.key, e.value));
        else if (k?.kind === 'backup') backups.set(`${k.task}/${k.slot}`, { task: k.task, slot: k.slot, value: decodeBackup(e.key, e.value) });
      } catch (err) {
        this.logger.warn('ignoring a corrupt task record', { key: e.key, error: (err as Error).message });
      }
    }
    for (const id of [...this.addrs.keys()]) if (!addrs.has(id)) this.setPrimary(id, undefined);
    for (const [id, a] of addrs) this.setPrimary(id, a);
    for (const [task, slots] of [...this.backups]) {
      for (const slot of [...slots.keys()]) if (!backups.has(`${task}/${slot}`)) this.setBackup(task, slot, undefined);
    }
    for (const b of backups.values()) this.setBackup(b.task, b.slot, b.value);
    for (const m of [...this.members]) {
      m.changed();
      m.freed();
    }
  }

  event(ev: WatchEvent): void {
    const k = parseTaskKey(this.job, ev.key);
    if (k === undefined || k.kind === 'incarnation') return;
    try {
      if (k.kind === 'backup') this.setBackup(k.task, k.slot, ev.type === 'put' ? decodeBackup(ev.key, ev.value) : undefined);
      else this.setPrimary(k.task, ev.type === 'put' ? decodeAddr(ev.key, ev.value) : undefined);
    } catch (err) {
      this.logger.warn('ignoring a corrupt task record', { key: ev.key, error: (err as Error).message });
      return;
    }
    for (const m of [...this.members]) {
      if (ev.type === 'delete') m.freed();
      m.changed();
    }
  }

  private setPrimary(task: number, after: AddrValue | undefined): void {
    const before = this.addrs.get(task);
    if (after) this.addrs.set(task, after);
    else this.addrs.delete(task);
    // The owner's node went away (a failover is a delete, then a put): drop its connection.
    if (before && before.address !== after?.address) this.forgetIfUnused(before.address);
    if (before !== after && !sameAddr(before, after)) this.emit({ kind: 'primary', task, before, after });
  }

  private setBackup(task: number, slot: number, after: BackupValue | undefined): void {
    let slots = this.backups.get(task);
    const before = slots?.get(slot);
    if (after) {
      if (!slots) this.backups.set(task, (slots = new Map()));
      slots.set(slot, after);
    } else if (slots) {
      slots.delete(slot);
      if (slots.size === 0) this.backups.delete(task);
    }
    if (before && before.address !== after?.address) this.forgetIfUnused(before.address);
    if (before !== after && !sameBackup(before, after)) this.emit({ kind: 'backup', task, slot, before, after });
  }

  private emit(change: AddressChange): void {
    for (const m of [...this.members]) m.change(change);
  }

  private forgetIfUnused(address: string): void {
    for (const a of this.addrs.values()) if (a.address === address) return;
    for (const slots of this.backups.values()) for (const b of slots.values()) if (b.address === address) return;
    this.transport.forget(address);
  }
}

/**
 * One node's address book: the records (its own, or its host's shared ones), and
 * the node's own subscribers and wake-ups. Wake-ups are level-triggered per book:
 * a change while this node was not waiting wakes its next wait at once, whatever
 * the other nodes reading the same records did.
 */
export class AddressBook implements PrefixHandlers {
  private readonly records: AddressRecords;
  private readonly member: RecordsMember;
  private readonly changed = new Notifier();
  private readonly freed = new Notifier();
  private readonly listeners = new Set<AddressListener>();

  /** A book of its own records; a host's nodes get theirs from `SharedAddressBook.join`. */
  constructor(job: string, transport: Pick<Transport, 'forget'>, private readonly logger: Logger, records?: AddressRecords) {
    this.records = records ?? new AddressRecords(job, transport, logger);
    this.member = {
      change: (c) => this.emit(c),
      changed: () => this.changed.notify(),
      freed: () => this.freed.notify(),
    };
    this.records.members.add(this.member);
  }

  get(task: number): AddrValue | undefined {
    return this.records.addrs.get(task);
  }

  has(task: number): boolean {
    return this.records.addrs.has(task);
  }

  /** The live backups of `task`, by slot. */
  backupsOf(task: number): readonly BackupValue[] {
    const slots = this.records.backups.get(task);
    return slots ? [...slots.values()] : [];
  }

  /** Records this node's own address as soon as it is published (before the watch echoes it). */
  set(task: number, addr: AddrValue): void {
    this.records.set(task, addr);
  }

  /** Calls `listener` with every change from now on; returns the unsubscribe function. */
  subscribe(listener: AddressListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The full state under `<job>/tasks/` (on start, and after a compaction): applied as the changes it implies. */
  snapshot(entries: readonly Entry[]): void {
    this.records.snapshot(entries);
  }

  /** One change under `<job>/tasks/`. */
  event(ev: WatchEvent): void {
    this.records.event(ev);
  }

  /** Wakes this node's standby (the job finished: it should look again and leave). */
  wakeStandbys(): void {
    this.freed.notify();
  }

  /** Resolves at the next address change, or after `ms`; rejects when `signal` aborts. */
  waitForChange(clock: Clock, ms: number, signal: AbortSignal): Promise<void> {
    return this.changed.wait(clock, ms, signal);
  }

  /** Resolves when a record disappears (a slot may be free), or after `ms`; rejects when `signal` aborts. */
  waitForFreeSlot(clock: Clock, ms: number, signal: AbortSignal): Promise<void> {
    return this.freed.wait(clock, ms, signal);
  }

  /** Stops hearing the records (a hosted node that left; the host's other nodes go on). */
  detach(): void {
    this.records.members.delete(this.member);
    this.listeners.clear();
  }

  private emit(change: AddressChange): void {
    for (const listener of [...this.listeners]) {
      try {
        listener(change);
      } catch (err) {
        this.logger.error('an address-book listener failed', { task: change.task, error: err instanceof Error ? err.message : String(err) });
      }
    }
  }
}

function sameAddr(a: AddrValue | undefined, b: AddrValue | undefined): boolean {
  return a !== undefined && b !== undefined && a.token === b.token && a.address === b.address && a.nodeId === b.nodeId && a.incarnation === b.incarnation;
}

function sameBackup(a: BackupValue | undefined, b: BackupValue | undefined): boolean {
  return (
    a !== undefined &&
    b !== undefined &&
    a.token === b.token &&
    a.address === b.address &&
    a.nodeId === b.nodeId &&
    a.state === b.state &&
    a.primaryToken === b.primaryToken
  );
}

/**
 * One address book for the nodes of a host, kept by one follower of `<job>/tasks/`.
 * Each node's own book would hear every claim of the job: with N nodes in a
 * process and M tasks in the job, N × M record events at start-up, all of them
 * the same. Shared, each event is applied once per process; the nodes subscribe,
 * wait and look up as they would on their own book.
 */
export class SharedAddressBook {
  readonly #records: AddressRecords;
  readonly #job: string;
  readonly #transport: Pick<Transport, 'forget'>;
  readonly #watch: WatchedPrefix;
  readonly #life = new AbortController();
  #started: Promise<void> | undefined;

  constructor(o: { readonly job: string; readonly coordinator: Coordinator; readonly transport: Pick<Transport, 'forget'>; readonly clock: Clock; readonly logger: Logger }) {
    this.#job = o.job;
    this.#transport = o.transport;
    this.#records = new AddressRecords(o.job, o.transport, o.logger);
    this.#watch = new WatchedPrefix(o.coordinator, keys.tasks(o.job), this.#records, o.clock, o.logger);
  }

  /** A node's book on the shared records: its own subscribers and wake-ups (`detach()` it when the node is done). */
  join(logger: Logger): AddressBook {
    return new AddressBook(this.#job, this.#transport, logger, this.#records);
  }

  /**
   * Resolves once the book holds its first snapshot (the first call starts the
   * watch). Rejects if `signal` (the asking node's life) aborts first, or the
   * watch could not start.
   */
  async ready(signal: AbortSignal): Promise<void> {
    this.#started ??= this.#watch.start(this.#life.signal);
    signal.throwIfAborted();
    let onAbort: (() => void) | undefined;
    try {
      await Promise.race([
        this.#started,
        new Promise<never>((_, reject) => {
          onAbort = () => reject(signal.reason);
          signal.addEventListener('abort', onAbort, { once: true });
        }),
      ]);
    } finally {
      if (onAbort) signal.removeEventListener('abort', onAbort);
    }
  }

  /** Stops the watch (the host is done with its nodes). */
  async stop(): Promise<void> {
    this.#life.abort();
    await this.#started?.catch(() => undefined);
    await this.#watch.stop();
  }
}
