/**
 * Instrumentation: what a node reports about itself, as typed events, for metrics,
 * health checks and dashboards. An observer is a plain function; the runtime calls it
 * synchronously where the event happens, catches what it throws, and builds events
 * only while someone observes. `@taskgraph/metrics` maps these events onto Prometheus.
 */

/** Where a node stands: joining, waiting as a cold standby, holding a backup, running its task, or gone. */
export type NodeRole = 'starting' | 'standby' | 'backup' | 'primary' | 'left';

/** The store calls a node makes (each one reported with its duration). */
export type StoreOp = 'get' | 'list' | 'create' | 'update' | 'delete' | 'deletePrefix' | 'openSession' | 'endSession' | 'acquire' | 'tryAcquire' | 'holder';

/**
 * Why a node refused a data request addressed to it:
 * - `not-owner`: it does not run the task the request names (or another job's);
 * - `stale-token`: it runs that task, but the request carries another incarnation's fencing token;
 * - `lease-lost`: its session is lost, so it serves nothing any more;
 * - `epoch`: the request names another epoch;
 * - `late-result`: the handler ran, but the lease or the epoch ended meanwhile, so its answer was dropped.
 */
export type RefusalReason = 'not-owner' | 'stale-token' | 'lease-lost' | 'epoch' | 'late-result';

/** Who reports an event. Read it while the observer runs: `task` changes when the node claims one. */
export interface NodeSource {
  readonly job: string;
  /** The node's id. */
  readonly node: string;
  /** The task the node holds (as primary or backup); undefined before it holds one. */
  readonly task: number | undefined;
}

/** What a node reports. Durations are in seconds, read from the node's clock. */
export type NodeEvent =
  /**
   * The node's role changed. `incarnation` is the incarnation of the task it runs as
   * primary (0 otherwise); `token` the fencing token of the slot it holds (primary or
   * backup). `reason` says why a node left.
   */
  | { readonly type: 'role'; readonly role: NodeRole; readonly incarnation: number; readonly token: string | undefined; readonly reason?: string }
  /** The job's epoch, as this node follows it. */
  | { readonly type: 'epoch'; readonly epoch: number }
  /** The node's session (lease): opened (`held`), lost (expired or ended by the store), or closed by the node as it left (`released`). */
  | { readonly type: 'lease'; readonly state: 'held' | 'lost' | 'released' }
  /**
   * This node took over a task that had an earlier incarnation: as a standby that claimed
   * the free slot (`takeover`), or as the task's backup, promoted (`promotion`).
   */
  | { readonly type: 'failover'; readonly kind: 'takeover' | 'promotion'; readonly incarnation: number }
  /** The node's task flagged a meta to `receivers` neighbours. */
  | { readonly type: 'meta-flagged'; readonly linkType: string; readonly receivers: number }
  /** A meta reached the node's task, by the path that delivered it first (each once per incarnation). */
  | { readonly type: 'meta-delivered'; readonly path: 'push' | 'store'; readonly from: number; readonly linkType: string }
  /**
   * A data request the node's task made has ended: answered, or `error` (the TaskGraph
   * error code) without an answer. `seconds` runs from the call to its end, retries included.
   */
  | { readonly type: 'request-sent'; readonly to: number; readonly method: string; readonly seconds: number; readonly error?: string }
  /** One attempt of a data request failed and is retried; `reason` is the error code, `NO_ADDRESS` or `EPOCH_BEHIND` (the target has not entered the epoch yet). */
  | { readonly type: 'request-retried'; readonly to: number; readonly method: string; readonly reason: string }
  /** The node answered a data request for its task; `seconds` from its arrival to the answer. */
  | { readonly type: 'request-served'; readonly from: number; readonly method: string; readonly seconds: number }
  /** The node refused a data request (fencing). */
  | { readonly type: 'request-refused'; readonly from: number; readonly method: string; readonly reason: RefusalReason }
  /** A store call ended; `error` is the TaskGraph error code when it failed. */
  | { readonly type: 'store-op'; readonly op: StoreOp; readonly seconds: number; readonly error?: string }
  /** A backup acknowledged an update of the node's task (this node is the primary); `seconds` from the `update()` call to the acknowledgement. */
  | { readonly type: 'replicated'; readonly slot: number; readonly seq: number; readonly seconds: number };

/** Hears a node's events. It must be quick and must not throw (what it throws is dropped). */
export type NodeObserver = (event: NodeEvent, source: NodeSource) => void;

/** Something that reports node events: a node, a host of nodes. */
export interface Instrumentable {
  /**
   * Adds an observer. It hears the current state at once (role, lease, epoch, for
   * each node), then every event; the function returned removes it.
   */
  instrument(observer: NodeObserver): () => void;
}
