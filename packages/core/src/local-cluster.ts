/**
 * Runs a whole job inside one process: a controller and N nodes (tasks plus
 * standbys), each with its own coordinator client and transport, and a supervisor
 * that replaces a node that failed or was killed with a fresh standby (as a
 * cluster manager restarts a crashed process). Used by the demo and by the
 * scenario suites; backends are passed in as factories, so core imports none.
 */
import { InvalidArgumentError } from '@taskgraph/api';
import type { Coordinator, Logger, NodeOutcome, TaskBuilder, Topology, Transport } from '@taskgraph/api';
import { Controller } from './controller.js';
import type { JobStatus } from './controller.js';
import { TaskGraphNode } from './node.js';
import type { BootstrapOptions } from './node.js';
import { silentLogger } from './logger.js';

/** What one node runs on: its own store client and transport. */
export interface NodeResources {
  readonly coordinator: Coordinator;
  readonly transport: Transport;
  close(): Promise<void>;
}

/**
 * A node's resources whose `close` stops the transport first (nothing is served
 * any more), then the coordinator (the session ends, so the slot frees), then
 * runs `afterClose` (a test's proxy, say).
 */
export function nodeResources(coordinator: Coordinator, transport: Transport, afterClose?: () => void | Promise<void>): NodeResources {
  return {
    coordinator,
    transport,
    close: async () => {
      await transport.close();
      await coordinator.close();
      await afterClose?.();
    },
  };
}

export interface LocalClusterOptions {
  readonly job: string;
  readonly numTasks: number;
  readonly linkTypes: readonly string[];
  /** Backups per task (hot standby): one more node per task and backup is started. Default 0. */
  readonly backups?: number;
  /** The tasks that get those backups (default: all); a backup node is started for each. */
  readonly backupTasks?: readonly number[];
  /** Cold standby nodes beyond the primaries and backups. */
  readonly standbys: number;
  /** Makes the store client and transport of a new node (index counts every node ever started). */
  readonly resources: (index: number) => Promise<NodeResources>;
  /** The controller's store client. */
  readonly controllerCoordinator: Coordinator;
  readonly builder: (index: number) => TaskBuilder;
  /** Fresh topologies for one node. */
  readonly linkages: () => Readonly<Record<string, Topology>>;
  /** Start a fresh standby when a node fails, is killed or loses its lease. Default true. */
  readonly replaceLostNodes?: boolean;
  /** At most this many replacements (a guard against a failure loop). Default 100. */
  readonly maxReplacements?: number;
  readonly node?: Partial<Pick<BootstrapOptions, 'sessionTtlMs' | 'attemptTimeoutMs' | 'drainMs' | 'metaPush' | 'clock' | 'instruments'>>;
  readonly logger?: Logger;
}

export interface ClusterNode {
  readonly index: number;
  readonly node: TaskGraphNode;
  readonly resources: NodeResources;
  /** Settles when the node's start() does; never rejects (a failure is `{ error }`). */
  readonly finished: Promise<{ outcome?: NodeOutcome; error?: unknown }>;
}

export interface ClusterEvent {
  readonly kind: 'node-started' | 'node-ended' | 'node-replaced';
  readonly index: number;
  readonly detail?: string;
}

export class LocalCluster {
  readonly nodes: ClusterNode[] = [];
  readonly events: ClusterEvent[] = [];
  readonly controller: Controller;
  private started = 0;
  private starting: Array<Promise<unknown>> = [];
  private replacements = 0;
  private closing = false;
  private readonly logger: Logger;

  constructor(private readonly options: LocalClusterOptions) {
    if (!Number.isInteger(options.standbys) || options.standbys < 0) throw new InvalidArgumentError('standbys must be a non-negative integer');
    this.logger = options.logger ?? silentLogger;
    this.controller = new Controller({ coordinator: options.controllerCoordinator, job: options.job, logger: this.logger });
  }

