/**
 * `memory://name?namespace=x`: one process-wide store per name, so several nodes
 * of one process that were given the same URL share the same data, as they would
 * share a real server.
 */
import { InvalidArgumentError, assertValidKey } from '@taskgraph/api';
import type { CoordinatorFactory, CoordinatorRuntimeOptions } from '@taskgraph/api';
import { MEMORY_CAPS, MemoryCoordinator } from './coordinator.js';
import type { MemoryCoordinatorOptions } from './coordinator.js';
import { MemoryStore } from './store.js';
import type { MemoryStoreOptions } from './store.js';

const sharedStores = new Map<string, MemoryStore>();

const STORE_NAME = /^[a-z0-9]([a-z0-9._-]{0,62})$/;
const KNOWN_PARAMETERS = ['namespace', 'historyLimit'] as const;

/**
 * The process-wide store that `memory://<name>` URLs connect to, created on first
 * use with `options` (later calls get the existing store; their options are ignored).
 */
export function sharedMemoryStore(name = 'default', options: Omit<MemoryStoreOptions, 'name'> = {}): MemoryStore {
  if (typeof name !== 'string' || !STORE_NAME.test(name)) {
    throw new InvalidArgumentError(
      `memory store name ${JSON.stringify(name)} is invalid: use 1 to 63 lower-case letters, digits, ".", "_" or "-", starting with a letter or digit`,
    );
  }
  let store = sharedStores.get(name);
  if (!store) {
    store = new MemoryStore({ ...options, name });
    sharedStores.set(name, store);
  }
  return store;
}

/** Forgets a shared store, so the next `memory://<name>` starts empty. Its clients keep the old one. */
export function dropSharedMemoryStore(name: string): boolean {
  return sharedStores.delete(name);
}

/** What a `memory://` URL says. */
export interface ParsedMemoryUrl {
  readonly storeName: string;
  readonly namespace: string | undefined;
  readonly historyLimit: number | undefined;
}

/** Parses `memory://[name][?namespace=ns&historyLimit=n]`; anything else is an InvalidArgumentError. */
export function parseMemoryUrl(url: string | URL): ParsedMemoryUrl {
  const text = String(url);
  let parsed: URL;
  try {
    parsed = url instanceof URL ? url : new URL(text);
  } catch {
    throw new InvalidArgumentError(`${JSON.stringify(text)} is not a URL; expected memory://[name][?namespace=ns]`);
  }
  if (parsed.protocol !== 'memory:') {
    throw new InvalidArgumentError(`${JSON.stringify(text)} is not a memory:// URL (scheme ${JSON.stringify(parsed.protocol.replace(/:$/, ''))}); expected memory://[name][?namespace=ns]`);
  }
  if (parsed.username || parsed.password || parsed.port) {
    throw new InvalidArgumentError(`memory URL ${JSON.stringify(text)} must not have a user, password or port; it names an in-process store: memory://[name][?namespace=ns]`);
  }
  if (parsed.pathname !== '' && parsed.pathname !== '/') {
    throw new InvalidArgumentError(`memory URL ${JSON.stringify(text)} has a path (${JSON.stringify(parsed.pathname)}); put the store name in the host part and the key prefix in ?namespace=`);
  }
  if (parsed.hash) throw new InvalidArgumentError(`memory URL ${JSON.stringify(text)} must not have a #fragment`);
  for (const key of new Set(parsed.searchParams.keys())) {
    if (!(KNOWN_PARAMETERS as readonly string[]).includes(key)) {
      throw new InvalidArgumentError(`memory URL ${JSON.stringify(text)} has an unknown parameter ${JSON.stringify(key)}; known: ${KNOWN_PARAMETERS.join(', ')}`);
    }
    if (parsed.searchParams.getAll(key).length > 1) {
      throw new InvalidArgumentError(`memory URL ${JSON.stringify(text)} gives ${JSON.stringify(key)} more than once`);
    }
  }
  const namespace = parsed.searchParams.get('namespace') ?? undefined;
  if (namespace !== undefined) assertValidKey(namespace, MEMORY_CAPS.maxKeyBytes, 'namespace in memory URL');
  const limitText = parsed.searchParams.get('historyLimit') ?? undefined;
  let historyLimit: number | undefined;
  if (limitText !== undefined) {
    historyLimit = /^[1-9][0-9]{0,8}$/.test(limitText) ? Number(limitText) : Number.NaN;
    if (Number.isNaN(historyLimit)) {
      throw new InvalidArgumentError(`memory URL ${JSON.stringify(text)}: historyLimit must be a positive integer, got ${JSON.stringify(limitText)}`);
    }
  }
  return { storeName: parsed.hostname === '' ? 'default' : parsed.hostname, namespace, historyLimit };
}

/**
 * Creates a memory coordinator from a `memory://name?namespace=x` URL (sharing the
 * process-wide store of that name) or from options (a private store unless one is given).
 */
export async function createMemoryCoordinator(
  target: string | URL | MemoryCoordinatorOptions = {},
  runtime: CoordinatorRuntimeOptions = {},
): Promise<MemoryCoordinator> {
  if (typeof target === 'string' || target instanceof URL) {
    const { storeName, namespace, historyLimit } = parseMemoryUrl(target);
    const storeOptions: Omit<MemoryStoreOptions, 'name'> = {
      ...(runtime.clock ? { clock: runtime.clock } : {}),
      ...(runtime.logger ? { logger: runtime.logger } : {}),
      ...(historyLimit !== undefined ? { historyLimit } : {}),
    };
    const store = sharedMemoryStore(storeName, storeOptions);
    if (historyLimit !== undefined && store.historyLimit !== historyLimit) {
      throw new InvalidArgumentError(
        `memory store ${JSON.stringify(storeName)} already exists with historyLimit ${store.historyLimit}; drop the historyLimit parameter or use another store name`,
      );
    }
    return new MemoryCoordinator({
      store,
      ...(namespace !== undefined ? { namespace } : {}),
      ...(runtime.clock ? { clock: runtime.clock } : {}),
      ...(runtime.logger ? { logger: runtime.logger } : {}),
    });
  }
  if (typeof target !== 'object' || target === null) {
    throw new InvalidArgumentError('createMemoryCoordinator takes a memory:// URL or an options object');
  }
  return new MemoryCoordinator({
    ...target,
    ...(target.clock === undefined && runtime.clock ? { clock: runtime.clock } : {}),
    ...(target.logger === undefined && runtime.logger ? { logger: runtime.logger } : {}),
  });
}

/** The name core's URL resolver calls for `memory://`. */
export const createCoordinator: CoordinatorFactory = (url, runtime) => createMemoryCoordinator(url, runtime);
