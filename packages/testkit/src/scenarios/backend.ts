/**
 * What a coordinator x transport pair gives the scenario suite: a store client and
 * a transport per node, a controller's store client, and the faults it can inject.
 */
import type { Coordinator, Logger } from '@taskgraph/api';
import type { NodeResources } from '@taskgraph/core';

export interface ScenarioBackend {
  /** A label, e.g. "memory x local". */
  readonly name: string;
  /** A store client and a transport for one node; `close()` releases both. */
  resources(index: number): Promise<NodeResources>;
  /** A store client for the controller (closed by the suite). */
  controller(): Promise<Coordinator>;
  /**
   * Cuts one node's store client off the store (its keepalives fail, so its session
   * is lost by the local deadline and then expires on the server). Resolves with a
   * function that heals the cut.
   */
  isolate(resources: NodeResources): Promise<() => Promise<void>>;
  /** The session TTL the nodes use (within the backend's range). */
  readonly sessionTtlMs: number;
  /**
   * Drops data requests at random, when the transport can (the in-process one can);
   * resolves with a function that ends the fault.
   */
  dropRequests?(probability: number): Promise<() => void>;
  /** A generous per-scenario timeout, in ms. Default 120 s. */
  readonly timeoutMs?: number;
  /** Log level of the nodes (default: silent; TASKGRAPH_LOG_LEVEL overrides). */
  readonly logger?: Logger;
}
