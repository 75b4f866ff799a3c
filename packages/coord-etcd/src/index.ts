/**
 * @taskgraph/coord-etcd: the etcd v3 coordination backend. `etcd://` URLs resolve
 * to `createEtcdCoordinator`.
 */
import type { CoordinatorFactory, CoordinatorRuntimeOptions } from '@taskgraph/api';
import { EtcdCoordinator } from './coordinator.js';
import { parseEtcdUrl, type EtcdCoordinatorOptions } from './options.js';

export { EtcdCoordinator, MAX_KEY_BYTES, MAX_SESSION_TTL_MS } from './coordinator.js';
export { parseEtcdUrl, DEFAULT_NAMESPACE, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MIN_SESSION_TTL_MS, DEFAULT_REQUEST_TIMEOUT_MS } from './options.js';
export type { EtcdCoordinatorOptions } from './options.js';
export type { EtcdSession } from './session.js';

/**
 * Creates an etcd coordinator from an `etcd://host:2379,host2:2379?namespace=tg`
 * URL or from options. It connects lazily: a call made while etcd is unreachable
 * fails with UnavailableError, and the client reconnects by itself.
 */
export async function createEtcdCoordinator(
  target: string | URL | EtcdCoordinatorOptions,
  runtime: CoordinatorRuntimeOptions = {},
): Promise<EtcdCoordinator> {
  const options = typeof target === 'string' || target instanceof URL ? parseEtcdUrl(target) : target;
  return new EtcdCoordinator({
    ...options,
    ...(runtime.clock && options.clock === undefined ? { clock: runtime.clock } : {}),
    ...(runtime.logger && options.logger === undefined ? { logger: runtime.logger } : {}),
  });
}

/** The factory `core` resolves for `etcd://` URLs. */
export const createCoordinator: CoordinatorFactory = (url, runtime) => createEtcdCoordinator(url, runtime);
