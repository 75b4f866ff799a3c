/**
 * Many nodes of one job in one process. They share what a process needs once:
 * the coordinator connection (the one `Coordinator` object given: for etcd one
 * client), one store watch per prefix every node follows (`<job>/state/`,
 * `<job>/tasks/`, through a `SharedWatchCoordinator`), one address book (where
 * each task runs: each claim of the job is applied once per process, not once per
 * node), and one transport server
 * that routes each request to the node holding the slot it names
 * (`SharedServer`). Each node keeps its own session, so each task keeps its own
 * lock and fencing token, and the death of the process ends every session it
 * held: all of its tasks fail over (at once, when a supervisor that saw it die
 * ends the sessions; see `Coordinator.endSession`).
 *
 * The host wires nothing of the application: give each of `nodes` its task
 * builder and linkages (topologies keep per-task state, so each node needs its
 * own), then `start()`.
 */
import { InvalidArgumentError, systemClock } from '@taskgraph/api';
import type { NodeOutcome } from '@taskgraph/api';
import { SharedAddressBook } from './address-book.js';
import { uniqueId } from './async.js';
import { keys } from './layout.js';
import { createLogger } from './logger.js';
import { TaskGraphNode } from './node.js';
import type { BootstrapOptions } from './node-options.js';
import { SharedServer } from './shared-server.js';
import { SharedWatchCoordinator } from './shared-watch.js';

/** The most nodes one host runs: beyond it, a process's event loop is the bottleneck, not the store. */
export const MAX_NODES_PER_HOST = 1024;

export interface NodeHostOptions extends Omit<BootstrapOptions, 'nodeId' | 'onSession' | 'listen' | 'addresses' | 'preferredTask'> {
  /** How many nodes this process runs (1 to MAX_NODES_PER_HOST). */
  readonly count: number;
  /** Node ids are `<nodeIdPrefix>.<index>`. Default: a unique prefix. */
  readonly nodeIdPrefix?: string;
  /** The slot the node of each index tries first (a hint); default random. */
  readonly preferredTask?: (index: number) => number | undefined;
  /** Called with each node's session once it is open, before that node claims anything (see `BootstrapOptions.onSession`). */
  readonly onSession?: (nodeId: string, sessionId: string) => void;
}

/** How one hosted node ended. */
export type HostedOutcome = { readonly nodeId: string; readonly outcome: NodeOutcome } | { readonly nodeId: string; readonly error: unknown };

export class NodeHost {
  readonly nodes: readonly TaskGraphNode[];
  /** The coordinator the nodes use: the given one, with their common prefixes watched once. */
  readonly coordinator: SharedWatchCoordinator;
  /** The one server the nodes' requests arrive at. */
  readonly server: SharedServer;
  /** Where each task runs, one book for all the nodes. */
  private readonly addresses: SharedAddressBook;
  private started: Promise<readonly HostedOutcome[]> | undefined;

  constructor(options: NodeHostOptions) {
    const { count, nodeIdPrefix, preferredTask, onSession, ...common } = options;
    if (!Number.isInteger(count) || count < 1 || count > MAX_NODES_PER_HOST) {
      throw new InvalidArgumentError(`a node host runs from 1 to ${MAX_NODES_PER_HOST} nodes, got ${String(count)}`);
    }
    const shared = new Set([keys.state(options.job), keys.tasks(options.job)]);
    const logger = options.logger ?? createLogger();
    this.coordinator = new SharedWatchCoordinator(options.coordinator, {
      shares: (prefix) => shared.has(prefix),
      logger,
      ...(options.clock ? { clock: options.clock } : {}),
    });
    this.server = new SharedServer(options.transport, options.clock);
    this.addresses = new SharedAddressBook({
      job: options.job,
      coordinator: this.coordinator,
      transport: options.transport,
      clock: options.clock ?? systemClock,
      logger: logger.child({ job: options.job }),
    });
    const prefix = nodeIdPrefix ?? uniqueId('host');
    const nodes: TaskGraphNode[] = [];
    for (let i = 0; i < count; i++) {
      const nodeId = `${prefix}.${i}`;
      const preferred = preferredTask?.(i);
      nodes.push(
        new TaskGraphNode({
          ...common,
          logger,
          nodeId,
          coordinator: this.coordinator,
          listen: (endpoint) => this.server.attach(endpoint),
          addresses: this.addresses,
          ...(preferred !== undefined ? { preferredTask: preferred } : {}),
          ...(onSession ? { onSession: (sessionId: string) => onSession(nodeId, sessionId) } : {}),
        }),
      );
    }
    this.nodes = nodes;
  }

  /**
   * Starts every node; settles once all of them ended, with how each did (a node
   * that failed does not stop the others: its task fails over like any node's).
   * The shared watches and server are released then.
   */
  start(): Promise<readonly HostedOutcome[]> {
    this.started ??= (async () => {
      const settled = await Promise.allSettled(this.nodes.map((n) => n.start()));
      await this.release();
      return settled.map((s, i): HostedOutcome => {
        const nodeId = this.nodes[i]!.nodeId;
        return s.status === 'fulfilled' ? { nodeId, outcome: s.value } : { nodeId, error: s.reason };
      });
    })();
    return this.started;
  }

  /** Every node leaves gracefully. */
  async stop(reason = 'stop requested'): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.stop(reason)));
    if (!this.started) await this.release();
  }

  /** Every node leaves now; their tasks are re-run elsewhere. */
  async kill(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.kill()));
    if (!this.started) await this.release();
  }

  private async release(): Promise<void> {
    await this.server.close({ graceMs: 0 });
    await this.addresses.stop();
    await this.coordinator.stop();
  }
}

/** Creates a host of `count` nodes of one job sharing one coordinator connection, its watches and one server. */
export function createNodeHost(options: NodeHostOptions): NodeHost {
  return new NodeHost(options);
}
