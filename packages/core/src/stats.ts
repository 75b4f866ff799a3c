/**
 * A node's counters: what it served, refused and fenced, how often it retried, and
 * which store writes it made. Plain numbers, read by logs, tests and benchmarks.
 */

/** Counters for logs, tests and benchmarks. */
export interface NodeStats {
  /** Requests this node served. */
  served: number;
  /** Requests refused because this node is not (or no longer) the task's owner, its lease lost. */
  rejectedNotOwner: number;
  /** Requests refused because they named another epoch. */
  rejectedEpoch: number;
  /** Finished handlers whose answers were dropped because the lease or epoch ended meanwhile. */
  fencedLateResults: number;
  /** Data-request attempts that were retried. */
  retries: number;
  /** Metas pushed to their receivers' nodes (the fast path), and pushes that failed (the store copy still delivers). */
  metaPushes: number;
  metaPushFailures: number;
  /** Metas this node's tasks received, by the path that delivered them first. */
  metasByPush: number;
  metasByStore: number;
  /** Store writes this node made (by kind). */
  writes: WriteCounts;
}

export interface WriteCounts {
  epoch: number;
  meta: number;
  /** Deletions of old meta generations (one per receiver per generation). */
  metaCleanup: number;
  addr: number;
  incarnation: number;
  status: number;
  node: number;
}

export function newStats(): NodeStats {
  return {
    served: 0,
    rejectedNotOwner: 0,
    rejectedEpoch: 0,
    fencedLateResults: 0,
    retries: 0,
    metaPushes: 0,
    metaPushFailures: 0,
    metasByPush: 0,
    metasByStore: 0,
    writes: { epoch: 0, meta: 0, metaCleanup: 0, addr: 0, incarnation: 0, status: 0, node: 0 },
  };
}
