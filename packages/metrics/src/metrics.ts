/**
 * TaskGraph node events (`NodeEvent` of `@taskgraph/api`) as Prometheus metrics, in
 * one prom-client `Registry` per `TaskGraphMetrics` (never the global one): every
 * node that reports to it is a distinct set of series, told apart by the labels
 * `job`, `node` and `task`, so the nodes of a host, or a whole job run in one
 * process, are summed up in one registry without clashing. It also keeps each node's
 * health, which `/healthz` sums up (see `health()`).
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { InvalidArgumentError } from '@taskgraph/api';
import type { Instrumentable, NodeEvent, NodeObserver, NodeRole, NodeSource } from '@taskgraph/api';

/** How `/healthz` sums its nodes up: every node healthy (`all`), or at least one (`any`). */
export type HealthPolicy = 'all' | 'any';

export interface TaskGraphMetricsOptions {
  /** The registry the metrics go in. Default: a registry of their own (prom-client's global one is never used). */
  readonly registry?: Registry;
  /** Also collect prom-client's default process metrics (CPU, memory, event loop lag) into the registry. Default false. */
  readonly processMetrics?: boolean;
  /** How `health()` and `/healthz` sum the nodes up. Default `all`. */
  readonly health?: HealthPolicy;
  /** Histogram buckets, in seconds (defaults: `DEFAULT_BUCKETS`). */
  readonly buckets?: { readonly request?: readonly number[]; readonly store?: readonly number[]; readonly replication?: readonly number[] };
}

/** Latency buckets, in seconds: 0.5 ms to 10 s. */
export const DEFAULT_BUCKETS: readonly number[] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** The metrics' names. */
export const METRICS = {
  nodeUp: 'taskgraph_node_up',
  nodeRole: 'taskgraph_node_role',
  epoch: 'taskgraph_epoch',
  incarnation: 'taskgraph_incarnation',
  fencingToken: 'taskgraph_fencing_token',
  leaseHeld: 'taskgraph_lease_held',
  leasesLost: 'taskgraph_leases_lost_total',
  failovers: 'taskgraph_failovers_total',
  metasFlagged: 'taskgraph_metas_flagged_total',
  metasDelivered: 'taskgraph_metas_delivered_total',
  requestsSent: 'taskgraph_data_requests_sent_total',
  requestsFailed: 'taskgraph_data_requests_failed_total',
  requestRetries: 'taskgraph_data_request_retries_total',
  requestDuration: 'taskgraph_data_request_duration_seconds',
  requestsServed: 'taskgraph_data_requests_served_total',
  serveDuration: 'taskgraph_data_request_serve_duration_seconds',
  requestsRefused: 'taskgraph_data_requests_refused_total',
  storeOps: 'taskgraph_store_operations_total',
  storeDuration: 'taskgraph_store_operation_duration_seconds',
  replicationLag: 'taskgraph_replication_lag_seconds',
} as const;

/** The roles `taskgraph_node_role` has a series for (one of them is 1 while the node holds it). */
export const ROLES = ['primary', 'backup', 'standby'] as const;

/** One node's health, as `/healthz` reports it. */
export interface NodeHealth {
  readonly job: string;
  readonly node: string;
  /** The task it holds (primary or backup), if any. */
  readonly task: number | undefined;
  readonly role: NodeRole;
  readonly lease: 'held' | 'lost' | 'released' | undefined;
  /** True while the node is starting, a standby, a backup or the primary, with its lease not lost. */
  readonly healthy: boolean;
}

export interface HealthReport {
  /** What `/healthz` answers 200 for (see `TaskGraphMetrics.health`). */
  readonly healthy: boolean;
  readonly policy: HealthPolicy;
  readonly nodes: readonly NodeHealth[];
}

/** What a registration made: `unregister()` stops observing and forgets the health of the nodes it brought. */
export interface Registration {
  unregister(): void;
}

type Base = 'job' | 'node' | 'task';

/** What the registry knows of one node. */
interface NodeState {
  readonly job: string;
  readonly node: string;
  task: number | undefined;
  role: NodeRole;
  incarnation: number;
  token: string | undefined;
  lease: 'held' | 'lost' | 'released' | undefined;
  epoch: number | undefined;
  /** The registrations it came through (0: the shared observer itself). */
  readonly via: Set<number>;
}

