/**
 * @taskgraph/coord-consul: the Consul coordination backend (KV, sessions,
 * blocking queries). `consul://` URLs resolve to `createConsulCoordinator`.
 */
import type { CoordinatorFactory, CoordinatorRuntimeOptions } from '@taskgraph/api';
import { ConsulCoordinator } from './coordinator.js';
import { parseConsulUrl } from './options.js';
import type { ConsulCoordinatorOptions } from './options.js';

export { ConsulCoordinator, MAX_KEY_BYTES, MAX_VALUE_BYTES, SESSION_TTL_RANGE_MS } from './coordinator.js';
export {
  parseConsulUrl,
  DEFAULT_BLOCKING_WAIT_MS,
  DEFAULT_LOCK_DELAY_MS,
  DEFAULT_NAMESPACE,
  DEFAULT_REQUEST_TIMEOUT_MS,
} from './options.js';
export type { ConsulCoordinatorOptions, ConsulTlsOptions } from './options.js';
export type { ConsulSession } from './session.js';
export { escapeKey, unescapeKey } from './keys.js';

/**
 * Creates a Consul coordinator from a `consul://host:8500?namespace=tg&dc=dc1&token=...&tls=1`
 * URL or from options. It connects lazily: a call made while Consul is unreachable
 * fails with UnavailableError.
 */
export async function createConsulCoordinator(
  target: string | URL | ConsulCoordinatorOptions,
  runtime: CoordinatorRuntimeOptions = {},
): Promise<ConsulCoordinator> {
  const options = typeof target === 'string' || target instanceof URL ? await parseConsulUrl(target) : target;
  return new ConsulCoordinator({
    ...options,
    ...(runtime.clock && options.clock === undefined ? { clock: runtime.clock } : {}),
    ...(runtime.logger && options.logger === undefined ? { logger: runtime.logger } : {}),
  });
}

/** The factory `core` resolves for `consul://` URLs. */
export const createCoordinator: CoordinatorFactory = (url, runtime) => createConsulCoordinator(url, runtime);
