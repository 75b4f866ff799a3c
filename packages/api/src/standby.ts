/**
 * Hot standby: each task has one primary node and up to `backups` backup nodes that
 * mirror its state. The primary ships every state change to its backups before the
 * change is acknowledged; when the primary's node dies, a backup is promoted with
 * the state intact. A task opts in by implementing `Backupable` and calling
 * `update()`; every task can listen to role and neighbour events.
 */
import type { EpochContext, Framework } from './task.js';

/** One state change of a backed-up task, shipped from the primary to its backups. */
export interface UpdateLog {
  /** The epoch the primary was in when it made the change. */
  readonly epoch: number;
  /**
   * The change's position in the task's history: 1, 2, 3, ... with no gaps, never
   * reused, continued by a promoted backup (it does not restart per epoch).
   * Backups apply in `seq` order and drop repeats.
   */
  readonly seq: number;
  readonly data: Uint8Array;
}

/**
 * A task whose state can be mirrored on backups.
 *
 * The contract that makes replication exact: a state change and its `update()` call
 * happen in the same synchronous turn (change the state, then call `update()` before
 * any `await`), and `snapshot()` captures the state synchronously, before its first
 * `await` if it is async. Then a snapshot taken when the last change handed to
 * `update()` had `seq` s holds exactly the changes up to s.
 */
export interface Backupable {
  /** A full copy of the state, for a backup that joins late (or after a promotion). */
  snapshot(): Uint8Array | Promise<Uint8Array>;
  /** Replaces the whole state with a snapshot (on a backup). */
  restore(snapshot: Uint8Array): void | Promise<void>;
  /** Applies one change (on a backup, in `seq` order, each once). */
  applyUpdate(log: UpdateLog): void | Promise<void>;
}

/** A node's part in a task: its primary, or one of its backups. */
export type TaskRole = 'primary' | 'backup';

/** How this node's role in its task changed. */
export interface RoleChange {
  readonly role: TaskRole;
  /** The task's incarnation: a primary's own; for a backup, 0 (it is told before it follows a primary). */
  readonly incarnation: number;
  /** This node's fencing token in its new role (the primary slot's or the backup slot's). */
  readonly token: string;
  /** True when a backup became the primary with its state (a hot failover). */
  readonly promoted: boolean;
  /** The `seq` of the last change the state holds (0 for none). */
  readonly seq: number;
}

/** A neighbour's node went away, or the neighbour runs again. */
export interface NeighborEvent {
  /** The neighbour's task id. */
  readonly task: number;
  /** The link types in which it is this task's neighbour in the current epoch. */
  readonly linkTypes: readonly string[];
  /** The neighbour's incarnation that failed, or the one that now runs. */
  readonly incarnation: number;
}

/**
 * The framework as a task sees it. `update()` is the hot-standby call; the rest is
 * the `Framework`.
 */
export interface BackedUpFramework extends Framework {
  /** This node's role in its task now. */
  getRole(): TaskRole;
  /** The backups per task the job was created with (0 when it has none). */
  getNumBackups(): number;
  /**
   * On the primary: resolves once at least `count` backups (default: the job's
   * `backups`) hold this primary's state, that is, took its snapshot and get every
   * update since. Work acknowledged before a task is backed up is lost with its
   * primary; an application that must not lose any waits for this before it starts.
   * Rejects when `ctx`'s epoch ends first; InvalidArgumentError on a backup.
   */
  waitForBackups(ctx: EpochContext, count?: number): Promise<void>;
  /**
   * Ships `data` (a change the primary has just made to its state) to every live
   * backup of the task and resolves once each of them has applied it.
   *
   * Guarantees: when the promise resolves, every backup that was live (its session
   * held) when the change was shipped has applied it, in `seq` order; a backup that
   * joins later gets it through its snapshot. So a resolved update survives the
   * primary's death as long as one of those backups does: the promoted backup has
   * it. A backup that dies or stalls is dropped when its session expires, so
   * `update()` waits at most about one session TTL for it. With no backups it
   * resolves at once (the change is then only in the primary's memory).
   *
   * It rejects with LeaseLostError when this node is no longer the primary (its
   * session is lost, or the backups already follow a newer primary): the change may
   * then have reached some backups or none, and must be treated as not
   * acknowledged. EpochChangedError/AbortedError when `ctx`'s epoch ends first
   * (likewise not acknowledged). InvalidArgumentError on a backup or for bad input.
   */
  update(ctx: EpochContext, data: Uint8Array): Promise<UpdateLog>;
}