function taskLabel(task: number | undefined): string {
  return task === undefined ? '' : String(task);
}

function healthy(s: Pick<NodeState, 'role' | 'lease'>): boolean {
  return s.role !== 'left' && s.lease !== 'lost';
}

function checkBuckets(name: string, buckets: readonly number[] | undefined): number[] {
  if (buckets === undefined) return [...DEFAULT_BUCKETS];
  if (!Array.isArray(buckets) || buckets.length === 0 || buckets.some((b, i) => typeof b !== 'number' || !(b > 0) || (i > 0 && b <= buckets[i - 1]!))) {
    throw new InvalidArgumentError(`buckets.${name} must be increasing positive numbers of seconds`);
  }
  return [...buckets];
}

export class TaskGraphMetrics {
  readonly registry: Registry;
  readonly policy: HealthPolicy;
  private readonly nodes = new Map<string, NodeState>();
  private registrations = 0;

  private readonly nodeUp: Gauge<Base>;
  private readonly nodeRole: Gauge<Base | 'role'>;
  private readonly epoch: Gauge<Base>;
  private readonly incarnation: Gauge<Base>;
  private readonly fencingToken: Gauge<Base>;
  private readonly leaseHeld: Gauge<Base>;
  private readonly leasesLost: Counter<Base>;
  private readonly failovers: Counter<Base | 'kind'>;
  private readonly metasFlagged: Counter<Base | 'link_type'>;
  private readonly metasDelivered: Counter<Base | 'link_type' | 'path'>;
  private readonly requestsSent: Counter<Base | 'method'>;
  private readonly requestsFailed: Counter<Base | 'method' | 'code'>;
  private readonly requestRetries: Counter<Base | 'method' | 'reason'>;
  private readonly requestDuration: Histogram<Base | 'method'>;
  private readonly requestsServed: Counter<Base | 'method'>;
  private readonly serveDuration: Histogram<Base | 'method'>;
  private readonly requestsRefused: Counter<Base | 'method' | 'reason'>;
  private readonly storeOps: Counter<Base | 'op' | 'code'>;
  private readonly storeDuration: Histogram<Base | 'op'>;
  private readonly replicationLag: Histogram<Base>;

