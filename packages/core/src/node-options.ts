/**
 * A node's options, checked once at construction and resolved to the values the
 * node runs with.
 */
import { InvalidArgumentError, systemClock } from '@taskgraph/api';
import type { Clock, Coordinator, Logger, NodeObserver, Transport, TransportServer } from '@taskgraph/api';
import { uniqueId } from './async.js';
import { assertValidJobName, assertValidNodeId } from './layout.js';
import type { ServerEndpoint } from './shared-server.js';
import type { SharedAddressBook } from './address-book.js';

export interface BootstrapOptions {
  /** The job this node joins (created by a controller). */
  readonly job: string;
  readonly coordinator: Coordinator;
  readonly transport: Transport;
  /** Default: a unique id. */
  readonly nodeId?: string;
  /** The session TTL. Default: 5 s, raised to the backend's minimum. */
  readonly sessionTtlMs?: number;
  /** The task slot to try first (a hint; any free slot is taken). */
  readonly preferredTask?: number;
  /** Deadline of one data-request attempt. Default 10 s. */
  readonly attemptTimeoutMs?: number;
  /** The largest meta string, in UTF-8 bytes. Default 1024. */
  readonly maxMetaBytes?: number;
  /** How long `stop()` lets requests in flight finish. Default 2 s. */
  readonly drainMs?: number;
  /**
   * Push each flagged meta straight to its receiver's node as well as writing its
   * store copy (default true): `metaReady` then fires after one transport hop rather
   * than a store write and a watch event. False: metas travel by the store only.
   */
  readonly metaPush?: boolean;
  readonly clock?: Clock;
  readonly logger?: Logger;
  /**
   * Called with the id of the node's session once it is open, before the node
   * claims anything: a supervisor that sees this node's process die may then end
   * the session at once (`Coordinator.endSession`) instead of waiting out its TTL.
   */
  readonly onSession?: (sessionId: string) => void;
  /**
   * Where the node's requests arrive. Default: a server of its own
   * (`transport.listen`). A node host passes its shared server's `attach`, which
   * routes each request to the node holding the slot the request names.
   */
  readonly listen?: (endpoint: ServerEndpoint) => Promise<TransportServer>;
  /**
   * Where the node learns where each task runs. Default: a book of its own, kept
   * by its own watch of `<job>/tasks/`. A node host passes the one its nodes share.
   */
  readonly addresses?: SharedAddressBook;
  /**
   * Observers of the node's events (`NodeEvent` of `@taskgraph/api`: role, epoch,
   * lease, failovers, metas, data requests, store calls, replication), e.g. the
   * observer of `@taskgraph/metrics`. More can be added later with `node.instrument()`.
   */
  readonly instruments?: NodeObserver | readonly NodeObserver[];
}

/** The options with every default applied. */
export interface NodeConfig {
  readonly job: string;
  readonly nodeId: string;
  readonly coordinator: Coordinator;
  readonly transport: Transport;
  readonly clock: Clock;
  readonly ttlMs: number;
  readonly preferredTask: number | undefined;
  readonly attemptTimeoutMs: number;
  readonly maxMetaBytes: number;
  readonly drainMs: number;
  readonly metaPush: boolean;
  readonly onSession: ((sessionId: string) => void) | undefined;
  readonly listen: ((endpoint: ServerEndpoint) => Promise<TransportServer>) | undefined;
  readonly addresses: SharedAddressBook | undefined;
}

export function nodeConfig(options: BootstrapOptions): NodeConfig {
  assertValidJobName(options.job);
  const nodeId = options.nodeId ?? uniqueId('node', options.clock ?? systemClock);
  assertValidNodeId(nodeId);
  const [minTtl, maxTtl] = options.coordinator.caps.ttlRangeMs;
  return {
    job: options.job,
    nodeId,
    coordinator: options.coordinator,
    transport: options.transport,
    clock: options.clock ?? systemClock,
    ttlMs: options.sessionTtlMs ?? Math.min(maxTtl, Math.max(minTtl, 5000)),
    preferredTask: options.preferredTask,
    attemptTimeoutMs: positive(options.attemptTimeoutMs, 10_000, 'attemptTimeoutMs'),
    maxMetaBytes: positive(options.maxMetaBytes, 1024, 'maxMetaBytes'),
    drainMs: positive(options.drainMs, 2000, 'drainMs', true),
    metaPush: flag(options.metaPush, true, 'metaPush'),
    onSession: options.onSession,
    listen: options.listen,
    addresses: options.addresses,
  };
}

function positive(v: number | undefined, dflt: number, name: string, zeroOk = false): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || (!zeroOk && v === 0)) {
    throw new InvalidArgumentError(`${name} must be a ${zeroOk ? 'non-negative' : 'positive'} number of ms, got ${String(v)}`);
  }
  return v;
}

function flag(v: boolean | undefined, dflt: boolean, name: string): boolean {
  if (v === undefined) return dflt;
  if (typeof v !== 'boolean') throw new InvalidArgumentError(`${name} must be true or false, got ${String(v)}`);
  return v;
}
