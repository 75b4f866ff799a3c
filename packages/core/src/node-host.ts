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
 * Each node needs its own task builder and linkages (topologies keep per-task
 * state): give `setup`, which wires every node the host makes (and lets the host
 * put a new node in the place of one whose session was lost), or wire each of
 * `nodes` before `start()`.
 */
import { InvalidArgumentError, systemClock } from '@taskgraph/api';
import type { Clock, Instrumentable, Logger, NodeObserver, NodeOutcome } from '@taskgraph/api';
import { sleep } from '@taskgraph/backend-kit';
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
  /**
   * Wires each node the host makes (its task builder and linkages). Given, the
   * host also puts a new node in the place of one whose session was lost (the
   * process lives, so it rejoins, as a supervisor restarts a process that exited):
   * after a growing delay, at most `rejoin.max` times per index within
   * `rejoin.windowMs`. Without it the caller wires `nodes` before `start()` and a
   * node that lost its session stays gone.
   */
  readonly setup?: (node: TaskGraphNode) => void;
  readonly rejoin?: { readonly max?: number; readonly windowMs?: number };
}

/** How one hosted node ended (the last node of its index, and how many nodes took that index's place before it). */
export type HostedOutcome = ({ readonly nodeId: string; readonly outcome: NodeOutcome } | { readonly nodeId: string; readonly error: unknown }) & {
  readonly rejoined?: number;
};

const DEFAULT_REJOIN_MAX = 5;
const DEFAULT_REJOIN_WINDOW_MS = 60_000;
const REJOIN_FIRST_DELAY_MS = 200;
const REJOIN_MAX_DELAY_MS = 10_000;

export class NodeHost implements Instrumentable {
  /** The coordinator the nodes use: the given one, with their common prefixes watched once. */
  readonly coordinator: SharedWatchCoordinator;
  /** The one server the nodes' requests arrive at. */
  readonly server: SharedServer;
  /** Where each task runs, one book for all the nodes. */
  private readonly addresses: SharedAddressBook;
  private readonly current: TaskGraphNode[] = [];
  private readonly make: (index: number) => TaskGraphNode;
  private readonly setup: ((node: TaskGraphNode) => void) | undefined;
  private readonly rejoinMax: number;
  private readonly rejoinWindowMs: number;
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly life = new AbortController();
  private started: Promise<readonly HostedOutcome[]> | undefined;
  /** Observers added with `instrument`, with what removes each from each node it was added to. */
  private readonly observers = new Map<NodeObserver, Array<() => void>>();

  constructor(options: NodeHostOptions) {
    const { count, nodeIdPrefix, preferredTask, onSession, setup, rejoin, ...common } = options;
    if (!Number.isInteger(count) || count < 1 || count > MAX_NODES_PER_HOST) {
      throw new InvalidArgumentError(`a node host runs from 1 to ${MAX_NODES_PER_HOST} nodes, got ${String(count)}`);
    }
    this.rejoinMax = rejoin?.max ?? DEFAULT_REJOIN_MAX;
    this.rejoinWindowMs = rejoin?.windowMs ?? DEFAULT_REJOIN_WINDOW_MS;
    if (!Number.isInteger(this.rejoinMax) || this.rejoinMax < 0) throw new InvalidArgumentError(`rejoin.max must be a non-negative integer, got ${String(rejoin?.max)}`);
    if (!(this.rejoinWindowMs > 0)) throw new InvalidArgumentError(`rejoin.windowMs must be a positive number of ms, got ${String(rejoin?.windowMs)}`);
    const shared = new Set([keys.state(options.job), keys.tasks(options.job)]);
    const logger = options.logger ?? createLogger();
    this.logger = logger.child({ job: options.job });
    this.clock = options.clock ?? systemClock;
    this.setup = setup;
    this.coordinator = new SharedWatchCoordinator(options.coordinator, {
      shares: (prefix) => shared.has(prefix),
      logger,
      ...(options.clock ? { clock: options.clock } : {}),
    });
    this.server = new SharedServer(options.transport, options.clock);
    this.addresses = new SharedAddressBook({ job: options.job, coordinator: this.coordinator, transport: options.transport, clock: this.clock, logger: this.logger });
    const prefix = nodeIdPrefix ?? uniqueId('host', this.clock);
    this.make = (i) => {
      const nodeId = `${prefix}.${i}`;
      const preferred = preferredTask?.(i);
      const node = new TaskGraphNode({
        ...common,
        logger,
        nodeId,
        coordinator: this.coordinator,
        listen: (endpoint) => this.server.attach(endpoint),
        addresses: this.addresses,
        ...(preferred !== undefined ? { preferredTask: preferred } : {}),
        ...(onSession ? { onSession: (sessionId: string) => onSession(nodeId, sessionId) } : {}),
      });
      setup?.(node);
      for (const [observer, removers] of this.observers) removers.push(node.instrument(observer));
      return node;
    };
    for (let i = 0; i < count; i++) this.current.push(this.make(i));
  }

