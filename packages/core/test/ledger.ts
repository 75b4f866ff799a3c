/** A backed-up task for hot-standby tests: its state is a list of numbers, mirrored to its backups. */
import type { BackedUpFramework, Backupable, EpochContext, NeighborEvent, RoleChange, Task, UpdateLog } from '@taskgraph/api';

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A task whose state is a list of numbers; the test adds to it through `add`. */
export class Ledger implements Task, Backupable {
  fw: BackedUpFramework | undefined;
  ctx: EpochContext | undefined;
  items: number[] = [];
  readonly events: string[] = [];
  readonly applied: number[] = [];

  init(_id: number, fw: BackedUpFramework): void {
    this.fw = fw;
    this.events.push(`init as ${fw.getRole()}`);
  }
  enterEpoch(ctx: EpochContext, epoch: number): void {
    this.ctx = ctx;
    this.events.push(`epoch ${epoch}`);
  }
  metaReady(): void {}
  exit(): void {
    this.events.push('exit');
  }
  becamePrimary(_ctx: EpochContext, change: RoleChange): void {
    this.events.push(`primary promoted=${change.promoted} seq=${change.seq} incarnation=${change.incarnation}`);
  }
  becameBackup(change: RoleChange): void {
    this.events.push(`backup seq=${change.seq}`);
  }
  neighborFailed(_ctx: EpochContext, e: NeighborEvent): void {
    this.events.push(`failed ${e.task} ${e.linkTypes.join(',')} ${e.incarnation}`);
  }
  neighborRestarted(_ctx: EpochContext, e: NeighborEvent): void {
    this.events.push(`restarted ${e.task} ${e.linkTypes.join(',')} ${e.incarnation}`);
  }
  /** Changes the state and ships the change in the same turn, as the contract asks. */
  add(n: number): Promise<UpdateLog> {
    this.items.push(n);
    return this.fw!.update(this.ctx!, enc.encode(String(n)));
  }
  snapshot(): Uint8Array {
    return enc.encode(JSON.stringify(this.items));
  }
  restore(snapshot: Uint8Array): void {
    this.items = JSON.parse(dec.decode(snapshot)) as number[];
  }
  applyUpdate(log: UpdateLog): void {
    this.applied.push(log.seq);
    this.items.push(Number(dec.decode(log.data)));
  }
}

export function ledgers() {
  const made: Ledger[] = [];
  return { made, get: () => (made.push(new Ledger()), made.at(-1)!) };
}