  constructor(options: TaskGraphMetricsOptions = {}) {
    const policy = options.health ?? 'all';
    if (policy !== 'all' && policy !== 'any') throw new InvalidArgumentError(`health must be "all" or "any", got ${JSON.stringify(policy)}`);
    this.policy = policy;
    const registry = options.registry ?? new Registry();
    this.registry = registry;
    const base: Base[] = ['job', 'node', 'task'];
    const request = checkBuckets('request', options.buckets?.request);
    const store = checkBuckets('store', options.buckets?.store);
    const replication = checkBuckets('replication', options.buckets?.replication);
    // A metric already in the registry (another TaskGraphMetrics on it) is shared, not registered twice.
    const counter = <L extends string>(name: string, help: string, labelNames: L[]) =>
      (registry.getSingleMetric(name) as Counter<L> | undefined) ?? new Counter<L>({ name, help, labelNames, registers: [registry] });
    const gauge = <L extends string>(name: string, help: string, labelNames: L[]) =>
      (registry.getSingleMetric(name) as Gauge<L> | undefined) ?? new Gauge<L>({ name, help, labelNames, registers: [registry] });
    const histogram = <L extends string>(name: string, help: string, labelNames: L[], buckets: number[]) =>
      (registry.getSingleMetric(name) as Histogram<L> | undefined) ?? new Histogram<L>({ name, help, labelNames, buckets, registers: [registry] });

    this.nodeUp = gauge(METRICS.nodeUp, 'Whether the node is up: 1 while it is starting, a standby, a backup or the primary with its lease; 0 once it lost its lease or left.', base);
    this.nodeRole = gauge(METRICS.nodeRole, 'The role the node holds: 1 on the series of its role (primary, backup or standby), 0 on the others (all 0 while it starts and after it left).', [...base, 'role']);
    this.epoch = gauge(METRICS.epoch, "The job's epoch, as the node follows it.", base);
    this.incarnation = gauge(METRICS.incarnation, 'The incarnation of the task the node runs as primary (how many times the task was claimed); 0 when it runs none.', base);
    this.fencingToken = gauge(METRICS.fencingToken, 'The fencing token of the slot the node holds (primary or backup); 0 when it holds none.', base);
    this.leaseHeld = gauge(METRICS.leaseHeld, "Whether the node's session (lease) is held: 1 from its opening until it is lost or released.", base);
    this.leasesLost = counter(METRICS.leasesLost, "Leases the node lost (its session expired or was ended by the store).", base);
    this.failovers = counter(METRICS.failovers, 'Tasks this node took over after an earlier incarnation: kind="takeover" (a standby claimed the free slot) or kind="promotion" (a backup took the slot).', [...base, 'kind']);
    this.metasFlagged = counter(METRICS.metasFlagged, "Metas the node's task flagged, one per receiver.", [...base, 'link_type']);
    this.metasDelivered = counter(METRICS.metasDelivered, "Metas delivered to the node's task (each once per incarnation), by the path that delivered it first: path=\"push\" or \"store\".", [...base, 'link_type', 'path']);
    this.requestsSent = counter(METRICS.requestsSent, "Data requests the node's task made, counted when each ends (answered or not).", [...base, 'method']);
    this.requestsFailed = counter(METRICS.requestsFailed, 'Data requests that ended without an answer, by TaskGraph error code (EPOCH_CHANGED: dropped at the end of their epoch).', [...base, 'method', 'code']);
    this.requestRetries = counter(METRICS.requestRetries, 'Data request attempts retried, by the failed attempt\'s reason (an error code, NO_ADDRESS or EPOCH_BEHIND).', [...base, 'method', 'reason']);
    this.requestDuration = histogram(METRICS.requestDuration, "Duration of the node's data requests, from the call to the answer or the failure, retries included (one observation per request sent).", [...base, 'method'], request);
    this.requestsServed = counter(METRICS.requestsServed, "Data requests the node answered for its task.", [...base, 'method']);
    this.serveDuration = histogram(METRICS.serveDuration, 'Duration of the data requests the node served, from their arrival to the answer (one observation per request served).', [...base, 'method'], request);
    this.requestsRefused = counter(METRICS.requestsRefused, 'Data requests the node refused or whose answer it dropped (fencing): reason="not-owner", "stale-token", "lease-lost", "epoch" or "late-result".', [...base, 'method', 'reason']);
    this.storeOps = counter(METRICS.storeOps, 'Store (coordinator) calls the node made, by operation and outcome (code="OK" or the TaskGraph error code).', [...base, 'op', 'code']);
    this.storeDuration = histogram(METRICS.storeDuration, "Duration of the node's store calls.", [...base, 'op'], store);
    this.replicationLag = histogram(METRICS.replicationLag, "Hot-standby replication lag: from the primary's update() to a backup's acknowledgement (one observation per backup and update).", base, replication);

    if (options.processMetrics && registry.getSingleMetric('process_cpu_user_seconds_total') === undefined) collectDefaultMetrics({ register: registry });
  }

  /**
   * The observer: pass it as `instruments` to `createBootstrap`, `createNodeHost` or
   * a `LocalCluster`'s `node` options, or let `registerNode`/`registerHost` add it.
   */
  readonly observer: NodeObserver = (event, source) => this.record(event, source, 0);

  /** Observes a node (`TaskGraphNode`) from now on, its current state included. */
  registerNode(node: Instrumentable): Registration {
    return this.register(node);
  }

  /** Observes every node of a host (`NodeHost`), those that take another's place included. */
  registerHost(host: Instrumentable): Registration {
    return this.register(host);
  }

  /** Observes anything that reports node events. */
  register(source: Instrumentable): Registration {
    if (!source || typeof source.instrument !== 'function') throw new InvalidArgumentError('register() needs a node or a node host (something with instrument(observer))');
    const id = ++this.registrations;
    const remove = source.instrument((event, from) => this.record(event, from, id));
    let done = false;
    return {
      unregister: () => {
        if (done) return;
        done = true;
        remove();
        for (const [key, s] of this.nodes) {
          s.via.delete(id);
          if (s.via.size === 0) this.nodes.delete(key);
        }
      },
    };
  }