  /**
   * Adds an observer of every node's events, the nodes that take another's place
   * included (see `TaskGraphNode.instrument`); the function returned removes it.
   */
  instrument(observer: NodeObserver): () => void {
    if (this.observers.has(observer)) return () => this.removeObserver(observer);
    this.observers.set(observer, this.current.map((n) => n.instrument(observer)));
    return () => this.removeObserver(observer);
  }

  private removeObserver(observer: NodeObserver): void {
    for (const remove of this.observers.get(observer) ?? []) remove();
    this.observers.delete(observer);
  }

  /** The nodes, by index: a node that took another's place replaces it here. */
  get nodes(): readonly TaskGraphNode[] {
    return this.current;
  }

  /**
   * Starts every node; settles once all of them ended, with how each index did (a
   * node that failed does not stop the others: its task fails over like any
   * node's). The shared watches and server are released then.
   */
  start(): Promise<readonly HostedOutcome[]> {
    this.started ??= (async () => {
      const ends = await Promise.all(this.current.map((_, i) => this.runIndex(i)));
      await this.release();
      return ends;
    })();
    return this.started;
  }

  /** Every node leaves gracefully (none takes another's place any more). */
  async stop(reason = 'stop requested'): Promise<void> {
    this.life.abort();
    await Promise.all(this.current.map((n) => n.stop(reason)));
    if (!this.started) await this.release();
  }

  /** Every node leaves now; their tasks are re-run elsewhere. */
  async kill(): Promise<void> {
    this.life.abort();
    await Promise.all(this.current.map((n) => n.kill()));
    if (!this.started) await this.release();
  }

  /** Runs the node of index `i`, and the nodes that take its place when its session is lost. */
  private async runIndex(i: number): Promise<HostedOutcome> {
    const rejoins: number[] = [];
    for (;;) {
      const node = this.current[i]!;
      const end: HostedOutcome = await node.start().then(
        (outcome) => ({ nodeId: node.nodeId, outcome }),
        (error: unknown) => ({ nodeId: node.nodeId, error }),
      );
      const now = this.clock.now();
      while (rejoins.length > 0 && rejoins[0]! < now - this.rejoinWindowMs) rejoins.shift();
      const lost = 'outcome' in end && end.outcome.reason === 'lease-lost';
      if (!lost || this.setup === undefined || this.life.signal.aborted) return { ...end, rejoined: rejoins.length };
      if (rejoins.length >= this.rejoinMax) {
        this.logger.error('a hosted node lost its session again; not rejoining', { node: node.nodeId, rejoins: rejoins.length, windowMs: this.rejoinWindowMs });
        return { ...end, rejoined: rejoins.length };
      }
      const delayMs = Math.min(REJOIN_MAX_DELAY_MS, REJOIN_FIRST_DELAY_MS * 2 ** rejoins.length);
      this.logger.info('a hosted node lost its session; a new node takes its place', { node: node.nodeId, delayMs });
      try {
        await sleep(this.clock, delayMs, this.life.signal);
      } catch {
        return { ...end, rejoined: rejoins.length };
      }
      rejoins.push(this.clock.now());
      this.current[i] = this.make(i);
    }
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