  /** Creates the job and starts one node per task plus the standbys. */
  async start(): Promise<void> {
    const backups = this.options.backups ?? 0;
    const { numTasks, linkTypes, backupTasks } = this.options;
    await this.controller.createJob({ numTasks, linkTypes, backups, ...(backupTasks ? { backupTasks } : {}) });
    const n = numTasks + (backupTasks?.length ?? numTasks) * backups + this.options.standbys;
    for (let i = 0; i < n; i++) await this.startNode(i < this.options.numTasks ? i : undefined);
  }

  /** The live node that runs `task` as its primary, if any. */
  ownerOf(task: number): ClusterNode | undefined {
    return this.nodes.find((n) => n.node.currentTask === task);
  }

  /** The live nodes that hold a backup of `task`. */
  backupsOf(task: number): ClusterNode[] {
    return this.nodes.filter((n) => n.node.backupOf === task);
  }

  /** Kills the node running `task` (it leaves at once; its slot frees now). */
  async kill(task: number): Promise<ClusterNode> {
    const owner = this.ownerOf(task);
    if (!owner) throw new InvalidArgumentError(`no node runs task ${task} now`);
    await owner.node.kill();
    return owner;
  }

  /** Resolves with the job's final state once it is done and every node has ended. */
  async waitUntilDone(signal?: AbortSignal): Promise<JobStatus> {
    const status = await this.controller.waitUntilDone(signal);
    await this.settled();
    return status;
  }

  /** Resolves when every node started so far has ended. */
  async settled(): Promise<void> {
    for (;;) {
      const count = this.nodes.length;
      await Promise.allSettled(this.starting);
      await Promise.all(this.nodes.map((n) => n.finished));
      if (this.nodes.length === count && this.starting.length === 0) return;
    }
  }

  /** Stops every node and closes every node's resources. */
  async close(): Promise<void> {
    this.closing = true;
    await Promise.allSettled(this.nodes.map((n) => n.node.stop('cluster closing')));
    await this.settled();
    await Promise.allSettled(this.nodes.map((n) => n.resources.close()));
  }

  private async startNode(preferredTask?: number): Promise<ClusterNode> {
    const index = this.started++;
    const resources = await this.options.resources(index);
    const node = new TaskGraphNode({
      job: this.options.job,
      coordinator: resources.coordinator,
      transport: resources.transport,
      nodeId: `node-${index}`,
      logger: this.logger,
      ...(preferredTask === undefined ? {} : { preferredTask }),
      ...this.options.node,
    });
    node.setTaskBuilder(this.options.builder(index));
    for (const [lt, topo] of Object.entries(this.options.linkages())) node.addLinkage(lt, topo);
    const finished = node.start().then(
      (outcome) => ({ outcome }),
      (error: unknown) => ({ error }),
    );
    const entry: ClusterNode = { index, node, resources, finished };
    this.nodes.push(entry);
    this.events.push({ kind: 'node-started', index });
    void finished.then((r) => this.onEnded(entry, r));
    return entry;
  }

  private onEnded(entry: ClusterNode, r: { outcome?: NodeOutcome; error?: unknown }): void {
    const detail = r.error ? `failed: ${(r.error as Error).message ?? String(r.error)}` : r.outcome?.reason;
    this.events.push({ kind: 'node-ended', index: entry.index, ...(detail ? { detail } : {}) });
    const lost = r.error !== undefined || r.outcome?.reason === 'killed' || r.outcome?.reason === 'lease-lost';
    if (!lost || this.closing || this.options.replaceLostNodes === false) return;
    if (this.replacements >= (this.options.maxReplacements ?? 100)) {
      this.logger.error('not replacing a lost node: the replacement limit is reached', { index: entry.index });
      return;
    }
    this.replacements++;
    const p = this.startNode();
    this.starting.push(p);
    void p.finally(() => {
      this.starting = this.starting.filter((x) => x !== p);
    });
    p.then(
      (n) => this.events.push({ kind: 'node-replaced', index: entry.index, detail: `by node-${n.index}` }),
      (err: unknown) => this.logger.error('could not start a replacement node', { error: (err as Error).message }),
    );
  }
}