  /**
   * The health of the nodes this registry hears of (registered, or reporting through
   * `observer`). A node is healthy while it is starting, waiting as a standby, holding
   * a backup or running its task as the primary, with its lease not lost; it is not once
   * its lease is lost or it left (stopped, killed, failed, the job done). `healthy` is
   * true when at least one node is known and, under policy `all`, every one is
   * healthy; under `any`, at least one is.
   */
  health(): HealthReport {
    const nodes: NodeHealth[] = [...this.nodes.values()].map((s) => ({ job: s.job, node: s.node, task: s.task, role: s.role, lease: s.lease, healthy: healthy(s) }));
    const ok = nodes.length > 0 && (this.policy === 'all' ? nodes.every((n) => n.healthy) : nodes.some((n) => n.healthy));
    return { healthy: ok, policy: this.policy, nodes };
  }

  /** The Prometheus text exposition of the registry. */
  metrics(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  private record(event: NodeEvent, source: NodeSource, via: number): void {
    const s = this.stateOf(source, via);
    const labels = { job: s.job, node: s.node, task: taskLabel(s.task) };
    switch (event.type) {
      case 'role':
        s.role = event.role;
        s.incarnation = event.incarnation;
        s.token = event.token;
        this.writeGauges(s);
        return;
      case 'epoch':
        s.epoch = event.epoch;
        this.epoch.set(labels, event.epoch);
        return;
      case 'lease':
        if (event.state === 'lost' && s.lease !== 'lost') this.leasesLost.inc(labels);
        s.lease = event.state;
        this.writeGauges(s);
        return;
      case 'failover':
        this.failovers.inc({ ...labels, kind: event.kind });
        return;
      case 'meta-flagged':
        this.metasFlagged.inc({ ...labels, link_type: event.linkType }, event.receivers);
        return;
      case 'meta-delivered':
        this.metasDelivered.inc({ ...labels, link_type: event.linkType, path: event.path });
        return;
      case 'request-sent': {
        const l = { ...labels, method: event.method };
        this.requestsSent.inc(l);
        this.requestDuration.observe(l, event.seconds);
        if (event.error !== undefined) this.requestsFailed.inc({ ...l, code: event.error });
        return;
      }
      case 'request-retried':
        this.requestRetries.inc({ ...labels, method: event.method, reason: event.reason });
        return;
      case 'request-served': {
        const l = { ...labels, method: event.method };
        this.requestsServed.inc(l);
        this.serveDuration.observe(l, event.seconds);
        return;
      }
      case 'request-refused':
        this.requestsRefused.inc({ ...labels, method: event.method, reason: event.reason });
        return;
      case 'store-op':
        this.storeOps.inc({ ...labels, op: event.op, code: event.error ?? 'OK' });
        this.storeDuration.observe({ ...labels, op: event.op }, event.seconds);
        return;
      case 'replicated':
        this.replicationLag.observe(labels, event.seconds);
        return;
    }
  }

  /** The node's state, its gauges moved to its new task label when it claimed one. */
  private stateOf(source: NodeSource, via: number): NodeState {
    const key = `${source.job}\u0000${source.node}`;
    let s = this.nodes.get(key);
    if (s === undefined) {
      s = { job: source.job, node: source.node, task: source.task, role: 'starting', incarnation: 0, token: undefined, lease: undefined, epoch: undefined, via: new Set() };
      this.nodes.set(key, s);
    } else if (s.task !== source.task) {
      this.removeGauges(s);
      s.task = source.task;
      this.writeGauges(s);
    }
    s.via.add(via);
    return s;
  }

  private gauges(): ReadonlyArray<Gauge<Base>> {
    return [this.nodeUp, this.epoch, this.incarnation, this.fencingToken, this.leaseHeld];
  }

  private removeGauges(s: NodeState): void {
    const labels = { job: s.job, node: s.node, task: taskLabel(s.task) };
    for (const g of this.gauges()) g.remove(labels);
    for (const role of ROLES) this.nodeRole.remove({ ...labels, role });
  }

  private writeGauges(s: NodeState): void {
    const labels = { job: s.job, node: s.node, task: taskLabel(s.task) };
    this.nodeUp.set(labels, healthy(s) ? 1 : 0);
    for (const role of ROLES) this.nodeRole.set({ ...labels, role }, s.role === role ? 1 : 0);
    if (s.epoch !== undefined) this.epoch.set(labels, s.epoch);
    this.incarnation.set(labels, s.role === 'primary' ? s.incarnation : 0);
    this.fencingToken.set(labels, s.token === undefined ? 0 : Number(s.token));
    this.leaseHeld.set(labels, s.lease === 'held' ? 1 : 0);
  }
}
